//! `engager deliverability`: each channel's rolling bounce, complaint, unsubscribe and reply
//! rates against the monitor's levels, its standing, and halts a person may lift; and the
//! monitor's enforcement before each dispatch pass of `engager run` and the daemon.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use chrono::{DateTime, Utc};
use clap::Subcommand;
use engager_domain::deliverability::Standing;
use engager_domain::Channel;
use engager_engine::alerts::Alerter;
use engager_engine::monitor::{self, ChannelHealth};
use engager_engine::{Clock, SystemClock};
use serde_json::json;

use crate::commands::App;
use crate::output::{print_json, table, when};

/// `engager deliverability`
#[derive(Debug, Subcommand)]
pub enum DeliverabilityCommand {
    /// Each enabled channel's rates over the window, its standing and any halt.
    Show,
    /// Lift the monitor's halt of a channel (after fixing the cause: a bad list, a template
    /// marked as spam). The window then starts again from now.
    Resume {
        /// The channel: email, sms or linkedin.
        channel: String,
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

/// Before a dispatch pass: judges each channel, halts and alerts where a halt level is
/// breached, and returns the halted channels with their reasons for the dispatcher.
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
            if json {
                print_json(&json!({
                    "enabled": settings.enabled,
                    "window_days": settings.window.num_days(),
                    "min_sample": settings.thresholds.min_sample,
                    "channels": health.iter().map(health_json).collect::<Vec<_>>(),
                }));
            } else {
                print_table(&health, &settings);
            }
            let any_halted = health.iter().any(ChannelHealth::is_halted);
            Ok(if any_halted {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
        DeliverabilityCommand::Resume { channel, note } => {
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
