//! `engager ab list|results`: the A/B experiments of campaign steps and their results, judged
//! on positive replies (or conversions) with Wilson intervals, a two-proportion test against
//! the control, a minimum sample and guardrails on unsubscribes and complaints.

use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use chrono::{DateTime, Utc};
use clap::Subcommand;
use engager_domain::stats::{judge, ExperimentRules, VariantCounts, Verdict};
use engager_engine::report::{build, Dimension, Report};
use engager_engine::Catalog;
use engager_store::ReportQuery;
use serde_json::json;

use crate::commands::App;
use crate::output::{print_json, table};

/// `engager ab`
#[derive(Debug, Subcommand)]
pub enum AbCommand {
    /// Every step that runs an experiment: its variants, their weights and sends so far.
    List,
    /// The results of a campaign's experiments (or one step's), with the verdict.
    Results {
        /// The campaign's slug.
        campaign: String,
        /// Only this step (1-based).
        #[arg(long)]
        step: Option<usize>,
        /// What a variant wins by: positive-replies (default) or conversions.
        #[arg(long, default_value = "positive-replies")]
        metric: String,
        /// Sends every variant needs before any verdict.
        #[arg(long, default_value_t = 200)]
        min_sample: u64,
        /// Significance level (Bonferroni-corrected over the challengers).
        #[arg(long, default_value_t = 0.05)]
        alpha: f64,
    },
    /// Promote a variant by hand: every new lead gets it (leads already sent a variant keep
    /// theirs). Recorded in the audit log; undo with `ab reset`.
    Promote {
        /// The campaign's slug.
        campaign: String,
        /// The step (1-based).
        step: usize,
        /// The variant to promote.
        variant: String,
        /// Why (kept with the decision and in the audit log).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Undo a promotion (automatic or by hand): new leads get variants by the step's mode
    /// again, and automatic promotion stays off for the experiment until the next `ab promote`.
    Reset {
        /// The campaign's slug.
        campaign: String,
        /// The step (1-based).
        step: usize,
        /// Why (kept with the decision and in the audit log).
        #[arg(long, default_value = "")]
        note: String,
    },
}

fn decision_json(d: &engager_store::ExperimentDecision) -> serde_json::Value {
    json!({
        "state": d.state.as_str(),
        "variant": d.variant,
        "source": d.source,
        "reason": d.reason,
        "decided_at": d.decided_at.to_rfc3339(),
    })
}

fn decision_text(d: &engager_store::ExperimentDecision) -> String {
    match (&d.state, &d.variant) {
        (engager_store::DecisionState::Promoted, Some(v)) => format!(
            "variant {v} promoted {} on {} ({}): every new lead gets it",
            if d.source == "auto" {
                "automatically"
            } else {
                "by hand"
            },
            d.decided_at.format("%Y-%m-%d %H:%M UTC"),
            d.reason
        ),
        _ => format!(
            "promotion reset on {} ({}): automatic promotion off until the next `ab promote`",
            d.decided_at.format("%Y-%m-%d %H:%M UTC"),
            d.reason
        ),
    }
}

async fn all_time(app: &App, campaign: Option<String>) -> Result<Report> {
    let facts = app
        .store
        .report_facts(&ReportQuery {
            campaign,
            since: DateTime::<Utc>::UNIX_EPOCH,
            until: Utc::now() + chrono::Duration::days(3650),
        })
        .await?;
    Ok(build(&facts, Dimension::Variant, 0.95))
}

fn row_key(slug: &str, step: usize, variant: &str) -> String {
    format!("{slug} #{} {variant}", step + 1)
}

pub async fn run(app: &App, command: AbCommand, json: bool) -> Result<ExitCode> {
    let catalog = Catalog::load(app.store.as_ref()).await?;
    let decisions: std::collections::HashMap<String, engager_store::ExperimentDecision> = app
        .store
        .experiment_decisions()
        .await?
        .into_iter()
        .map(|d| (d.experiment.clone(), d))
        .collect();
    let find_step = |campaign: &str,
                     step: usize|
     -> Result<(&engager_domain::Campaign, &engager_domain::Step)> {
        let c = catalog
            .by_slug(campaign)
            .ok_or_else(|| anyhow!("{campaign:?} is not a known campaign"))?;
        let s = c.steps.get(step.wrapping_sub(1)).ok_or_else(|| {
            anyhow!(
                "campaign {campaign} has no step {step} (it has {})",
                c.steps.len()
            )
        })?;
        if s.variants.is_empty() {
            bail!("step {step} of {campaign} runs no experiment");
        }
        Ok((c, s))
    };
    match command {
        AbCommand::Promote {
            campaign,
            step,
            variant,
            note,
        } => {
            let (c, s) = find_step(&campaign, step)?;
            let d = engager_engine::experiments::promote(
                app.store.as_ref(),
                c,
                s,
                &variant,
                &note,
                Utc::now(),
            )
            .await?;
            if json {
                print_json(&json!({"experiment": d.experiment, "decision": decision_json(&d)}));
            } else {
                println!("{}: {}", d.experiment, decision_text(&d));
            }
            Ok(ExitCode::SUCCESS)
        }
        AbCommand::Reset {
            campaign,
            step,
            note,
        } => {
            let (c, s) = find_step(&campaign, step)?;
            let d = engager_engine::experiments::reset(app.store.as_ref(), c, s, &note, Utc::now())
                .await?;
            if json {
                print_json(&json!({"experiment": d.experiment, "decision": decision_json(&d)}));
            } else {
                println!("{}: {}", d.experiment, decision_text(&d));
            }
            Ok(ExitCode::SUCCESS)
        }
        AbCommand::List => {
            let report = all_time(app, None).await?;
            let mut experiments = Vec::new();
            for campaign in catalog.all() {
                for step in campaign.steps.iter().filter(|s| !s.variants.is_empty()) {
                    let total: u32 = step.variants.iter().map(|v| v.weight).sum();
                    let variants: Vec<_> = step
                        .variants
                        .iter()
                        .map(|v| {
                            let sent = report
                                .rows
                                .iter()
                                .find(|r| r.key == row_key(&campaign.slug, step.index, &v.name))
                                .map_or(0, |r| r.sent);
                            json!({
                                "name": v.name,
                                "weight": v.weight,
                                "share": f64::from(v.weight) / f64::from(total.max(1)),
                                "sent": sent,
                                "subject": v.template.subject,
                                "angle": v.angle,
                            })
                        })
                        .collect();
                    let experiment = step.experiment(&campaign.slug);
                    experiments.push(json!({
                        "experiment": experiment,
                        "campaign": campaign.slug,
                        "step": step.index + 1,
                        "step_name": step.name,
                        "mode": step.experiment.mode.as_str(),
                        "auto_promote": step.experiment.auto_promote,
                        "metric": step.experiment.metric.as_str(),
                        "decision": decisions.get(&experiment).map(decision_json),
                        "variants": variants,
                    }));
                }
            }
            if json {
                print_json(&json!(experiments));
            } else if experiments.is_empty() {
                println!("No step runs an experiment (add [[steps.variants]] to a campaign file).");
            } else {
                let mut t = table(&[
                    "Experiment",
                    "Step",
                    "Mode",
                    "Variant",
                    "Share",
                    "Sent",
                    "Subject",
                ]);
                for e in &experiments {
                    let mode = format!(
                        "{}{}{}",
                        e["mode"].as_str().unwrap_or(""),
                        if e["auto_promote"] == true {
                            ", auto-promote"
                        } else {
                            ""
                        },
                        match (
                            e["decision"]["state"].as_str(),
                            e["decision"]["variant"].as_str()
                        ) {
                            (Some("promoted"), Some(v)) => format!(", {v} promoted"),
                            (Some("reset"), _) => ", promotion reset".to_owned(),
                            _ => String::new(),
                        }
                    );
                    for v in e["variants"].as_array().into_iter().flatten() {
                        t.add_row(vec![
                            e["experiment"].as_str().unwrap_or("").to_owned(),
                            e["step_name"].as_str().unwrap_or("").to_owned(),
                            mode.clone(),
                            v["name"].as_str().unwrap_or("").to_owned(),
                            format!("{:.0}%", v["share"].as_f64().unwrap_or(0.0) * 100.0),
                            v["sent"].to_string(),
                            v["subject"].as_str().unwrap_or("–").to_owned(),
                        ]);
                    }
                }
                println!("{t}");
            }
            Ok(ExitCode::SUCCESS)
        }
        AbCommand::Results {
            campaign,
            step,
            metric,
            min_sample,
            alpha,
        } => {
            let conversions = match metric.as_str() {
                "positive-replies" => false,
                "conversions" => true,
                other => bail!("--metric {other:?}: expected positive-replies or conversions"),
            };
            if !(0.0..0.5).contains(&alpha) || alpha == 0.0 {
                bail!("--alpha {alpha}: expected a value in (0, 0.5)");
            }
            let c = catalog
                .all()
                .into_iter()
                .find(|c| c.slug == campaign)
                .ok_or_else(|| anyhow!("{campaign:?} is not a known campaign"))?;
            let steps: Vec<_> = c
                .steps
                .iter()
                .filter(|s| !s.variants.is_empty())
                .filter(|s| step.is_none_or(|n| s.index + 1 == n))
                .collect();
            if steps.is_empty() {
                bail!(
                    "{} of {campaign} runs no experiment",
                    step.map_or_else(|| "no step".to_owned(), |n| format!("step {n}"))
                );
            }
            let report = all_time(app, Some(campaign.clone())).await?;
            let rules = ExperimentRules {
                min_sample,
                alpha,
                confidence: 0.95,
            };
            let mut out = Vec::new();
            for s in steps {
                let counts: Vec<VariantCounts> = s
                    .variants
                    .iter()
                    .map(|v| {
                        let row = report
                            .rows
                            .iter()
                            .find(|r| r.key == row_key(&campaign, s.index, &v.name));
                        VariantCounts {
                            name: v.name.clone(),
                            delivered: row.map_or(0, |r| r.sent),
                            wins: row.map_or(0, |r| {
                                if conversions {
                                    r.conversions
                                } else {
                                    r.positive_replies
                                }
                            }),
                            unsubscribes: row.map_or(0, |r| r.unsubscribed),
                            complaints: row.map_or(0, |r| r.complaints),
                        }
                    })
                    .collect();
                let (verdict, results) = judge(&counts, &rules);
                out.push((s, verdict, results));
            }
            let verdict_text = |v: &Verdict| match v {
                Verdict::NeedsMoreData { variant, missing } => {
                    format!("needs more data: variant {variant} needs {missing} more sends")
                }
                Verdict::Winner { variant } => format!("variant {variant} wins"),
                Verdict::ControlHolds => "the control holds".to_owned(),
                Verdict::NoDifference => "no significant difference".to_owned(),
            };
            if json {
                print_json(&json!(out
                    .iter()
                    .map(|(s, verdict, results)| json!({
                        "experiment": s.experiment(&campaign),
                        "metric": metric,
                        "verdict": verdict_text(verdict),
                        "winner": match verdict { Verdict::Winner { variant } => Some(variant.clone()), _ => None },
                        "mode": s.experiment.mode.as_str(),
                        "auto_promote": s.experiment.auto_promote,
                        "decision": decisions.get(&s.experiment(&campaign)).map(decision_json),
                        "variants": results.iter().map(|r| json!({
                            "name": r.counts.name,
                            "sent": r.counts.delivered,
                            "wins": r.counts.wins,
                            "unsubscribes": r.counts.unsubscribes,
                            "complaints": r.counts.complaints,
                            "rate": r.rate,
                            "interval": r.interval.map(|i| json!([i.low, i.high])),
                            "versus_control": r.versus_control.map(|t| json!({"difference": t.difference, "z": t.z, "p_value": t.p_value})),
                            "guardrail_breaches": r.guardrail_breaches,
                        })).collect::<Vec<_>>(),
                    }))
                    .collect::<Vec<_>>()));
            } else {
                for (s, verdict, results) in &out {
                    println!(
                        "Experiment {} ({}), judged on {metric}: {}",
                        s.experiment(&campaign),
                        s.name,
                        verdict_text(verdict)
                    );
                    println!(
                        "Mode: {}{}",
                        s.experiment.mode.as_str(),
                        if s.experiment.auto_promote {
                            format!(
                                ", winner promoted automatically (judged on {}, min sample {}, alpha {})",
                                s.experiment.metric.as_str(),
                                s.experiment.min_sample,
                                s.experiment.alpha
                            )
                        } else {
                            String::new()
                        }
                    );
                    if let Some(d) = decisions.get(&s.experiment(&campaign)) {
                        println!("Decision: {}", decision_text(d));
                    }
                    let mut t = table(&[
                        "Variant",
                        "Sent",
                        "Wins",
                        "Rate [95%]",
                        "vs control",
                        "Guardrails",
                    ]);
                    for (i, r) in results.iter().enumerate() {
                        t.add_row(vec![
                            format!(
                                "{}{}",
                                r.counts.name,
                                if i == 0 { " (control)" } else { "" }
                            ),
                            r.counts.delivered.to_string(),
                            r.counts.wins.to_string(),
                            match (r.rate, r.interval) {
                                (Some(rate), Some(iv)) => format!(
                                    "{:.1}% [{:.1}–{:.1}]",
                                    rate * 100.0,
                                    iv.low * 100.0,
                                    iv.high * 100.0
                                ),
                                _ => "–".into(),
                            },
                            r.versus_control.map_or_else(
                                || "–".into(),
                                |t| {
                                    format!(
                                        "{:+.1} pts, p = {:.3}",
                                        t.difference * 100.0,
                                        t.p_value
                                    )
                                },
                            ),
                            if r.guardrail_breaches.is_empty() {
                                "ok".into()
                            } else {
                                r.guardrail_breaches.join("; ")
                            },
                        ]);
                    }
                    println!("{t}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
