//! `engager inbox`: reading replies and bounces from the configured mailboxes
//! (`[channels.imap]`, `[channels.graph]`) by hand, with a table of what was found.

use std::process::ExitCode;

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use clap::Subcommand;
use engager_engine::inbound::{FoundKind, PollReport};
use engager_engine::{Clock, SystemClock};
use serde_json::json;

use crate::commands::App;
use crate::output::{print_json, table};

/// `engager inbox …`
#[derive(Debug, Subcommand)]
pub enum InboxCommand {
    /// Read every configured mailbox once and record replies, auto-replies and bounces;
    /// print what was found (messages already recorded by an earlier poll are not repeated).
    Poll {
        /// Act as if it were this instant (RFC 3339), for tests and replays.
        #[arg(long, hide = true, value_parser = parse_instant)]
        now: Option<DateTime<Utc>>,
    },
}

/// Parses an RFC 3339 instant (`2026-03-02T09:00:00Z`).
pub fn parse_instant(value: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(value.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("expected an RFC 3339 instant like 2026-03-02T09:00:00Z: {e}"))
}

pub async fn run(app: &App, command: InboxCommand, json: bool) -> Result<ExitCode> {
    let InboxCommand::Poll { now } = command;
    let poller = app.settings.inbound_poller(&app.config_dir)?;
    if poller.is_empty() {
        bail!(
            "no mailbox to read: configure [channels.imap] or [channels.graph] (and keep `inbound.enabled = true`)"
        );
    }
    let now = now.unwrap_or_else(|| SystemClock.now());
    let report = poller.poll_once(app.store.as_ref(), now).await?;
    print_report(&report, json);
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The report as JSON.
pub fn report_json(report: &PollReport) -> serde_json::Value {
    let count = |k: FoundKind| report.count(k);
    json!({
        "read": report.found.len(),
        "recorded": report.recorded(),
        "replies": count(FoundKind::Reply),
        "auto_replies": count(FoundKind::AutoReply),
        "hard_bounces": count(FoundKind::HardBounce),
        "soft_bounces": count(FoundKind::SoftBounce),
        "complaints": count(FoundKind::Complaint),
        "unmatched": count(FoundKind::Unmatched),
        "messages": report.found.iter().map(|f| json!({
            "source": f.source, "message_id": f.external_id, "kind": f.kind.as_str(),
            "from": f.from, "subject": f.subject, "lead_id": f.lead_id.map(|l| l.0),
            "delivery_id": f.delivery_id.map(|d| d.0), "note": f.note, "recorded": f.recorded,
            "enrollments_stopped": f.enrollments_stopped, "suppressed": f.suppressed,
        })).collect::<Vec<_>>(),
        "errors": report.errors.iter().map(|(source, error)| json!({"source": source, "error": error})).collect::<Vec<_>>(),
    })
}

fn print_report(report: &PollReport, json: bool) {
    if json {
        print_json(&report_json(report));
        return;
    }
    if !report.found.is_empty() {
        let mut t = table(&[
            "Kind", "From", "Subject", "Lead", "Delivery", "Recorded", "Effect", "Note",
        ]);
        for f in &report.found {
            let effect = match (f.enrollments_stopped, f.suppressed) {
                (0, false) => "-".to_owned(),
                (n, false) => format!("{n} sequence(s) stopped"),
                (0, true) => "address suppressed".to_owned(),
                (n, true) => format!("{n} sequence(s) stopped, address suppressed"),
            };
            t.add_row(vec![
                f.kind.as_str().to_owned(),
                f.from.clone().unwrap_or_default(),
                f.subject.clone().unwrap_or_default(),
                f.lead_id.map(|l| l.to_string()).unwrap_or_default(),
                f.delivery_id.map(|d| d.to_string()).unwrap_or_default(),
                if f.recorded {
                    "new"
                } else if f.kind == FoundKind::Unmatched {
                    "-"
                } else {
                    "already"
                }
                .to_owned(),
                effect,
                f.note.clone(),
            ]);
        }
        println!("{t}");
    }
    println!(
        "{} message(s) read: {} repl(ies), {} auto-repl(ies), {} hard bounce(s), {} soft bounce(s), {} complaint(s), {} unmatched; {} new event(s).",
        report.found.len(),
        report.count(FoundKind::Reply),
        report.count(FoundKind::AutoReply),
        report.count(FoundKind::HardBounce),
        report.count(FoundKind::SoftBounce),
        report.count(FoundKind::Complaint),
        report.count(FoundKind::Unmatched),
        report.recorded()
    );
    for (source, error) in &report.errors {
        eprintln!("error: {source}: {error}");
    }
}
