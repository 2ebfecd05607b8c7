//! `engager reply list|classify`: replies and their classification (positive, neutral,
//! negative, out_of_office, unsubscribe), set by the model, the keyword rules or a person; a
//! person's classification overrides and takes effect at once.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use clap::Subcommand;
use engager_domain::reply::ReplyClass;
use engager_domain::LeadId;
use engager_engine::replies::{classify_by_person, ReplyClassifier};
use engager_engine::{Clock, SystemClock};
use engager_store::ReplyRecord;
use serde_json::json;

use crate::commands::App;
use crate::output::{print_json, table};
use crate::settings::Settings;

/// `engager reply`
#[derive(Debug, Subcommand)]
pub enum ReplyCommand {
    /// Replies (newest first) with their class, who classified them and why.
    List {
        /// Only this lead's replies.
        #[arg(long)]
        lead: Option<i64>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Set (or override) a reply's class: positive, neutral, negative, out_of_office or
    /// unsubscribe. Negative and unsubscribe stop the lead's sequences; unsubscribe also
    /// suppresses the address and opts the lead out.
    Classify {
        /// The reply's event id (from `reply list`), or with `--lead` a lead id (its latest
        /// reply).
        target: i64,
        /// The class.
        class: String,
        /// `target` is a lead id: classify the lead's latest reply.
        #[arg(long)]
        lead: bool,
        /// Why (kept with the classification).
        #[arg(long, default_value = "")]
        note: String,
    },
}

/// The classifier inbound polling uses: the configured model when `[ai]` is enabled, else the
/// keyword rules.
pub fn reply_classifier(settings: &Settings, config_dir: &Path) -> Result<ReplyClassifier> {
    if !settings.ai.enabled {
        return Ok(ReplyClassifier::rules_only());
    }
    let engine = settings.engine_config()?;
    let stage = settings.ai.stage(config_dir, &engine)?;
    Ok(ReplyClassifier::with_llm(Arc::new(stage.client().clone())))
}

fn row_json(r: &ReplyRecord) -> serde_json::Value {
    json!({
        "event_id": r.event_id,
        "lead_id": r.lead_id.0,
        "delivery_id": r.delivery_id.map(|d| d.0),
        "kind": r.kind.as_str(),
        "occurred_at": r.occurred_at.to_rfc3339(),
        "source": r.event_source,
        "class": r.class.map(|c| c.as_str()),
        "classified_by": r.classified_by,
        "reason": r.reason,
        "classified_at": r.classified_at.map(|t| t.to_rfc3339()),
    })
}

pub async fn run(app: &App, command: ReplyCommand, json: bool) -> Result<ExitCode> {
    match command {
        ReplyCommand::List { lead, limit } => {
            let rows = app.store.replies(lead.map(LeadId), limit.max(1)).await?;
            if json {
                print_json(&json!(rows.iter().map(row_json).collect::<Vec<_>>()));
            } else if rows.is_empty() {
                println!("No replies recorded.");
            } else {
                let mut t = table(&["Event", "Lead", "Received", "Kind", "Class", "By", "Why"]);
                for r in &rows {
                    t.add_row(vec![
                        r.event_id.to_string(),
                        r.lead_id.0.to_string(),
                        r.occurred_at.format("%Y-%m-%d %H:%M").to_string(),
                        r.kind.as_str().to_owned(),
                        r.class.map_or("–".to_owned(), |c| c.as_str().to_owned()),
                        r.classified_by.clone().unwrap_or_else(|| "–".into()),
                        r.reason.clone().unwrap_or_default(),
                    ]);
                }
                println!("{t}");
            }
            Ok(ExitCode::SUCCESS)
        }
        ReplyCommand::Classify {
            target,
            class,
            lead,
            note,
        } => {
            let class: ReplyClass = class.parse().map_err(|e| anyhow!("{e}"))?;
            let event_id = if lead {
                let latest = app.store.replies(Some(LeadId(target)), 1).await?;
                match latest.first() {
                    Some(r) => r.event_id,
                    None => bail!("lead {target} has no recorded reply to classify"),
                }
            } else {
                target
            };
            let done = classify_by_person(
                app.store.as_ref(),
                event_id,
                class,
                &note,
                SystemClock.now(),
            )
            .await?;
            if json {
                print_json(&json!({
                    "event_id": done.event_id,
                    "lead_id": done.lead_id.0,
                    "class": class.as_str(),
                    "previous": done.previous.map(|c| c.as_str()),
                    "previous_kind": done.previous_kind.as_str(),
                    "kind": class.event_kind().as_str(),
                    "enrollments_stopped": done.effects.enrollments_stopped,
                    "deliveries_cancelled": done.effects.deliveries_cancelled,
                    "suppressed": done.effects.suppressed,
                }));
            } else {
                println!(
                    "Reply {} of lead {} classified {}{} (recorded as {}); {} sequence(s) stopped, {} queued send(s) cancelled{}.",
                    done.event_id,
                    done.lead_id.0,
                    class,
                    done.previous
                        .map(|p| format!(" (was {p})"))
                        .unwrap_or_default(),
                    class.event_kind(),
                    done.effects.enrollments_stopped,
                    done.effects.deliveries_cancelled,
                    if done.effects.suppressed {
                        "; the address is now suppressed"
                    } else {
                        ""
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
