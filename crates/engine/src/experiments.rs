//! A/B experiments at planning time: which variant a new lead gets (fixed weights, a bandit,
//! or a promoted winner), the lead keeping the variant it already got, and the automatic
//! promotion of a winner.
//!
//! Invariants:
//! - **Read once per pass.** Variant results and decisions are read once per planner pass
//!   (one aggregate query each), and the variants a page's leads already got once per page;
//!   assigning a lead reads nothing.
//! - **Deterministic.** The bandit's draws are a stable hash of (experiment, lead), so a re-run
//!   or a second process with the same results gives the same lead the same variant.
//! - **Sticky.** A lead keeps the variant of its earlier delivery at the step, whatever the
//!   experiment's mode or promotions since.
//! - **Recorded.** A promotion (automatic or by a person) and its undoing are stored with an
//!   audit-log entry in one transaction, and every trace says how its variant was chosen.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use engager_domain::campaign::{ExperimentMetric, ExperimentMode, Variant};
use engager_domain::stats::{bandit_choice, judge, VariantCounts, VariantResult, Verdict};
use engager_domain::{Campaign, CampaignId, LeadId, Step};
use engager_store::{
    AuditEntry, DecisionState, ExperimentDecision, Store, StoreError, VariantAssignment,
    VariantCountRow,
};
use tracing::info;

use crate::Catalog;

/// What the planner knows about experiments during one pass.
#[derive(Debug, Default)]
pub struct ExperimentBook {
    loaded: bool,
    counts: HashMap<(CampaignId, usize), Vec<VariantCounts>>,
    decisions: HashMap<String, ExperimentDecision>,
    kept: HashMap<(LeadId, CampaignId, usize), String>,
}

/// The variant a lead gets and how it was chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment<'c> {
    /// The variant.
    pub variant: &'c Variant,
    /// How it was chosen, for the trace (`weights 1:1`, `bandit: …`, `promoted winner …`).
    pub how: String,
}

/// The counts of a step's variants (in the step's order) from the stored rows, winning by the
/// step's metric.
pub fn step_counts(
    campaign: CampaignId,
    step: &Step,
    metric: ExperimentMetric,
    rows: &[VariantCountRow],
) -> Vec<VariantCounts> {
    step.variants
        .iter()
        .map(|v| {
            let row = rows.iter().find(|r| {
                r.campaign_id == campaign && r.step_index == step.index && r.variant == v.name
            });
            VariantCounts {
                name: v.name.clone(),
                delivered: row.map_or(0, |r| r.sent),
                wins: row.map_or(0, |r| match metric {
                    ExperimentMetric::PositiveReplies => r.positive,
                    ExperimentMetric::Conversions => r.conversions,
                }),
                unsubscribes: row.map_or(0, |r| r.unsubscribes),
                complaints: row.map_or(0, |r| r.complaints),
            }
        })
        .collect()
}

/// Why a verdict names its winner, with the figures (kept with the promotion).
pub fn winner_reason(
    winner: &str,
    results: &[VariantResult],
    metric: ExperimentMetric,
    min_sample: u64,
) -> String {
    let control = results.first();
    let this = results.iter().find(|r| r.counts.name == winner);
    match (control, this) {
        (Some(c), Some(w)) => format!(
            "{winner} beats the control {} on {}: {}/{} ({:.1}%) vs {}/{} ({:.1}%), p = {:.4}; every variant has at least {min_sample} sends; no guardrail breached",
            c.counts.name,
            metric.as_str(),
            w.counts.wins,
            w.counts.delivered,
            w.rate.unwrap_or(0.0) * 100.0,
            c.counts.wins,
            c.counts.delivered,
            c.rate.unwrap_or(0.0) * 100.0,
            w.versus_control.map_or(1.0, |t| t.p_value),
        ),
        _ => format!("{winner} wins"),
    }
}

impl ExperimentBook {
    /// Reads what the pass needs: every experiment's decision when some step runs an
    /// experiment, and the variants' results when some step runs a bandit or promotes
    /// automatically. An experiment with `auto_promote` whose verdict names a winner (and that
    /// no person reset) is promoted now: recorded with an audit entry, unless `dry_run`, in
    /// which case the promotion holds for this pass only.
    pub async fn load(
        store: &dyn Store,
        catalog: &Catalog,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<Self, StoreError> {
        let campaigns = catalog.all();
        let steps: Vec<(&Campaign, &Step)> = campaigns
            .iter()
            .flat_map(|c| c.steps.iter().map(move |s| (*c, s)))
            .filter(|(_, s)| !s.variants.is_empty())
            .collect();
        let mut book = Self::default();
        if steps.is_empty() {
            return Ok(book);
        }
        book.loaded = true;
        book.decisions = store
            .experiment_decisions()
            .await?
            .into_iter()
            .map(|d| (d.experiment.clone(), d))
            .collect();
        if !steps.iter().any(|(_, s)| s.experiment.is_adaptive()) {
            return Ok(book);
        }
        let rows = store.variant_counts().await?;
        for (campaign, step) in &steps {
            let settings = step.experiment;
            if !settings.is_adaptive() {
                continue;
            }
            let counts = step_counts(campaign.id, step, settings.metric, &rows);
            let experiment = step.experiment(&campaign.slug);
            if settings.auto_promote && !book.decisions.contains_key(&experiment) {
                let (verdict, results) = judge(&counts, &settings.rules());
                if let Verdict::Winner { variant } = verdict {
                    let reason =
                        winner_reason(&variant, &results, settings.metric, settings.min_sample);
                    let decision = ExperimentDecision {
                        experiment: experiment.clone(),
                        state: DecisionState::Promoted,
                        variant: Some(variant.clone()),
                        source: "auto".into(),
                        reason: reason.clone(),
                        decided_at: now,
                    };
                    if !dry_run {
                        store
                            .save_experiment_decision(
                                &decision,
                                &AuditEntry {
                                    at: now,
                                    action: "ab_promote".into(),
                                    subject: experiment.clone(),
                                    detail: format!(
                                        "variant {variant} promoted automatically: {reason}"
                                    ),
                                    actor: "planner".into(),
                                },
                            )
                            .await?;
                    }
                    info!(experiment = %experiment, variant = %variant, dry_run, "A/B winner promoted: new leads all get it.");
                    book.decisions.insert(experiment, decision);
                }
            }
            book.counts.insert((campaign.id, step.index), counts);
        }
        Ok(book)
    }

    /// Whether the variants leads already got must be read for each page (some experiment's
    /// assignment depends on state: a bandit or a promotion).
    pub fn needs_assignments(&self) -> bool {
        self.loaded && (!self.counts.is_empty() || !self.decisions.is_empty())
    }

    /// Remembers the variants a page's leads already got (replacing the previous page's).
    pub fn set_assignments(&mut self, assignments: Vec<VariantAssignment>) {
        self.kept.clear();
        for a in assignments {
            self.kept
                .entry((a.lead_id, a.campaign_id, a.step_index))
                .or_insert(a.variant);
        }
    }

    /// The latest decision on an experiment.
    pub fn decision(&self, experiment: &str) -> Option<&ExperimentDecision> {
        self.decisions.get(experiment)
    }

    /// The variant a lead gets at a step, and how it was chosen; `None` when the step runs no
    /// experiment. Without a loaded book (or for a fixed experiment with no decision) this is
    /// the stable hash over the weights.
    pub fn assign<'c>(
        &self,
        campaign: &Campaign,
        step: &'c Step,
        lead: LeadId,
    ) -> Option<Assignment<'c>> {
        if step.variants.is_empty() {
            return None;
        }
        let experiment = step.experiment(&campaign.slug);
        let named = |name: &str| step.variants.iter().find(|v| v.name == name);
        if let Some(v) = self
            .kept
            .get(&(lead, campaign.id, step.index))
            .and_then(|n| named(n))
        {
            return Some(Assignment {
                variant: v,
                how: "kept from the lead's earlier delivery at this step".into(),
            });
        }
        if let Some(d) = self
            .decisions
            .get(&experiment)
            .filter(|d| d.state == DecisionState::Promoted)
        {
            if let Some(v) = d.variant.as_deref().and_then(named) {
                return Some(Assignment {
                    variant: v,
                    how: format!(
                        "promoted winner ({} on {})",
                        if d.source == "auto" {
                            "automatically"
                        } else {
                            "by a person"
                        },
                        d.decided_at.format("%Y-%m-%d")
                    ),
                });
            }
        }
        if step.experiment.mode == ExperimentMode::Bandit {
            if let Some(counts) = self.counts.get(&(campaign.id, step.index)) {
                let i = bandit_choice(
                    &experiment,
                    &lead.0.to_string(),
                    counts,
                    step.experiment.floor,
                );
                let figures = counts
                    .iter()
                    .map(|c| format!("{} {}/{}", c.name, c.wins, c.delivered))
                    .collect::<Vec<_>>()
                    .join(", ");
                return step.variants.get(i).map(|v| Assignment {
                    variant: v,
                    how: format!(
                        "bandit: Thompson sampling on {} per send ({figures}), floor {:.0}% per variant",
                        step.experiment.metric.as_str(),
                        step.experiment.floor * 100.0
                    ),
                });
            }
        }
        step.variant_for(&campaign.slug, lead).map(|v| Assignment {
            variant: v,
            how: format!(
                "weights {}",
                step.variants
                    .iter()
                    .map(|v| v.weight.to_string())
                    .collect::<Vec<_>>()
                    .join(":")
            ),
        })
    }
}

/// Promotes a variant by hand (`engager ab promote`): new leads all get it. Fails when the
/// campaign or step runs no such variant.
pub async fn promote(
    store: &dyn Store,
    campaign: &Campaign,
    step: &Step,
    variant: &str,
    note: &str,
    now: DateTime<Utc>,
) -> Result<ExperimentDecision, PromoteError> {
    if !step.variants.iter().any(|v| v.name == variant) {
        return Err(PromoteError::NoSuchVariant {
            experiment: step.experiment(&campaign.slug),
            variant: variant.to_owned(),
            known: step.variants.iter().map(|v| v.name.clone()).collect(),
        });
    }
    let experiment = step.experiment(&campaign.slug);
    let decision = ExperimentDecision {
        experiment: experiment.clone(),
        state: DecisionState::Promoted,
        variant: Some(variant.to_owned()),
        source: "person".into(),
        reason: if note.is_empty() {
            "promoted by hand".into()
        } else {
            note.to_owned()
        },
        decided_at: now,
    };
    store
        .save_experiment_decision(
            &decision,
            &AuditEntry {
                at: now,
                action: "ab_promote".into(),
                subject: experiment,
                detail: format!("variant {variant} promoted by hand: {}", decision.reason),
                actor: "cli".into(),
            },
        )
        .await?;
    Ok(decision)
}

/// Undoes a promotion (`engager ab reset`): new leads get variants by the step's mode again,
/// and automatic promotion stays off for this experiment until the next `ab promote`.
pub async fn reset(
    store: &dyn Store,
    campaign: &Campaign,
    step: &Step,
    note: &str,
    now: DateTime<Utc>,
) -> Result<ExperimentDecision, PromoteError> {
    let experiment = step.experiment(&campaign.slug);
    let decision = ExperimentDecision {
        experiment: experiment.clone(),
        state: DecisionState::Reset,
        variant: None,
        source: "person".into(),
        reason: if note.is_empty() {
            "reset by hand".into()
        } else {
            note.to_owned()
        },
        decided_at: now,
    };
    store
        .save_experiment_decision(
            &decision,
            &AuditEntry {
                at: now,
                action: "ab_reset".into(),
                subject: experiment,
                detail: format!("promotion undone: {}", decision.reason),
                actor: "cli".into(),
            },
        )
        .await?;
    Ok(decision)
}

/// Why a promotion or reset was refused.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    /// The variant is not one of the step's.
    #[error("experiment {experiment} has no variant {variant:?} (its variants: {})", known.join(", "))]
    NoSuchVariant {
        /// The experiment.
        experiment: String,
        /// The name given.
        variant: String,
        /// The step's variants.
        known: Vec<String>,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
