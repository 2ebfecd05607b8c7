//! `engager gdpr export|erase|audit`: a data subject's access (Art. 15) and erasure (Art. 17)
//! requests, and the compliance audit log.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use chrono::Utc;
use clap::Subcommand;
use engager_domain::Channel;
use engager_store::AuditEntry;
use serde_json::json;

use crate::commands::{find_lead, App};
use crate::output::{print_json, table, when};
use crate::report::parse_instant;

/// `engager gdpr`
#[derive(Debug, Subcommand)]
pub enum GdprCommand {
    /// Everything held about a person, as JSON: their lead record, enrollments, messages,
    /// decision traces, events, tasks, SMS received, suppression entries.
    Export {
        /// The person: a lead id or an email address.
        lead: String,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Erase a person's personal data everywhere (database and outbox files), keeping only a
    /// keyed hash of their address and number on the suppression list so they are never
    /// contacted again; recorded in the audit log.
    Erase {
        /// The person: a lead id or an email address.
        lead: String,
        /// Confirm: erasure cannot be undone.
        #[arg(long)]
        yes: bool,
        /// Where the request came from (kept in the audit log; no personal data).
        #[arg(long, default_value = "data subject request")]
        reason: String,
    },
    /// Apply the retention policy now: blank finished messages' texts and old event details
    /// (`[retention]`); the daemon does this daily.
    Retention {
        /// Count what would change, changing nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The compliance audit log: erasures, exports, halts and resumptions.
    Audit {
        /// Entries at or after this instant (an age such as 30d, a date, or RFC 3339).
        #[arg(long, default_value = "90d")]
        since: String,
    },
}

pub async fn run(app: &App, command: GdprCommand, json: bool) -> Result<ExitCode> {
    let now = Utc::now();
    match command {
        GdprCommand::Export { lead, out } => {
            let lead = find_lead(app.store.as_ref(), &lead).await?;
            let data = app.store.export_subject(lead.id).await?;
            let document = json!({
                "exported_at": now.to_rfc3339(),
                "lead_id": lead.id.0,
                "tables": data,
            });
            app.store
                .append_audit(&AuditEntry {
                    at: now,
                    action: "export".into(),
                    subject: format!("lead:{}", lead.id.0),
                    detail: format!(
                        "{} table(s) exported{}",
                        data.as_object().map_or(0, |o| o.len()),
                        if out.is_some() { " to a file" } else { "" }
                    ),
                    actor: "cli".into(),
                })
                .await?;
            let text = serde_json::to_string_pretty(&document)?;
            match out {
                Some(path) => {
                    std::fs::write(&path, text + "\n")
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    if json {
                        print_json(
                            &json!({"lead_id": lead.id.0, "written_to": path.display().to_string()}),
                        );
                    } else {
                        println!(
                            "Wrote everything held about lead {} to {}.",
                            lead.id,
                            path.display()
                        );
                    }
                }
                None => println!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        GdprCommand::Erase { lead, yes, reason } => {
            if !yes {
                bail!("erasure cannot be undone: add --yes to erase lead {lead}'s personal data");
            }
            let lead = find_lead(app.store.as_ref(), &lead).await?;
            if lead.status == engager_domain::LeadStatus::Erased {
                bail!("lead {} was already erased", lead.id);
            }
            // The outbox files of the person's messages, found before the rows are blanked.
            let deliveries = app
                .store
                .deliveries(&engager_store::DeliveryFilter {
                    lead: Some(lead.id),
                    ..Default::default()
                })
                .await?;
            let report = app
                .store
                .erase_subject(
                    lead.id,
                    &AuditEntry {
                        at: now,
                        action: "erasure".into(),
                        subject: format!("lead:{}", lead.id.0),
                        detail: reason.clone(),
                        actor: "cli".into(),
                    },
                )
                .await?;
            let outbox = app.settings.outbox_dir(&app.config_dir);
            let mut files_removed = 0usize;
            for d in &deliveries {
                let dir = outbox.join(d.channel.as_str());
                let prefix = format!("{:08}-", d.id.0);
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    if entry.file_name().to_string_lossy().starts_with(&prefix) {
                        std::fs::remove_file(entry.path()).with_context(|| {
                            format!(
                                "erased in the database, but cannot remove {}",
                                entry.path().display()
                            )
                        })?;
                        files_removed += 1;
                    }
                }
            }
            let changed: u64 = report.rows.iter().map(|(_, n)| n).sum();
            if json {
                print_json(&json!({
                    "lead_id": lead.id.0,
                    "rows": report.rows.iter().map(|(t, n)| json!({"table": t, "rows": n})).collect::<Vec<_>>(),
                    "suppressions_kept_as_hash": report.suppressions_hashed,
                    "outbox_files_removed": files_removed,
                }));
            } else {
                let mut t = table(&["Table", "Rows erased"]);
                for (name, n) in report.rows.iter().filter(|(_, n)| *n > 0) {
                    t.add_row(vec![name.clone(), n.to_string()]);
                }
                println!("{t}");
                println!(
                    "Erased lead {}: {changed} row(s), {files_removed} outbox file(s); {} suppression entr(ies) kept as a keyed hash, so the person stays suppressed. Recorded in the audit log.",
                    lead.id, report.suppressions_hashed
                );
                if deliveries.iter().any(|d| d.channel == Channel::Email) {
                    println!("Messages already delivered to the person's mailbox, and copies in providers' sent folders, are outside Engager.");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        GdprCommand::Retention { dry_run } => {
            let report = apply_retention(app, now, dry_run).await?;
            if json {
                print_json(&json!({
                    "dry_run": dry_run,
                    "rows": report.rows.iter().map(|(t, n)| json!({"table": t, "rows": n})).collect::<Vec<_>>(),
                }));
            } else {
                let mut t = table(&[
                    "Table",
                    if dry_run {
                        "Rows that would change"
                    } else {
                        "Rows changed"
                    },
                ]);
                for (name, n) in &report.rows {
                    t.add_row(vec![name.clone(), n.to_string()]);
                }
                println!(
                    "Retention: message texts older than {} days, details older than {} days{}.\n{t}",
                    app.settings.retention.message_days,
                    app.settings.retention.detail_days,
                    if dry_run { " (dry run: nothing changed)" } else { "" }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        GdprCommand::Audit { since } => {
            let since = parse_instant(&since, now, "--since")?;
            let log = app.store.audit_log(since).await?;
            if json {
                print_json(&json!(log
                    .iter()
                    .map(|e| json!({"at": e.at.to_rfc3339(), "action": e.action, "subject": e.subject, "detail": e.detail, "actor": e.actor}))
                    .collect::<Vec<_>>()));
            } else if log.is_empty() {
                println!("No audit entries since {}.", when(since));
            } else {
                let mut t = table(&["When", "Action", "Subject", "Detail", "By"]);
                for e in &log {
                    t.add_row(vec![
                        when(e.at),
                        e.action.clone(),
                        e.subject.clone(),
                        e.detail.clone(),
                        e.actor.clone(),
                    ]);
                }
                println!("{t}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Applies the retention policy at `now` and records it in the audit log (unless a dry run
/// or nothing changed).
pub async fn apply_retention(
    app: &App,
    now: chrono::DateTime<Utc>,
    dry_run: bool,
) -> Result<engager_store::gdpr::RetentionReport> {
    let cutoffs = app.settings.retention.cutoffs(now)?;
    let report = app.store.apply_retention(&cutoffs, dry_run).await?;
    let changed: u64 = report.rows.iter().map(|(_, n)| n).sum();
    if !dry_run && changed > 0 {
        app.store
            .append_audit(&AuditEntry {
                at: now,
                action: "retention".into(),
                subject: "policy".into(),
                detail: report
                    .rows
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(t, n)| format!("{t}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                actor: "retention".into(),
            })
            .await?;
    }
    Ok(report)
}
