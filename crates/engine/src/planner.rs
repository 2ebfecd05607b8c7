//! The planner: for every due enrollment, runs the decision pipeline — compliance,
//! frequency, channel, personalization, content checks, timing — and records the outcome
//! with its trace in one transaction per batch.
//!
//! Invariant: every evaluation writes a trace, and a delivery is only planned when every
//! gate passed; rendered text that failed a check is never stored for sending.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};
use engager_ai::personalize::DraftOutcome;
use engager_ai::{lead_context, SenderFacts};
use engager_domain::frequency::{BudgetVerdict, ContactBudget};
use engager_domain::links::lead_token;
use engager_domain::schedule::{
    choose_slot, earliest_step_due, follow_up, weekday_name, BestTime, FollowUp, QuietHours,
    Reaction, SlotChoice,
};
use engager_domain::sms::{has_stop_wording, sms_segments};
use engager_domain::timing::SendWindow;
use engager_domain::{
    stable_hash, unit_fraction, Campaign, Channel, EnrollmentId, Gate, GateResult, Lead,
    LeadHistory, LeadId, LeadStatus, Step, Touch,
};
use engager_store::{
    DueEnrollment, Evaluation, GateRow, NewDelivery, PlanDecision, Store, StoreError,
    SuppressionKey, SuppressionRecord, TraceRecord,
};

use crate::personalization::{
    draft_rendered, earlier_messages, AiPersonalization, DraftInput, DraftSource,
};
use crate::timing::{best_time_enabled, lead_place, lead_scores, slot_rules, LeadPlace};
use crate::{Catalog, EngineConfig};

/// LinkedIn's limit for a connection-request note.
pub const LINKEDIN_NOTE_LIMIT: usize = 300;

/// What one planner pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanReport {
    /// Enrollments evaluated.
    pub evaluated: usize,
    /// Deliveries planned.
    pub planned: usize,
    /// Evaluations deferred (frequency budget).
    pub deferred: usize,
    /// Steps skipped.
    pub skipped: usize,
    /// Sequences stopped.
    pub stopped: usize,
    /// Counts by outcome and reason code (`skipped:no_channel`, ...).
    pub by_code: BTreeMap<String, usize>,
    /// The deliveries planned (or that would be, in a dry run).
    pub plans: Vec<PlannedPreview>,
    /// Where the pass spent its time.
    pub phases: PlanPhases,
}

/// Wall time of each phase of a planning pass, summed over its pages: what `engager bench
/// planner` prints to show where a pass goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanPhases {
    /// Reading the due enrollments, page by page.
    pub due: std::time::Duration,
    /// Reading what the gates need: histories, suppressions, failed channels, assignments.
    pub context: std::time::Duration,
    /// Running the gates and rendering the templates (in memory).
    pub evaluate: std::time::Duration,
    /// Writing traces and planned deliveries.
    pub record: std::time::Duration,
}

/// One planned delivery, for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPreview {
    /// The lead.
    pub lead_id: LeadId,
    /// Campaign slug.
    pub campaign: String,
    /// Step (1-based for display).
    pub step: usize,
    /// Channel.
    pub channel: Channel,
    /// Due time.
    pub send_at: DateTime<Utc>,
    /// Recipient.
    pub to: String,
    /// Subject or first line.
    pub summary: String,
}

/// The planner, bound to a store, the loaded campaigns and the configuration.
pub struct Planner<'a> {
    store: &'a dyn Store,
    catalog: &'a Catalog,
    config: &'a EngineConfig,
    open_circuits: HashMap<Channel, DateTime<Utc>>,
    /// Why a channel of `open_circuits` cannot send, when it is not a circuit (a halt).
    unavailable_why: HashMap<Channel, String>,
    ai: Option<&'a AiPersonalization>,
    /// The AI outcomes of the current page, by (enrollment, step, channel), filled by
    /// `prepare_drafts` before the page is evaluated.
    drafts: Mutex<HashMap<DraftSlot, (DraftOutcome, DraftSource)>>,
    /// What similar leads did per channel, read once per pass when a step offers a choice.
    similar: std::sync::OnceLock<crate::similar::SimilarLeads>,
    /// A/B experiments' results, decisions and the page's kept variants (read once per pass
    /// and page; see `experiments`).
    experiments: Mutex<crate::experiments::ExperimentBook>,
    /// The compliance validators, with the sender's identity.
    rules: engager_domain::compliance::ComplianceRules,
    /// Campaigns halted for compliance (read at the start of each pass), with the reason.
    halted: std::sync::RwLock<HashMap<engager_domain::CampaignId, String>>,
    /// Where a new compliance halt is reported.
    alerter: Option<&'a crate::alerts::Alerter>,
}

type DraftSlot = (EnrollmentId, usize, Channel);

impl<'a> Planner<'a> {
    /// A planner.
    pub fn new(store: &'a dyn Store, catalog: &'a Catalog, config: &'a EngineConfig) -> Self {
        Self {
            store,
            catalog,
            config,
            open_circuits: HashMap::new(),
            unavailable_why: HashMap::new(),
            ai: None,
            drafts: Mutex::new(HashMap::new()),
            similar: std::sync::OnceLock::new(),
            experiments: Mutex::new(crate::experiments::ExperimentBook::default()),
            rules: crate::compliance::rules(config),
            halted: std::sync::RwLock::new(HashMap::new()),
            alerter: None,
        }
    }

    /// Reports compliance halts of campaigns to administrators through `alerter`.
    pub fn with_alerts(mut self, alerter: &'a crate::alerts::Alerter) -> Self {
        self.alerter = Some(alerter);
        self
    }

    /// Campaigns halted for compliance, as read at the start of the last pass.
    pub fn halted_campaigns(&self) -> HashMap<engager_domain::CampaignId, String> {
        self.halted.read().map(|h| h.clone()).unwrap_or_default()
    }

    /// Personalizes with AI (when `Some`): each page's messages are drafted, checked and cached
    /// before the page is evaluated; the template stays the fallback.
    pub fn with_ai(mut self, ai: Option<&'a AiPersonalization>) -> Self {
        self.ai = ai;
        self
    }

    /// Channels whose sending account's circuit is open, and until when: the channel gate
    /// falls back to the step's next channel, or defers when none is left (never burns).
    pub fn with_open_circuits(mut self, open: HashMap<Channel, DateTime<Utc>>) -> Self {
        self.open_circuits = open;
        self
    }

    /// Channels that cannot send for another reason than a circuit — the deliverability
    /// monitor halted the channel, or every one of its sending accounts — with until when
    /// the planner plans around them and why: the channel gate treats them like an open
    /// circuit (the step's next channel, or a later pass) and the trace gives the reason.
    pub fn with_unavailable_channels(
        mut self,
        unavailable: HashMap<Channel, (DateTime<Utc>, String)>,
    ) -> Self {
        for (channel, (until, why)) in unavailable {
            let held = self.open_circuits.entry(channel).or_insert(until);
            *held = (*held).max(until);
            self.unavailable_why.insert(channel, why);
        }
        self
    }

    fn lock_experiments(&self) -> std::sync::MutexGuard<'_, crate::experiments::ExperimentBook> {
        self.experiments
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What a lead gets at a step: the compiled templates' name, the templates, the A/B
    /// variant (kept, promoted, bandit or weights; see `experiments`) and how it was chosen.
    fn step_templates<'c>(
        &self,
        campaign: &Campaign,
        step: &'c Step,
        lead: LeadId,
    ) -> (
        String,
        &'c engager_domain::campaign::StepTemplate,
        Option<&'c engager_domain::campaign::Variant>,
        String,
    ) {
        match self.lock_experiments().assign(campaign, step, lead) {
            Some(a) => (
                crate::catalog::variant_template_name(&campaign.slug, &a.variant.name),
                &a.variant.template,
                Some(a.variant),
                a.how,
            ),
            None => (campaign.slug.clone(), &step.template, None, String::new()),
        }
    }

    /// Evaluates every enrollment due at `now` (at most `limit`), recording the outcomes
    /// unless `dry_run`.
    pub async fn plan_due(
        &self,
        now: DateTime<Utc>,
        limit: Option<usize>,
        dry_run: bool,
    ) -> Result<PlanReport, StoreError> {
        let mut report = PlanReport::default();
        let mut after = None;
        // Campaigns whose configuration or templates break a rule are halted before anything
        // of them is evaluated; a halt lasts until a person resumes the fixed campaign.
        let halted = crate::compliance::enforce_campaigns(
            self.store,
            self.catalog,
            &self.rules,
            self.alerter,
            now,
            dry_run,
        )
        .await?;
        if let Ok(mut h) = self.halted.write() {
            *h = halted;
        }
        // Touches planned during this pass and not yet visible to the store, so two campaigns
        // of one lead see each other.
        let mut fresh_touches: HashMap<LeadId, Vec<Touch>> = HashMap::new();
        let history_since = now - self.config.timing.history.max(Duration::days(7));
        // Channel choice learns from the last 90 days of similar leads, when some step offers
        // a choice of channels.
        let choices = self
            .catalog
            .all()
            .iter()
            .any(|c| c.steps.iter().any(|s| s.channels.len() > 1));
        if choices && self.similar.get().is_none() {
            let rows = self
                .store
                .channel_evidence(now - Duration::days(90))
                .await?;
            let _ = self
                .similar
                .set(crate::similar::SimilarLeads::from_rows(&rows));
        }
        let book = crate::experiments::ExperimentBook::load(self.store, self.catalog, now, dry_run)
            .await?;
        let needs_assignments = book.needs_assignments();
        *self.lock_experiments() = book;
        loop {
            let remaining = limit.map(|l| l.saturating_sub(report.evaluated));
            if remaining == Some(0) {
                break;
            }
            let page = remaining.map_or(self.config.batch_size, |r| r.min(self.config.batch_size));
            let clock = std::time::Instant::now();
            let due = self.store.due_enrollments(now, after, page).await?;
            report.phases.due += clock.elapsed();
            if due.is_empty() {
                break;
            }
            let clock = std::time::Instant::now();
            after = due.last().map(DueEnrollment::cursor);
            let lead_ids: Vec<LeadId> = due
                .iter()
                .map(|d| d.lead.id)
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            if needs_assignments {
                let kept = self.store.variant_assignments(&lead_ids).await?;
                self.lock_experiments().set_assignments(kept);
            }
            let mut histories = self.store.contact_history(&lead_ids, history_since).await?;
            if !fresh_touches.is_empty() {
                for lead in &lead_ids {
                    if let Some(extra) = fresh_touches.get(lead) {
                        let history = histories.entry(*lead).or_default();
                        history.touches.extend(extra.iter().copied());
                        history.touches.sort_by_key(|t| t.at);
                    }
                }
            }
            // Leads of one company share their domain key: each value is looked up once.
            let keys: Vec<SuppressionKey> = due
                .iter()
                .flat_map(|d| suppression_keys(&d.lead))
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            let suppressed = self.store.suppressed(&keys).await?;
            // Channels that already failed for good at a step (a fallback that had to wait):
            // the step is planned again without them.
            let enrollment_ids: Vec<EnrollmentId> = due.iter().map(|d| d.enrollment.id).collect();
            let mut failed: HashMap<(EnrollmentId, usize), Vec<(Channel, String)>> = HashMap::new();
            for f in self.store.failed_channels(&enrollment_ids).await? {
                failed
                    .entry((f.enrollment_id, f.step_index))
                    .or_default()
                    .push((f.channel, f.error));
            }
            if self.ai.is_some() {
                self.prepare_drafts(&due, &histories, &suppressed, &failed, now)
                    .await?;
            }
            report.phases.context += clock.elapsed();
            let clock = std::time::Instant::now();
            let mut evaluations = Vec::with_capacity(due.len());
            for d in &due {
                let Some(campaign) = self.catalog.get(d.enrollment.campaign_id) else {
                    continue;
                };
                let history = histories.entry(d.lead.id).or_default();
                let excluded = failed
                    .get(&(d.enrollment.id, d.enrollment.current_step))
                    .map_or(&[][..], Vec::as_slice);
                let evaluation =
                    self.evaluate_excluding(d, campaign, history, &suppressed, excluded, now);
                if let PlanDecision::Plan(delivery) | PlanDecision::Review(delivery) =
                    &evaluation.decision
                {
                    let touch = Touch {
                        at: delivery.send_at,
                        channel: delivery.channel,
                        sent: false,
                        delivery: None,
                        step: Some((d.enrollment.id, d.enrollment.current_step)),
                    };
                    history.touches.push(touch);
                    fresh_touches.entry(d.lead.id).or_default().push(touch);
                }
                match &evaluation.decision {
                    // Previews are kept for dry runs only, so a large pass stays flat in memory.
                    PlanDecision::Plan(delivery) if dry_run => report.plans.push(PlannedPreview {
                        lead_id: d.lead.id,
                        campaign: campaign.slug.clone(),
                        step: evaluation.trace.step_index + 1,
                        channel: delivery.channel,
                        send_at: delivery.send_at,
                        to: delivery.to_address.clone(),
                        summary: delivery.subject.clone().unwrap_or_else(|| {
                            delivery.body_text.lines().next().unwrap_or("").to_owned()
                        }),
                    }),
                    _ => {}
                }
                tally(&mut report, &evaluation);
                evaluations.push(evaluation);
            }
            report.phases.evaluate += clock.elapsed();
            if !dry_run {
                let clock = std::time::Instant::now();
                self.store.record_evaluations(&evaluations, now).await?;
                report.phases.record += clock.elapsed();
                // Recorded deliveries are now visible to the store's touches query.
                fresh_touches.clear();
            }
        }
        Ok(report)
    }

    /// Runs the pipeline for one due enrollment, given the lead's recent touches and events
    /// across all campaigns. Pure apart from reading its arguments.
    pub fn evaluate(
        &self,
        due: &DueEnrollment,
        campaign: &Campaign,
        history: &LeadHistory,
        suppressed: &[SuppressionRecord],
        now: DateTime<Utc>,
    ) -> Evaluation {
        self.evaluate_excluding(due, campaign, history, suppressed, &[], now)
    }

    /// Like [`Planner::evaluate`], with channels that already failed for good at this step
    /// (and why): the channel gate passes over them, and the trace says the step "fell back
    /// from <failed> to <chosen>: <error>". The dispatcher calls this when a channel fails
    /// permanently, so the fallback goes through every gate like any planned delivery.
    pub fn evaluate_excluding(
        &self,
        due: &DueEnrollment,
        campaign: &Campaign,
        history: &LeadHistory,
        suppressed: &[SuppressionRecord],
        excluded: &[(Channel, String)],
        now: DateTime<Utc>,
    ) -> Evaluation {
        let lead = &due.lead;
        let step_index = due.enrollment.current_step;
        let mut gates: Vec<GateResult> = Vec::new();
        let finish = |gates: Vec<GateResult>,
                      decision: PlanDecision,
                      outcome: &str,
                      code: Option<&str>,
                      channel: Option<Channel>,
                      at: Option<DateTime<Utc>>| Evaluation {
            trace: TraceRecord {
                enrollment_id: due.enrollment.id,
                campaign_id: campaign.id,
                lead_id: lead.id,
                step_index,
                evaluated_at: now,
                outcome: outcome.to_owned(),
                code: code.map(str::to_owned),
                channel,
                at,
                gates: gates
                    .into_iter()
                    .map(|g| GateRow {
                        gate: g.gate.as_str().to_owned(),
                        passed: g.passed,
                        reason: g.reason,
                    })
                    .collect(),
            },
            decision,
        };
        let Some(step) = campaign.step(step_index) else {
            gates.push(GateResult::fail(
                Gate::Channel,
                format!("the campaign has no step {}", step_index + 1),
            ));
            return finish(
                gates,
                PlanDecision::Stop {
                    reason: "no_such_step".into(),
                },
                "stopped",
                Some("no_such_step"),
                None,
                None,
            );
        };

        // 1. Compliance: lead status and suppression list.
        let hits: Vec<&SuppressionRecord> = suppressed
            .iter()
            .filter(|s| suppression_keys(lead).contains(&s.key))
            .collect();
        if lead.status != LeadStatus::Active {
            gates.push(GateResult::fail(
                Gate::Compliance,
                format!("the lead is {}", lead.status),
            ));
            let code = lead.status.as_str();
            return finish(
                gates,
                PlanDecision::Stop {
                    reason: code.into(),
                },
                "stopped",
                Some(code),
                None,
                None,
            );
        }
        if let Some(reason) = self
            .halted
            .read()
            .ok()
            .and_then(|h| h.get(&campaign.id).cloned())
        {
            gates.push(GateResult::fail(
                Gate::Compliance,
                format!(
                    "campaign halted for compliance: {reason}; nothing of it is planned until the problem is fixed and a person runs `engager compliance resume {}`",
                    campaign.slug
                ),
            ));
            let until = now + Duration::minutes(15);
            return finish(
                gates,
                PlanDecision::Defer { until },
                "deferred",
                Some("campaign_halted"),
                None,
                Some(until),
            );
        }
        // Consent evidence: the stored records (read with the history) and the lead's own
        // imported fields.
        let derived = crate::compliance::field_consents(lead);
        let merged;
        let consents: &[engager_domain::compliance::ConsentRecord] = if derived.is_empty() {
            &history.consents
        } else {
            merged = crate::compliance::merge_consents(lead, history.consents.clone());
            &merged
        };
        if let Some(objection) = engager_domain::compliance::objection(consents) {
            gates.push(GateResult::fail(
                Gate::Compliance,
                format!(
                    "objection to direct marketing on record ({}): never contacted again",
                    objection.describe()
                ),
            ));
            return finish(
                gates,
                PlanDecision::Stop {
                    reason: "objected".into(),
                },
                "stopped",
                Some("objected"),
                None,
                None,
            );
        }
        let blocked = |channel: Channel| -> Option<String> {
            hits.iter()
                .find(|h| match (&h.key, channel) {
                    (SuppressionKey::Email(_) | SuppressionKey::Domain(_), Channel::Email) => true,
                    (SuppressionKey::Phone(_), Channel::Sms) => true,
                    _ => false,
                })
                .map(|h| {
                    format!(
                        "{} {} is suppressed ({}, {})",
                        h.key.kind(),
                        h.key.value(),
                        h.reason,
                        h.source
                    )
                })
        };
        let reachable_unsuppressed = Channel::ALL
            .iter()
            .any(|c| lead.reachable_on(*c) && blocked(*c).is_none());
        if !reachable_unsuppressed {
            let why = hits
                .iter()
                .map(|h| format!("{} {} ({})", h.key.kind(), h.key.value(), h.reason))
                .collect::<Vec<_>>()
                .join("; ");
            gates.push(GateResult::fail(
                Gate::Compliance,
                format!("every contact point is suppressed: {why}"),
            ));
            return finish(
                gates,
                PlanDecision::Stop {
                    reason: "suppressed".into(),
                },
                "stopped",
                Some("suppressed"),
                None,
                None,
            );
        }
        gates.push(GateResult::pass(
            Gate::Compliance,
            if hits.is_empty() {
                "lead active; no contact point on the suppression list".to_owned()
            } else {
                format!(
                    "lead active; {} suppressed contact point(s) will not be used",
                    hits.len()
                )
            },
        ));

        // 2. Frequency: one budget across all campaigns and channels, with fatigue, the
        // cooldown after a reply and negative signals.
        let budget =
            ContactBudget::new(self.config.frequency, self.config.budget, &campaign.budget);
        match budget.check(history, now) {
            BudgetVerdict::Clear(state) => {
                gates.push(GateResult::pass(Gate::Frequency, state.describe()))
            }
            BudgetVerdict::Hold {
                until,
                code,
                reason,
            } => {
                gates.push(GateResult::fail(
                    Gate::Frequency,
                    format!(
                        "{reason}; next try at {}",
                        until.format("%Y-%m-%d %H:%M UTC")
                    ),
                ));
                return finish(
                    gates,
                    PlanDecision::Defer { until },
                    "deferred",
                    Some(code),
                    None,
                    Some(until),
                );
            }
            BudgetVerdict::End { code, reason } => {
                gates.push(GateResult::fail(Gate::Frequency, reason));
                return finish(
                    gates,
                    PlanDecision::Stop {
                        reason: code.into(),
                    },
                    "stopped",
                    Some(code),
                    None,
                    None,
                );
            }
        }

        // Follow-ups by behaviour: the delay adapts to the reaction to the previous step.
        let place = lead_place(self.config, lead);
        let follow = self.follow_up(due, step, history, &place, now);
        if let Some(f) = follow.as_ref().filter(|f| f.due > now) {
            let until = if f.recheck > now { f.recheck } else { f.due };
            gates.push(GateResult::fail(
                Gate::Timing,
                format!(
                    "{}; due {}, looking again at {}",
                    f.reason,
                    f.due.format("%Y-%m-%d %H:%M UTC"),
                    until.format("%Y-%m-%d %H:%M UTC")
                ),
            ));
            return finish(
                gates,
                PlanDecision::Defer { until },
                "deferred",
                Some("follow_up"),
                None,
                Some(until),
            );
        }

        // 3. Channel: the step's first preference the lead can be reached on, within the
        // channel's own limit. An ignored email moves email to the end of the preferences.
        let next_due = campaign
            .step(step_index + 1)
            .map(|next| earliest_step_due(next, now, place.zone.zone, place.holidays));
        let demote_email = follow.as_ref().is_some_and(|f| f.prefer_other_channel)
            && step.channels.iter().any(|c| *c != Channel::Email);
        // The step's channels in score order: the step's order, the lead's stated preference
        // (`preferred_channel`), its engagement per channel, and similar leads' results.
        let preferred = lead
            .profile
            .custom
            .get("preferred_channel")
            .and_then(|c| c.parse::<Channel>().ok());
        let (group, evidence) = match self.similar.get() {
            Some(s) if step.channels.len() > 1 => {
                let (g, e) = s.for_lead(lead);
                (g, Some(e))
            }
            _ => (String::new(), None),
        };
        let empty = HashMap::new();
        let scores = engager_domain::channel_choice::score_channels(
            &step.channels,
            preferred,
            history,
            evidence.unwrap_or(&empty),
            demote_email,
        );
        let score_note = (step.channels.len() > 1).then(|| {
            format!(
                "; scores: {}{}",
                scores
                    .iter()
                    .map(|s| s.describe())
                    .collect::<Vec<_>>()
                    .join(", "),
                if evidence.is_some_and(|e| !e.is_empty()) {
                    format!(" (similar leads: {group})")
                } else {
                    String::new()
                }
            )
        });
        let preferences: Vec<Channel> = scores.iter().map(|s| s.channel).collect();
        let preferences = preferences.iter();
        let mut refused = Vec::new();
        let mut compliance_refusals: Vec<GateResult> = Vec::new();
        let mut verdict = None;
        let mut chosen = None;
        let mut channel_hold: Option<DateTime<Utc>> = None;
        for channel in preferences {
            let why_not = if let Some((_, error)) = excluded.iter().find(|(c, _)| c == channel) {
                Some(format!("failed at send: {error}"))
            } else if !self.config.enabled_channels.contains(channel) {
                Some("channel not enabled".to_owned())
            } else if !lead.reachable_on(*channel) {
                Some("no contact point".to_owned())
            } else if let Some(b) = blocked(*channel) {
                Some(b)
            } else if let Some(refusal) = {
                let v =
                    engager_domain::compliance::check(&self.rules, lead, *channel, consents, now);
                let refusal = (!v.allowed()).then(|| {
                    v.failures()
                        .map(|c| c.describe())
                        .collect::<Vec<_>>()
                        .join("; ")
                });
                verdict = Some(v);
                refusal
            } {
                compliance_refusals.push(GateResult::fail(
                    Gate::Compliance,
                    format!("{channel}: {refusal}"),
                ));
                Some(refusal)
            } else if let Some(until) = self.open_circuits.get(channel).filter(|u| **u > now) {
                channel_hold = Some(channel_hold.map_or(*until, |h| h.min(*until)));
                Some(match self.unavailable_why.get(channel) {
                    Some(why) => format!(
                        "{why} (looked at again after {})",
                        until.format("%Y-%m-%d %H:%M UTC")
                    ),
                    None => format!("circuit open until {}", until.format("%Y-%m-%d %H:%M UTC")),
                })
            } else if let Err(hold) = budget.channel_check(*channel, history, now) {
                channel_hold = Some(channel_hold.map_or(hold.until, |h| h.min(hold.until)));
                Some(format!("channel limit: {}", hold.reason))
            } else {
                None
            };
            match why_not {
                None => {
                    chosen = Some(*channel);
                    break;
                }
                Some(reason) => refused.push(format!("{channel}: {reason}")),
            }
        }
        let only_compliance = !compliance_refusals.is_empty()
            && compliance_refusals.len() == refused.len()
            && channel_hold.is_none();
        gates.append(&mut compliance_refusals);
        let Some(channel) = chosen else {
            gates.push(GateResult::fail(
                Gate::Channel,
                format!("no usable channel: {}", refused.join("; ")),
            ));
            if only_compliance {
                return finish(
                    gates,
                    PlanDecision::Skip { next_due },
                    "skipped",
                    Some("compliance"),
                    None,
                    None,
                );
            }
            if let Some(until) = channel_hold {
                return finish(
                    gates,
                    PlanDecision::Defer { until },
                    "deferred",
                    Some("channel_budget"),
                    None,
                    Some(until),
                );
            }
            return finish(
                gates,
                PlanDecision::Skip { next_due },
                "skipped",
                Some("no_channel"),
                None,
                None,
            );
        };
        let fell_back: Vec<String> = excluded
            .iter()
            .filter(|(c, _)| step.channels.contains(c))
            .map(|(c, error)| format!("fell back from {c} to {channel}: {error}"))
            .collect();
        let choice = match (refused.is_empty(), demote_email) {
            _ if !fell_back.is_empty() => fell_back.join("; "),
            (true, false) => format!("{channel} (first preference)"),
            (true, true) => {
                format!("{channel} (the previous email was not opened: another channel first)")
            }
            (false, _) => format!("{channel} (fallback after {})", refused.join("; ")),
        };
        gates.push(GateResult::pass(
            Gate::Channel,
            format!("{choice}{}", score_note.unwrap_or_default()),
        ));
        if let Some(v) = verdict.filter(|v| v.channel == channel) {
            gates.push(GateResult::pass(Gate::Compliance, v.describe()));
        }

        // 4. Personalization.
        let zone = place.zone.zone;
        let sender = SenderFacts {
            name: self.config.sender.name.clone(),
            company: self.config.sender_company.clone(),
        };
        // The slot is computed before rendering so that time-of-day wording (the greeting)
        // matches the moment the lead receives the message; it is recorded as the last gate.
        let jitter = unit_fraction(stable_hash(&[
            &lead.id.0.to_le_bytes(),
            &campaign.id.0.to_le_bytes(),
            &(step_index as u64).to_le_bytes(),
        ]));
        let window = step.window_or(campaign.window);
        let (rules, sms_hours) = slot_rules(self.config, &place, window, channel, true);
        let scores = best_time_enabled(self.config, campaign)
            .then(|| lead_scores(self.config, lead, history, &place));
        let settings = &self.config.timing.best_time;
        let search = scores.as_ref().map(|s| BestTime {
            scores: s.table(),
            horizon_days: settings.horizon_days,
            day_penalty: settings.day_penalty,
            latest: follow.as_ref().map(|f| f.latest),
        });
        let choice = choose_slot(&rules, now, search.as_ref(), jitter, self.config.max_jitter);
        let send_at = choice.at;
        let context = engager_ai::with_insights(
            lead_context(lead, zone, send_at, &sender, step_index),
            &engager_ai::insights::analyse(history, &[], zone, send_at),
        );
        let (template_name, template, variant, how) = self.step_templates(campaign, step, lead.id);
        let rendered =
            match self
                .catalog
                .templates()
                .render(&template_name, step_index, template, &context)
            {
                Ok(r) => r,
                Err(e) => {
                    gates.push(GateResult::fail(Gate::Personalization, e.to_string()));
                    return finish(
                        gates,
                        PlanDecision::Skip { next_due },
                        "skipped",
                        Some("render_error"),
                        Some(channel),
                        None,
                    );
                }
            };
        // With AI, the checked draft replaces the template when its composed message passes
        // the content checks too; otherwise the template is sent and the trace says why.
        let mut personalized = None;
        let variant_note = variant
            .map(|v| {
                format!(
                    "A/B variant {} of experiment {} ({how}); ",
                    v.name,
                    step.experiment(&campaign.slug)
                )
            })
            .unwrap_or_default();
        let note = match self.ai_draft(due.enrollment.id, step_index, channel) {
            None => "template rendered with every variable resolved".to_owned(),
            Some((outcome, source)) => match outcome.draft() {
                None => format!("{} ({source})", outcome.describe()),
                Some(draft) => {
                    let candidate =
                        self.compose(lead, step, channel, draft_rendered(draft, channel));
                    match content_checks(
                        &candidate,
                        channel,
                        &self.config.sender.postal_address,
                        &self.unsubscribe_url(lead.id),
                        self.config.max_sms_segments,
                    ) {
                        Ok(()) => {
                            personalized = Some(candidate);
                            format!("{} ({source})", outcome.describe())
                        }
                        Err(problems) => format!(
                            "AI draft failed the content checks ({}); template used",
                            problems.join("; ")
                        ),
                    }
                }
            },
        };
        gates.push(GateResult::pass(
            Gate::Personalization,
            format!("{variant_note}{note}"),
        ));

        // 5. Content: footer, opt-out wording, length, no deceptive subject.
        let ai_text = personalized.is_some();
        let content = personalized.unwrap_or_else(|| self.compose(lead, step, channel, rendered));
        if let Err(problems) = content_checks(
            &content,
            channel,
            &self.config.sender.postal_address,
            &self.unsubscribe_url(lead.id),
            self.config.max_sms_segments,
        ) {
            gates.push(GateResult::fail(Gate::Content, problems.join("; ")));
            return finish(
                gates,
                PlanDecision::Skip { next_due },
                "skipped",
                Some("content_check"),
                Some(channel),
                None,
            );
        }
        gates.push(GateResult::pass(
            Gate::Content,
            content_summary(&content, channel),
        ));

        // 6. Timing: the send window in the lead's own zone.
        let mut timing = String::with_capacity(256);
        let _ = write!(
            timing,
            "zone {}; window {}",
            place.zone.describe(),
            rules.window.describe()
        );
        if let Some(sms) = &sms_hours {
            let _ = write!(timing, "; SMS hours {}", sms.hours.describe());
            if let Some(rule) = &sms.rule {
                let _ = write!(timing, " ({rule})");
            }
            if !place.zone.spread.is_empty() {
                let _ = write!(
                    timing,
                    " in all {} zones the lead may be in",
                    place.zone.spread.len()
                );
            }
        }
        describe_choice(
            &mut timing,
            &choice,
            scores.as_ref().map(|s| s.table()),
            follow.as_ref(),
        );
        let _ = write!(
            timing,
            "; slot {} local",
            send_at
                .with_timezone(&zone.tz())
                .format("%a %Y-%m-%d %H:%M")
        );
        gates.push(GateResult::pass(Gate::Timing, timing));
        let to_address = match channel {
            Channel::Email => lead.profile.email.as_ref().map(|e| e.to_string()),
            Channel::Sms => lead.profile.phone.as_ref().map(|p| p.to_string()),
            Channel::Linkedin => lead.profile.linkedin.as_ref().map(|l| l.to_string()),
        }
        .unwrap_or_default();
        let delivery = NewDelivery {
            channel,
            send_at,
            to_address,
            subject: content.subject,
            body_text: content.body_text,
            body_html: content.body_html,
            variant: variant.map(|v| v.name.clone()),
        };
        // Review mode: AI-written text waits for a person; template text goes out as usual.
        if campaign.review && ai_text {
            gates.push(GateResult::pass(
                Gate::Content,
                "held for review: AI-written text in a campaign in review mode (`engager review list`)",
            ));
            return finish(
                gates,
                PlanDecision::Review(delivery),
                "planned",
                Some("pending_review"),
                Some(channel),
                Some(send_at),
            );
        }
        finish(
            gates,
            PlanDecision::Plan(delivery),
            "planned",
            None,
            Some(channel),
            Some(send_at),
        )
    }

    /// Drafts (or finds in the cache) the AI message of every delivery this page is about to
    /// plan. A dry pass of the pipeline over a copy of the histories tells which enrollments
    /// reach personalization and on which channel; the pipeline is deterministic, so the real
    /// pass that follows makes the same choices and finds its drafts.
    async fn prepare_drafts(
        &self,
        due: &[DueEnrollment],
        histories: &HashMap<LeadId, LeadHistory>,
        suppressed: &[SuppressionRecord],
        failed: &HashMap<(EnrollmentId, usize), Vec<(Channel, String)>>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let Some(ai) = self.ai else {
            return Ok(());
        };
        self.lock_drafts().clear();
        let sender = SenderFacts {
            name: self.config.sender.name.clone(),
            company: self.config.sender_company.clone(),
        };
        let mut scratch = histories.clone();
        let mut earlier: HashMap<LeadId, Vec<engager_ai::insights::EarlierMessage>> =
            HashMap::new();
        let mut jobs = Vec::new();
        let mut slots = Vec::new();
        for d in due {
            let Some(campaign) = self.catalog.get(d.enrollment.campaign_id) else {
                continue;
            };
            let step_index = d.enrollment.current_step;
            let history = scratch.entry(d.lead.id).or_default();
            let excluded = failed
                .get(&(d.enrollment.id, step_index))
                .map_or(&[][..], Vec::as_slice);
            let evaluation =
                self.evaluate_excluding(d, campaign, history, suppressed, excluded, now);
            let PlanDecision::Plan(delivery) = &evaluation.decision else {
                continue;
            };
            history.touches.push(Touch {
                at: delivery.send_at,
                channel: delivery.channel,
                sent: false,
                delivery: None,
                step: Some((d.enrollment.id, step_index)),
            });
            let Some(step) = campaign.step(step_index) else {
                continue;
            };
            let zone = lead_place(self.config, &d.lead).zone.zone;
            let context = engager_ai::with_insights(
                lead_context(&d.lead, zone, delivery.send_at, &sender, step_index),
                &engager_ai::insights::analyse(history, &[], zone, delivery.send_at),
            );
            let (template_name, template, variant, _) =
                self.step_templates(campaign, step, d.lead.id);
            let Ok(rendered) =
                self.catalog
                    .templates()
                    .render(&template_name, step_index, template, &context)
            else {
                continue;
            };
            if let std::collections::hash_map::Entry::Vacant(slot) = earlier.entry(d.lead.id) {
                slot.insert(earlier_messages(self.store, d.lead.id).await?);
            }
            jobs.push(ai.prepare(&DraftInput {
                lead: &d.lead,
                campaign,
                step_index,
                channel: delivery.channel,
                history: &scratch[&d.lead.id],
                earlier: &earlier[&d.lead.id],
                rendered: &rendered,
                zone,
                sender: &sender,
                now,
                variant,
            }));
            slots.push((d.enrollment.id, step_index, delivery.channel));
        }
        if jobs.is_empty() {
            return Ok(());
        }
        let outcomes = ai.outcomes(self.store, &jobs, now).await?;
        self.lock_drafts().extend(slots.into_iter().zip(outcomes));
        Ok(())
    }

    fn lock_drafts(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<DraftSlot, (DraftOutcome, DraftSource)>> {
        self.drafts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The AI outcome prepared for a step on a channel, if any.
    fn ai_draft(
        &self,
        enrollment: EnrollmentId,
        step_index: usize,
        channel: Channel,
    ) -> Option<(DraftOutcome, DraftSource)> {
        self.ai?;
        self.lock_drafts()
            .get(&(enrollment, step_index, channel))
            .cloned()
    }

    /// How the delay before this step adapts to the reaction to the previous step (only for
    /// steps with delay bounds whose previous step was sent).
    fn follow_up(
        &self,
        due: &DueEnrollment,
        step: &Step,
        history: &LeadHistory,
        place: &LeadPlace<'_>,
        now: DateTime<Utc>,
    ) -> Option<FollowUp> {
        let index = due.enrollment.current_step;
        if index == 0 || step.delay_bounds.is_none() {
            return None;
        }
        let previous = history.step_touch(due.enrollment.id, index - 1)?;
        let reaction = match history.reaction_to(previous, now) {
            Some(kind) => Reaction::Engaged(kind),
            None if previous.channel == Channel::Email => Reaction::Ignored,
            None => Reaction::Unknown,
        };
        follow_up(step, previous.at, reaction, place.zone.zone, place.holidays)
    }

    /// The window a step may send in on a channel, for a lead in its own zone: the step's (or
    /// campaign's) window, narrowed for SMS to the SMS hours (without the spread across
    /// zones, which `crate::timing::slot_rules` adds).
    pub fn window_for(&self, campaign: &Campaign, step: &Step, channel: Channel) -> SendWindow {
        let window = step.window_or(campaign.window);
        if channel != Channel::Sms {
            return window;
        }
        sms_window(
            window,
            self.config.sms_quiet_start_hour,
            self.config.sms_quiet_end_hour,
        )
    }

    /// The one-click unsubscribe URL of a lead.
    pub fn unsubscribe_url(&self, lead: LeadId) -> String {
        unsubscribe_url(self.config, lead)
    }

    /// Text a person wrote or edited for a step, composed (the footer added) and put
    /// through the same content checks as planned text; the message, or the problems.
    pub fn check_text(
        &self,
        lead: &Lead,
        campaign: &Campaign,
        step_index: usize,
        channel: Channel,
        subject: Option<String>,
        body: String,
    ) -> Result<Content, Vec<String>> {
        let step = campaign
            .step(step_index)
            .ok_or_else(|| vec![format!("the campaign has no step {}", step_index + 1)])?;
        let content = self.compose(
            lead,
            step,
            channel,
            engager_ai::Rendered {
                subject,
                body_text: body,
                body_html: None,
            },
        );
        content_checks(
            &content,
            channel,
            &self.config.sender.postal_address,
            &self.unsubscribe_url(lead.id),
            self.config.max_sms_segments,
        )?;
        Ok(content)
    }

    /// The step's template rendered for the lead as of `at`, composed and checked (what the
    /// planner sends without AI).
    pub fn template_text(
        &self,
        lead: &Lead,
        campaign: &Campaign,
        step_index: usize,
        channel: Channel,
        at: DateTime<Utc>,
    ) -> Result<Content, Vec<String>> {
        let step = campaign
            .step(step_index)
            .ok_or_else(|| vec![format!("the campaign has no step {}", step_index + 1)])?;
        let place = lead_place(self.config, lead);
        let sender = SenderFacts {
            name: self.config.sender.name.clone(),
            company: self.config.sender_company.clone(),
        };
        let history = LeadHistory::default();
        let context = engager_ai::with_insights(
            lead_context(lead, place.zone.zone, at, &sender, step_index),
            &engager_ai::insights::analyse(&history, &[], place.zone.zone, at),
        );
        let (name, template, _, _) = self.step_templates(campaign, step, lead.id);
        let rendered = self
            .catalog
            .templates()
            .render(&name, step_index, template, &context)
            .map_err(|e| vec![e.to_string()])?;
        let content = self.compose(lead, step, channel, rendered);
        content_checks(
            &content,
            channel,
            &self.config.sender.postal_address,
            &self.unsubscribe_url(lead.id),
            self.config.max_sms_segments,
        )?;
        Ok(content)
    }

    fn compose(
        &self,
        lead: &Lead,
        _step: &Step,
        channel: Channel,
        rendered: engager_ai::Rendered,
    ) -> Content {
        let cfg = self.config;
        match channel {
            Channel::Email => {
                let url = self.unsubscribe_url(lead.id);
                let footer = format!(
                    "\n\n--\n{}, {}\n{}\nNot interested? Unsubscribe with one click: {}\n",
                    cfg.sender.name, cfg.sender_company, cfg.sender.postal_address, url
                );
                let body_text = format!("{}{}", rendered.body_text.trim_end(), footer);
                let body_html = rendered.body_html.map(|html| {
                    format!(
                        "{}\n<hr>\n<p style=\"font-size:12px;color:#666\">{} · {}<br>{}<br><a href=\"{}\">Unsubscribe</a></p>\n",
                        html.trim_end(),
                        escape(&cfg.sender.name),
                        escape(&cfg.sender_company),
                        escape(&cfg.sender.postal_address),
                        url
                    )
                });
                Content {
                    subject: rendered.subject,
                    body_text,
                    body_html,
                }
            }
            Channel::Sms => {
                let mut body = rendered.body_text.trim().to_owned();
                if !body.contains(&cfg.sender_company) {
                    body = format!("{}: {}", cfg.sender_company, body);
                }
                if !has_stop_wording(&body) {
                    body.push_str("\nReply STOP to opt out.");
                }
                Content {
                    subject: None,
                    body_text: body,
                    body_html: None,
                }
            }
            Channel::Linkedin => Content {
                subject: None,
                body_text: rendered.body_text.trim().to_owned(),
                body_html: None,
            },
        }
    }
}

/// Appends what the slot search did to a trace sentence: holidays skipped, the best hour
/// and its score, the follow-up rule.
pub fn describe_choice(
    out: &mut String,
    choice: &SlotChoice,
    scores: Option<&engager_domain::best_time::ScoreTable>,
    follow: Option<&FollowUp>,
) {
    use chrono::{Datelike, Timelike};
    if !choice.holidays_skipped.is_empty() {
        out.push_str("; skipped holiday(s) ");
        for (i, d) in choice.holidays_skipped.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{}", d.format("%Y-%m-%d"));
        }
    }
    if let (Some(pick), Some(scores)) = (choice.pick, scores) {
        let _ = write!(
            out,
            "; best hour {} {:02}:00 (score {:.2}, first open slot {:.2}; ",
            weekday_name(pick.local.weekday()),
            pick.local.hour(),
            pick.score,
            pick.first_score
        );
        if scores.evidence() > 0.0 {
            let _ = write!(
                out,
                "{:.0}% own history from {:.1} weighted event(s))",
                scores.lead_weight() * 100.0,
                scores.evidence()
            );
        } else {
            out.push_str("prior only)");
        }
    }
    if let Some(f) = follow {
        let _ = write!(out, "; {}", f.reason);
    }
    if choice.fallback {
        out.push_str("; no slot obeys every rule within a year: the plain window was used");
    }
}

/// The one-click unsubscribe URL of a lead: an opaque signed token, no personal data.
pub fn unsubscribe_url(config: &EngineConfig, lead: LeadId) -> String {
    format!(
        "{}/u/{}",
        config.public_base_url.trim_end_matches('/'),
        lead_token(&config.link_secret, "unsubscribe", lead)
    )
}

/// Narrows a window to the SMS quiet-hours window (never earlier than `start_hour`, never at
/// or after `end_hour`). When they do not overlap, the quiet-hours window on the same days wins.
pub fn sms_window(window: SendWindow, start_hour: u32, end_hour: u32) -> SendWindow {
    QuietHours::from_hours(start_hour, end_hour).map_or(window, |q| q.apply_to(&window))
}

/// A message after the content stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// Subject.
    pub subject: Option<String>,
    /// Text body, footer included.
    pub body_text: String,
    /// HTML body, footer included.
    pub body_html: Option<String>,
}

/// Checks a composed message; the problems found, if any.
pub fn content_checks(
    content: &Content,
    channel: Channel,
    postal_address: &str,
    unsubscribe_url: &str,
    max_sms_segments: usize,
) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let texts = [
        Some(content.body_text.as_str()),
        content.subject.as_deref(),
        content.body_html.as_deref(),
    ];
    if texts
        .iter()
        .flatten()
        .any(|t| t.contains("{{") || t.contains("{%"))
    {
        problems.push("unresolved template markup".to_owned());
    }
    if content.body_text.trim().is_empty() {
        problems.push("empty body".to_owned());
    }
    match channel {
        Channel::Email => {
            match content.subject.as_deref().map(str::trim) {
                None | Some("") => problems.push("empty subject".to_owned()),
                Some(s) => {
                    let lower = s.to_ascii_lowercase();
                    if ["re:", "fwd:", "fw:"].iter().any(|p| lower.starts_with(p)) {
                        problems.push(format!("deceptive subject {s:?}: a first message must not pose as a reply or forward"));
                    }
                }
            }
            if postal_address.trim().is_empty() || !content.body_text.contains(postal_address) {
                problems.push("footer lacks the sender's postal address".to_owned());
            }
            if !content.body_text.contains(unsubscribe_url) {
                problems.push("footer lacks the unsubscribe link".to_owned());
            }
            if let Some(html) = &content.body_html {
                if !html.contains(unsubscribe_url) {
                    problems.push("HTML footer lacks the unsubscribe link".to_owned());
                }
            }
        }
        Channel::Sms => {
            let seg = sms_segments(&content.body_text);
            if seg.segments > max_sms_segments {
                problems.push(format!(
                    "{} SMS segments, more than the {max_sms_segments} allowed",
                    seg.segments
                ));
            }
            if !has_stop_wording(&content.body_text) {
                problems.push("no STOP opt-out wording".to_owned());
            }
        }
        Channel::Linkedin => {
            let n = content.body_text.chars().count();
            if n > LINKEDIN_NOTE_LIMIT {
                problems.push(format!("{n} characters, more than LinkedIn's {LINKEDIN_NOTE_LIMIT} for a connection note"));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn content_summary(content: &Content, channel: Channel) -> String {
    match channel {
        Channel::Email => "subject set; footer with postal address and one-click unsubscribe link; RFC 8058 headers added at send".to_owned(),
        Channel::Sms => {
            let seg = sms_segments(&content.body_text);
            format!("{} segment(s) ({:?}); sender named; STOP wording present", seg.segments, seg.encoding)
        }
        Channel::Linkedin => format!("{} characters, within the connection-note limit", content.body_text.chars().count()),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The suppression-list keys that concern a lead.
pub fn suppression_keys(lead: &Lead) -> Vec<SuppressionKey> {
    let mut keys = Vec::with_capacity(3);
    if let Some(email) = &lead.profile.email {
        keys.push(SuppressionKey::Email(email.as_str().to_owned()));
        keys.push(SuppressionKey::Domain(email.domain().to_owned()));
    }
    if let Some(phone) = &lead.profile.phone {
        keys.push(SuppressionKey::Phone(phone.as_str().to_owned()));
    }
    keys
}

fn tally(report: &mut PlanReport, evaluation: &Evaluation) {
    report.evaluated += 1;
    let trace = &evaluation.trace;
    match evaluation.decision {
        PlanDecision::Plan(_) | PlanDecision::Review(_) => report.planned += 1,
        PlanDecision::Defer { .. } => report.deferred += 1,
        PlanDecision::Skip { .. } => report.skipped += 1,
        PlanDecision::Stop { .. } => report.stopped += 1,
    }
    let key = match &trace.code {
        Some(code) => format!("{}:{}", trace.outcome, code),
        None => trace.outcome.clone(),
    };
    *report.by_code.entry(key).or_default() += 1;
}
