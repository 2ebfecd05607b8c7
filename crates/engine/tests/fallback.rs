//! Graceful degradation and the shared limiter, on a virtual clock, against the Twilio fake
//! (speaking Twilio's wire protocol) through the real Twilio channel:
//! - a permanent failure of a step's channel (a landline: Twilio 21614) falls back to the
//!   step's next channel through the planner's gates, recorded with the failure and traced;
//! - no channel is tried twice for one step, and a step whose every channel failed stops;
//! - an opt-out, or a step with `fallback_on_failure = false`, does not fall back;
//! - a fallback whose channel's circuit is open waits, and is planned later without the
//!   failed channel; when every channel's circuit is open, deliveries wait;
//! - two dispatchers on two store handles (SQLite file, PostgreSQL) share one rate limit.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use engager_channels::twilio::{TwilioChannel, TwilioConfig};
use engager_channels::{Accepted, ChannelSender, DeliveryError, OutgoingMessage, Sender};
use engager_domain::circuit::CircuitPolicy;
use engager_domain::frequency::FrequencyPolicy;
use engager_domain::{
    Channel, CountryCode, DeliveryState, EmailAddress, LeadId, NewLead, PhoneE164, TimeZone,
};
use engager_engine::dispatcher::{ChannelSet, DispatchReport, Dispatcher};
use engager_engine::guard::{AccountLimits, SendGuard, StoreLimiter};
use engager_engine::planner::Planner;
use engager_engine::timing::{BestTimeSettings, TimingRules};
use engager_engine::{Catalog, EngineConfig};
use engager_store::{DeliveryFilter, DeliveryRecord, EnrollmentState, Store, SuppressionKey};
use engager_testkit::twilio::{FakeTwilio, FakeTwilioSetup};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6";
const FROM: &str = "+447911199999";

fn campaign(channels: &str, extra: &str) -> String {
    format!(
        r#"
slug = "f"
name = "Fallback"
best_time = false
[window]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "00:00"
end = "23:59"
[[steps]]
name = "hello"
channels = {channels}
subject = "Hello {{{{ lead.first_name }}}}"
body = "Hi {{{{ lead.first_name }}}}, a quick note."
{extra}
"#
    )
}

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
            sms_from: Some(FROM.into()),
        },
        sender_company: "Acme".into(),
        public_base_url: "https://acme.example".into(),
        unsubscribe_mailto: None,
        link_secret: b"0123456789abcdef".to_vec(),
        default_time_zone: TimeZone::parse("Europe/London").unwrap(),
        frequency: FrequencyPolicy {
            min_gap: Duration::hours(48),
            max_per_week: 3,
        },
        max_jitter: Duration::zero(),
        sms_quiet_start_hour: 8,
        sms_quiet_end_hour: 21,
        max_sms_segments: 3,
        batch_size: 50,
        lease: Duration::minutes(5),
        max_attempts: 8,
        max_age: Duration::hours(72),
        retry_base_delay: Duration::seconds(10),
        retry_max_delay: Duration::minutes(10),
        enabled_channels: vec![Channel::Email, Channel::Sms],
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

fn phone(i: usize) -> String {
    format!("+4479111{i:05}")
}

/// `n` leads in London with an email address and a mobile number, enrolled in a campaign.
async fn seed(store: &dyn Store, n: usize, definition: &str) -> Vec<LeadId> {
    let leads: Vec<NewLead> = (0..n)
        .map(|i| NewLead {
            email: Some(EmailAddress::parse(&format!("lead{i}@example.com")).unwrap()),
            phone: Some(PhoneE164::parse(&phone(i), None).unwrap()),
            first_name: Some(format!("L{i}")),
            country: Some(CountryCode::parse("GB").unwrap()),
            time_zone: Some(TimeZone::parse("Europe/London").unwrap()),
            // Both channels by consent (GDPR for these UK leads; TCPA for texts).
            custom: [
                ("email_consent", "signup form"),
                ("sms_consent", "signup form"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            source: "test".into(),
            ..NewLead::default()
        })
        .collect();
    let ids: Vec<LeadId> = store
        .upsert_leads(&leads, t0())
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.id())
        .collect();
    let campaign = store
        .save_campaign("f", "Fallback", definition, t0())
        .await
        .unwrap();
    store.enroll(campaign, &ids, t0()).await.unwrap();
    ids
}

async fn sqlite() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = engager_store::open(&format!("sqlite:{}", dir.path().join("f.db").display()))
        .await
        .unwrap();
    (store, dir)
}

async fn twilio(landlines: &[String]) -> (FakeTwilio, Arc<TwilioChannel>) {
    let mut setup = FakeTwilioSetup::new(SID, TOKEN);
    setup.landlines = landlines.to_vec();
    let fake = FakeTwilio::start(setup).await.unwrap();
    let mut config = TwilioConfig::new(SID, TOKEN.into(), FROM);
    config.api_url = fake.api_url().to_owned();
    config.request_timeout_secs = 5.0;
    (fake, Arc::new(TwilioChannel::new(config).unwrap()))
}

/// An email provider (Graph's error wording) that refuses some recipients for good and logs
/// every call.
struct Mailbox {
    refuse: HashSet<String>,
    calls: Mutex<Vec<String>>,
}

#[async_trait]
impl ChannelSender for Mailbox {
    fn channel(&self) -> Channel {
        Channel::Email
    }
    fn name(&self) -> &str {
        "graph"
    }
    async fn health_check(&self) -> Result<(), DeliveryError> {
        Ok(())
    }
    async fn send(&self, m: &OutgoingMessage) -> Result<Accepted, DeliveryError> {
        self.calls.lock().unwrap().push(m.to.clone());
        if self.refuse.contains(&m.to) {
            return Err(DeliveryError::Permanent {
                reason: "Graph answered 400 (ErrorInvalidRecipients): the recipient does not exist"
                    .into(),
            });
        }
        Ok(Accepted {
            provider_ref: format!("<{}@graph>", m.delivery_id),
        })
    }
}

fn mailbox(refuse: &[&str]) -> Arc<Mailbox> {
    Arc::new(Mailbox {
        refuse: refuse.iter().map(|s| (*s).to_owned()).collect(),
        calls: Mutex::new(Vec::new()),
    })
}

async fn pass(
    store: &dyn Store,
    catalog: &Catalog,
    config: &EngineConfig,
    channels: &ChannelSet,
    guard: &SendGuard,
    now: DateTime<Utc>,
) -> DispatchReport {
    Planner::new(store, catalog, config)
        .plan_due(now, None, false)
        .await
        .unwrap();
    Dispatcher::new(store, catalog, config, channels)
        .with_guard(guard)
        .dispatch_due(now, None)
        .await
        .unwrap()
}

async fn rows_of(store: &dyn Store, lead: LeadId) -> Vec<DeliveryRecord> {
    let mut rows = store
        .deliveries(&DeliveryFilter {
            lead: Some(lead),
            ..Default::default()
        })
        .await
        .unwrap();
    rows.sort_by_key(|r| r.id);
    rows
}

/// Landlines fall back from SMS to email once; mobiles get their SMS; nothing twice.
async fn landlines_fall_back_to_email(store: Arc<dyn Store>) {
    let ids = seed(store.as_ref(), 20, &campaign(r#"["sms", "email"]"#, "")).await;
    let landlines: Vec<String> = (0..20).filter(|i| i % 4 == 0).map(phone).collect();
    let (fake, sms) = twilio(&landlines).await;
    let mail = mailbox(&[]);
    let channels = ChannelSet::new().with(sms).with(mail.clone());
    let catalog = Catalog::load(store.as_ref()).await.unwrap();
    let config = config();
    let guard = SendGuard::unlimited();
    // The fallback rows are planned due now (the window is open), so the same pass claims
    // and sends them.
    let first = pass(store.as_ref(), &catalog, &config, &channels, &guard, t0()).await;
    assert_eq!(
        (first.sent.len(), first.failed, first.fell_back),
        (20, 5, 5)
    );
    let emails: Vec<_> = first
        .sent
        .iter()
        .filter(|s| s.channel == Channel::Email)
        .collect();
    assert_eq!(emails.len(), 5);
    let second = pass(
        store.as_ref(),
        &catalog,
        &config,
        &channels,
        &guard,
        t0() + Duration::minutes(1),
    )
    .await;
    assert_eq!((second.claimed, second.sent.len()), (0, 0));
    let accepted = fake.accepted();
    assert_eq!(accepted.len(), 15);
    let unique: HashSet<_> = accepted.iter().map(|m| m.to.clone()).collect();
    assert_eq!(unique.len(), 15, "no SMS twice");
    assert!(landlines.iter().all(|l| !unique.contains(l)));
    let mails = mail.calls.lock().unwrap().clone();
    assert_eq!(mails.len(), 5);
    for (i, lead) in ids.iter().enumerate() {
        let rows = rows_of(store.as_ref(), *lead).await;
        let e = &store.enrollments_for_lead(*lead).await.unwrap()[0];
        assert_eq!(e.state, EnrollmentState::Completed);
        if i % 4 != 0 {
            assert_eq!(rows.len(), 1);
            assert_eq!(
                (rows[0].channel, rows[0].state),
                (Channel::Sms, DeliveryState::Sent)
            );
            continue;
        }
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(
            (rows[0].channel, rows[0].state, rows[0].attempts),
            (Channel::Sms, DeliveryState::Failed, 1)
        );
        let error = rows[0].last_error.clone().unwrap();
        assert!(error.contains("21614"), "{error}");
        assert_eq!(
            (rows[1].channel, rows[1].state, rows[1].step_index),
            (Channel::Email, DeliveryState::Sent, 0)
        );
        assert_eq!(rows[1].to_address, format!("lead{i}@example.com"));
        // The email went through the planner: footer with unsubscribe link and address.
        assert!(rows[1].body_text.contains("1 Main St, Springfield"));
        assert!(rows[1].body_text.contains("https://acme.example/u/"));
        assert_eq!(rows[1].subject.as_deref(), Some(&*format!("Hello L{i}")));
        let traces = store.traces_for_lead(*lead).await.unwrap();
        let last = traces.last().unwrap();
        assert_eq!(
            (last.outcome.as_str(), last.channel),
            ("planned", Some(Channel::Email))
        );
        let channel_gate = last.gates.iter().find(|g| g.gate == "channel").unwrap();
        assert!(
            channel_gate.reason.starts_with(
                "fell back from sms to email: permanent failure: Twilio answered 400 (error 21614)"
            ),
            "{}",
            channel_gate.reason
        );
        // A number that cannot take SMS is suppressed for SMS, everywhere.
        let hit = store
            .suppressed(&[SuppressionKey::Phone(phone(i))])
            .await
            .unwrap();
        assert_eq!(hit.len(), 1);
        assert!(hit[0].reason.contains("cannot receive SMS"));
    }
}

/// SMS fails (landline), then the email hard-bounces: the step stops as failed after one
/// call per channel, and the address is suppressed.
async fn every_channel_failing_stops_the_step(store: Arc<dyn Store>) {
    let ids = seed(store.as_ref(), 2, &campaign(r#"["sms", "email"]"#, "")).await;
    let (fake, sms) = twilio(&[phone(0), phone(1)]).await;
    let mail = mailbox(&["lead0@example.com"]);
    let channels = ChannelSet::new().with(sms).with(mail.clone());
    let catalog = Catalog::load(store.as_ref()).await.unwrap();
    let config = config();
    let guard = SendGuard::unlimited();
    for minute in 0..5 {
        pass(
            store.as_ref(),
            &catalog,
            &config,
            &channels,
            &guard,
            t0() + Duration::minutes(minute),
        )
        .await;
    }
    assert!(fake.accepted().is_empty());
    let twilio_posts = fake
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(twilio_posts, 2, "one SMS attempt per lead");
    assert_eq!(
        mail.calls.lock().unwrap().clone(),
        vec![
            "lead0@example.com".to_owned(),
            "lead1@example.com".to_owned()
        ]
    );
    let rows = rows_of(store.as_ref(), ids[0]).await;
    assert_eq!(
        rows.iter()
            .map(|r| (r.channel, r.state))
            .collect::<Vec<_>>(),
        vec![
            (Channel::Sms, DeliveryState::Failed),
            (Channel::Email, DeliveryState::Failed)
        ]
    );
    let e = &store.enrollments_for_lead(ids[0]).await.unwrap()[0];
    assert_eq!(
        (e.state, e.stop_reason.as_deref()),
        (EnrollmentState::Stopped, Some("delivery_failed"))
    );
    let last = store.traces_for_lead(ids[0]).await.unwrap();
    let last = last.last().unwrap();
    assert_eq!(
        (last.outcome.as_str(), last.code.as_deref()),
        ("stopped", Some("delivery_failed"))
    );
    let gate = last.gates.iter().find(|g| g.gate == "channel").unwrap();
    assert!(
        gate.reason.contains("sms: failed at send")
            && gate.reason.contains("email: failed at send"),
        "{}",
        gate.reason
    );
    let hit = store
        .suppressed(&[SuppressionKey::Email("lead0@example.com".into())])
        .await
        .unwrap();
    assert_eq!(hit.len(), 1, "a hard bounce suppresses the address");
    // The other lead fell back and was sent.
    let e = &store.enrollments_for_lead(ids[1]).await.unwrap()[0];
    assert_eq!(e.state, EnrollmentState::Completed);
}

/// An opt-out at the provider (21610) and a step with `fallback_on_failure = false` end the
/// step without trying another channel.
async fn opt_outs_and_single_channel_steps_do_not_fall_back(store: Arc<dyn Store>) {
    let ids = seed(
        store.as_ref(),
        2,
        &campaign(r#"["sms", "email"]"#, "fallback_on_failure = false"),
    )
    .await;
    let (fake, sms) = twilio(&[phone(1)]).await;
    fake.opt_out(&phone(0), FROM);
    let mail = mailbox(&[]);
    let channels = ChannelSet::new().with(sms).with(mail.clone());
    let catalog = Catalog::load(store.as_ref()).await.unwrap();
    let config = config();
    let guard = SendGuard::unlimited();
    for minute in 0..3 {
        pass(
            store.as_ref(),
            &catalog,
            &config,
            &channels,
            &guard,
            t0() + Duration::minutes(minute),
        )
        .await;
    }
    assert!(mail.calls.lock().unwrap().is_empty());
    for lead in &ids {
        let rows = rows_of(store.as_ref(), *lead).await;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].state, DeliveryState::Failed);
        let e = &store.enrollments_for_lead(*lead).await.unwrap()[0];
        assert_eq!(e.state, EnrollmentState::Stopped);
    }
}

/// The fallback channel's circuit is open when SMS fails: the step waits (deferred, nothing
/// burned) and, when the circuit has closed, the planner plans email without trying SMS again.
/// When every channel's circuit is open, planned deliveries wait in the ledger.
async fn fallback_waits_for_an_open_circuit(store: Arc<dyn Store>) {
    let ids = seed(store.as_ref(), 1, &campaign(r#"["sms", "email"]"#, "")).await;
    let (fake, sms) = twilio(&[phone(0)]).await;
    let mail = mailbox(&[]);
    let channels = ChannelSet::new().with(sms).with(mail.clone());
    let catalog = Catalog::load(store.as_ref()).await.unwrap();
    let config = config();
    let guard = SendGuard::new(HashMap::new(), CircuitPolicy::default());
    guard.trip("email:graph", t0() + Duration::minutes(30));
    let report = pass(store.as_ref(), &catalog, &config, &channels, &guard, t0()).await;
    assert_eq!((report.failed, report.fell_back), (1, 0));
    let e = &store.enrollments_for_lead(ids[0]).await.unwrap()[0];
    assert_eq!(
        (e.state, e.current_step, e.next_due_at),
        (
            EnrollmentState::Active,
            0,
            Some(t0() + Duration::minutes(30))
        )
    );
    let trace = store.traces_for_lead(ids[0]).await.unwrap();
    let last = trace.last().unwrap();
    assert_eq!(last.outcome, "deferred");
    // Before the circuit closes nothing happens; afterwards the planner plans email.
    pass(
        store.as_ref(),
        &catalog,
        &config,
        &channels,
        &guard,
        t0() + Duration::minutes(10),
    )
    .await;
    assert!(mail.calls.lock().unwrap().is_empty());
    for minute in [30, 31] {
        pass(
            store.as_ref(),
            &catalog,
            &config,
            &channels,
            &guard,
            t0() + Duration::minutes(minute),
        )
        .await;
    }
    assert_eq!(mail.calls.lock().unwrap().len(), 1);
    let posts = fake
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(posts, 1, "SMS is not tried again for the step");
    let rows = rows_of(store.as_ref(), ids[0]).await;
    assert_eq!(
        rows.iter()
            .map(|r| (r.channel, r.state))
            .collect::<Vec<_>>(),
        vec![
            (Channel::Sms, DeliveryState::Failed),
            (Channel::Email, DeliveryState::Sent)
        ]
    );
    let trace = store.traces_for_lead(ids[0]).await.unwrap();
    let gate = trace
        .last()
        .unwrap()
        .gates
        .iter()
        .find(|g| g.gate == "channel")
        .unwrap()
        .reason
        .clone();
    assert!(gate.starts_with("fell back from sms to email:"), "{gate}");
}

async fn every_circuit_open_means_deliveries_wait(store: Arc<dyn Store>) {
    let ids = seed(store.as_ref(), 3, &campaign(r#"["sms", "email"]"#, "")).await;
    let (fake, sms) = twilio(&[]).await;
    let mail = mailbox(&[]);
    let channels = ChannelSet::new().with(sms).with(mail.clone());
    let catalog = Catalog::load(store.as_ref()).await.unwrap();
    let config = config();
    let guard = SendGuard::new(HashMap::new(), CircuitPolicy::default());
    Planner::new(store.as_ref(), &catalog, &config)
        .plan_due(t0(), None, false)
        .await
        .unwrap();
    let until = t0() + Duration::minutes(20);
    guard.trip("sms:twilio", until);
    guard.trip("email:graph", until);
    let report = Dispatcher::new(store.as_ref(), &catalog, &config, &channels)
        .with_guard(&guard)
        .dispatch_due(t0() + Duration::minutes(1), None)
        .await
        .unwrap();
    assert_eq!(
        (report.throttled, report.sent.len(), report.failed),
        (3, 0, 0)
    );
    assert!(fake.requests().iter().all(|r| r.method != "POST"));
    assert!(mail.calls.lock().unwrap().is_empty());
    for lead in &ids {
        let rows = rows_of(store.as_ref(), *lead).await;
        assert_eq!(
            (rows.len(), rows[0].state, rows[0].send_at),
            (1, DeliveryState::Planned, until)
        );
    }
    // After the cool-down the probe and the rest go out.
    for minute in [20, 21, 22] {
        pass(
            store.as_ref(),
            &catalog,
            &config,
            &channels,
            &guard,
            t0() + Duration::minutes(minute),
        )
        .await;
    }
    assert_eq!(fake.accepted().len(), 3);
}

/// A channel sender that logs the virtual instant of every accepted message.
struct Clocked {
    inner: Arc<TwilioChannel>,
    now: Arc<Mutex<DateTime<Utc>>>,
    log: Arc<Mutex<Vec<(DateTime<Utc>, String)>>>,
}

#[async_trait]
impl ChannelSender for Clocked {
    fn channel(&self) -> Channel {
        Channel::Sms
    }
    fn name(&self) -> &str {
        "twilio"
    }
    async fn health_check(&self) -> Result<(), DeliveryError> {
        Ok(())
    }
    async fn send(&self, m: &OutgoingMessage) -> Result<Accepted, DeliveryError> {
        let accepted = self.inner.send(m).await?;
        let at = *self.now.lock().unwrap();
        self.log.lock().unwrap().push((at, m.to.clone()));
        Ok(accepted)
    }
}

/// Two dispatchers on two handles of one database, each with its own guard backed by the
/// database: together they never exceed 10 SMS a minute, and send nothing twice.
async fn two_dispatchers_share_one_rate_limit(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    const PER_MINUTE: u32 = 10;
    let leads = 40;
    let ids = seed(a.as_ref(), leads, &campaign(r#"["sms"]"#, "")).await;
    let (fake, sms) = twilio(&[]).await;
    let now = Arc::new(Mutex::new(t0()));
    let log = Arc::new(Mutex::new(Vec::new()));
    let channels = ChannelSet::new().with(Arc::new(Clocked {
        inner: sms,
        now: now.clone(),
        log: log.clone(),
    }));
    let catalog = Catalog::load(a.as_ref()).await.unwrap();
    let mut limits = HashMap::new();
    limits.insert(
        Channel::Sms,
        AccountLimits {
            per_minute: Some(PER_MINUTE),
            ..AccountLimits::default()
        },
    );
    let guard = |store: &Arc<dyn Store>| {
        SendGuard::new(limits.clone(), CircuitPolicy::default())
            .with_limiter(Box::new(StoreLimiter::new(store.clone(), limits.clone())))
    };
    let (guard_a, guard_b) = (Arc::new(guard(&a)), Arc::new(guard(&b)));
    let catalog = Arc::new(catalog);
    let channels = Arc::new(channels);
    let mut config_a = config();
    config_a.worker_id = "a".into();
    config_a.batch_size = 3;
    let mut config_b = config_a.clone();
    config_b.worker_id = "b".into();
    Planner::new(a.as_ref(), &catalog, &config_a)
        .plan_due(t0(), None, false)
        .await
        .unwrap();
    let (mut sent_a, mut sent_b) = (0, 0);
    for _ in 0..2000 {
        let t = *now.lock().unwrap();
        // Each dispatcher on its own task, so the two really run at once.
        let run = |store: Arc<dyn Store>, config: EngineConfig, guard: Arc<SendGuard>| {
            let (catalog, channels) = (catalog.clone(), channels.clone());
            tokio::spawn(async move {
                Dispatcher::new(store.as_ref(), &catalog, &config, &channels)
                    .with_guard(&guard)
                    .dispatch_due(t, None)
                    .await
            })
        };
        let (x, y) = tokio::join!(
            run(a.clone(), config_a.clone(), guard_a.clone()),
            run(b.clone(), config_b.clone(), guard_b.clone())
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        sent_a += x.unwrap().sent.len();
        sent_b += y.unwrap().sent.len();
        match a.next_due_at().await.unwrap() {
            Some(next) => *now.lock().unwrap() = next.max(t + Duration::milliseconds(1)),
            None => break,
        }
    }
    let log = log.lock().unwrap().clone();
    let accepted = fake.accepted();
    assert_eq!(
        accepted.len(),
        leads,
        "every SMS sent ({sent_a} + {sent_b})"
    );
    let unique: HashSet<_> = accepted.iter().map(|m| m.to.clone()).collect();
    assert_eq!(unique.len(), leads, "0 duplicates at the fake");
    assert!(
        sent_a > 0 && sent_b > 0,
        "both worked: {sent_a} and {sent_b}"
    );
    let mut times: Vec<DateTime<Utc>> = log.iter().map(|(t, _)| *t).collect();
    times.sort();
    let mut worst = 0;
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .take_while(|u| **u < *t + Duration::minutes(1))
            .count();
        worst = worst.max(in_window);
    }
    assert!(
        worst <= PER_MINUTE as usize,
        "{worst} sends in one minute (limit {PER_MINUTE})"
    );
    let span = *times.last().unwrap() - times[0];
    assert!(
        span >= Duration::seconds(6 * (leads as i64 - 1)),
        "{leads} sends in {span}"
    );
    for lead in &ids {
        let rows = rows_of(a.as_ref(), *lead).await;
        assert_eq!((rows.len(), rows[0].state), (1, DeliveryState::Sent));
    }
    eprintln!(
        "shared limiter, {} backend: {leads} SMS by two dispatchers ({sent_a} + {sent_b}), at most {worst} in any minute, over {}s",
        a.backend(),
        span.num_seconds()
    );
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (store, _dir) = super::sqlite().await;
                    super::$name(store).await;
                }
            )*

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn two_dispatchers_share_one_rate_limit() {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite:{}", dir.path().join("f.db").display());
                let a = engager_store::open(&url).await.unwrap();
                let b = engager_store::open(&url).await.unwrap();
                super::two_dispatchers_share_one_rate_limit(a, b).await;
            }
        }

        mod postgres {
            use std::sync::Arc;
            use engager_store::Store;

            async fn connect(name: &str) -> Option<(Arc<dyn Store>, Arc<dyn Store>)> {
                let url = engager_testkit::postgres_url()?;
                let schema = engager_testkit::unique_schema(name);
                let a = engager_store::postgres::PgStore::connect_isolated(&url, &schema).await.unwrap();
                let b = engager_store::postgres::PgStore::connect_isolated(&url, &schema).await.unwrap();
                Some((Arc::new(a), Arc::new(b)))
            }

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some((store, _)) = connect(stringify!($name)).await else { return };
                    super::$name(store).await;
                }
            )*

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn two_dispatchers_share_one_rate_limit() {
                let Some((a, b)) = connect("two_dispatchers_rate").await else { return };
                super::two_dispatchers_share_one_rate_limit(a, b).await;
            }
        }
    };
}

on_both_backends!(
    landlines_fall_back_to_email,
    every_channel_failing_stops_the_step,
    opt_outs_and_single_channel_steps_do_not_fall_back,
    fallback_waits_for_an_open_circuit,
    every_circuit_open_means_deliveries_wait,
);
