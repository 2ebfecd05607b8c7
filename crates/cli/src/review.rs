//! `engager review list|show|approve|edit|reject`: AI-written messages of campaigns in review
//! mode wait for a person. Approved text goes out at its planned time; edited text passes the
//! same content checks as planned text (never unchecked); a rejected message is replaced by
//! the step's template, or dropped so the sequence moves on.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context as _, Result};
use chrono::Utc;
use clap::Subcommand;
use engager_domain::{DeliveryId, DeliveryState};
use engager_engine::planner::Planner;
use engager_engine::Catalog;
use engager_store::{DeliveryFilter, DeliveryRecord, ReviewResolution};
use serde_json::json;

use crate::commands::App;
use crate::output::{print_json, table, when};

/// `engager review`
#[derive(Debug, Subcommand)]
pub enum ReviewCommand {
    /// Messages waiting for review, oldest send time first.
    List {
        /// Only this campaign (its slug).
        #[arg(long)]
        campaign: Option<String>,
    },
    /// One message in full.
    Show {
        /// The delivery id.
        id: i64,
    },
    /// Send the message as written, at its planned time (or now, when that has passed).
    Approve {
        /// The delivery id.
        id: i64,
    },
    /// Replace the text (without the footer: Engager adds it), check it, and approve it.
    Edit {
        /// The delivery id.
        id: i64,
        /// New subject (email).
        #[arg(long)]
        subject: Option<String>,
        /// New body text.
        #[arg(long, conflicts_with = "body_file")]
        body: Option<String>,
        /// Read the new body text from a file.
        #[arg(long)]
        body_file: Option<PathBuf>,
    },
    /// Do not send the AI text: send the step's template instead, or with --drop send
    /// nothing for this step and move the sequence on.
    Reject {
        /// The delivery id.
        id: i64,
        /// Send nothing for this step.
        #[arg(long)]
        drop: bool,
        /// Why (kept with the delivery).
        #[arg(long, default_value = "rejected in review")]
        reason: String,
    },
}

async fn pending(app: &App, id: i64) -> Result<DeliveryRecord> {
    let rows = app
        .store
        .deliveries(&DeliveryFilter {
            state: Some(DeliveryState::PendingReview),
            ..Default::default()
        })
        .await?;
    rows.into_iter().find(|d| d.id.0 == id).ok_or_else(|| {
        anyhow!("delivery {id} is not waiting for review (see `engager review list`)")
    })
}

fn strip_footer(body: &str) -> &str {
    body.split("\n\n--\n").next().unwrap_or(body).trim_end()
}

pub async fn run(app: &App, command: ReviewCommand, json: bool) -> Result<ExitCode> {
    let now = Utc::now();
    let catalog = Catalog::load(app.store.as_ref()).await?;
    match command {
        ReviewCommand::List { campaign } => {
            let campaign_id = match &campaign {
                Some(slug) => Some(
                    catalog
                        .all()
                        .into_iter()
                        .find(|c| &c.slug == slug)
                        .map(|c| c.id)
                        .ok_or_else(|| anyhow!("--campaign {slug:?} is not a known campaign"))?,
                ),
                None => None,
            };
            let mut rows = app
                .store
                .deliveries(&DeliveryFilter {
                    state: Some(DeliveryState::PendingReview),
                    campaign: campaign_id,
                    ..Default::default()
                })
                .await?;
            rows.sort_by_key(|d| (d.send_at, d.id.0));
            if json {
                print_json(&json!(rows
                    .iter()
                    .map(|d| json!({
                        "id": d.id.0,
                        "lead_id": d.lead_id.0,
                        "campaign": catalog.get(d.campaign_id).map(|c| c.slug.clone()),
                        "step": d.step_index + 1,
                        "channel": d.channel.as_str(),
                        "send_at": d.send_at.to_rfc3339(),
                        "to": d.to_address,
                        "subject": d.subject,
                        "body_text": d.body_text,
                    }))
                    .collect::<Vec<_>>()));
            } else if rows.is_empty() {
                println!("Nothing waits for review.");
            } else {
                let mut t = table(&[
                    "Id",
                    "Lead",
                    "Campaign",
                    "Step",
                    "Channel",
                    "Send at",
                    "Subject / first line",
                ]);
                for d in &rows {
                    t.add_row(vec![
                        d.id.to_string(),
                        d.lead_id.to_string(),
                        catalog
                            .get(d.campaign_id)
                            .map_or_else(|| "?".into(), |c| c.slug.clone()),
                        (d.step_index + 1).to_string(),
                        d.channel.to_string(),
                        when(d.send_at),
                        d.subject
                            .clone()
                            .unwrap_or_else(|| d.body_text.lines().next().unwrap_or("").to_owned()),
                    ]);
                }
                println!("{t}\n{} message(s) wait for review: `engager review show|approve|edit|reject <id>`.", rows.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        ReviewCommand::Show { id } => {
            let d = pending(app, id).await?;
            if json {
                print_json(
                    &json!({"id": d.id.0, "to": d.to_address, "subject": d.subject, "body_text": d.body_text, "send_at": d.send_at.to_rfc3339()}),
                );
            } else {
                println!("To: {}\nSend at: {}", d.to_address, when(d.send_at));
                if let Some(s) = &d.subject {
                    println!("Subject: {s}");
                }
                println!("\n{}", d.body_text);
            }
            Ok(ExitCode::SUCCESS)
        }
        ReviewCommand::Approve { id } => {
            let d = pending(app, id).await?;
            resolve(
                app,
                d.id,
                ReviewResolution::Approve {
                    subject: d.subject.clone(),
                    body_text: d.body_text.clone(),
                    body_html: d.body_html.clone(),
                },
                json,
                "approved as written",
            )
            .await
        }
        ReviewCommand::Edit {
            id,
            subject,
            body,
            body_file,
        } => {
            let d = pending(app, id).await?;
            let body = match (body, body_file) {
                (Some(b), _) => b,
                (None, Some(path)) => std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
                (None, None) => strip_footer(&d.body_text).to_owned(),
            };
            if subject.is_none() && body.trim() == strip_footer(&d.body_text) {
                bail!(
                    "nothing to change: give --subject, --body or --body-file (or use `approve`)"
                );
            }
            let (lead, campaign) = lead_and_campaign(app, &catalog, &d).await?;
            let planner = Planner::new(app.store.as_ref(), &catalog, &app.engine);
            let content = planner
                .check_text(
                    &lead,
                    campaign,
                    d.step_index,
                    d.channel,
                    subject.or(d.subject.clone()),
                    body,
                )
                .map_err(|problems| {
                    anyhow!(
                        "the edited message fails the content checks: {}",
                        problems.join("; ")
                    )
                })?;
            resolve(
                app,
                d.id,
                ReviewResolution::Approve {
                    subject: content.subject,
                    body_text: content.body_text,
                    body_html: None,
                },
                json,
                "edited, checked and approved",
            )
            .await
        }
        ReviewCommand::Reject { id, drop, reason } => {
            let d = pending(app, id).await?;
            let (lead, campaign) = lead_and_campaign(app, &catalog, &d).await?;
            if drop {
                let next_due = campaign.step(d.step_index + 1).map(|_| now);
                return resolve(
                    app,
                    d.id,
                    ReviewResolution::Drop { reason, next_due },
                    json,
                    "dropped: nothing is sent for this step",
                )
                .await;
            }
            let planner = Planner::new(app.store.as_ref(), &catalog, &app.engine);
            let content = planner
                .template_text(&lead, campaign, d.step_index, d.channel, d.send_at.max(now))
                .map_err(|problems| anyhow!("the step's template fails the content checks for this lead: {} (use --drop)", problems.join("; ")))?;
            resolve(
                app,
                d.id,
                ReviewResolution::Approve {
                    subject: content.subject,
                    body_text: content.body_text,
                    body_html: content.body_html,
                },
                json,
                "rejected: the step's template goes out instead",
            )
            .await
        }
    }
}

async fn lead_and_campaign<'c>(
    app: &App,
    catalog: &'c Catalog,
    d: &DeliveryRecord,
) -> Result<(engager_domain::Lead, &'c engager_domain::Campaign)> {
    let lead = app
        .store
        .lead(d.lead_id)
        .await?
        .ok_or_else(|| anyhow!("lead {} no longer exists", d.lead_id))?;
    let campaign = catalog
        .get(d.campaign_id)
        .ok_or_else(|| anyhow!("the campaign of delivery {} no longer exists", d.id))?;
    Ok((lead, campaign))
}

async fn resolve(
    app: &App,
    id: DeliveryId,
    resolution: ReviewResolution,
    json: bool,
    what: &str,
) -> Result<ExitCode> {
    let done = app
        .store
        .resolve_review(id, &resolution, Utc::now())
        .await?;
    if !done {
        bail!("delivery {id} is no longer waiting for review");
    }
    if json {
        print_json(&json!({"id": id.0, "result": what}));
    } else {
        println!("Delivery {id}: {what}.");
    }
    Ok(ExitCode::SUCCESS)
}
