//! Inbound polling end to end: sends go out through the dispatcher, then replies, an
//! out-of-office, bounces and an unrelated message arrive in a real IMAP server (Dovecot, from
//! engager-testkit) or in the Graph fake; one poll turns them into events (a reply stops the
//! sequence — and the company's, when configured —, an auto-reply and a soft bounce do not, a
//! hard bounce ends the lead and suppresses the address), and polling again after a restart
//! records nothing new.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use engager_channels::imap::{ImapConfig, ImapMailbox};
use engager_channels::{
    Accepted, ChannelSender, DeliveryError, GraphChannel, GraphConfig, OutgoingMessage, Sender,
};
use engager_domain::frequency::FrequencyPolicy;
use engager_domain::{Channel, EmailAddress, EventKind, LeadId, LeadStatus, NewLead, TimeZone};
use engager_engine::dispatcher::{ChannelSet, Dispatcher};
use engager_engine::inbound::{FoundKind, InboundOptions, InboundPoller, MailSource};
use engager_engine::planner::Planner;
use engager_engine::timing::{BestTimeSettings, TimingRules};
use engager_engine::{Catalog, EngineConfig};
use engager_store::{EnrollmentState, Store, SuppressionKey};
use engager_testkit::dovecot::{Dovecot, DovecotOptions, PASSWORD, USER};
use engager_testkit::graph::{FakeGraph, FakeGraphSetup};

const CAMPAIGN: &str = r#"
slug = "inb"
name = "Inbound"
best_time = false
[window]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "00:00"
end = "23:59"
[[steps]]
name = "hello"
channels = ["email"]
subject = "Quick question, {{ lead.first_name }}"
body = "Hi {{ lead.first_name }}, a short note."
[[steps]]
name = "follow-up"
channels = ["email"]
delay_days = 3
subject = "Following up: quick question"
body = "Hi {{ lead.first_name }}, following up."
"#;

/// Jane replies, Ann is her colleague, Tom is out of office, Gone bounces hard, Slow bounces
/// soft.
const LEADS: &[(&str, &str)] = &[
    ("Jane", "jane@northwind.example"),
    ("Ann", "ann@northwind.example"),
    ("Tom", "tom@contoso-ltd.example"),
    ("Gone", "gone@bouncy.example"),
    ("Slow", "slow@delay.example"),
];

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
            min_gap: Duration::hours(1),
            max_per_week: 5,
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

/// An SMTP-like sender: accepts everything, its provider reference is our Message-ID.
#[derive(Default)]
struct Recorder {
    sent: Mutex<Vec<OutgoingMessage>>,
}

#[async_trait]
impl ChannelSender for Recorder {
    fn channel(&self) -> Channel {
        Channel::Email
    }
    fn name(&self) -> &str {
        "recorder"
    }
    async fn health_check(&self) -> Result<(), DeliveryError> {
        Ok(())
    }
    async fn send(&self, m: &OutgoingMessage) -> Result<Accepted, DeliveryError> {
        self.sent.lock().unwrap().push(m.clone());
        Ok(Accepted {
            provider_ref: m.message_id.clone(),
        })
    }
}

/// A store with the leads enrolled, and the first step sent through `channels`.
async fn sent_store(
    channels: &ChannelSet,
) -> (Arc<dyn Store>, Catalog, Vec<LeadId>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = engager_store::open(&format!("sqlite:{}", dir.path().join("i.db").display()))
        .await
        .unwrap();
    let leads: Vec<NewLead> = LEADS
        .iter()
        .map(|(name, email)| NewLead {
            email: Some(EmailAddress::parse(email).unwrap()),
            first_name: Some((*name).into()),
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
        .save_campaign("inb", "Inbound", CAMPAIGN, t0())
        .await
        .unwrap();
    store.enroll(campaign, &ids, t0()).await.unwrap();
    let catalog = Catalog::load(store.as_ref()).await.unwrap();
    let config = config();
    Planner::new(store.as_ref(), &catalog, &config)
        .plan_due(t0(), None, false)
        .await
        .unwrap();
    let report = Dispatcher::new(store.as_ref(), &catalog, &config, channels)
        .dispatch_due(t0() + Duration::hours(1), None)
        .await
        .unwrap();
    assert_eq!(report.sent.len(), LEADS.len(), "{report:?}");
    (store, catalog, ids, dir)
}

fn crlf(text: &str) -> Vec<u8> {
    text.replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes()
}

fn reply(from: &str, message_id: &str, ours: &str, extra: &str, subject: &str) -> Vec<u8> {
    crlf(&format!(
        "From: <{from}>\n\
         To: maya@acme.example\n\
         Subject: {subject}\n\
         Date: Tue, 03 Mar 2026 15:00:00 +0000\n\
         Message-ID: {message_id}\n\
         In-Reply-To: {ours}\n\
         References: {ours}\n\
         {extra}\
         Content-Type: text/plain; charset=utf-8\n\
         \n\
         Thanks for reaching out.\n"
    ))
}

fn dsn(recipient: &str, status: &str, action: &str, ours: &str, id: &str) -> Vec<u8> {
    crlf(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@mx.acme.example>\n\
         To: maya@acme.example\n\
         Subject: Undelivered Mail Returned to Sender\n\
         Date: Tue, 03 Mar 2026 13:00:00 +0000\n\
         Message-ID: {id}\n\
         Auto-Submitted: auto-replied\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=delivery-status;\n\
         \tboundary=\"B\"\n\
         \n\
         --B\n\
         Content-Type: text/plain\n\
         \n\
         Your message could not be delivered.\n\
         \n\
         --B\n\
         Content-Type: message/delivery-status\n\
         \n\
         Reporting-MTA: dns; mx.acme.example\n\
         \n\
         Final-Recipient: rfc822; {recipient}\n\
         Action: {action}\n\
         Status: {status}\n\
         Diagnostic-Code: smtp; {status} mailbox problem\n\
         \n\
         --B\n\
         Content-Type: text/rfc822-headers\n\
         \n\
         From: Maya <maya@acme.example>\n\
         To: {recipient}\n\
         Subject: Quick question\n\
         Message-ID: {ours}\n\
         \n\
         --B--\n"
    ))
}

async fn enrollment_state(store: &dyn Store, lead: LeadId) -> (EnrollmentState, Option<String>) {
    let e = store.enrollments_for_lead(lead).await.unwrap();
    (e[0].state, e[0].stop_reason.clone())
}

async fn kinds(store: &dyn Store, lead: LeadId) -> Vec<EventKind> {
    store
        .events_for_lead(lead)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event.kind)
        .filter(|k| *k != EventKind::Sent)
        .collect()
}

fn imap_source(dovecot: &Dovecot) -> MailSource {
    let config: ImapConfig = toml::from_str(&format!(
        "host = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\ntimeout_seconds = 10\n",
        dovecot.port()
    ))
    .unwrap();
    MailSource::imap(
        ImapMailbox::new(&config).unwrap(),
        USER,
        "127.0.0.1",
        "INBOX",
    )
}

fn options() -> InboundOptions {
    InboundOptions {
        stop_company_on_reply: true,
        ..InboundOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_replies_bounces_and_auto_replies_become_events_once() {
    let Some(dovecot) = Dovecot::start(DovecotOptions::default()) else {
        return;
    };
    let recorder = Arc::new(Recorder::default());
    let channels = ChannelSet::new().with(recorder.clone() as Arc<dyn ChannelSender>);
    let (store, _catalog, ids, _dir) = sent_store(&channels).await;
    let sent = recorder.sent.lock().unwrap().clone();
    let ours = |to: &str| {
        sent.iter()
            .find(|m| m.to == to)
            .map(|m| m.message_id.clone())
            .unwrap()
    };
    let (jane, ann, tom, gone, slow) = (ids[0], ids[1], ids[2], ids[3], ids[4]);

    dovecot.deliver(
        "INBOX",
        &reply(
            "jane@northwind.example",
            "<r1@northwind.example>",
            &ours("jane@northwind.example"),
            "",
            "Re: Quick question, Jane",
        ),
    );
    dovecot.deliver(
        "INBOX",
        &reply(
            "tom@contoso-ltd.example",
            "<ooo1@contoso-ltd.example>",
            &ours("tom@contoso-ltd.example"),
            "Auto-Submitted: auto-replied\nX-Autoreply: yes\n",
            "Automatic reply: Quick question, Tom",
        ),
    );
    dovecot.deliver(
        "INBOX",
        &dsn(
            "gone@bouncy.example",
            "5.1.1",
            "failed",
            &ours("gone@bouncy.example"),
            "<dsn1@mx.acme.example>",
        ),
    );
    dovecot.deliver(
        "INBOX",
        &dsn(
            "slow@delay.example",
            "4.2.2",
            "delayed",
            &ours("slow@delay.example"),
            "<dsn2@mx.acme.example>",
        ),
    );
    dovecot.deliver(
        "INBOX",
        &crlf(
            "From: news@vendor.example\nTo: maya@acme.example\nSubject: Our spring newsletter\n\
             Message-ID: <news1@vendor.example>\n\nNew features!\n",
        ),
    );

    let now = t0() + Duration::hours(4);
    let report = InboundPoller::new(vec![imap_source(&dovecot)], options())
        .poll_once(store.as_ref(), now)
        .await
        .unwrap();
    assert!(
        report.errors.is_empty(),
        "{:?}\n{}",
        report.errors,
        dovecot.log()
    );
    assert_eq!(report.found.len(), 5, "{report:#?}");
    for (kind, n) in [
        (FoundKind::Reply, 1),
        (FoundKind::AutoReply, 1),
        (FoundKind::HardBounce, 1),
        (FoundKind::SoftBounce, 1),
        (FoundKind::Unmatched, 1),
    ] {
        assert_eq!(report.count(kind), n, "{kind:?}: {report:#?}");
    }
    assert_eq!(report.recorded(), 4);

    // The reply stops Jane's sequence, and her colleague's (same company domain).
    assert_eq!(kinds(store.as_ref(), jane).await, vec![EventKind::Replied]);
    assert_eq!(
        enrollment_state(store.as_ref(), jane).await,
        (EnrollmentState::Stopped, Some("replied".into()))
    );
    assert_eq!(
        enrollment_state(store.as_ref(), ann).await,
        (EnrollmentState::Stopped, Some("company_replied".into()))
    );
    // The out-of-office is recorded and changes nothing.
    assert_eq!(
        kinds(store.as_ref(), tom).await,
        vec![EventKind::AutoReplied]
    );
    assert_eq!(
        enrollment_state(store.as_ref(), tom).await.0,
        EnrollmentState::Active
    );
    // The hard bounce ends the lead and suppresses the address.
    assert_eq!(
        kinds(store.as_ref(), gone).await,
        vec![EventKind::HardBounce]
    );
    assert_eq!(
        store.lead(gone).await.unwrap().unwrap().status,
        LeadStatus::Bounced
    );
    assert_eq!(
        enrollment_state(store.as_ref(), gone).await.0,
        EnrollmentState::Stopped
    );
    assert_eq!(
        store
            .suppressed(&[SuppressionKey::Email("gone@bouncy.example".into())])
            .await
            .unwrap()
            .len(),
        1
    );
    // The soft bounce is recorded only.
    assert_eq!(
        kinds(store.as_ref(), slow).await,
        vec![EventKind::SoftBounce]
    );
    assert_eq!(
        enrollment_state(store.as_ref(), slow).await.0,
        EnrollmentState::Active
    );
    // The cursor is durable.
    let cursor = store
        .inbound_cursor(&format!("imap:{USER}@127.0.0.1/INBOX"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cursor.last_uid, Some(5));
    assert!(cursor.uid_validity.is_some());

    // A restart (new poller, new connection) reads nothing new.
    let again = InboundPoller::new(vec![imap_source(&dovecot)], options())
        .poll_once(store.as_ref(), now + Duration::minutes(5))
        .await
        .unwrap();
    assert!(again.found.is_empty(), "{again:#?}");

    // The same reply delivered twice (a second copy, same Message-ID) is read but not
    // recorded again.
    dovecot.deliver(
        "INBOX",
        &reply(
            "jane@northwind.example",
            "<r1@northwind.example>",
            &ours("jane@northwind.example"),
            "",
            "Re: Quick question, Jane",
        ),
    );
    let copy = InboundPoller::new(vec![imap_source(&dovecot)], options())
        .poll_once(store.as_ref(), now + Duration::minutes(10))
        .await
        .unwrap();
    assert_eq!(copy.found.len(), 1, "{copy:#?}");
    assert_eq!(copy.found[0].kind, FoundKind::Reply);
    assert!(!copy.found[0].recorded);
    assert_eq!(kinds(store.as_ref(), jane).await, vec![EventKind::Replied]);
    assert_eq!(
        store
            .inbound_cursor(&format!("imap:{USER}@127.0.0.1/INBOX"))
            .await
            .unwrap()
            .unwrap()
            .last_uid,
        Some(6)
    );

    // The folder is rebuilt: a new UIDVALIDITY, and the processed markers lost. The poll
    // starts the folder again from its first message, and no event is recorded twice.
    dovecot.doveadm_ok(&[
        "mailbox",
        "update",
        "-u",
        USER,
        "--uid-validity",
        "4242",
        "INBOX",
    ]);
    dovecot.doveadm_ok(&[
        "flags",
        "remove",
        "-u",
        USER,
        engager_channels::imap::PROCESSED_KEYWORD,
        "mailbox",
        "INBOX",
        "all",
    ]);
    let rebuilt = InboundPoller::new(vec![imap_source(&dovecot)], options())
        .poll_once(store.as_ref(), now + Duration::minutes(15))
        .await
        .unwrap();
    assert_eq!(rebuilt.found.len(), 6, "{rebuilt:#?}\n{}", dovecot.log());
    assert_eq!(rebuilt.recorded(), 0, "{rebuilt:#?}");
    let cursor = store
        .inbound_cursor(&format!("imap:{USER}@127.0.0.1/INBOX"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cursor.uid_validity, Some(4242));
    for lead in [jane, tom, gone, slow] {
        assert_eq!(kinds(store.as_ref(), lead).await.len(), 1, "lead {lead}");
    }
}

const TENANT: &str = "contoso.onmicrosoft.com";
const CLIENT: &str = "6731de76-14a6-49ae-97bc-6eba6914391e";
const SECRET: &str = "s3cr3t~value";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_replies_bounces_and_auto_replies_become_events_once() {
    let fake = FakeGraph::start(FakeGraphSetup::new(
        TENANT,
        CLIENT,
        SECRET,
        "maya@acme.example",
    ))
    .await
    .unwrap();
    let mut graph = GraphConfig::new(TENANT, CLIENT, SECRET.into(), "maya@acme.example");
    graph.authority_url = fake.authority_url().to_owned();
    graph.graph_url = fake.graph_url();
    graph.request_timeout_secs = 5.0;
    let channel = GraphChannel::new(graph).unwrap();
    let mailbox = channel.mailbox().clone();
    let channels = ChannelSet::new().with(Arc::new(channel) as Arc<dyn ChannelSender>);
    let (store, _catalog, ids, _dir) = sent_store(&channels).await;
    let (jane, ann, tom, gone, slow) = (ids[0], ids[1], ids[2], ids[3], ids[4]);
    let sent = fake.sent();
    assert_eq!(sent.len(), LEADS.len());
    let to = |address: &str| {
        sent.iter()
            .find(|m| m.to.first().map(String::as_str) == Some(address))
            .unwrap()
            .clone()
    };
    let at = t0() + Duration::hours(2);
    fake.deliver_reply(
        &to("jane@northwind.example"),
        "jane@northwind.example",
        "Sounds good, call me.",
        at,
    );
    fake.deliver_auto_reply(&to("tom@contoso-ltd.example"), at + Duration::minutes(1));
    fake.deliver_bounce(
        &to("gone@bouncy.example"),
        "5.1.10",
        at + Duration::minutes(2),
    );
    fake.deliver_bounce(
        &to("slow@delay.example"),
        "4.4.7",
        at + Duration::minutes(3),
    );
    fake.deliver(
        "news@vendor.example",
        "Our spring newsletter",
        "New features!",
        &[],
        None,
        at + Duration::minutes(4),
    );

    let source = || MailSource::graph(mailbox.clone());
    let now = t0() + Duration::hours(4);
    let report = InboundPoller::new(vec![source()], options())
        .poll_once(store.as_ref(), now)
        .await
        .unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    for (kind, n) in [
        (FoundKind::Reply, 1),
        (FoundKind::AutoReply, 1),
        (FoundKind::HardBounce, 1),
        (FoundKind::SoftBounce, 1),
        (FoundKind::Unmatched, 1),
    ] {
        assert_eq!(report.count(kind), n, "{kind:?}: {report:#?}");
    }
    assert_eq!(report.recorded(), 4, "{report:#?}");
    assert_eq!(kinds(store.as_ref(), jane).await, vec![EventKind::Replied]);
    assert_eq!(
        enrollment_state(store.as_ref(), jane).await.0,
        EnrollmentState::Stopped
    );
    assert_eq!(
        enrollment_state(store.as_ref(), ann).await,
        (EnrollmentState::Stopped, Some("company_replied".into()))
    );
    assert_eq!(
        kinds(store.as_ref(), tom).await,
        vec![EventKind::AutoReplied]
    );
    assert_eq!(
        enrollment_state(store.as_ref(), tom).await.0,
        EnrollmentState::Active
    );
    assert_eq!(
        kinds(store.as_ref(), gone).await,
        vec![EventKind::HardBounce]
    );
    assert_eq!(
        store.lead(gone).await.unwrap().unwrap().status,
        LeadStatus::Bounced
    );
    assert_eq!(
        store
            .suppressed(&[SuppressionKey::Email("gone@bouncy.example".into())])
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        kinds(store.as_ref(), slow).await,
        vec![EventKind::SoftBounce]
    );
    let name = "graph:maya@acme.example/inbox";
    let cursor = store.inbound_cursor(name).await.unwrap().unwrap();
    assert_eq!(cursor.last_received_at, Some(at + Duration::minutes(4)));

    // After a restart the poll starts at the saved cursor: only the newest message is read
    // again (`receivedDateTime ge`), and nothing is recorded twice.
    let again = InboundPoller::new(vec![source()], options())
        .poll_once(store.as_ref(), now + Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(again.found.len(), 1, "{again:#?}");
    assert_eq!(again.recorded(), 0);
    // Even with the cursor lost, reading everything again records nothing new.
    store
        .save_inbound_cursor(&engager_store::InboundCursor {
            last_received_at: Some(t0()),
            ..cursor
        })
        .await
        .unwrap();
    let replay = InboundPoller::new(vec![source()], options())
        .poll_once(store.as_ref(), now + Duration::minutes(10))
        .await
        .unwrap();
    assert_eq!(replay.found.len(), 5, "{replay:#?}");
    assert_eq!(replay.recorded(), 0);
    assert_eq!(kinds(store.as_ref(), jane).await, vec![EventKind::Replied]);
}
