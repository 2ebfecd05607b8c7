//! The dispatcher: claims due ledger rows, re-checks them, sends through the channels and
//! records each outcome.
//!
//! Invariants: suppression and the enrollment's state are checked again just before
//! sending (the store's `begin_send` does it atomically with the move to `sending`); SMS is
//! never sent outside the recipient's quiet-hours window, even when the row is late; a row is
//! `sending` before the provider is called, so a crash leaves it for reconciliation instead
//! of a second send; retries wait in the ledger, never in a loop in memory.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use engager_channels::email::message_id;
use engager_channels::{ChannelSender, DeliveryError, OutgoingMessage, Reconciled, Unsubscribe};
use engager_domain::Gate;
use engager_domain::{
    stable_hash, unit_fraction, CampaignId, Channel, DeliveryId, DeliveryState, EventKind, LeadId,
};
use engager_store::{
    DeliveryFilter, DueEnrollment, EnrollmentRecord, Evaluation, GateRow, NewEvent, PlanDecision,
    TraceRecord,
};
use engager_store::{
    DeliveryRecord, FollowUp, Recovered, SendOutcome, Store, StoreError, SuppressionKey,
};
use tracing::{debug, info, warn};

use crate::alerts::{Alert, AlertKind, Alerter};
use crate::guard::{Health, SendGuard, Verdict};
use crate::planner::{suppression_keys, unsubscribe_url, Planner};
use crate::{Catalog, Clock, EngineConfig, SystemClock};
use engager_domain::circuit::Transition as CircuitTransition;

/// The senders of every enabled channel.
#[derive(Clone, Default)]
pub struct ChannelSet {
    senders: HashMap<Channel, Arc<dyn ChannelSender>>,
    /// Every sending account of each channel (mailbox rotation); the first is `senders`'.
    pools: HashMap<Channel, Vec<Arc<dyn ChannelSender>>>,
}

impl ChannelSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the sender of its channel.
    pub fn with(mut self, sender: Arc<dyn ChannelSender>) -> Self {
        self.pools.insert(sender.channel(), vec![sender.clone()]);
        self.senders.insert(sender.channel(), sender);
        self
    }

    /// Sets (or replaces) the sending accounts of one channel (mailbox rotation: each with a
    /// distinct name, see [`crate::accounts::AccountSender`]). Every sender must serve the
    /// same channel; an empty list changes nothing.
    pub fn with_accounts(mut self, accounts: Vec<Arc<dyn ChannelSender>>) -> Self {
        if let Some(first) = accounts.first() {
            let channel = first.channel();
            self.senders.insert(channel, first.clone());
            self.pools.insert(channel, accounts);
        }
        self
    }

    /// The sending accounts of a channel (one for a channel without rotation).
    pub fn accounts(&self, channel: Channel) -> &[Arc<dyn ChannelSender>] {
        self.pools.get(&channel).map_or(&[], Vec::as_slice)
    }

    /// The sender of an account (`channel:name`, as [`SendGuard::account`] names it).
    pub fn account(&self, channel: Channel, account: &str) -> Option<&Arc<dyn ChannelSender>> {
        self.accounts(channel)
            .iter()
            .find(|s| SendGuard::account(channel, s.name()) == account)
    }

    /// Every sending account of every channel, in channel order.
    pub fn every(&self) -> Vec<&Arc<dyn ChannelSender>> {
        let mut all: Vec<_> = self.pools.values().flatten().collect();
        all.sort_by_key(|s| s.channel());
        all
    }

    /// The sender of a channel.
    pub fn get(&self, channel: Channel) -> Option<&Arc<dyn ChannelSender>> {
        self.senders.get(&channel)
    }

    /// Every sender, in channel order.
    pub fn all(&self) -> Vec<&Arc<dyn ChannelSender>> {
        let mut all: Vec<_> = self.senders.values().collect();
        all.sort_by_key(|s| s.channel());
        all
    }
}

/// A delivery the provider accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentDelivery {
    /// The ledger row.
    pub delivery_id: DeliveryId,
    /// The lead.
    pub lead_id: LeadId,
    /// The campaign.
    pub campaign_id: CampaignId,
    /// Step index.
    pub step_index: usize,
    /// Channel.
    pub channel: Channel,
    /// When.
    pub sent_at: DateTime<Utc>,
    /// The provider's reference (for the outbox: the file written).
    pub provider_ref: String,
}

/// What one dispatcher pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DispatchReport {
    /// Rows claimed.
    pub claimed: usize,
    /// Rows sent.
    pub sent: Vec<SentDelivery>,
    /// Rows put in retry_wait.
    pub retried: usize,
    /// Rows failed for good.
    pub failed: usize,
    /// Of the failed rows, those whose step was planned again on its next channel.
    pub fell_back: usize,
    /// Rows with an ambiguous outcome.
    pub unknown: usize,
    /// Rows cancelled by the re-check.
    pub cancelled: usize,
    /// Rows put back because the recipient's quiet hours started.
    pub held: usize,
    /// Rows put back by a rate limit, daily cap or open circuit.
    pub throttled: usize,
    /// Unknown rows the provider confirmed as sent.
    pub reconciled: usize,
    /// Rows whose claim was lost (stale token, or the enrollment stopped meanwhile).
    pub lost: usize,
    /// LinkedIn rows handed to a person as tasks (`engager tasks list`).
    pub tasks: usize,
    /// What lease recovery did first.
    pub recovered: Recovered,
}

/// How long a delivery on a halted channel waits before the dispatcher looks at it again.
const HALT_RECHECK: Duration = Duration::minutes(15);

/// The dispatcher, bound to a store, the campaigns, the configuration and the channels.
pub struct Dispatcher<'a> {
    store: &'a dyn Store,
    catalog: &'a Catalog,
    config: &'a EngineConfig,
    channels: &'a ChannelSet,
    guard: Option<&'a SendGuard>,
    alerter: Option<&'a Alerter>,
    real_time: bool,
    halted: HashMap<Channel, String>,
    /// Campaigns halted for compliance, read at the start of each pass.
    halted_campaigns: std::sync::RwLock<HashMap<engager_domain::CampaignId, String>>,
    /// The compliance validators, re-run just before each send.
    rules: engager_domain::compliance::ComplianceRules,
}

impl<'a> Dispatcher<'a> {
    /// A dispatcher.
    pub fn new(
        store: &'a dyn Store,
        catalog: &'a Catalog,
        config: &'a EngineConfig,
        channels: &'a ChannelSet,
    ) -> Self {
        Self {
            store,
            catalog,
            config,
            channels,
            guard: None,
            alerter: None,
            real_time: false,
            halted: HashMap::new(),
            halted_campaigns: std::sync::RwLock::new(HashMap::new()),
            rules: crate::compliance::rules(config),
        }
    }

    /// Channels the deliverability monitor halted, with the reason: their deliveries wait
    /// (released for a later pass), never burned and never sent.
    pub fn with_halted_channels(mut self, halted: HashMap<Channel, String>) -> Self {
        self.halted = halted;
        self
    }

    /// Applies rate limits, daily caps and circuit breakers (kept across passes by the caller).
    pub fn with_guard(mut self, guard: &'a SendGuard) -> Self {
        self.guard = Some(guard);
        self
    }

    /// Reads the system clock for each delivery (instead of the pass's single `now`) and waits
    /// out short rate-limit pauses, so a long pass paces itself. Not for virtual clocks.
    pub fn real_time(mut self) -> Self {
        self.real_time = true;
        self
    }

    /// Whether this pass runs on the real clock: `real_time` was asked and the pass's `now`
    /// is not ahead of the system clock. A pass at a future instant (`engager run --now
    /// <later>`) would otherwise sleep through rate-limit pauses measured from a clock that
    /// keeps falling back to that instant; it re-queues them instead.
    fn paced(&self, pass_now: DateTime<Utc>) -> bool {
        self.real_time && pass_now <= SystemClock.now() + Duration::seconds(5)
    }

    /// Raises alerts through these sinks.
    pub fn with_alerts(mut self, alerter: &'a Alerter) -> Self {
        self.alerter = Some(alerter);
        self
    }

    async fn alert(
        &self,
        kind: AlertKind,
        account: &str,
        summary: String,
        details: Vec<(&str, String)>,
        now: DateTime<Utc>,
    ) {
        if let Some(alerter) = self.alerter {
            let details = details
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            alerter
                .raise(Alert {
                    kind,
                    account: account.to_owned(),
                    summary,
                    details,
                    at: now,
                })
                .await;
        }
    }

    /// Recovers expired leases, then claims and sends everything due at `now` (at most
    /// `limit` rows). In a dry run, lists what is due without claiming or sending.
    pub async fn dispatch_due(
        &self,
        now: DateTime<Utc>,
        limit: Option<usize>,
    ) -> Result<DispatchReport, StoreError> {
        let mut report = DispatchReport {
            recovered: self.store.recover_expired_leases(now).await?,
            ..Default::default()
        };
        let halted: HashMap<_, _> = self
            .store
            .campaign_halts()
            .await?
            .into_iter()
            .filter(|h| h.halted)
            .map(|h| (h.campaign_id, h.reason))
            .collect();
        if let Ok(mut h) = self.halted_campaigns.write() {
            *h = halted;
        }
        if let Some(guard) = self.guard {
            let day_start = now
                .date_naive()
                .and_hms_opt(0, 0, 0)
                .map_or(now, |t| t.and_utc());
            for (channel, sent) in self.store.sent_counts_since(day_start).await? {
                if let Some(sender) = self.channels.get(channel) {
                    if self.channels.accounts(channel).len() > 1 {
                        continue;
                    }
                    guard.seed_sent_today(
                        &SendGuard::account(channel, sender.name()),
                        now.date_naive(),
                        sent,
                    );
                }
            }
            crate::accounts::seed_rotated(self.store, self.channels, guard, day_start, now).await?;
        }
        report.reconciled = self.reconcile_unknown(now).await?;
        if report.recovered.unknown > 0 {
            self.alert(
                AlertKind::UnknownDeliveries,
                "ledger",
                format!(
                    "{} interrupted send(s) need reconciliation",
                    report.recovered.unknown
                ),
                vec![("hint", "engager deliveries unknown".to_owned())],
                now,
            )
            .await;
            warn!(count = report.recovered.unknown, "Deliveries whose send was interrupted are now unknown; see `engager outbox list --state unknown`.");
        }
        loop {
            let remaining = limit.map(|l| l.saturating_sub(report.claimed));
            if remaining == Some(0) {
                break;
            }
            let batch = remaining.map_or(self.config.batch_size, |r| r.min(self.config.batch_size));
            let claimed = self
                .store
                .claim_due_deliveries(now, batch, &self.config.worker_id, self.config.lease)
                .await?;
            if claimed.is_empty() {
                break;
            }
            report.claimed += claimed.len();
            for delivery in claimed {
                self.dispatch_one(delivery, now, &mut report).await?;
            }
        }
        Ok(report)
    }

    async fn dispatch_one(
        &self,
        d: DeliveryRecord,
        pass_now: DateTime<Utc>,
        report: &mut DispatchReport,
    ) -> Result<(), StoreError> {
        crash_point("after_claim");
        let real_time = self.paced(pass_now);
        let mut now = if real_time {
            SystemClock.now().max(pass_now)
        } else {
            pass_now
        };
        let span = tracing::info_span!("delivery", delivery_id = d.id.0, lead_id = d.lead_id.0, channel = %d.channel);
        let _enter = span.enter();
        // Suppression again: an opt-out may have arrived after planning.
        let keys = match d.channel {
            Channel::Email => {
                let domain = d
                    .to_address
                    .split_once('@')
                    .map(|(_, dom)| dom.to_owned())
                    .unwrap_or_default();
                vec![
                    SuppressionKey::Email(d.to_address.clone()),
                    SuppressionKey::Domain(domain),
                ]
            }
            Channel::Sms => vec![SuppressionKey::Phone(d.to_address.clone())],
            Channel::Linkedin => Vec::new(),
        };
        if let Some(hit) = self.store.suppressed(&keys).await?.into_iter().next() {
            let reason = format!(
                "suppressed at send time: {} {} ({})",
                hit.key.kind(),
                hit.key.value(),
                hit.reason
            );
            self.store
                .cancel_claimed(d.id, d.fencing_token, &reason, now)
                .await?;
            report.cancelled += 1;
            return Ok(());
        }
        let Some(lead) = self.store.lead(d.lead_id).await? else {
            self.store
                .cancel_claimed(d.id, d.fencing_token, "the lead no longer exists", now)
                .await?;
            report.cancelled += 1;
            return Ok(());
        };
        let Some(campaign) = self.catalog.get(d.campaign_id) else {
            self.store
                .cancel_claimed(d.id, d.fencing_token, "the campaign no longer exists", now)
                .await?;
            report.cancelled += 1;
            return Ok(());
        };
        // Compliance again: a campaign halted since planning waits; consent withdrawn or an
        // objection recorded since planning cancels the send.
        let campaign_halt = self
            .halted_campaigns
            .read()
            .ok()
            .and_then(|h| h.get(&campaign.id).cloned());
        if let Some(reason) = campaign_halt {
            self.store
                .release_claim(
                    d.id,
                    d.fencing_token,
                    now + HALT_RECHECK,
                    &format!("held: campaign halted for compliance ({reason})"),
                    now,
                )
                .await?;
            report.throttled += 1;
            return Ok(());
        }
        let consents = crate::compliance::lead_consents(self.store, &lead).await?;
        let compliance =
            engager_domain::compliance::check(&self.rules, &lead, d.channel, &consents, now);
        if !compliance.allowed() {
            let reason = format!("compliance at send time: {}", compliance.describe());
            self.store
                .cancel_claimed(d.id, d.fencing_token, &reason, now)
                .await?;
            report.cancelled += 1;
            return Ok(());
        }
        let Some(sender) = self.channels.get(d.channel) else {
            let reason = format!("channel {} is not enabled", d.channel);
            self.store
                .cancel_claimed(d.id, d.fencing_token, &reason, now)
                .await?;
            report.cancelled += 1;
            return Ok(());
        };
        // SMS quiet hours are enforced at send time too, so a late row never goes out at night.
        // The rules are the planner's (step window, holidays, stricter state hours, every zone
        // the lead may be in), without its planning margin.
        if d.channel == Channel::Sms {
            let jitter = unit_fraction(stable_hash(&[&d.id.0.to_le_bytes(), b"quiet"]));
            let hold =
                crate::timing::sms_hold(self.config, &lead, campaign, d.step_index, now, jitter);
            if let Some(at) = hold {
                self.store
                    .release_claim(
                        d.id,
                        d.fencing_token,
                        at,
                        "held: outside the recipient's SMS hours",
                        now,
                    )
                    .await?;
                report.held += 1;
                return Ok(());
            }
        }
        if let Some(reason) = self.halted.get(&d.channel) {
            self.store
                .release_claim(
                    d.id,
                    d.fencing_token,
                    now + HALT_RECHECK,
                    &format!("held: sending on {} is halted ({reason})", d.channel),
                    now,
                )
                .await?;
            report.throttled += 1;
            return Ok(());
        }
        let mut sender = sender.clone();
        let mut account = SendGuard::account(d.channel, sender.name());
        let pool = self.channels.accounts(d.channel);
        if pool.len() > 1 {
            // Mailbox rotation: the sequence's account, else the one with the most room.
            let (store, guard, lease) = (self.store, self.guard, self.config.lease);
            match crate::accounts::choose(store, guard, pool, &d, now, real_time, lease).await? {
                crate::accounts::Choice::Send {
                    sender: chosen,
                    account: name,
                    now: at,
                } => (sender, account, now) = (chosen, name, at),
                crate::accounts::Choice::Wait { until, reason } => {
                    let note = format!("held: {reason}");
                    self.store
                        .release_claim(d.id, d.fencing_token, until, &note, now)
                        .await?;
                    report.throttled += 1;
                    return Ok(());
                }
            }
        } else if let Some(guard) = self.guard {
            let mut verdict = guard.admit(&account, d.channel, now).await;
            // In real time, a pause of a second or two is waited out rather than re-queued.
            while let Verdict::Wait {
                until,
                circuit_open: false,
                ..
            } = verdict
            {
                let wait = until - now;
                if !real_time || wait > Duration::seconds(2) || wait >= self.config.lease / 2 {
                    break;
                }
                tokio::time::sleep(wait.to_std().unwrap_or_default()).await;
                now = SystemClock.now().max(until);
                verdict = guard.admit(&account, d.channel, now).await;
            }
            if let Verdict::Wait { until, reason, .. } = verdict {
                self.store
                    .release_claim(
                        d.id,
                        d.fencing_token,
                        until,
                        &format!("held: {reason}"),
                        now,
                    )
                    .await?;
                report.throttled += 1;
                return Ok(());
            }
        }
        // The evidence is stored before the provider is called: no send without it.
        let evidence = crate::compliance::evidence(
            (&d).into(),
            sender.name(),
            &compliance,
            self.config,
            &unsubscribe_url(self.config, d.lead_id),
            now,
        );
        self.store.record_evidence(&evidence).await?;
        if !self
            .store
            .begin_send(d.id, d.fencing_token, now, self.config.lease)
            .await?
        {
            debug!("Claim lost before sending; not sending.");
            report.lost += 1;
            return Ok(());
        }
        if let Err(e) = self
            .store
            .set_delivery_account(d.id, d.fencing_token, &account)
            .await
        {
            warn!(%account, error = %e, "Could not record the delivery's sending account.");
        }
        // Open and click tracking: the tracked message is stored, then sent.
        let Some((body_text, body_html)) =
            crate::tracking::prepare(self.store, self.config, campaign, &d, now).await?
        else {
            debug!("Claim lost while storing the tracked message; not sending.");
            report.lost += 1;
            return Ok(());
        };
        let sender_domain = self.config.sender.email.domain().to_owned();
        let message = OutgoingMessage {
            delivery_id: d.id,
            lead_id: d.lead_id,
            campaign: campaign.slug.clone(),
            step_index: d.step_index,
            channel: d.channel,
            to: d.to_address.clone(),
            to_name: Some(lead.display_name())
                .filter(|n| !n.contains('@') && !n.starts_with("lead ")),
            subject: d.subject.clone(),
            body_text,
            body_html,
            date: now,
            message_id: message_id(d.id, &campaign.slug, &sender_domain),
            sender: self.config.sender.clone(),
            unsubscribe: (d.channel == Channel::Email).then(|| Unsubscribe {
                url: unsubscribe_url(self.config, d.lead_id),
                mailto: self
                    .config
                    .unsubscribe_mailto
                    .as_ref()
                    .map(|m| format!("mailto:{m}?subject=unsubscribe")),
            }),
            due_by: (d.channel == Channel::Linkedin).then(|| {
                now + campaign
                    .step(d.step_index)
                    .map_or(Duration::days(3), |s| s.task_deadline)
            }),
        };
        crash_point("after_begin_send");
        if d.channel == Channel::Linkedin {
            // LinkedIn is never automated (its terms; the messaging API is partner-only): the
            // step becomes a task for a person, and the delivery waits for it.
            if crate::tasks::hand_over(
                self.store,
                Some(sender.as_ref()),
                &d,
                campaign,
                &message,
                now,
            )
            .await?
            .is_some()
            {
                report.tasks += 1;
            } else {
                report.lost += 1;
            }
            return Ok(());
        }
        let result = sender.send(&message).await;
        crash_point("after_response");
        let attempts = d.attempts + 1;
        self.account_health(&account, &result, now).await;
        let opted_out = matches!(&result, Err(e) if e.is_opt_out());
        let unreachable = match &result {
            Err(e) => unreachable_contact(&d, e),
            Ok(_) => None,
        };
        let mut fallback = None;
        let (outcome, follow_up) = match result {
            Ok(accepted) => {
                let follow_up = match campaign.step(d.step_index + 1) {
                    // Counted from the actual send (a late step shifts the ones after it), in
                    // business days where the step says so.
                    Some(next) => FollowUp::NextStepAt(crate::timing::next_step_due(
                        self.config,
                        &lead,
                        next,
                        now,
                    )),
                    None => FollowUp::Complete,
                };
                report.sent.push(SentDelivery {
                    delivery_id: d.id,
                    lead_id: d.lead_id,
                    campaign_id: d.campaign_id,
                    step_index: d.step_index,
                    channel: d.channel,
                    sent_at: now,
                    provider_ref: accepted.provider_ref.clone(),
                });
                info!(step = d.step_index + 1, "Delivery sent.");
                (
                    SendOutcome::Sent {
                        provider_ref: accepted.provider_ref,
                    },
                    follow_up,
                )
            }
            Err(error) => {
                let outcome = self.classify(&d, attempts, &error, now);
                match &outcome {
                    SendOutcome::Retry { at, .. } => {
                        report.retried += 1;
                        warn!(%error, attempts, retry_at = %at, "Delivery failed; will retry.");
                    }
                    SendOutcome::Failed { error: text } => {
                        report.failed += 1;
                        warn!(%error, attempts, "Delivery failed for good.");
                        let allowed = campaign
                            .step(d.step_index)
                            .is_some_and(|s| s.falls_back_on_failure());
                        if allowed && matches!(error, DeliveryError::Permanent { .. }) {
                            fallback =
                                Some(self.plan_fallback(&d, &lead, campaign, text, now).await?);
                        }
                        if error.is_transient() {
                            self.alert(
                                AlertKind::RetryBudgetExhausted,
                                &account,
                                format!("a delivery on {account} failed after {attempts} attempts"),
                                vec![
                                    ("delivery_id", d.id.to_string()),
                                    ("last_error", error.to_string()),
                                ],
                                now,
                            )
                            .await;
                        }
                    }
                    SendOutcome::Unknown { .. } => {
                        report.unknown += 1;
                        warn!(%error, "Delivery outcome unknown; held for reconciliation.");
                        self.alert(
                            AlertKind::UnknownDeliveries,
                            &account,
                            format!("a send on {account} may or may not have gone out"),
                            vec![
                                ("delivery_id", d.id.to_string()),
                                ("error", error.to_string()),
                                ("hint", "engager deliveries unknown".to_owned()),
                            ],
                            now,
                        )
                        .await;
                    }
                    SendOutcome::Sent { .. } => {}
                }
                (outcome, FollowUp::Complete)
            }
        };
        let recorded = match (&fallback, &outcome) {
            (Some(evaluation), SendOutcome::Failed { error }) => {
                let recorded = self
                    .store
                    .record_fallback(d.id, d.fencing_token, error, evaluation, now)
                    .await?;
                if recorded {
                    if let PlanDecision::Plan(next) = &evaluation.decision {
                        report.fell_back += 1;
                        info!(from = %d.channel, to = %next.channel, "Fell back to the step's next channel.");
                    }
                }
                recorded
            }
            _ => {
                self.store
                    .record_outcome(d.id, d.fencing_token, &outcome, &follow_up, now)
                    .await?
            }
        };
        if recorded {
            if let Some((key, reason)) = unreachable {
                // A hard bounce or a number that cannot take SMS: no campaign tries it again.
                self.store
                    .add_suppression(&key, &reason, &format!("provider:{}", sender.name()), now)
                    .await?;
            }
        }
        if !recorded {
            warn!("A newer claim owns this delivery; outcome not recorded.");
        } else if opted_out {
            // The provider says the recipient opted out (Twilio 21610): honour it everywhere.
            {
                self.store
                    .record_event(&NewEvent {
                        lead_id: d.lead_id,
                        delivery_id: Some(d.id),
                        kind: EventKind::Unsubscribed,
                        occurred_at: now,
                        detail: "{\"source\":\"provider opt-out\"}".into(),
                        source: format!("provider:{}", sender.name()),
                    })
                    .await?;
            }
        }
        Ok(())
    }

    /// Re-plans a step whose channel failed for good, through the planner's whole pipeline
    /// (compliance, frequency, channel, personalization, content, timing) with the failed
    /// channels of the step excluded. A step left without a usable channel stops the
    /// sequence as failed (the trace says why each channel was refused).
    async fn plan_fallback(
        &self,
        d: &DeliveryRecord,
        lead: &engager_domain::Lead,
        campaign: &engager_domain::Campaign,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<Evaluation, StoreError> {
        let enrollment = self
            .store
            .enrollments_for_lead(d.lead_id)
            .await?
            .into_iter()
            .find(|e| e.id == d.enrollment_id);
        let mut excluded: Vec<(Channel, String)> = self
            .store
            .failed_channels(&[d.enrollment_id])
            .await?
            .into_iter()
            .filter(|f| f.step_index == d.step_index && f.channel != d.channel)
            .map(|f| (f.channel, f.error))
            .collect();
        excluded.push((d.channel, error.to_owned()));
        let mut evaluation = match enrollment {
            Some(enrollment) => {
                let due = DueEnrollment {
                    enrollment: EnrollmentRecord {
                        current_step: d.step_index,
                        ..enrollment
                    },
                    lead: lead.clone(),
                };
                let since = now - self.config.timing.history.max(Duration::days(7));
                let mut history = self
                    .store
                    .contact_history(&[d.lead_id], since)
                    .await?
                    .remove(&d.lead_id)
                    .unwrap_or_default();
                // The failed send is not a touch.
                history.touches.retain(|t| t.delivery != Some(d.id));
                let suppressed = self.store.suppressed(&suppression_keys(lead)).await?;
                let mut open = HashMap::new();
                if let Some(guard) = self.guard {
                    // A channel is closed to the fallback only when every account's circuit is.
                    for sender in self.channels.all() {
                        let channel = sender.channel();
                        let untils: Option<Vec<_>> = self
                            .channels
                            .accounts(channel)
                            .iter()
                            .map(|s| {
                                let account = SendGuard::account(channel, s.name());
                                guard.open_until(&account).filter(|u| *u > now)
                            })
                            .collect();
                        if let Some(until) = untils.and_then(|u| u.into_iter().min()) {
                            open.insert(channel, until);
                        }
                    }
                }
                Planner::new(self.store, self.catalog, self.config)
                    .with_open_circuits(open)
                    .evaluate_excluding(&due, campaign, &history, &suppressed, &excluded, now)
            }
            // Without its enrollment there is nothing to re-plan; the failure stands.
            None => return Ok(failed_step(d, error, now)),
        };
        if matches!(evaluation.decision, PlanDecision::Skip { .. }) {
            evaluation.decision = PlanDecision::Stop {
                reason: "delivery_failed".into(),
            };
            evaluation.trace.outcome = "stopped".into();
            evaluation.trace.code = Some("delivery_failed".into());
        }
        Ok(evaluation)
    }

    /// Asks providers that can tell (Graph's Sent Items) about deliveries whose outcome is
    /// unknown; confirmed ones are recorded as sent. The rest wait for a person
    /// (`engager deliveries unknown`). At most 20 per pass, so a provider is not flooded.
    async fn reconcile_unknown(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let unknown = self
            .store
            .deliveries(&DeliveryFilter {
                state: Some(DeliveryState::Unknown),
                limit: Some(20),
                ..Default::default()
            })
            .await?;
        let mut confirmed = 0;
        for d in unknown {
            // Asked of the account that sent it (its mailbox's Sent Items).
            let by_account = d
                .account
                .as_deref()
                .and_then(|a| self.channels.account(d.channel, a));
            let Some(sender) = by_account.or_else(|| self.channels.get(d.channel)) else {
                continue;
            };
            match sender.reconcile(d.id, d.send_at - Duration::hours(1)).await {
                Ok(Reconciled::Sent { provider_ref }) => {
                    let follow_up = match self
                        .catalog
                        .get(d.campaign_id)
                        .and_then(|c| c.step(d.step_index + 1))
                    {
                        Some(next) => FollowUp::NextStepAt(now + next.delay),
                        None => FollowUp::Complete,
                    };
                    if self
                        .store
                        .record_outcome(
                            d.id,
                            d.fencing_token,
                            &SendOutcome::Sent { provider_ref },
                            &follow_up,
                            now,
                        )
                        .await?
                    {
                        info!(
                            delivery_id = d.id.0,
                            "Unknown delivery found at the provider; recorded as sent."
                        );
                        confirmed += 1;
                    }
                }
                Ok(Reconciled::NotFound | Reconciled::CannotTell) => {}
                Err(e) => debug!(delivery_id = d.id.0, error = %e, "Could not reconcile now."),
            }
        }
        Ok(confirmed)
    }

    /// Feeds the outcome to the account's circuit breaker and limiter, and alerts on a
    /// circuit that opens or credentials that are refused.
    async fn account_health(
        &self,
        account: &str,
        result: &Result<engager_channels::Accepted, DeliveryError>,
        now: DateTime<Utc>,
    ) {
        let Some(guard) = self.guard else { return };
        let (health, sent) = match result {
            Ok(_) => (Health::Ok, true),
            // The provider worked; the recipient or content was refused.
            Err(DeliveryError::Permanent { .. } | DeliveryError::OptedOut { .. }) => {
                (Health::Ok, false)
            }
            Err(_) => (Health::Failed, false),
        };
        if let Err(error) = result {
            if let Some(wait) = error.retry_after().and_then(|w| Duration::from_std(w).ok()) {
                guard.pause(account, now + wait).await;
            }
            if matches!(error, DeliveryError::Config { .. }) {
                guard.trip(account, now + Duration::minutes(15));
                self.alert(
                    AlertKind::AuthFailure,
                    account,
                    format!("{account} refused our credentials or configuration; sending on it is paused"),
                    vec![("error", error.to_string())],
                    now,
                )
                .await;
            }
        }
        let transition = guard.record(account, health, sent, now);
        if let Some(t) = transition {
            let open_until = guard.open_until(account);
            let state = engager_store::AccountState {
                account: account.to_owned(),
                circuit: match t {
                    CircuitTransition::Opened => "open",
                    CircuitTransition::Closed => "closed",
                }
                .to_owned(),
                open_until,
                last_error: result.as_ref().err().map(|e| e.to_string()),
                updated_at: now,
            };
            if let Err(e) = self.store.save_account_state(&state).await {
                warn!(account, error = %e, "Could not save the account's circuit state.");
            }
            info!(
                account,
                circuit = state.circuit.as_str(),
                "Circuit state changed."
            );
        }
        if let Some(CircuitTransition::Opened) = transition {
            self.alert(
                AlertKind::CircuitOpened,
                account,
                format!(
                    "the circuit of {account} opened after repeated provider failures; sends wait"
                ),
                vec![(
                    "last_error",
                    result
                        .as_ref()
                        .err()
                        .map(|e| e.to_string())
                        .unwrap_or_default(),
                )],
                now,
            )
            .await;
        }
    }

    /// Turns a channel error into the ledger's next state: retry with capped exponential
    /// backoff and full jitter (or the provider's Retry-After when longer), fail after the
    /// maximum attempts, hold ambiguous outcomes.
    fn classify(
        &self,
        d: &DeliveryRecord,
        attempts: u32,
        error: &DeliveryError,
        now: DateTime<Utc>,
    ) -> SendOutcome {
        match error {
            DeliveryError::Transient { .. } | DeliveryError::Config { .. }
                if (attempts < self.config.max_attempts
                    && now - d.created_at < self.config.max_age)
                    || matches!(error, DeliveryError::Config { .. }) =>
            {
                let exp = self.config.retry_base_delay
                    * 2i32.saturating_pow(attempts.saturating_sub(1).min(20));
                let cap = exp.min(self.config.retry_max_delay);
                let jitter = unit_fraction(stable_hash(&[
                    &d.id.0.to_le_bytes(),
                    &attempts.to_le_bytes(),
                ]));
                let mut wait =
                    Duration::milliseconds((cap.num_milliseconds() as f64 * jitter) as i64)
                        .max(Duration::seconds(1));
                if let Some(after) = error.retry_after().and_then(|a| Duration::from_std(a).ok()) {
                    wait = wait.max(after);
                }
                if matches!(error, DeliveryError::Config { .. }) {
                    // A broken account is not the recipient's fault: wait, do not burn the send.
                    wait = wait.max(Duration::minutes(15));
                }
                SendOutcome::Retry {
                    at: now + wait,
                    error: error.to_string(),
                }
            }
            DeliveryError::Transient { .. } => SendOutcome::Failed {
                error: format!("{error} (after {attempts} attempts)"),
            },
            DeliveryError::Permanent { .. }
            | DeliveryError::OptedOut { .. }
            | DeliveryError::Config { .. } => SendOutcome::Failed {
                error: error.to_string(),
            },
            DeliveryError::Ambiguous { .. } => SendOutcome::Unknown {
                error: error.to_string(),
            },
        }
    }
}

/// The evaluation recorded when a failed step cannot be re-planned: the sequence stops.
fn failed_step(d: &DeliveryRecord, error: &str, now: DateTime<Utc>) -> Evaluation {
    Evaluation {
        trace: TraceRecord {
            enrollment_id: d.enrollment_id,
            campaign_id: d.campaign_id,
            lead_id: d.lead_id,
            step_index: d.step_index,
            evaluated_at: now,
            outcome: "stopped".into(),
            code: Some("delivery_failed".into()),
            channel: Some(d.channel),
            at: None,
            gates: vec![GateRow {
                gate: Gate::Channel.as_str().to_owned(),
                passed: false,
                reason: format!("{} failed for good: {error}", d.channel),
            }],
        },
        decision: PlanDecision::Stop {
            reason: "delivery_failed".into(),
        },
    }
}

/// The contact point a permanent failure proves unreachable, with the suppression reason:
/// a hard bounce of the address (Graph's invalid or unknown recipient, SMTP 5.1.x), or a
/// number that cannot take SMS (Twilio 21211 invalid number, 21614 not a mobile number,
/// 30006 landline or unreachable carrier). Other permanent failures (content refused, a
/// route not enabled) concern this message or account, not the address.
fn unreachable_contact(
    d: &DeliveryRecord,
    error: &DeliveryError,
) -> Option<(SuppressionKey, String)> {
    let DeliveryError::Permanent { reason } = error else {
        return None;
    };
    let text = reason.as_str();
    match d.channel {
        Channel::Email
            if [
                "ErrorInvalidRecipients",
                "ErrorRecipientNotFound",
                "ErrorInvalidEmailAddress",
                " 5.1.1",
                " 5.1.10",
            ]
            .iter()
            .any(|m| text.contains(m)) =>
        {
            Some((
                SuppressionKey::Email(d.to_address.clone()),
                format!("hard bounce: {text}"),
            ))
        }
        Channel::Sms
            if ["(error 21211)", "(error 21614)", "(error 30006)"]
                .iter()
                .any(|m| text.contains(m)) =>
        {
            Some((
                SuppressionKey::Phone(d.to_address.clone()),
                format!("cannot receive SMS: {text}"),
            ))
        }
        _ => None,
    }
}

/// Test-only crash points, armed by `ENGAGER_TEST_CRASH_POINTS=point:probability,…` (points:
/// `after_claim`, `after_begin_send`, `after_response`). When a point fires the process aborts
/// at once, as a `kill -9` would, so crash tests can hit the windows that matter. Unset in
/// production, where this is a single branch on a cached empty list.
fn crash_point(point: &str) {
    use std::sync::OnceLock;
    static ARMED: OnceLock<Vec<(String, f64)>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        std::env::var("ENGAGER_TEST_CRASH_POINTS")
            .map(|v| {
                v.split(',')
                    .filter_map(|p| p.split_once(':'))
                    .filter_map(|(name, prob)| {
                        Some((name.trim().to_owned(), prob.trim().parse().ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default()
    });
    if armed.is_empty() {
        return;
    }
    if let Some((_, probability)) = armed.iter().find(|(name, _)| name == point) {
        use rand::Rng;
        if rand::thread_rng().gen_bool(probability.clamp(0.0, 1.0)) {
            eprintln!("ENGAGER_TEST_CRASH_POINTS: aborting at {point}");
            std::process::abort();
        }
    }
}
