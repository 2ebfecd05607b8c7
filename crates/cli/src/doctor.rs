//! `engager doctor`: checks every configured channel (token, credentials, permissions,
//! mailbox or account) and prints what works. DNS (SPF, DKIM, DMARC) is out of scope.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use engager_channels::DeliveryError;
use serde_json::json;

use crate::commands::{config_dir, configured_channels};
use crate::output::{print_json, table};
use crate::settings;

/// How long one channel's check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs every channel's health check; fails when one of them does.
pub async fn run(config: Option<&Path>, json: bool) -> Result<ExitCode> {
    let (settings, engine) = settings::load_engine(config)?;
    crate::telemetry::init(&settings.telemetry.format, &settings.telemetry.level);
    let channels = configured_channels(&settings, &engine, &config_dir(config))?;
    let mut rows = Vec::new();
    // Every sending account, each of a rotation on its own (its mailbox, login or number).
    for sender in channels.every() {
        let started = Instant::now();
        let outcome = match tokio::time::timeout(CHECK_TIMEOUT, sender.health_check()).await {
            Ok(result) => result,
            Err(_) => Err(DeliveryError::Transient {
                reason: format!("no answer within {} s", CHECK_TIMEOUT.as_secs()),
                retry_after: None,
            }),
        };
        let (status, detail) = match &outcome {
            Ok(()) => ("ok", String::new()),
            Err(DeliveryError::Config { reason }) => ("misconfigured", reason.clone()),
            Err(other) => ("unreachable", other.to_string()),
        };
        rows.push((
            sender.channel().to_string(),
            sender.name().to_owned(),
            status,
            detail,
            started.elapsed(),
        ));
    }
    // The mailbox replies and bounces are read from, when polled over IMAP.
    if let Some(imap) = settings.imap_config(&config_dir(config)) {
        let started = Instant::now();
        let outcome = match engager_channels::ImapMailbox::new(&imap) {
            Ok(mailbox) => tokio::time::timeout(CHECK_TIMEOUT, mailbox.health_check())
                .await
                .unwrap_or_else(|_| {
                    Err(engager_channels::imap::ImapError::Unavailable(format!(
                        "no answer within {} s",
                        CHECK_TIMEOUT.as_secs()
                    )))
                }),
            Err(e) => Err(e),
        };
        let (status, detail) = match &outcome {
            Ok(()) => ("ok", String::new()),
            Err(e) if e.is_transient() => ("unreachable", e.to_string()),
            Err(e) => ("misconfigured", e.to_string()),
        };
        rows.push((
            "email replies".into(),
            "imap".into(),
            status,
            detail,
            started.elapsed(),
        ));
    }
    // The DKIM key's DNS record, to publish (checking DNS itself is out of scope).
    let dkim_record = settings
        .smtp_config(&config_dir(config))
        .ok()
        .flatten()
        .and_then(|smtp| smtp.dkim)
        .and_then(|dkim| engager_channels::dkim::DkimSigner::load(&dkim).ok())
        .map(|signer| signer.dns_record());
    let failed = rows.iter().filter(|r| r.2 != "ok").count();
    if json {
        print_json(&json!({
            "ok": failed == 0,
            "dkim_record": dkim_record.as_ref().map(|(name, value)| json!({"name": name, "type": "TXT", "value": value})),
            "channels": rows.iter().map(|(channel, provider, status, detail, took)| json!({
                "channel": channel, "provider": provider, "status": status,
                "detail": detail, "millis": took.as_millis(),
            })).collect::<Vec<_>>(),
        }));
    } else {
        let mut t = table(&["Channel", "Provider", "Status", "Took", "Detail"]);
        for (channel, provider, status, detail, took) in &rows {
            t.add_row(vec![
                channel.clone(),
                provider.clone(),
                (*status).to_owned(),
                format!("{} ms", took.as_millis()),
                detail.clone(),
            ]);
        }
        println!("{t}");
        if let Some((name, value)) = &dkim_record {
            println!("DKIM: publish the TXT record {name} with the value \"{value}\"");
        }
        if failed == 0 {
            println!("Every configured channel works.");
        } else {
            println!(
                "{failed} channel(s) cannot send: \"misconfigured\" names the key to fix, \
                 \"unreachable\" means the provider could not be reached or answered with an error."
            );
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
