//! Deterministic simulation of whole campaigns on a virtual clock.
//!
//! The real planner and dispatcher run tick by tick; sandbox channels write the outbox, and
//! a seeded engagement model answers each sent message with opens, clicks, replies, bounces
//! and opt-outs at later virtual times. Those events go through the same store path as real
//! ones, so replies stop sequences and opt-outs suppress. Invariant: the same seed, data and
//! campaigns give the same ledger, outbox and summary, byte for byte.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use engager_domain::{stable_hash, Channel, EventKind};
use engager_store::{NewEvent, Store, StoreError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::dispatcher::{ChannelSet, Dispatcher, SentDelivery};
use crate::guard::SendGuard;
use crate::planner::Planner;
use crate::{Catalog, Clock, EngineConfig, VirtualClock};

/// Probabilities of the sandbox engagement model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngagementModel {
    /// An email bounces (hard).
    pub email_bounce: f64,
    /// An email is opened.
    pub email_open: f64,
    /// An opened email's link is clicked.
    pub email_click: f64,
    /// An opened email is answered.
    pub email_reply: f64,
    /// An opened email leads to an unsubscribe.
    pub email_unsubscribe: f64,
    /// An SMS is answered.
    pub sms_reply: f64,
    /// An SMS is answered with STOP.
    pub sms_stop: f64,
    /// A LinkedIn note is answered.
    pub linkedin_reply: f64,
}

impl Default for EngagementModel {
    fn default() -> Self {
        Self {
            email_bounce: 0.03,
            email_open: 0.55,
            email_click: 0.15,
            email_reply: 0.12,
            email_unsubscribe: 0.04,
            sms_reply: 0.10,
            sms_stop: 0.04,
            linkedin_reply: 0.15,
        }
    }
}

/// How to run a simulation.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulationOptions {
    /// Virtual start.
    pub start: DateTime<Utc>,
    /// How long to simulate.
    pub duration: Duration,
    /// Virtual time between planner/dispatcher passes.
    pub tick: Duration,
    /// Seed of the engagement model.
    pub seed: u64,
    /// The engagement model.
    pub model: EngagementModel,
}

/// Totals of a simulation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimulationReport {
    /// Ticks run.
    pub ticks: u64,
    /// Deliveries planned.
    pub planned: usize,
    /// Deliveries sent.
    pub sent: usize,
    /// Engagement events applied, by kind.
    pub events: BTreeMap<String, u64>,
    /// Where the simulation ended.
    pub end: Option<DateTime<Utc>>,
}

/// The sandbox's answers to one sent message, at their virtual times.
pub fn engagement_for(
    model: &EngagementModel,
    seed: u64,
    sent: &SentDelivery,
) -> Vec<(DateTime<Utc>, EventKind)> {
    let mut rng = ChaCha8Rng::seed_from_u64(stable_hash(&[
        &seed.to_le_bytes(),
        &sent.delivery_id.0.to_le_bytes(),
    ]));
    let at = |rng: &mut ChaCha8Rng, from_min: i64, to_min: i64| {
        sent.sent_at + Duration::minutes(rng.gen_range(from_min..=to_min))
    };
    let mut out = Vec::new();
    match sent.channel {
        Channel::Email => {
            if rng.gen_bool(model.email_bounce) {
                out.push((at(&mut rng, 1, 10), EventKind::HardBounce));
                return out;
            }
            out.push((at(&mut rng, 0, 2), EventKind::Delivered));
            if rng.gen_bool(model.email_open) {
                let opened = at(&mut rng, 5, 36 * 60);
                out.push((opened, EventKind::Opened));
                if rng.gen_bool(model.email_click) {
                    out.push((
                        opened + Duration::minutes(rng.gen_range(1..=15)),
                        EventKind::Clicked,
                    ));
                }
                if rng.gen_bool(model.email_unsubscribe) {
                    out.push((
                        opened + Duration::minutes(rng.gen_range(1..=30)),
                        EventKind::Unsubscribed,
                    ));
                } else if rng.gen_bool(model.email_reply) {
                    out.push((
                        opened + Duration::minutes(rng.gen_range(30..=48 * 60)),
                        EventKind::Replied,
                    ));
                }
            }
        }
        Channel::Sms => {
            out.push((at(&mut rng, 0, 1), EventKind::Delivered));
            if rng.gen_bool(model.sms_stop) {
                out.push((at(&mut rng, 2, 120), EventKind::Unsubscribed));
            } else if rng.gen_bool(model.sms_reply) {
                out.push((at(&mut rng, 5, 6 * 60), EventKind::Replied));
            }
        }
        Channel::Linkedin => {
            if rng.gen_bool(model.linkedin_reply) {
                out.push((at(&mut rng, 24 * 60, 72 * 60), EventKind::Replied));
            }
        }
    }
    out
}

/// Runs the simulation. `progress` is called after every tick with (done, total).
pub async fn simulate(
    store: &dyn Store,
    catalog: &Catalog,
    config: &EngineConfig,
    channels: &ChannelSet,
    options: &SimulationOptions,
    progress: impl FnMut(u64, u64),
) -> Result<SimulationReport, StoreError> {
    let guard = SendGuard::unlimited();
    simulate_with_guard(store, catalog, config, channels, options, &guard, progress).await
}

/// Runs the simulation with rate limits, daily caps and circuit breakers applied on the
/// virtual clock.
pub async fn simulate_with_guard(
    store: &dyn Store,
    catalog: &Catalog,
    config: &EngineConfig,
    channels: &ChannelSet,
    options: &SimulationOptions,
    guard: &SendGuard,
    mut progress: impl FnMut(u64, u64),
) -> Result<SimulationReport, StoreError> {
    let clock = VirtualClock::new(options.start);
    let planner = Planner::new(store, catalog, config);
    let dispatcher = Dispatcher::new(store, catalog, config, channels).with_guard(guard);
    let total = (options.duration.num_seconds() / options.tick.num_seconds().max(1)).max(1) as u64;
    let mut pending: BTreeMap<(DateTime<Utc>, u64), NewEvent> = BTreeMap::new();
    let mut sequence = 0u64;
    let mut report = SimulationReport::default();
    for tick in 0..total {
        let now = clock.now();
        // Engagement that happened since the last tick, in time order.
        while let Some(entry) = pending.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let event = entry.remove();
            *report
                .events
                .entry(event.kind.as_str().to_owned())
                .or_default() += 1;
            store.record_event(&event).await?;
        }
        let plan = planner.plan_due(now, None, false).await?;
        report.planned += plan.planned;
        let mut dispatched = dispatcher.dispatch_due(now, None).await?;
        // LinkedIn steps are tasks for a person; the simulated person does each one at once.
        if dispatched.tasks > 0 {
            dispatched
                .sent
                .extend(crate::tasks::complete_open_tasks(store, catalog, config, now).await?);
        }
        for sent in &dispatched.sent {
            for (at, kind) in engagement_for(&options.model, options.seed, sent) {
                sequence += 1;
                pending.insert(
                    (at, sequence),
                    NewEvent {
                        lead_id: sent.lead_id,
                        delivery_id: Some(sent.delivery_id),
                        kind,
                        occurred_at: at,
                        detail: "{}".into(),
                        source: "sandbox".into(),
                    },
                );
            }
        }
        report.sent += dispatched.sent.len();
        report.ticks = tick + 1;
        clock.advance(options.tick);
        progress(tick + 1, total);
    }
    report.end = Some(clock.now());
    Ok(report)
}
