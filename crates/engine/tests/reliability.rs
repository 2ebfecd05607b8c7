//! Reliability proofs of the dispatcher on a virtual clock: a flaky provider, a poison
//! recipient, a provider that goes down and comes back, and two dispatchers on one database.
//! The provider here is a scripted `ChannelSender` that logs every call; the wire-level fakes
//! (Twilio, Graph) are exercised by the binary's crash tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use engager_channels::{Accepted, ChannelSender, DeliveryError, OutgoingMessage, Sender};
use engager_domain::circuit::CircuitPolicy;
use engager_domain::frequency::FrequencyPolicy;
use engager_domain::{Channel, DeliveryState, EmailAddress, NewLead, TimeZone};
use engager_engine::dispatcher::{ChannelSet, Dispatcher};
use engager_engine::guard::{AccountLimits, SendGuard};
use engager_engine::planner::Planner;
use engager_engine::timing::{BestTimeSettings, TimingRules};
use engager_engine::{Catalog, EngineConfig};
use engager_store::{DeliveryFilter, Store};

const CAMPAIGN: &str = r#"
slug = "r"
name = "Reliability"
best_time = false
[window]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "00:00"
end = "23:59"
[[steps]]
name = "hello"
channels = ["email"]
subject = "Hello {{ lead.first_name }}"
body = "Hi {{ lead.first_name }}."
"#;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-03T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn config() -> EngineConfig {
    EngineConfig {
        sender: Sender {
            name: "Maya".into(),
            email: EmailAddress::parse("maya@acme.example").unwrap(),
            postal_address: "1 Main St, Springfield".into(),
            sms_from: None,
        },
        sender_company: "Acme".into(),
        public_base_url: "https://acme.example".into(),
        unsubscribe_mailto: None,
        link_secret: b"0123456789abcdef".to_vec(),
        default_time_zone: TimeZone::parse("UTC").unwrap(),
        frequency: FrequencyPolicy {
            min_gap: Duration::hours(48),
            max_per_week: 3,
        },
        max_jitter: Duration::zero(),
        sms_quiet_start_hour: 8,
        sms_quiet_end_hour: 21,
        max_sms_segments: 3,
        batch_size: 100,
        lease: Duration::minutes(5),
        max_attempts: 8,
        max_age: Duration::hours(72),
        retry_base_delay: Duration::seconds(10),
        retry_max_delay: Duration::minutes(10),
        enabled_channels: vec![Channel::Email],
        worker_id: "test".into(),
        compliance: Default::default(),
        budget: engager_domain::frequency::BudgetRules::default(),
        timing: TimingRules {
            best_time: BestTimeSettings {
                enabled: false,
                ..BestTimeSettings::default()
            },
            ..TimingRules::default()
        },
    }
}

/// One call the provider saw.
#[derive(Debug, Clone)]
struct Call {
    to: String,
    at: DateTime<Utc>,
    outcome: &'static str,
    retry_after: Option<Duration>,
}

type Script = Box<dyn Fn(&str, DateTime<Utc>, u64) -> Result<(), DeliveryError> + Send + Sync>;

/// A scripted provider: decides each call's outcome from the recipient, the (virtual) time and
/// a per-call random number, and logs it.
struct ScriptedProvider {
    now: Arc<Mutex<DateTime<Utc>>>,
    calls: Mutex<Vec<Call>>,
    script: Script,
    seed: Mutex<u64>,
}

#[async_trait]
impl ChannelSender for ScriptedProvider {
    fn channel(&self) -> Channel {
        Channel::Email
    }
    fn name(&self) -> &str {
        "scripted"
    }
    async fn health_check(&self) -> Result<(), DeliveryError> {
        Ok(())
    }
    async fn send(&self, m: &OutgoingMessage) -> Result<Accepted, DeliveryError> {
        let now = *self.now.lock().unwrap();
        let roll = {
            let mut s = self.seed.lock().unwrap();
            *s ^= *s << 13;
            *s ^= *s >> 7;
            *s ^= *s << 17;
            *s
        };
        let result = (self.script)(&m.to, now, roll);
        let (outcome, retry_after) = match &result {
            Ok(()) => ("accepted", None),
            Err(e) => (
                if e.is_permanent() {
                    "permanent"
                } else {
                    "transient"
                },
                e.retry_after().and_then(|d| Duration::from_std(d).ok()),
            ),
        };
        self.calls.lock().unwrap().push(Call {
            to: m.to.clone(),
            at: now,
            outcome,
            retry_after,
        });
        result.map(|()| Accepted {
            provider_ref: format!("p-{}", m.delivery_id),
        })
    }
}

async fn store_with_leads(n: usize) -> (Arc<dyn Store>, Catalog, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = engager_store::open(&format!("sqlite:{}", dir.path().join("r.db").display()))
        .await
        .unwrap();
    seed(store.as_ref(), n).await;
    let catalog = Catalog::load(store.as_ref()).await.unwrap();
    (store, catalog, dir)
}

async fn seed(store: &dyn Store, n: usize) {
    let leads: Vec<NewLead> = (0..n)
        .map(|i| NewLead {
            email: Some(EmailAddress::parse(&format!("lead{i}@example.com")).unwrap()),
            first_name: Some(format!("L{i}")),
            source: "test".into(),
            ..NewLead::default()
        })
        .collect();
    let ids: Vec<_> = store
        .upsert_leads(&leads, t0())
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.id())
        .collect();
    let campaign = store
        .save_campaign("r", "Reliability", CAMPAIGN, t0())
        .await
        .unwrap();
    store.enroll(campaign, &ids, t0()).await.unwrap();
}

/// Plans and dispatches every `step` of virtual time until nothing is pending or `until`.
async fn drive(
    store: &dyn Store,
    catalog: &Catalog,
    config: &EngineConfig,
    channels: &ChannelSet,
    guard: &SendGuard,
    now: &Arc<Mutex<DateTime<Utc>>>,
    step: Duration,
    until: DateTime<Utc>,
) {
    loop {
        let t = *now.lock().unwrap();
        if t > until {
            break;
        }
        Planner::new(store, catalog, config)
            .plan_due(t, None, false)
            .await
            .unwrap();
        Dispatcher::new(store, catalog, config, channels)
            .with_guard(guard)
            .dispatch_due(t, None)
            .await
            .unwrap();
        let open: u64 = store
            .ledger_overview()
            .await
            .unwrap()
            .iter()
            .filter(|r| {
                matches!(
                    r.state,
                    DeliveryState::Planned
                        | DeliveryState::RetryWait
                        | DeliveryState::Claimed
                        | DeliveryState::Sending
                )
            })
            .map(|r| r.count)
            .sum();
        if open == 0 && t > t0() {
            break;
        }
        // Jump straight to the next due work: virtual time costs nothing.
        let next = store.next_due_at().await.unwrap().unwrap_or(t + step);
        *now.lock().unwrap() = next.max(t + step);
    }
}

fn provider(now: &Arc<Mutex<DateTime<Utc>>>, script: Script) -> Arc<ScriptedProvider> {
    Arc::new(ScriptedProvider {
        now: now.clone(),
        calls: Mutex::new(Vec::new()),
        script,
        seed: Mutex::new(0x2545_f491_4f6c_dd1d),
    })
}

fn transient(reason: &str, retry_after: Option<u64>) -> DeliveryError {
    DeliveryError::Transient {
        reason: reason.into(),
        retry_after: retry_after.map(std::time::Duration::from_secs),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_provider_delivers_every_retryable_send_once_honouring_retry_after() {
    let (store, catalog, _dir) = store_with_leads(2000).await;
    let config = config();
    let now = Arc::new(Mutex::new(t0()));
    // 20% 429 with Retry-After, 10% 5xx, 5% connect timeouts (before the request went out).
    let p = provider(
        &now,
        Box::new(|_, _, roll| match roll % 100 {
            0..=19 => Err(transient("429 Too Many Requests", Some(1 + roll % 30))),
            20..=29 => Err(transient("503 Service Unavailable", None)),
            30..=34 => Err(transient("connect timeout", None)),
            _ => Ok(()),
        }),
    );
    let channels = ChannelSet::new().with(p.clone());
    let guard = SendGuard::new(
        HashMap::new(),
        CircuitPolicy {
            failure_ratio: 0.8,
            min_calls: 20,
            ..CircuitPolicy::default()
        },
    );
    let mut config = config;
    config.max_attempts = 12;
    drive(
        store.as_ref(),
        &catalog,
        &config,
        &channels,
        &guard,
        &now,
        Duration::seconds(15),
        t0() + Duration::hours(6),
    )
    .await;
    let rows = store.deliveries(&DeliveryFilter::default()).await.unwrap();
    let calls = p.calls.lock().unwrap().clone();
    let mut accepted: HashMap<&str, usize> = HashMap::new();
    let mut by_to: HashMap<&str, Vec<&Call>> = HashMap::new();
    for c in &calls {
        by_to.entry(c.to.as_str()).or_default().push(c);
        if c.outcome == "accepted" {
            *accepted.entry(c.to.as_str()).or_default() += 1;
        }
    }
    let failed = rows
        .iter()
        .filter(|d| d.state == DeliveryState::Failed)
        .count();
    let sent = rows
        .iter()
        .filter(|d| d.state == DeliveryState::Sent)
        .count();
    // With 35% failures and 12 attempts, a delivery failing every time is a 0.35^12 ≈ 3·10⁻⁶ event.
    assert_eq!((sent, failed), (2000, 0));
    assert!(
        accepted.values().all(|n| *n == 1),
        "a message was accepted twice"
    );
    assert_eq!(accepted.len(), sent);
    for d in rows.iter().filter(|d| d.state == DeliveryState::Sent) {
        assert!(
            d.attempts <= config.max_attempts,
            "delivery {} took {} attempts",
            d.id,
            d.attempts
        );
    }
    // Retry-After honoured: after a 429 saying wait N s, the next call to that recipient (and to
    // the account at all) comes no earlier.
    for seq in by_to.values() {
        for w in seq.windows(2) {
            if let Some(wait) = w[0].retry_after {
                assert!(
                    w[1].at >= w[0].at + wait,
                    "retried {} after {} although Retry-After said {}",
                    w[0].to,
                    w[1].at - w[0].at,
                    wait
                );
            }
        }
    }
    let retried = calls.len() - 2000;
    eprintln!("flaky provider: {} calls for 2000 deliveries ({retried} retries), {sent} sent, {failed} failed", calls.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_recipient_fails_once_and_the_rest_go_out_once() {
    let (store, catalog, _dir) = store_with_leads(1000).await;
    let config = config();
    let now = Arc::new(Mutex::new(t0()));
    let p = provider(
        &now,
        Box::new(|to, _, _| {
            if to == "lead500@example.com" {
                Err(DeliveryError::Permanent {
                    reason: "550 5.1.1 mailbox does not exist".into(),
                })
            } else {
                Ok(())
            }
        }),
    );
    let channels = ChannelSet::new().with(p.clone());
    let guard = SendGuard::unlimited();
    drive(
        store.as_ref(),
        &catalog,
        &config,
        &channels,
        &guard,
        &now,
        Duration::seconds(30),
        t0() + Duration::hours(1),
    )
    .await;
    let calls = p.calls.lock().unwrap().clone();
    assert_eq!(
        calls.len(),
        1000,
        "exactly one call per delivery, no resend loop"
    );
    let rows = store.deliveries(&DeliveryFilter::default()).await.unwrap();
    let bad = rows
        .iter()
        .find(|d| d.to_address == "lead500@example.com")
        .unwrap();
    assert_eq!((bad.state, bad.attempts), (DeliveryState::Failed, 1));
    assert!(bad.last_error.as_deref().unwrap().contains("550"));
    assert_eq!(
        rows.iter()
            .filter(|d| d.state == DeliveryState::Sent)
            .count(),
        999
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_provider_is_down_nothing_is_lost_and_the_backlog_drains_within_limits() {
    let (store, catalog, _dir) = store_with_leads(300).await;
    let config = config();
    let now = Arc::new(Mutex::new(t0()));
    let back_at = t0() + Duration::minutes(40);
    let p = provider(
        &now,
        Box::new(move |_, at, _| {
            if at < back_at {
                Err(transient("503 Service Unavailable", None))
            } else {
                Ok(())
            }
        }),
    );
    let channels = ChannelSet::new().with(p.clone());
    let mut limits = HashMap::new();
    limits.insert(
        Channel::Email,
        AccountLimits {
            per_minute: Some(30),
            ..AccountLimits::default()
        },
    );
    let guard = SendGuard::new(
        limits,
        CircuitPolicy {
            failure_ratio: 0.5,
            min_calls: 5,
            window: Duration::seconds(60),
            cool_down: Duration::seconds(60),
            close_after: 2,
        },
    );
    let mut config = config;
    config.max_attempts = 50;
    drive(
        store.as_ref(),
        &catalog,
        &config,
        &channels,
        &guard,
        &now,
        Duration::seconds(10),
        t0() + Duration::hours(4),
    )
    .await;
    let rows = store.deliveries(&DeliveryFilter::default()).await.unwrap();
    assert!(
        rows.iter().all(|d| d.state == DeliveryState::Sent),
        "{:?}",
        rows.iter()
            .filter(|d| d.state != DeliveryState::Sent)
            .map(|d| (d.id, d.state))
            .collect::<Vec<_>>()
    );
    let calls = p.calls.lock().unwrap().clone();
    // While down, the open circuit let only probes through: the calls that opened it (5), then
    // one probe per cool-down (60 s) over the 40 minutes.
    let down_calls = calls.iter().filter(|c| c.at < back_at).count();
    assert!(
        down_calls <= 5 + 40 + 1,
        "{down_calls} calls while the provider was down"
    );
    // After recovery the backlog drains at the rate limit: 30 a minute after a first burst of
    // at most 30 (GCRA), so never more than 60 in any minute, and 300 sends take ≥ 9 minutes.
    let accepted: Vec<_> = calls
        .iter()
        .filter(|c| c.outcome == "accepted")
        .map(|c| c.at)
        .collect();
    for (i, t) in accepted.iter().enumerate() {
        let in_minute = accepted[i..]
            .iter()
            .take_while(|u| **u < *t + Duration::seconds(60))
            .count();
        assert!(
            in_minute <= 60,
            "{in_minute} sends within a minute from {t}"
        );
    }
    let minutes = (*accepted.last().unwrap() - accepted[0]).num_seconds() as f64 / 60.0;
    assert!(
        minutes >= 9.0,
        "300 sends in {minutes:.1} minutes beat 30/min"
    );
    eprintln!(
        "provider down 40 min: {down_calls} probe calls while down; 300 sent by {}",
        accepted.last().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatchers_on_postgresql_never_send_twice() {
    let Some(url) = engager_testkit::postgres_url() else {
        return;
    };
    let schema = engager_testkit::unique_schema("two_dispatchers");
    let a: Arc<dyn Store> = Arc::new(
        engager_store::postgres::PgStore::connect_isolated(&url, &schema)
            .await
            .unwrap(),
    );
    let b: Arc<dyn Store> = Arc::new(
        engager_store::postgres::PgStore::connect_isolated(&url, &schema)
            .await
            .unwrap(),
    );
    seed(a.as_ref(), 400).await;
    let catalog = Catalog::load(a.as_ref()).await.unwrap();
    let config = config();
    let now = Arc::new(Mutex::new(t0()));
    let p = provider(&now, Box::new(|_, _, _| Ok(())));
    let channels = ChannelSet::new().with(p.clone());
    Planner::new(a.as_ref(), &catalog, &config)
        .plan_due(t0(), None, false)
        .await
        .unwrap();
    let run = |store: Arc<dyn Store>| {
        let (catalog, config, channels) = (
            Catalog::from_campaigns(catalog.all().into_iter().cloned().collect()).unwrap(),
            config.clone(),
            channels.clone(),
        );
        tokio::spawn(async move {
            let guard = SendGuard::unlimited();
            let mut config = config;
            config.batch_size = 7;
            Dispatcher::new(store.as_ref(), &catalog, &config, &channels)
                .with_guard(&guard)
                .dispatch_due(t0(), None)
                .await
                .unwrap()
                .sent
                .len()
        })
    };
    let (x, y) = tokio::join!(run(a.clone()), run(b.clone()));
    let (x, y) = (x.unwrap(), y.unwrap());
    let calls = p.calls.lock().unwrap().clone();
    let unique: std::collections::HashSet<_> = calls.iter().map(|c| c.to.clone()).collect();
    assert_eq!(calls.len(), 400, "every delivery sent once ({x} + {y})");
    assert_eq!(unique.len(), 400);
    assert!(x > 0 && y > 0, "both dispatchers worked: {x} and {y}");
}

/// A provider that answers ambiguously (the send may have gone out), then, asked afterwards,
/// finds every other message in its sent items; and reports one recipient as opted out.
struct Forgetful {
    calls: Mutex<u64>,
}

#[async_trait]
impl ChannelSender for Forgetful {
    fn channel(&self) -> Channel {
        Channel::Email
    }
    fn name(&self) -> &str {
        "forgetful"
    }
    async fn health_check(&self) -> Result<(), DeliveryError> {
        Ok(())
    }
    async fn send(&self, m: &OutgoingMessage) -> Result<Accepted, DeliveryError> {
        *self.calls.lock().unwrap() += 1;
        if m.to == "lead3@example.com" {
            return Err(DeliveryError::OptedOut {
                reason: "21610 the recipient replied STOP".into(),
            });
        }
        Err(DeliveryError::Ambiguous {
            reason: "connection reset after the request was written".into(),
        })
    }
    async fn reconcile(
        &self,
        delivery: engager_domain::DeliveryId,
        _since: DateTime<Utc>,
    ) -> Result<engager_channels::Reconciled, DeliveryError> {
        Ok(if delivery.0 % 2 == 0 {
            engager_channels::Reconciled::Sent {
                provider_ref: format!("found-{delivery}"),
            }
        } else {
            engager_channels::Reconciled::NotFound
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_deliveries_are_reconciled_with_the_provider_and_opt_outs_suppress() {
    let (store, catalog, _dir) = store_with_leads(10).await;
    let config = config();
    let provider = Arc::new(Forgetful {
        calls: Mutex::new(0),
    });
    let channels = ChannelSet::new().with(provider.clone());
    Planner::new(store.as_ref(), &catalog, &config)
        .plan_due(t0(), None, false)
        .await
        .unwrap();
    let first = Dispatcher::new(store.as_ref(), &catalog, &config, &channels)
        .dispatch_due(t0(), None)
        .await
        .unwrap();
    assert_eq!((first.unknown, first.failed), (9, 1));
    let second = Dispatcher::new(store.as_ref(), &catalog, &config, &channels)
        .dispatch_due(t0() + Duration::minutes(5), None)
        .await
        .unwrap();
    let rows = store.deliveries(&DeliveryFilter::default()).await.unwrap();
    let sent: Vec<_> = rows
        .iter()
        .filter(|d| d.state == DeliveryState::Sent)
        .collect();
    assert_eq!(second.reconciled, sent.len());
    assert!(
        sent.iter()
            .all(|d| d.id.0 % 2 == 0
                && d.provider_ref.as_deref() == Some(&*format!("found-{}", d.id)))
    );
    assert!(
        rows.iter()
            .filter(|d| d.state == DeliveryState::Unknown)
            .all(|d| d.id.0 % 2 == 1),
        "not found: still for a person"
    );
    assert_eq!(
        *provider.calls.lock().unwrap(),
        10,
        "reconciliation never resends"
    );
    let hits = store
        .suppressed(&[engager_store::SuppressionKey::Email(
            "lead3@example.com".into(),
        )])
        .await
        .unwrap();
    assert_eq!(
        hits.len(),
        1,
        "a provider-reported opt-out suppresses the address"
    );
}
