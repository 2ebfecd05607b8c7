//! `engager preview --lead X --campaign Y --step N`: the insights, the prompt, the model's
//! output and the gate's checks for one message, without planning or sending anything.
//! With `[ai]` disabled it shows the prompt that would be sent and the template.
//! The outcome goes through the same cache as the planner, so a preview costs a model call
//! once and a later `engager run` reuses it.

use std::process::ExitCode;

use anyhow::{anyhow, Result};
use clap::Args;
use engager_ai::personalize::DraftOutcome;
use engager_ai::{lead_context, SenderFacts};
use engager_domain::Channel;
use engager_engine::personalization::{earlier_messages, DraftInput, DraftSource};
use engager_engine::timing::lead_place;
use engager_engine::{Catalog, Clock, SystemClock};
use serde_json::json;

use crate::commands::{find_lead, App};
use crate::output::print_json;

/// `engager preview`
#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// Lead id or email address.
    #[arg(long)]
    pub lead: String,
    /// Campaign slug.
    #[arg(long)]
    pub campaign: String,
    /// Step number (1 is the first step).
    #[arg(long, default_value_t = 1)]
    pub step: usize,
    /// Channel (default: the step's first channel the lead can be reached on).
    #[arg(long)]
    pub channel: Option<String>,
}

/// Runs the command.
pub async fn run(app: &App, args: PreviewArgs, json: bool) -> Result<ExitCode> {
    let catalog = Catalog::load(app.store.as_ref()).await?;
    let campaign = catalog.by_slug(&args.campaign).ok_or_else(|| {
        anyhow!(
            "no campaign {:?} (see `engager campaign list`)",
            args.campaign
        )
    })?;
    let index = args
        .step
        .checked_sub(1)
        .filter(|i| *i < campaign.steps.len())
        .ok_or_else(|| {
            anyhow!(
                "campaign {} has steps 1 to {}; --step {} does not exist",
                campaign.slug,
                campaign.steps.len(),
                args.step
            )
        })?;
    let step = &campaign.steps[index];
    let lead = find_lead(app.store.as_ref(), &args.lead).await?;
    let channel = match &args.channel {
        Some(name) => {
            let channel: Channel = name
                .parse()
                .map_err(|_| anyhow!("--channel {name:?}: expected email, sms or linkedin"))?;
            if !step.channels.contains(&channel) {
                return Err(anyhow!("step {} does not use {channel}", args.step));
            }
            channel
        }
        None => *step
            .channels
            .iter()
            .find(|c| lead.reachable_on(**c))
            .ok_or_else(|| {
                anyhow!(
                    "the lead cannot be reached on any channel of step {}",
                    args.step
                )
            })?,
    };
    let now = SystemClock.now();
    let zone = lead_place(&app.engine, &lead).zone.zone;
    let sender = SenderFacts {
        name: app.engine.sender.name.clone(),
        company: app.engine.sender_company.clone(),
    };
    let since = now - app.engine.timing.history.max(chrono::Duration::days(7));
    let history = app
        .store
        .contact_history(&[lead.id], since)
        .await?
        .remove(&lead.id)
        .unwrap_or_default();
    let context = engager_ai::with_insights(
        lead_context(&lead, zone, now, &sender, index),
        &engager_ai::insights::analyse(&history, &[], zone, now),
    );
    let (template_name, template, _) =
        engager_engine::catalog::step_templates(campaign, step, lead.id);
    let rendered = catalog
        .templates()
        .render(&template_name, index, template, &context)
        .map_err(|e| anyhow!("the step's template cannot be rendered for this lead: {e}"))?;
    let earlier = earlier_messages(app.store.as_ref(), lead.id).await?;
    let stage = app.settings.ai.stage(&app.config_dir, &app.engine)?;
    let prepared = stage.prepare(&DraftInput {
        lead: &lead,
        campaign,
        step_index: index,
        channel,
        history: &history,
        earlier: &earlier,
        rendered: &rendered,
        zone,
        sender: &sender,
        now,
        variant: step.variant_for(&campaign.slug, lead.id),
    });
    let outcome: Option<(DraftOutcome, DraftSource)> = if app.settings.ai.enabled {
        stage
            .outcomes(app.store.as_ref(), std::slice::from_ref(&prepared), now)
            .await?
            .pop()
    } else {
        None
    };

    if json {
        print_json(&json!({
            "lead": {"id": lead.id.0, "name": lead.display_name()},
            "campaign": campaign.slug, "step": args.step, "channel": channel.as_str(),
            "ai_enabled": app.settings.ai.enabled,
            "model": stage.personalizer().client().model(),
            "insights": prepared.insights,
            "prompt": {"system": prepared.prompt.system, "user": prepared.prompt.user},
            "cache_key": prepared.key,
            "outcome": outcome.as_ref().map(|(o, _)| o),
            "source": outcome.as_ref().map(|(_, s)| match s { DraftSource::Cache => "cache", DraftSource::Model => "model" }),
            "tokens": stage.counts().tokens,
            "template": {"subject": rendered.subject, "body": rendered.body_text},
        }));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "Lead {} ({}) · campaign {} step {} ({}) · {channel}",
        lead.id,
        lead.display_name(),
        campaign.slug,
        args.step,
        step.name
    );
    println!("\nInsights:");
    for line in prepared.insights.lines() {
        println!("  - {line}");
    }
    println!(
        "\nPrompt for {} (cache key {}):",
        stage.personalizer().client().model(),
        &prepared.key[..16]
    );
    println!("--- system ---\n{}", prepared.prompt.system.trim_end());
    println!("--- user ---\n{}", prepared.prompt.user.trim_end());
    println!("--------------");
    match &outcome {
        None => println!("\n[ai] is disabled: the template below is what would be sent."),
        Some((outcome, source)) => {
            println!("\nOutput ({source}): {}", outcome.describe());
            if let Some(draft) = outcome.draft() {
                if channel == Channel::Email {
                    println!("Subject: {}", draft.subject);
                }
                println!(
                    "{}\n(rationale: {})",
                    draft.body.trim_end(),
                    draft.rationale
                );
            }
            let report = match outcome {
                DraftOutcome::Accepted { report, .. } => Some(report),
                DraftOutcome::Fallback { report, .. } => report.as_ref(),
            };
            if let Some(report) = report {
                println!("\nChecks (score {:.2}):", report.score);
                for c in &report.checks {
                    let mark = if c.passed { "✓" } else { "✗" };
                    println!("  {mark} {:<9} {}", c.check, c.detail);
                }
            }
        }
    }
    println!("\nTemplate (the fallback):");
    if let Some(subject) = &rendered.subject {
        println!("Subject: {subject}");
    }
    println!("{}", rendered.body_text.trim_end());
    println!("\nNothing was planned or sent.");
    Ok(ExitCode::SUCCESS)
}
