//! `engager serve`: the HTTP server for Twilio's webhooks and one-click unsubscribe links,
//! until SIGINT or SIGTERM (requests in flight are finished first).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use engager_server::dashboard::{DashboardConfig, MIN_TOKEN_CHARS};
use engager_server::{ServerConfig, ServerState, TwilioWebhooks};
use secrecy::ExposeSecret as _;
use serde_json::json;

use crate::commands::App;
use crate::output::print_json;

/// `engager serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:8080 or 0.0.0.0:8080 (default: `[server] listen`).
    #[arg(long)]
    pub listen: Option<String>,
}

/// The server's configuration from the settings; errors name the key.
pub fn server_config(app: &App) -> Result<ServerConfig> {
    let s = &app.settings.server;
    let mut config = ServerConfig::from_engine(&app.engine);
    for (i, old) in app.settings.links.previous_secrets.iter().enumerate() {
        let old = old.expose_secret();
        if old.len() < 16 {
            return Err(anyhow!("invalid configuration at key `links.previous_secrets[{i}]`: use at least 16 characters"));
        }
        config.previous_link_secrets.push(old.as_bytes().to_vec());
    }
    if let Some(reply) = s.sms_help_reply.as_deref() {
        if reply.trim().is_empty() {
            return Err(anyhow!("invalid configuration at key `server.sms_help_reply`: the HELP reply is empty; leave the key out for the default"));
        }
        config.help_reply = reply.trim().to_owned();
    }
    if s.max_body_bytes < 1024 {
        return Err(anyhow!(
            "invalid configuration at key `server.max_body_bytes`: {} is too small (at least 1024)",
            s.max_body_bytes
        ));
    }
    if s.request_timeout_secs == 0 {
        return Err(anyhow!(
            "invalid configuration at key `server.request_timeout_secs`: must be at least 1"
        ));
    }
    config.max_body_bytes = s.max_body_bytes;
    config.request_timeout = Duration::from_secs(u64::from(s.request_timeout_secs));
    config.twilio = app
        .settings
        .channels
        .twilio
        .as_ref()
        .map(|t| t.first())
        .map(|t| TwilioWebhooks {
            auth_token: t.auth_token.clone(),
            status_callback: t.status_callback.clone(),
        });
    Ok(config)
}

/// The dashboard's configuration, when `[server] admin_token` is set; errors name the key
/// (and never print the token).
pub fn dashboard_config(app: &App) -> Result<Option<DashboardConfig>> {
    let Some(token) = app.settings.server.admin_token.clone() else {
        return Ok(None);
    };
    let chars = token.expose_secret().trim().chars().count();
    if chars < MIN_TOKEN_CHARS {
        return Err(anyhow!(
            "invalid configuration at key `server.admin_token`: the admin token has {chars} characters, at least {MIN_TOKEN_CHARS} are needed (e.g. the output of `openssl rand -hex 32`)"
        ));
    }
    if token.expose_secret().trim() != token.expose_secret() {
        return Err(anyhow!(
            "invalid configuration at key `server.admin_token`: the admin token starts or ends with white space"
        ));
    }
    Ok(Some(DashboardConfig {
        admin_token: token,
        monitor: app.settings.deliverability.monitor()?,
        channels: app.engine.enabled_channels.clone(),
        accounts: crate::deliverability::watched_accounts(app),
        sender_domain: Some(app.engine.sender.email.domain().to_owned()),
    }))
}

/// Open and click tracking's tuning from `[tracking]`; errors name the key.
pub fn tracking_config(app: &App) -> Result<engager_server::TrackingConfig> {
    let t = &app.settings.tracking;
    let positive = |value: u64, key: &str| {
        if value == 0 {
            Err(anyhow!(
                "invalid configuration at key `tracking.{key}`: must be at least 1"
            ))
        } else {
            Ok(())
        }
    };
    positive(t.batch_size as u64, "batch_size")?;
    positive(t.flush_ms, "flush_ms")?;
    positive(t.queue as u64, "queue")?;
    if t.flush_ms > 10_000 {
        return Err(anyhow!(
            "invalid configuration at key `tracking.flush_ms`: {} is too long (at most 10000)",
            t.flush_ms
        ));
    }
    Ok(engager_server::TrackingConfig {
        machine_window: chrono::Duration::seconds(i64::from(t.machine_window_secs)),
        batch_size: t.batch_size,
        flush_interval: Duration::from_millis(t.flush_ms),
        queue: t.queue,
        trust_forwarded_for: t.trust_forwarded_for,
    })
}

/// Parses the listen address, naming where it came from.
fn listen_addr(flag: Option<&str>, configured: &str) -> Result<SocketAddr> {
    let (value, origin) = match flag {
        Some(v) => (v, "the --listen flag"),
        None => (configured, "key `server.listen`"),
    };
    value.trim().parse().map_err(|_| {
        anyhow!("invalid listen address at {origin}: {value:?} is not an IP address with a port, e.g. 127.0.0.1:8080")
    })
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(app: &App, args: ServeArgs, json: bool) -> Result<ExitCode> {
    use tokio::signal::unix::{signal, SignalKind};
    let addr = listen_addr(args.listen.as_deref(), &app.settings.server.listen)?;
    let config = server_config(app)?;
    let twilio = config.twilio.is_some();
    let base = config.public_base_url.trim_end_matches('/').to_owned();
    let dashboard = dashboard_config(app)?;
    let dashboard_on = dashboard.is_some();
    let mut state =
        ServerState::new(app.store.clone(), config)?.with_tracking(tracking_config(app)?);
    if let Some(d) = dashboard {
        state = state.with_dashboard(d);
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr().context("reading the bound address")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let routes = json!({
        "twilio_status": format!("{base}{}", engager_server::TWILIO_STATUS_PATH),
        "twilio_inbound": format!("{base}{}", engager_server::TWILIO_INBOUND_PATH),
        "unsubscribe": format!("{base}{}<token>", engager_server::UNSUBSCRIBE_PREFIX),
        "health": format!("{base}{}", engager_server::HEALTH_PATH),
        "open_pixel": format!("{base}{}<token>.gif", engager_server::OPEN_PREFIX),
        "click_redirect": format!("{base}{}<token>", engager_server::CLICK_PREFIX),
        "metrics": format!("{base}{}", engager_server::METRICS_PATH),
        "dashboard": dashboard_on.then(|| format!("{base}{}", engager_server::dashboard::DASHBOARD_PATH)),
    });
    if json {
        print_json(&json!({
            "listening": local.to_string(),
            "public_base_url": base,
            "twilio_webhooks": twilio,
            "dashboard": dashboard_on,
            "routes": routes,
        }));
    } else {
        println!("engager serve listening on http://{local} (public URL {base}); Ctrl-C stops.");
        println!(
            "  Twilio status callback:  {}",
            routes["twilio_status"].as_str().unwrap_or_default()
        );
        println!(
            "  Twilio inbound messages: {}",
            routes["twilio_inbound"].as_str().unwrap_or_default()
        );
        println!(
            "  One-click unsubscribe:   {}",
            routes["unsubscribe"].as_str().unwrap_or_default()
        );
        println!(
            "  Open pixel / clicks:     {} / {}",
            routes["open_pixel"].as_str().unwrap_or_default(),
            routes["click_redirect"].as_str().unwrap_or_default()
        );
        if !twilio {
            println!("  ([channels.twilio] is not configured: the Twilio routes answer 404.)");
        }
        match routes["dashboard"].as_str() {
            Some(url) => println!("  Dashboard (admin token): {url}"),
            None => println!(
                "  (The dashboard is disabled: set [server] admin_token or ENGAGER_SERVER__ADMIN_TOKEN to enable it.)"
            ),
        }
    }
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("Stopping: finishing the requests in flight.");
    };
    engager_server::serve_on(listener, state, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_name_their_origin() {
        assert_eq!(
            listen_addr(None, "127.0.0.1:8080").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            listen_addr(Some("0.0.0.0:9000"), "127.0.0.1:8080").unwrap(),
            "0.0.0.0:9000".parse().unwrap()
        );
        let err = listen_addr(None, "localhost").unwrap_err().to_string();
        assert!(err.contains("server.listen"), "{err}");
        let err = listen_addr(Some("8080"), "127.0.0.1:8080")
            .unwrap_err()
            .to_string();
        assert!(err.contains("--listen"), "{err}");
    }

    #[test]
    fn server_settings_have_defaults_and_unknown_keys_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let example = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../config/engager.example.toml"),
        )
        .unwrap();
        let path = dir.path().join("engager.toml");
        std::fs::write(&path, &example).unwrap();
        let settings = crate::settings::load(Some(&path)).unwrap();
        assert_eq!(settings.server.listen, "127.0.0.1:8080");
        assert_eq!(settings.server.max_body_bytes, 65536);
        assert_eq!(settings.server.request_timeout_secs, 10);
        std::fs::write(
            &path,
            example.replace("listen = \"127.0.0.1:8080\"", "listn = \"127.0.0.1:8080\""),
        )
        .unwrap();
        let err = crate::settings::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("listn") && err.contains("server"), "{err}");
    }
}
