//! Mailbox rotation end to end: two Exchange Online mailboxes on the Graph fake (each its
//! own fake server), the real Graph channel, the dispatcher and a SQLite ledger on a virtual
//! clock. Per-account caps hold, new leads spread over the accounts, a follow-up goes out
//! from the mailbox that sent the first step, an account whose circuit opens hands new sends
//! to the other, and when every account is at its cap deliveries wait — none fails.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use engager_channels::{ChannelSender, GraphChannel, GraphConfig, Sender};
use engager_domain::circuit::CircuitPolicy;
use engager_domain::frequency::FrequencyPolicy;
use engager_domain::{Channel, DeliveryState, EmailAddress, NewLead, TimeZone};
use engager_engine::accounts::AccountSender;
use engager_engine::dispatcher::{ChannelSet, DispatchReport, Dispatcher};
use engager_engine::guard::{AccountLimits, SendGuard};
use engager_engine::planner::Planner;
use engager_engine::timing::{BestTimeSettings, TimingRules};
use engager_engine::{Catalog, EngineConfig};
use engager_store::{DeliveryFilter, DeliveryRecord, Store};
use engager_testkit::faults::Fault;
use engager_testkit::graph::{FakeGraph, FakeGraphSetup, GraphEndpoint};

const TENANT: &str = "contoso.onmicrosoft.com";
const CLIENT: &str = "11111111-2222-3333-4444-555555555555";
const SECRET: &str = "s3cr3t";
const MAYA: &str = "maya@acme.example";
const SAM: &str = "sam@acme.example";
const A: &str = "email:graph:maya@acme.example";
const B: &str = "email:graph:sam@acme.example";

const CAMPAIGN: &str = r#"
slug = "rot"
name = "Rotation"
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
[[steps]]
name = "follow-up"
channels = ["email"]
delay_days = 3
subject = "Following up, {{ lead.first_name }}"
body = "Hi again {{ lead.first_name }}."
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
            email: EmailAddress::parse("hello@acme.example").unwrap(),
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

struct Mailboxes {
    maya: FakeGraph,
    sam: FakeGraph,
    channels: ChannelSet,
}

async fn mailbox(address: &str) -> (FakeGraph, Arc<dyn ChannelSender>) {
    let fake = FakeGraph::start(FakeGraphSetup::new(TENANT, CLIENT, SECRET, address))
        .await
        .unwrap();
    let mut config = GraphConfig::new(TENANT, CLIENT, SECRET.into(), address);
    config.authority_url = fake.authority_url().to_owned();
    config.graph_url = fake.graph_url();
    config.request_timeout_secs = 5.0;
    let channel = GraphChannel::new(config).unwrap();
    let sender = AccountSender::new(Arc::new(channel), address)
        .with_email_from(EmailAddress::parse(address).unwrap());
    (fake, Arc::new(sender))
}

async fn mailboxes() -> Mailboxes {
    let (maya, a) = mailbox(MAYA).await;
    let (sam, b) = mailbox(SAM).await;
    Mailboxes {
        maya,
        sam,
        channels: ChannelSet::new().with_accounts(vec![a, b]),
    }
}

async fn store_with_leads(n: usize) -> (Arc<dyn Store>, Catalog, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = engager_store::open(&format!("sqlite:{}", dir.path().join("r.db").display()))
        .await
        .unwrap();
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
        .save_campaign("rot", "Rotation", CAMPAIGN, t0())
        .await
        .unwrap();
    store.enroll(campaign, &ids, t0()).await.unwrap();
    let catalog = Catalog::load(store.as_ref()).await.unwrap();
    (store, catalog, dir)
}

fn guard(caps: &[(&str, u32)], policy: CircuitPolicy) -> SendGuard {
    let accounts: HashMap<String, AccountLimits> = caps
        .iter()
        .map(|(a, cap)| {
            (
                (*a).to_owned(),
                AccountLimits {
                    daily_cap: Some(*cap),
                    ..AccountLimits::default()
                },
            )
        })
        .collect();
    SendGuard::new(HashMap::new(), policy).with_account_limits(accounts)
}

async fn pass(
    store: &dyn Store,
    catalog: &Catalog,
    config: &EngineConfig,
    channels: &ChannelSet,
    guard: &SendGuard,
    at: DateTime<Utc>,
) -> DispatchReport {
    Planner::new(store, catalog, config)
        .plan_due(at, None, false)
        .await
        .unwrap();
    Dispatcher::new(store, catalog, config, channels)
        .with_guard(guard)
        .dispatch_due(at, None)
        .await
        .unwrap()
}

async fn rows(store: &dyn Store) -> Vec<DeliveryRecord> {
    store.deliveries(&DeliveryFilter::default()).await.unwrap()
}

fn sent_through(rows: &[DeliveryRecord], account: &str, step: usize) -> usize {
    rows.iter()
        .filter(|d| {
            d.state == DeliveryState::Sent
                && d.step_index == step
                && d.account.as_deref() == Some(account)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_leads_spread_over_the_accounts_and_follow_ups_stay_on_the_first_one() {
    let (store, catalog, _dir) = store_with_leads(8).await;
    let config = config();
    let m = mailboxes().await;
    let day1 = guard(&[(A, 100), (B, 100)], CircuitPolicy::default());
    let report = pass(store.as_ref(), &catalog, &config, &m.channels, &day1, t0()).await;
    assert_eq!(report.sent.len(), 8, "{report:?}");
    // Most remaining capacity first: equal caps share the leads evenly.
    let all = rows(store.as_ref()).await;
    assert_eq!(sent_through(&all, A, 0), 4);
    assert_eq!(sent_through(&all, B, 0), 4);
    assert_eq!(m.maya.sent().len(), 4);
    assert_eq!(m.sam.sent().len(), 4);
    // Each mailbox sent exactly the deliveries recorded against it.
    for (fake, account) in [(&m.maya, A), (&m.sam, B)] {
        for msg in fake.sent() {
            let d = all
                .iter()
                .find(|d| msg.to == vec![d.to_address.clone()])
                .unwrap();
            assert_eq!(d.account.as_deref(), Some(account), "{}", d.to_address);
            assert_eq!(msg.from, account.rsplit(':').next().unwrap());
        }
    }
    let first: HashMap<_, _> = all
        .iter()
        .map(|d| (d.lead_id, d.account.clone().unwrap()))
        .collect();

    // Days later sam's cap is lower than maya's: capacity alone would send every follow-up
    // from maya, but each lead hears from the mailbox it already knows.
    let later = guard(&[(A, 100), (B, 10)], CircuitPolicy::default());
    let at = t0() + Duration::days(3) + Duration::hours(1);
    let report = pass(store.as_ref(), &catalog, &config, &m.channels, &later, at).await;
    assert_eq!(report.sent.len(), 8, "{report:?}");
    let all = rows(store.as_ref()).await;
    for d in all.iter().filter(|d| d.step_index == 1) {
        assert_eq!(d.state, DeliveryState::Sent);
        assert_eq!(
            d.account.as_ref(),
            first.get(&d.lead_id),
            "lead {}",
            d.lead_id
        );
    }
    assert_eq!(m.maya.sent().len(), 8);
    assert_eq!(m.sam.sent().len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_account_caps_hold_and_when_all_are_full_deliveries_wait_for_the_next_day() {
    let (store, catalog, _dir) = store_with_leads(7).await;
    let config = config();
    let m = mailboxes().await;
    let guard = guard(&[(A, 3), (B, 2)], CircuitPolicy::default());
    let report = pass(store.as_ref(), &catalog, &config, &m.channels, &guard, t0()).await;
    assert_eq!(report.sent.len(), 5, "{report:?}");
    assert_eq!(report.throttled, 2);
    assert_eq!(report.failed, 0);
    assert_eq!(m.maya.sent().len(), 3, "maya's cap is 3");
    assert_eq!(m.sam.sent().len(), 2, "sam's cap is 2");
    let tomorrow = DateTime::parse_from_rfc3339("2026-03-04T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let waiting: Vec<_> = rows(store.as_ref())
        .await
        .into_iter()
        .filter(|d| d.state != DeliveryState::Sent)
        .collect();
    assert_eq!(waiting.len(), 2);
    for d in &waiting {
        assert_eq!(d.state, DeliveryState::Planned, "waits, not failed");
        assert_eq!(d.send_at, tomorrow, "held until the caps reset");
        assert!(
            d.last_error
                .as_deref()
                .unwrap_or_default()
                .contains("daily cap"),
            "{:?}",
            d.last_error
        );
        assert_eq!(d.account, None, "not bound to an account that did not send");
    }
    // A later pass the same day sends nothing more.
    let again = pass(
        store.as_ref(),
        &catalog,
        &config,
        &m.channels,
        &guard,
        t0() + Duration::hours(1),
    )
    .await;
    assert!(again.sent.is_empty(), "{again:?}");
    // The next day the caps reset and the rest go out.
    let report = pass(
        store.as_ref(),
        &catalog,
        &config,
        &m.channels,
        &guard,
        tomorrow + Duration::minutes(1),
    )
    .await;
    assert_eq!(report.sent.len(), 2, "{report:?}");
    assert_eq!(m.maya.sent().len() + m.sam.sent().len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_whose_circuit_opens_hands_new_sends_to_the_other() {
    let (store, catalog, _dir) = store_with_leads(6).await;
    let config = config();
    let m = mailboxes().await;
    // Maya's mailbox fails its next two drafts with 503: two failures open its circuit.
    for _ in 0..2 {
        m.maya.fail_next(
            GraphEndpoint::CreateMessage,
            Fault::status(
                503,
                serde_json::json!({"error": {"code": "ServiceUnavailable", "message": "busy"}}),
            ),
        );
    }
    let policy = CircuitPolicy {
        min_calls: 2,
        ..CircuitPolicy::default()
    };
    // Maya has more room, so she is tried first until her circuit opens.
    let guard = guard(&[(A, 100), (B, 50)], policy);
    let report = pass(store.as_ref(), &catalog, &config, &m.channels, &guard, t0()).await;
    assert_eq!(report.retried, 2, "{report:?}");
    assert_eq!(report.sent.len(), 4, "{report:?}");
    assert!(guard.open_until(A).is_some(), "maya's circuit is open");
    assert!(m.maya.sent().is_empty());
    assert_eq!(m.sam.sent().len(), 4);
    let all = rows(store.as_ref()).await;
    assert_eq!(sent_through(&all, B, 0), 4);

    // The two failed sends retry while maya's circuit is still open: sam takes them, since
    // maya never reached those leads.
    let retry_at = all
        .iter()
        .filter(|d| d.state == DeliveryState::RetryWait)
        .filter_map(|d| d.next_attempt_at)
        .max()
        .unwrap();
    assert!(
        retry_at < guard.open_until(A).unwrap(),
        "retries (at most 10 s) come before the 30 s cool-down ends"
    );
    let report = pass(
        store.as_ref(),
        &catalog,
        &config,
        &m.channels,
        &guard,
        retry_at,
    )
    .await;
    assert_eq!(report.sent.len(), 2, "{report:?}");
    assert!(m.maya.sent().is_empty(), "maya's circuit is still open");
    assert_eq!(m.sam.sent().len(), 6);
    let all = rows(store.as_ref()).await;
    let sent = all
        .iter()
        .filter(|d| d.state == DeliveryState::Sent)
        .count();
    assert_eq!(sent, 6, "{report:?} {all:#?}");
    assert_eq!(
        all.iter()
            .filter(|d| d.state == DeliveryState::Failed)
            .count(),
        0
    );
    assert_eq!(
        m.maya.sent().len() + m.sam.sent().len(),
        6,
        "each lead once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_leaves_its_account_only_when_that_account_is_broken() {
    let (store, catalog, _dir) = store_with_leads(6).await;
    let config = config();
    let m = mailboxes().await;
    let day1 = guard(&[(A, 100), (B, 100)], CircuitPolicy::default());
    let report = pass(store.as_ref(), &catalog, &config, &m.channels, &day1, t0()).await;
    assert_eq!(report.sent.len(), 6, "{report:?}");
    let on_maya = sent_through(&rows(store.as_ref()).await, A, 0);
    assert!(on_maya > 0);

    // By the follow-ups, maya's credentials were refused: her circuit is open for a day.
    let later = guard(&[(A, 100), (B, 100)], CircuitPolicy::default());
    let at = t0() + Duration::days(3) + Duration::hours(1);
    later.trip(A, at + Duration::days(1));
    let report = pass(store.as_ref(), &catalog, &config, &m.channels, &later, at).await;
    assert_eq!(report.sent.len(), 6, "{report:?}");
    let all = rows(store.as_ref()).await;
    assert_eq!(
        sent_through(&all, B, 1),
        6,
        "every follow-up went out from sam"
    );
    assert_eq!(m.maya.sent().len(), on_maya, "nothing more from maya");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_waits_for_its_account_when_that_account_is_at_its_cap() {
    let (store, catalog, _dir) = store_with_leads(4).await;
    let config = config();
    let m = mailboxes().await;
    let day1 = guard(&[(A, 100), (B, 100)], CircuitPolicy::default());
    let report = pass(store.as_ref(), &catalog, &config, &m.channels, &day1, t0()).await;
    assert_eq!(report.sent.len(), 4, "{report:?}");
    assert_eq!(sent_through(&rows(store.as_ref()).await, A, 0), 2);

    // Maya may send only one message that day: one of her two leads waits for her.
    let later = guard(&[(A, 1), (B, 100)], CircuitPolicy::default());
    let at = t0() + Duration::days(3) + Duration::hours(1);
    let report = pass(store.as_ref(), &catalog, &config, &m.channels, &later, at).await;
    assert_eq!(report.sent.len(), 3, "{report:?}");
    assert_eq!(report.throttled, 1);
    let all = rows(store.as_ref()).await;
    assert_eq!(sent_through(&all, A, 1), 1);
    assert_eq!(sent_through(&all, B, 1), 2);
    let waiting: Vec<_> = all
        .iter()
        .filter(|d| d.step_index == 1 && d.state != DeliveryState::Sent)
        .collect();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].state, DeliveryState::Planned);
    let note = waiting[0].last_error.as_deref().unwrap_or_default();
    assert!(
        note.contains("daily cap") && note.contains("the account of this sequence"),
        "{note}"
    );
    assert_eq!(
        waiting[0].send_at,
        (at.date_naive() + Duration::days(1))
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
    );
}
