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
use engager_channels::{ChannelSender, DeliveryError, OutgoingMessage, Unsubscribe};
use engager_domain::timing::next_send_slot;
use engager_domain::{stable_hash, unit_fraction, CampaignId, Channel, DeliveryId, LeadId};
use engager_store::{
    DeliveryRecord, FollowUp, Recovered, SendOutcome, Store, StoreError, SuppressionKey,
};
use tracing::{debug, info, warn};

use crate::planner::{sms_window, unsubscribe_url};
use crate::{Catalog, EngineConfig};

/// The senders of every enabled channel.
#[derive(Clone, Default)]
pub struct ChannelSet {
    senders: HashMap<Channel, Arc<dyn ChannelSender>>,
}

impl ChannelSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the sender of its channel.
    pub fn with(mut self, sender: Arc<dyn ChannelSender>) -> Self {
        self.senders.insert(sender.channel(), sender);
        self
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
    /// Rows with an ambiguous outcome.
    pub unknown: usize,
    /// Rows cancelled by the re-check.
    pub cancelled: usize,
    /// Rows put back because the recipient's quiet hours started.
    pub held: usize,
    /// Rows whose claim was lost (stale token, or the enrollment stopped meanwhile).
    pub lost: usize,
    /// What lease recovery did first.
    pub recovered: Recovered,
}

/// The dispatcher, bound to a store, the campaigns, the configuration and the channels.
pub struct Dispatcher<'a> {
    store: &'a dyn Store,
    catalog: &'a Catalog,
    config: &'a EngineConfig,
    channels: &'a ChannelSet,
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
        if report.recovered.unknown > 0 {
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
        now: DateTime<Utc>,
        report: &mut DispatchReport,
    ) -> Result<(), StoreError> {
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
        let Some(sender) = self.channels.get(d.channel) else {
            let reason = format!("channel {} is not enabled", d.channel);
            self.store
                .cancel_claimed(d.id, d.fencing_token, &reason, now)
                .await?;
            report.cancelled += 1;
            return Ok(());
        };
        // SMS quiet hours are enforced at send time too, so a late row never goes out at night.
        if d.channel == Channel::Sms {
            let (zone, _) = lead.time_zone(self.config.default_time_zone);
            let window = sms_window(
                campaign.window,
                self.config.sms_quiet_start_hour,
                self.config.sms_quiet_end_hour,
            );
            if !window.contains(zone, now) {
                let jitter = unit_fraction(stable_hash(&[&d.id.0.to_le_bytes(), b"quiet"]));
                let at = next_send_slot(&window, zone, now, jitter, self.config.max_jitter);
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
        if !self
            .store
            .begin_send(d.id, d.fencing_token, now, self.config.lease)
            .await?
        {
            debug!("Claim lost before sending; not sending.");
            report.lost += 1;
            return Ok(());
        }
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
            body_text: d.body_text.clone(),
            body_html: d.body_html.clone(),
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
            due_by: (d.channel == Channel::Linkedin).then(|| now + Duration::days(3)),
        };
        let result = sender.send(&message).await;
        let attempts = d.attempts + 1;
        let (outcome, follow_up) = match result {
            Ok(accepted) => {
                let follow_up = match campaign.step(d.step_index + 1) {
                    Some(next) => FollowUp::NextStepAt(now + next.delay),
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
                    SendOutcome::Failed { .. } => {
                        report.failed += 1;
                        warn!(%error, attempts, "Delivery failed for good.");
                    }
                    SendOutcome::Unknown { .. } => {
                        report.unknown += 1;
                        warn!(%error, "Delivery outcome unknown; held for reconciliation.");
                    }
                    SendOutcome::Sent { .. } => {}
                }
                (outcome, FollowUp::Complete)
            }
        };
        if !self
            .store
            .record_outcome(d.id, d.fencing_token, &outcome, &follow_up, now)
            .await?
        {
            warn!("A newer claim owns this delivery; outcome not recorded.");
        }
        Ok(())
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
                if attempts < self.config.max_attempts
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
            DeliveryError::Permanent { .. } | DeliveryError::Config { .. } => SendOutcome::Failed {
                error: error.to_string(),
            },
            DeliveryError::Ambiguous { .. } => SendOutcome::Unknown {
                error: error.to_string(),
            },
        }
    }
}
