//! `engager deliverability`: each channel's, sending account's and sending domain's rolling
//! bounce, complaint, unsubscribe and reply rates against the monitor's levels, their
//! standing, and halts a person may lift; and the monitor's enforcement before each dispatch
//! pass of `engager run` and the daemon.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use chrono::{DateTime, Utc};
use clap::Subcommand;
use engager_domain::deliverability::Standing;
use engager_domain::Channel;
use engager_engine::alerts::Alerter;
use engager_engine::guard::SendGuard;
use engager_engine::monitor::{self, ChannelHealth, SenderHealth, SenderKind};
use engager_engine::{Clock, SystemClock};
use serde_json::json;

use crate::commands::App;
use crate::output::{print_json, table, when};

/// `engager deliverability`
#[derive(Debug, Subcommand)]
pub enum DeliverabilityCommand {
    /// Each enabled channel's, sending account's and sending domain's rates over the window,
    /// its standing and any halt.
    Show,
    /// Lift the monitor's halt of a channel, a sending account (`--account`) or a sending
    /// domain (`--domain`), after fixing the cause (a bad list, a template marked as spam).
    /// Its window then starts again from now.
    Resume {
        /// The channel: email, sms or linkedin.
        #[arg(required_unless_present_any = ["account", "domain"], conflicts_with_all = ["account", "domain"])]
        channel: Option<String>,
        /// A sending account, as `engager deliverability show` names it
        /// (e.g. `email:graph:maya@acme.example`).
        #[arg(long, conflicts_with = "domain")]
        account: Option<String>,
        /// A sending domain (e.g. `acme.example`).
        #[arg(long)]
        domain: Option<String>,
        /// Why it is safe to resume (kept with the change).
        #[arg(long, default_value = "resumed by a person")]
        note: String,
    },
}

/// The channels the monitor watches: every enabled one.
fn watched(app: &App) -> Vec<Channel> {
    let mut channels = app.engine.enabled_channels.clone();
    channels.sort();
    channels.dedup();
    channels
}

/// Every sending account of the watched channels (`channel:provider[:identity]`).
pub(crate) fn watched_accounts(app: &App) -> Vec<(Channel, String)> {
    let channels = watched(app);
    app.channels()
        .every()
        .into_iter()
        .filter(|s| channels.contains(&s.channel()))
        .map(|s| (s.channel(), SendGuard::account(s.channel(), s.name())))
        .collect()
}

/// Judges every sending account and domain (read-only unless `act`).
async fn check_senders(
    app: &App,
    settings: &monitor::MonitorSettings,
    alerter: Option<&Alerter>,
    now: DateTime<Utc>,
    act: bool,
) -> Result<Vec<SenderHealth>> {
    let sender_domain = app.engine.sender.email.domain().to_owned();
    Ok(monitor::check_senders(
        app.store.as_ref(),
        &watched_accounts(app),
        Some(&sender_domain),
        settings,
        alerter,
        now,
        act,
    )
    .await?)
}

/// Before a dispatch pass: judges each channel, sending account and sending domain, halts
/// and alerts where a halt level is breached, hands the guard the halted and slowed
/// accounts (a halted account is skipped like one whose circuit is open), and returns the
/// halted channels with their reasons for the dispatcher.
pub async fn enforce(
    app: &App,
    alerter: Option<&Alerter>,
    guard: Option<&engager_engine::guard::SendGuard>,
    now: DateTime<Utc>,
) -> Result<HashMap<Channel, String>> {
    let settings = app.settings.deliverability.monitor()?;
    let health = monitor::check(
        app.store.as_ref(),
        &watched(app),
        &settings,
        alerter,
        now,
        true,
    )
    .await?;
    // A warning slows the channel (its rate and daily cap times the assessment's factor)
    // until the rates recover; a halt stops it.
    if let Some(guard) = guard {
        guard.set_slowdowns(
            health
                .iter()
                .filter(|h| !h.is_halted() && h.assessment.standing == Standing::Warning)
                .map(|h| {
                    let why = h
                        .assessment
                        .findings
                        .first()
                        .map_or_else(|| "a warning".to_owned(), ToString::to_string);
                    (h.channel, (h.assessment.rate_factor, why))
                })
                .collect(),
        );
    }
    let senders = check_senders(app, &settings, alerter, now, true).await?;
    if let Some(guard) = guard {
        guard.set_account_halts(monitor::halted_accounts(&senders));
        guard.set_account_slowdowns(monitor::account_slowdowns(&senders));
    }
    Ok(health
        .into_iter()
        .filter_map(|h| {
            let reason = h.halt.filter(|h| h.halted)?.reason;
            Some((h.channel, reason))
        })
        .collect())
}

pub async fn run(app: &App, command: DeliverabilityCommand, json: bool) -> Result<ExitCode> {
    let now = SystemClock.now();
    match command {
        DeliverabilityCommand::Show => {
            let settings = app.settings.deliverability.monitor()?;
            let health = monitor::check(
                app.store.as_ref(),
                &watched(app),
                &settings,
                None,
                now,
                false,
            )
            .await?;
            let senders = check_senders(app, &settings, None, now, false).await?;
            let of = |kind| {
                senders
                    .iter()
                    .filter(move |s: &&SenderHealth| s.kind == kind)
            };
            if json {
                print_json(&json!({
                    "enabled": settings.enabled,
                    "window_days": settings.window.num_days(),
                    "min_sample": settings.thresholds.min_sample,
                    "channels": health.iter().map(health_json).collect::<Vec<_>>(),
                    "accounts": of(SenderKind::Account).map(sender_json).collect::<Vec<_>>(),
                    "domains": of(SenderKind::Domain).map(sender_json).collect::<Vec<_>>(),
                }));
            } else {
                print_table(&health, &settings);
                print_senders(&senders);
            }
            let any_halted = health.iter().any(ChannelHealth::is_halted)
                || senders.iter().any(SenderHealth::is_halted);
            Ok(if any_halted {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
        DeliverabilityCommand::Resume {
            channel: None,
            account,
            domain,
            note,
        } => {
            let (key, what) = match (account, domain) {
                (Some(a), _) => (monitor::account_key(a.trim()), format!("account {}", a.trim())),
                (None, Some(d)) => (monitor::domain_key(d.trim()), format!("domain {}", d.trim())),
                (None, None) => {
                    return Err(anyhow!(
                        "`engager deliverability resume` needs a channel, --account <name> or --domain <domain>"
                    ))
                }
            };
            let resumed = monitor::resume_sender(app.store.as_ref(), &key, &note, now).await?;
            if json {
                print_json(&json!({"key": key, "resumed": resumed}));
            } else if resumed {
                println!("Sending from {what} resumed; the monitor's window starts again now.");
            } else {
                let halted: Vec<String> = app
                    .store
                    .account_halts()
                    .await?
                    .into_iter()
                    .filter(|h| h.halted)
                    .map(|h| h.key)
                    .collect();
                println!(
                    "Sending from {what} was not halted; nothing changed.{}",
                    if halted.is_empty() {
                        String::new()
                    } else {
                        format!(" Halted now: {}.", halted.join(", "))
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DeliverabilityCommand::Resume {
            channel: Some(channel),
            note,
            ..
        } => {
            let channel: Channel = channel
                .parse()
                .map_err(|e| anyhow!("{e}: expected email, sms or linkedin"))?;
            let resumed = monitor::resume(app.store.as_ref(), channel, &note, now).await?;
            if json {
                print_json(&json!({"channel": channel.as_str(), "resumed": resumed}));
            } else if resumed {
                println!("Sending on {channel} resumed; the monitor's window starts again now.");
            } else {
                println!("Sending on {channel} was not halted; nothing changed.");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn percent(count: u64, sent: u64) -> String {
    if sent == 0 {
        "–".into()
    } else {
        format!("{:.2}%", count as f64 * 100.0 / sent as f64)
    }
}

fn health_json(h: &ChannelHealth) -> serde_json::Value {
    let c = &h.counts;
    json!({
        "channel": h.channel.as_str(),
        "since": h.since.to_rfc3339(),
        "sent": c.sent,
        "hard_bounces": c.hard_bounces,
        "complaints": c.complaints,
        "unsubscribes": c.unsubscribes,
        "replies": c.replies,
        "standing": if h.is_halted() { Standing::Halted.as_str() } else { h.assessment.standing.as_str() },
        "rate_factor": if h.is_halted() { 0.0 } else { h.assessment.rate_factor },
        "findings": h.assessment.findings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "halt": h.halt.as_ref().map(|x| json!({"reason": x.reason, "since": x.changed_at.to_rfc3339(), "by": x.changed_by})),
    })
}

fn print_table(health: &[ChannelHealth], settings: &monitor::MonitorSettings) {
    let t = &settings.thresholds;
    println!(
        "Deliverability over the last {} days (or since the last resumption); judged after {} sends.\nLevels: hard bounces warn > {:.2}% / halt > {:.2}%, complaints {:.2}% / {:.2}%, unsubscribes {:.2}% / {:.2}%.{}",
        settings.window.num_days(),
        t.min_sample,
        t.hard_bounces.warn * 100.0,
        t.hard_bounces.halt * 100.0,
        t.complaints.warn * 100.0,
        t.complaints.halt * 100.0,
        t.unsubscribes.warn * 100.0,
        t.unsubscribes.halt * 100.0,
        if settings.enabled { "" } else { "\nThe monitor is disabled ([deliverability] enabled = false): it shows, but never halts." }
    );
    let mut tab = table(&[
        "Channel",
        "Sent",
        "Hard bounces",
        "Complaints",
        "Unsubscribes",
        "Replies",
        "Standing",
        "Why",
    ]);
    for h in health {
        let c = &h.counts;
        let (standing, why) = match &h.halt {
            Some(halt) if halt.halted => (
                "HALTED".to_owned(),
                format!(
                    "since {}: {} — `engager deliverability resume {}`",
                    when(halt.changed_at),
                    halt.reason,
                    h.channel
                ),
            ),
            _ => (
                h.assessment.standing.as_str().to_owned(),
                h.assessment
                    .findings
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        };
        tab.add_row(vec![
            h.channel.to_string(),
            c.sent.to_string(),
            format!("{} ({})", c.hard_bounces, percent(c.hard_bounces, c.sent)),
            format!("{} ({})", c.complaints, percent(c.complaints, c.sent)),
            format!("{} ({})", c.unsubscribes, percent(c.unsubscribes, c.sent)),
            format!("{} ({})", c.replies, percent(c.replies, c.sent)),
            standing,
            why,
        ]);
    }
    println!("{tab}");
}

fn sender_json(h: &SenderHealth) -> serde_json::Value {
    let c = &h.counts;
    json!({
        "kind": h.kind.as_str(),
        "name": h.name,
        "channel": h.channel.as_str(),
        "accounts": h.accounts,
        "since": h.since.to_rfc3339(),
        "sent": c.sent,
        "hard_bounces": c.hard_bounces,
        "complaints": c.complaints,
        "unsubscribes": c.unsubscribes,
        "replies": c.replies,
        "standing": if h.is_halted() { Standing::Halted.as_str() } else { h.assessment.standing.as_str() },
        "rate_factor": if h.is_halted() { 0.0 } else { h.assessment.rate_factor },
        "findings": h.assessment.findings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "halt": h.halt.as_ref().map(|x| json!({"reason": x.reason, "since": x.changed_at.to_rfc3339(), "by": x.changed_by})),
    })
}

/// The per-account and per-domain tables (sends recorded before accounts were count for
/// their channel only).
fn print_senders(senders: &[SenderHealth]) {
    for (kind, title, header) in [
        (SenderKind::Account, "Per sending account:", "Account"),
        (
            SenderKind::Domain,
            "Per sending domain (every account sending from it):",
            "Domain",
        ),
    ] {
        let rows: Vec<&SenderHealth> = senders.iter().filter(|s| s.kind == kind).collect();
        if rows.is_empty() {
            continue;
        }
        println!("{title}");
        let mut tab = table(&[
            header,
            "Sent",
            "Hard bounces",
            "Complaints",
            "Unsubscribes",
            "Replies",
            "Standing",
            "Why",
        ]);
        for h in rows {
            let c = &h.counts;
            let flag = match kind {
                SenderKind::Account => "--account",
                SenderKind::Domain => "--domain",
            };
            let (standing, why) = match &h.halt {
                Some(halt) if halt.halted => (
                    "HALTED".to_owned(),
                    format!(
                        "since {}: {} — `engager deliverability resume {flag} {}`",
                        when(halt.changed_at),
                        halt.reason,
                        h.name
                    ),
                ),
                _ => (
                    h.assessment.standing.as_str().to_owned(),
                    h.assessment
                        .findings
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
            };
            let name = match kind {
                SenderKind::Account => h.name.clone(),
                SenderKind::Domain => format!("{} ({} accounts)", h.name, h.accounts.len()),
            };
            tab.add_row(vec![
                name,
                c.sent.to_string(),
                format!("{} ({})", c.hard_bounces, percent(c.hard_bounces, c.sent)),
                format!("{} ({})", c.complaints, percent(c.complaints, c.sent)),
                format!("{} ({})", c.unsubscribes, percent(c.unsubscribes, c.sent)),
                format!("{} ({})", c.replies, percent(c.replies, c.sent)),
                standing,
                why,
            ]);
        }
        println!("{tab}");
    }
}
