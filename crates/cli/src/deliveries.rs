//! `engager deliveries`: deliveries whose outcome is unknown, and a person's resolution.

use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use engager_domain::{DeliveryId, DeliveryState};
use engager_engine::{Catalog, Clock, SystemClock};
use engager_store::{DeliveryFilter, FollowUp, Resolution, SendOutcome};
use serde_json::json;

use crate::commands::App;
use crate::output::{print_json, table, when};

/// `engager deliveries …`
#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// Deliveries whose send was interrupted: the provider may or may not have them.
    Unknown {
        /// At most this many rows.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Decide what happened to an unknown delivery.
    Resolve(ResolveArgs),
    /// Each sending account (several per channel with mailbox rotation): sent today, today's
    /// cap and what is left of it, circuit state.
    Accounts,
}

/// `engager deliveries resolve`
#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// The delivery id.
    pub id: i64,
    /// It went out (found in the provider's sent items, or the lead received it).
    #[arg(long, group = "resolution", required = true)]
    pub sent: bool,
    /// It did not go out: queue it again.
    #[arg(long, group = "resolution")]
    pub retry: bool,
    /// Do not send it; stop the lead's sequence.
    #[arg(long, group = "resolution")]
    pub drop: bool,
}

/// Runs `engager deliveries`.
pub async fn run(app: &App, command: DeliveriesCommand, json: bool) -> Result<ExitCode> {
    match command {
        DeliveriesCommand::Unknown { limit } => {
            let rows = app
                .store
                .deliveries(&DeliveryFilter {
                    state: Some(DeliveryState::Unknown),
                    limit: Some(limit),
                    ..Default::default()
                })
                .await?;
            let catalog = Catalog::load(app.store.as_ref()).await?;
            let slug = |id| {
                catalog
                    .get(id)
                    .map_or_else(|| id.to_string(), |c| c.slug.clone())
            };
            if json {
                print_json(&json!(rows.iter().map(|d| json!({"id": d.id.0, "lead_id": d.lead_id.0, "campaign": slug(d.campaign_id), "step": d.step_index + 1, "channel": d.channel.as_str(), "account": d.account, "to": d.to_address, "attempts": d.attempts, "since": d.updated_at.to_rfc3339(), "error": d.last_error})).collect::<Vec<_>>()));
            } else if rows.is_empty() {
                println!("No delivery has an unknown outcome.");
            } else {
                let mut t = table(&[
                    "Id", "Lead", "Campaign", "Step", "Channel", "Account", "To", "Since", "Why",
                ]);
                for d in &rows {
                    t.add_row(vec![
                        d.id.to_string(),
                        d.lead_id.to_string(),
                        slug(d.campaign_id),
                        (d.step_index + 1).to_string(),
                        d.channel.to_string(),
                        d.account.clone().unwrap_or_default(),
                        d.to_address.clone(),
                        when(d.updated_at),
                        d.last_error.clone().unwrap_or_default(),
                    ]);
                }
                println!("{t}");
                println!("Check the provider (sent items, message logs), then: engager deliveries resolve <id> --sent | --retry | --drop");
            }
        }
        DeliveriesCommand::Accounts => {
            let accounts = crate::commands::account_health(app).await?;
            if json {
                print_json(&json!(accounts.iter().map(|a| json!({
                    "account": a.account, "circuit": a.circuit,
                    "open_until": a.open_until.map(|t| t.to_rfc3339()),
                    "sent_today": a.sent_today, "cap_today": a.cap_today,
                    "left_today": a.cap_today.map(|c| u64::from(c).saturating_sub(a.sent_today)),
                })).collect::<Vec<_>>()));
            } else {
                let mut t = table(&[
                    "Account",
                    "Sent today",
                    "Cap today",
                    "Left today",
                    "Circuit",
                ]);
                for a in &accounts {
                    t.add_row(vec![
                        a.account.clone(),
                        a.sent_today.to_string(),
                        a.cap_today
                            .map_or_else(|| "no cap".into(), |c| c.to_string()),
                        a.cap_today.map_or_else(
                            || "no cap".into(),
                            |c| u64::from(c).saturating_sub(a.sent_today).to_string(),
                        ),
                        match a.open_until {
                            Some(until) => format!("{} until {}", a.circuit, when(until)),
                            None => a.circuit.clone(),
                        },
                    ]);
                }
                println!("{t}");
            }
        }
        DeliveriesCommand::Resolve(args) => {
            let now = SystemClock.now();
            let id = DeliveryId(args.id);
            let rows = app
                .store
                .deliveries(&DeliveryFilter {
                    state: Some(DeliveryState::Unknown),
                    ..Default::default()
                })
                .await?;
            let Some(row) = rows.into_iter().find(|d| d.id == id) else {
                bail!(
                    "delivery {} is not in state unknown (see `engager deliveries unknown`)",
                    args.id
                );
            };
            let done = if args.sent {
                let catalog = Catalog::load(app.store.as_ref()).await?;
                let next = catalog
                    .get(row.campaign_id)
                    .and_then(|c| c.step(row.step_index + 1))
                    .map_or(FollowUp::Complete, |s| FollowUp::NextStepAt(now + s.delay));
                let outcome = SendOutcome::Sent {
                    provider_ref: row
                        .provider_ref
                        .clone()
                        .unwrap_or_else(|| "confirmed by a person".into()),
                };
                app.store
                    .record_outcome(id, row.fencing_token, &outcome, &next, now)
                    .await?
            } else {
                let resolution = if args.retry {
                    Resolution::Retry
                } else {
                    Resolution::Drop
                };
                let reason = if args.retry {
                    "a person confirmed it was not sent; queued again"
                } else {
                    "dropped by a person"
                };
                app.store
                    .resolve_unknown(id, resolution, reason, now)
                    .await?
            };
            if !done {
                return Err(anyhow!(
                    "delivery {} changed meanwhile; nothing written",
                    args.id
                ));
            }
            let what = if args.sent {
                "recorded as sent"
            } else if args.retry {
                "queued again"
            } else {
                "dropped"
            };
            if json {
                print_json(&json!({"id": args.id, "resolved": what}));
            } else {
                println!("Delivery {} {what}.", args.id);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
