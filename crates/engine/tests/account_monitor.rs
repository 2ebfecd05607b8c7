//! The deliverability monitor per sending account and per sending domain, end to end: two
//! Exchange Online mailboxes of one domain on the Graph fake, the real Graph channel, the
//! dispatcher and a SQLite ledger on a virtual clock. A bounce spike on one mailbox halts
//! that mailbox alone (one alert) while the other keeps sending; a breach of the domain
//! halts both and deliveries wait until a person resumes it; a warning slows only the warned
//! mailbox.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use engager_channels::{ChannelSender, GraphChannel, GraphConfig, Sender};
use engager_domain::circuit::CircuitPolicy;
use engager_domain::deliverability::{Standing, Thresholds};
use engager_domain::frequency::FrequencyPolicy;
use engager_domain::{Channel, DeliveryState, EmailAddress, EventKind, NewLead, TimeZone};
use engager_engine::accounts::AccountSender;
use engager_engine::alerts::{AlertKind, Alerter};
use engager_engine::dispatcher::{ChannelSet, DispatchReport, Dispatcher};
use engager_engine::guard::{AccountLimits, SendGuard};
use engager_engine::monitor::{self, MonitorSettings, SenderHealth, SenderKind};
use engager_engine::planner::Planner;
use engager_engine::timing::{BestTimeSettings, TimingRules};
use engager_engine::{Catalog, EngineConfig};
use engager_store::{DeliveryFilter, DeliveryRecord, NewEvent, Store};
use engager_testkit::graph::{FakeGraph, FakeGraphSetup};

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

const DOMAIN: &str = "acme.example";
const LEE: &str = "lee@acme-mail.example";
const C: &str = "email:graph:lee@acme-mail.example";

fn settings(min_sample: u64) -> MonitorSettings {
    MonitorSettings {
        thresholds: Thresholds {
            min_sample,
            ..Thresholds::default()
        },
        ..MonitorSettings::default()
    }
}

fn accounts() -> Vec<(Channel, String)> {
    vec![
        (Channel::Email, A.to_owned()),
        (Channel::Email, B.to_owned()),
    ]
}

/// Runs the monitor as `engager run` does before a pass and hands its verdicts to the guard.
async fn enforce(
    store: &dyn Store,
    settings: &MonitorSettings,
    alerter: &Alerter,
    guard: &SendGuard,
    now: DateTime<Utc>,
) -> Vec<SenderHealth> {
    enforce_on(store, &accounts(), settings, alerter, guard, now).await
}

async fn enforce_on(
    store: &dyn Store,
    accounts: &[(Channel, String)],
    settings: &MonitorSettings,
    alerter: &Alerter,
    guard: &SendGuard,
    now: DateTime<Utc>,
) -> Vec<SenderHealth> {
    let health = monitor::check_senders(
        store,
        accounts,
        Some(DOMAIN),
        settings,
        Some(alerter),
        now,
        true,
    )
    .await
    .unwrap();
    guard.set_account_halts(monitor::halted_accounts(&health));
    guard.set_account_slowdowns(monitor::account_slowdowns(&health));
    health
}

fn find<'a>(health: &'a [SenderHealth], kind: SenderKind, name: &str) -> &'a SenderHealth {
    health
        .iter()
        .find(|h| h.kind == kind && h.name == name)
        .unwrap_or_else(|| panic!("no {kind:?} {name} in {health:#?}"))
}

/// A hard bounce of the first sent delivery of `account`, ten minutes after `t0`.
async fn bounce_one(store: &dyn Store, account: &str) {
    let d = rows(store)
        .await
        .into_iter()
        .find(|d| d.state == DeliveryState::Sent && d.account.as_deref() == Some(account))
        .unwrap();
    store
        .record_event(&NewEvent {
            lead_id: d.lead_id,
            delivery_id: Some(d.id),
            kind: EventKind::HardBounce,
            occurred_at: t0() + Duration::minutes(10),
            detail: "{}".into(),
            source: "test".into(),
        })
        .await
        .unwrap();
}

fn halts(alerter: &Alerter) -> Vec<String> {
    alerter
        .raised()
        .into_iter()
        .filter(|a| a.kind == AlertKind::SendingHalted)
        .map(|a| a.account)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_spike_on_one_mailbox_halts_it_alone_and_the_other_keeps_sending() {
    let (store, catalog, _dir) = store_with_leads(60).await;
    let config = config();
    let m = mailboxes().await;
    let day1 = guard(&[(A, 10), (B, 50)], CircuitPolicy::default());
    let report = pass(store.as_ref(), &catalog, &config, &m.channels, &day1, t0()).await;
    assert_eq!(report.sent.len(), 60, "{report:?}");
    assert_eq!((m.maya.sent().len(), m.sam.sent().len()), (10, 50));

    // One of maya's ten bounces: 10% for her (halt above 5%), 1 in 60 for the domain.
    bounce_one(store.as_ref(), A).await;
    let settings = settings(10);
    let alerter = Alerter::new(Vec::new(), Duration::minutes(60));
    let later = guard(&[(A, 100), (B, 100)], CircuitPolicy::default());
    let at = t0() + Duration::hours(1);
    let health = enforce(store.as_ref(), &settings, &alerter, &later, at).await;
    let maya = find(&health, SenderKind::Account, A);
    assert!(maya.is_halted(), "{maya:#?}");
    assert_eq!((maya.counts.sent, maya.counts.hard_bounces), (10, 1));
    let sam = find(&health, SenderKind::Account, B);
    assert!(!sam.is_halted());
    assert_eq!(sam.assessment.standing, Standing::Healthy);
    // Both mailboxes are the whole channel: their domain is judged by the channel's row.
    assert!(
        health.iter().all(|h| h.kind == SenderKind::Account),
        "{health:#?}"
    );
    assert_eq!(
        halts(&alerter),
        vec![format!("account:{A}")],
        "exactly one alert"
    );
    let audit = store.audit_log(t0()).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.action == "halt" && e.subject == format!("account:{A}")),
        "{audit:?}"
    );
    // The next check finds the stored halt: no second alert, even from a fresh alerter.
    let fresh = Alerter::new(Vec::new(), Duration::minutes(60));
    let again = enforce(
        store.as_ref(),
        &settings,
        &fresh,
        &later,
        at + Duration::hours(1),
    )
    .await;
    assert!(find(&again, SenderKind::Account, A).is_halted());
    assert!(halts(&fresh).is_empty());

    // Follow-ups: maya's sequences move to sam (like an open circuit); none waits or fails.
    let at = t0() + Duration::days(3) + Duration::hours(1);
    enforce(store.as_ref(), &settings, &alerter, &later, at).await;
    let report = pass(store.as_ref(), &catalog, &config, &m.channels, &later, at).await;
    assert_eq!(
        report.sent.len(),
        59,
        "the bounced lead is suppressed: {report:?}"
    );
    assert_eq!(
        m.maya.sent().len(),
        10,
        "nothing more from the halted mailbox"
    );
    assert_eq!(m.sam.sent().len(), 109);
    let all = rows(store.as_ref()).await;
    assert_eq!(sent_through(&all, B, 1), 59);
    assert!(all.iter().all(|d| d.state != DeliveryState::Failed));

    // A person resumes maya: her window starts again, so she is learning, not halted.
    assert!(
        monitor::resume_sender(store.as_ref(), &monitor::account_key(A), "list cleaned", at)
            .await
            .unwrap()
    );
    assert!(
        !monitor::resume_sender(store.as_ref(), &monitor::account_key(A), "again", at)
            .await
            .unwrap()
    );
    let health = enforce(
        store.as_ref(),
        &settings,
        &alerter,
        &later,
        at + Duration::minutes(1),
    )
    .await;
    let maya = find(&health, SenderKind::Account, A);
    assert!(!maya.is_halted());
    assert_eq!(maya.assessment.standing, Standing::Learning);
    assert!(later.account_halt(A).is_none());
    assert_eq!(halts(&alerter).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_breach_halts_both_mailboxes_of_the_domain_until_a_person_resumes_it() {
    let (store, catalog, _dir) = store_with_leads(22).await;
    let config = config();
    // Maya and Sam send from acme.example, Lee from another domain.
    let (maya, a) = mailbox(MAYA).await;
    let (sam, b) = mailbox(SAM).await;
    let (lee, c) = mailbox(LEE).await;
    let channels = ChannelSet::new().with_accounts(vec![a, b, c]);
    let three = [
        (Channel::Email, A.to_owned()),
        (Channel::Email, B.to_owned()),
        (Channel::Email, C.to_owned()),
    ];
    let day1 = guard(&[(A, 6), (B, 6), (C, 10)], CircuitPolicy::default());
    let report = pass(store.as_ref(), &catalog, &config, &channels, &day1, t0()).await;
    assert_eq!(report.sent.len(), 22, "{report:?}");
    assert_eq!(
        (maya.sent().len(), sam.sent().len(), lee.sent().len()),
        (6, 6, 10)
    );

    // Six sends each is under the minimum sample of ten, but acme.example's twelve are
    // judged: one bounce is 8.3%, above the halt level.
    bounce_one(store.as_ref(), A).await;
    let settings = settings(10);
    let alerter = Alerter::new(Vec::new(), Duration::minutes(60));
    let later = guard(&[(A, 100), (B, 100), (C, 15)], CircuitPolicy::default());
    let at = t0() + Duration::days(3) + Duration::hours(1);
    let health = enforce_on(store.as_ref(), &three, &settings, &alerter, &later, at).await;
    for account in [A, B] {
        assert_eq!(
            find(&health, SenderKind::Account, account)
                .assessment
                .standing,
            Standing::Learning
        );
    }
    assert_eq!(
        find(&health, SenderKind::Account, C).assessment.standing,
        Standing::Healthy
    );
    let domain = find(&health, SenderKind::Domain, DOMAIN);
    assert!(domain.is_halted(), "{domain:#?}");
    assert_eq!((domain.counts.sent, domain.counts.hard_bounces), (12, 1));
    assert_eq!(domain.accounts, vec![A.to_owned(), B.to_owned()]);
    assert_eq!(halts(&alerter), vec![format!("domain:{DOMAIN}")]);
    let mut halted: Vec<String> = monitor::halted_accounts(&health).into_keys().collect();
    halted.sort();
    assert_eq!(halted, vec![A.to_owned(), B.to_owned()]);

    // Follow-ups: every one goes to Lee while his cap lasts; the rest wait (planned, never
    // failed), and nothing more leaves acme.example.
    let report = pass(store.as_ref(), &catalog, &config, &channels, &later, at).await;
    assert_eq!(report.sent.len(), 15, "{report:?}");
    assert_eq!((maya.sent().len(), sam.sent().len()), (6, 6));
    assert_eq!(lee.sent().len(), 25);
    let follow_ups: Vec<DeliveryRecord> = rows(store.as_ref())
        .await
        .into_iter()
        .filter(|d| d.step_index == 1)
        .collect();
    assert_eq!(follow_ups.len(), 21, "the bounced lead is suppressed");
    let waiting: Vec<&DeliveryRecord> = follow_ups
        .iter()
        .filter(|d| d.state != DeliveryState::Sent)
        .collect();
    assert_eq!(waiting.len(), 6);
    for d in &waiting {
        assert_eq!(d.state, DeliveryState::Planned, "waits, never fails");
    }
    assert!(
        waiting.iter().any(|d| d
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("halted by the deliverability monitor")),
        "{waiting:#?}"
    );

    // A person resumes the domain: the next day every follow-up has gone out.
    assert!(monitor::resume_sender(
        store.as_ref(),
        &monitor::domain_key(DOMAIN),
        "bad list removed",
        at
    )
    .await
    .unwrap());
    let next_day = t0() + Duration::days(4) + Duration::hours(1);
    let health = enforce_on(
        store.as_ref(),
        &three,
        &settings,
        &alerter,
        &later,
        next_day,
    )
    .await;
    assert!(monitor::halted_accounts(&health).is_empty());
    let report = pass(
        store.as_ref(),
        &catalog,
        &config,
        &channels,
        &later,
        next_day,
    )
    .await;
    assert_eq!(report.sent.len(), 6, "{report:?}");
    assert_eq!(
        maya.sent().len() + sam.sent().len() + lee.sent().len(),
        22 + 21
    );
    assert_eq!(halts(&alerter).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warning_slows_only_the_warned_mailbox() {
    let (store, catalog, _dir) = store_with_leads(80).await;
    let config = config();
    let m = mailboxes().await;
    let day1 = guard(&[(A, 40), (B, 40)], CircuitPolicy::default());
    let report = pass(store.as_ref(), &catalog, &config, &m.channels, &day1, t0()).await;
    assert_eq!(report.sent.len(), 80, "{report:?}");
    assert_eq!((m.maya.sent().len(), m.sam.sent().len()), (40, 40));

    // One of maya's forty bounces: 2.5%, above the warn level of 2%; sam's none.
    bounce_one(store.as_ref(), A).await;
    let settings = settings(10);
    let alerter = Alerter::new(Vec::new(), Duration::minutes(60));
    let later = guard(&[(A, 10), (B, 100)], CircuitPolicy::default());
    let at = t0() + Duration::days(3) + Duration::hours(1);
    let health = enforce(store.as_ref(), &settings, &alerter, &later, at).await;
    assert_eq!(
        find(&health, SenderKind::Account, A).assessment.standing,
        Standing::Warning
    );
    assert_eq!(
        find(&health, SenderKind::Account, B).assessment.standing,
        Standing::Healthy
    );
    assert!(monitor::halted_accounts(&health).is_empty());
    let slowed = monitor::account_slowdowns(&health);
    assert_eq!(slowed.keys().collect::<Vec<_>>(), vec![A]);
    assert_eq!(slowed[A].0, 0.5);
    assert!(halts(&alerter).is_empty());
    assert!(
        alerter
            .raised()
            .iter()
            .any(|a| a.kind == AlertKind::DeliverabilityWarning
                && a.account == format!("account:{A}"))
    );

    // Follow-ups stay on their mailbox: maya's daily cap of 10 is halved to 5; sam is not slowed.
    let report = pass(store.as_ref(), &catalog, &config, &m.channels, &later, at).await;
    let all = rows(store.as_ref()).await;
    assert_eq!(sent_through(&all, A, 1), 5, "{report:?}");
    assert_eq!(sent_through(&all, B, 1), 40);
    let waiting = all
        .iter()
        .filter(|d| d.step_index == 1 && d.state == DeliveryState::Planned)
        .count();
    assert_eq!(
        waiting, 34,
        "maya's other follow-ups wait for her; none fails"
    );
}
