//! The compliance gate end to end on a store (SQLite and PostgreSQL): the planner passes over
//! a channel a rule refuses and records why, stops a lead that objected, the dispatcher
//! re-checks consent just before sending and stores the evidence of each send, the report
//! lists sends, refusals and gaps (a Graph send has no one-click header), and a campaign
//! whose template breaks a rule is halted with exactly one alert until a person resumes it.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use engager_channels::{Accepted, ChannelSender, DeliveryError, OutgoingMessage, Sender};
use engager_domain::compliance::{Basis, ComplianceRules, ConsentRecord};
use engager_domain::frequency::FrequencyPolicy;
use engager_domain::DeliveryState;
use engager_domain::{Channel, CountryCode, EmailAddress, LeadId, NewLead, PhoneE164, TimeZone};
use engager_engine::alerts::{AlertKind, Alerter};
use engager_engine::dispatcher::{ChannelSet, Dispatcher};
use engager_engine::planner::Planner;
use engager_engine::timing::{BestTimeSettings, TimingRules};
use engager_engine::{Catalog, EngineConfig};
use engager_store::{DeliveryFilter, Store};

const CAMPAIGN: &str = r#"
slug = "gate"
name = "Gate"
best_time = false
[window]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "00:00"
end = "23:59"
[[steps]]
name = "text-or-mail"
channels = ["sms", "email"]
subject = "A question, {{ lead.first_name }}"
body = "Hi {{ lead.first_name }}, a quick question about forecasting."
"#;

fn t0() -> DateTime<Utc> {
    // A Tuesday, 15:00 UTC: inside SMS hours in New York and Berlin.
    DateTime::parse_from_rfc3339("2026-03-03T15:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn config(rules: ComplianceRules) -> EngineConfig {
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
        max_attempts: 3,
        max_age: Duration::hours(72),
        retry_base_delay: Duration::seconds(10),
        retry_max_delay: Duration::minutes(10),
        enabled_channels: vec![Channel::Email, Channel::Sms],
        worker_id: "test".into(),
        compliance: rules,
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

/// Accepts everything on one channel, under a provider name.
struct Recorder {
    channel: Channel,
    name: &'static str,
    sent: Mutex<Vec<OutgoingMessage>>,
}

#[async_trait]
impl ChannelSender for Recorder {
    fn channel(&self) -> Channel {
        self.channel
    }
    fn name(&self) -> &str {
        self.name
    }
    async fn health_check(&self) -> Result<(), DeliveryError> {
        Ok(())
    }
    async fn send(&self, m: &OutgoingMessage) -> Result<Accepted, DeliveryError> {
        self.sent.lock().unwrap().push(m.clone());
        Ok(Accepted {
            provider_ref: format!("ref-{}", m.delivery_id.0),
        })
    }
}

fn channels(email_provider: &'static str) -> (ChannelSet, Arc<Recorder>, Arc<Recorder>) {
    let email = Arc::new(Recorder {
        channel: Channel::Email,
        name: email_provider,
        sent: Mutex::new(Vec::new()),
    });
    let sms = Arc::new(Recorder {
        channel: Channel::Sms,
        name: "twilio",
        sent: Mutex::new(Vec::new()),
    });
    let set = ChannelSet::new()
        .with(email.clone() as Arc<dyn ChannelSender>)
        .with(sms.clone() as Arc<dyn ChannelSender>);
    (set, email, sms)
}

fn lead(email: &str, phone: &str, country: &str, zone: &str) -> NewLead {
    NewLead {
        email: Some(EmailAddress::parse(email).unwrap()),
        phone: Some(PhoneE164::parse(phone, None).unwrap()),
        first_name: Some("Ada".into()),
        country: Some(CountryCode::parse(country).unwrap()),
        time_zone: Some(TimeZone::parse(zone).unwrap()),
        source: "csv:test.csv".into(),
        ..NewLead::default()
    }
}

fn consent(
    lead: LeadId,
    channel: Option<Channel>,
    basis: Basis,
    at: DateTime<Utc>,
) -> ConsentRecord {
    ConsentRecord {
        id: 0,
        lead_id: lead,
        channel,
        basis,
        source: "pricing page form".into(),
        reference: None,
        contact: None,
        obtained_at: at,
        expires_at: None,
    }
}

async fn seed(store: &dyn Store, campaign_toml: &str, leads: &[NewLead]) -> (Catalog, Vec<LeadId>) {
    let ids: Vec<LeadId> = store
        .upsert_leads(leads, t0())
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.id())
        .collect();
    let campaign = store
        .save_campaign("gate", "Gate", campaign_toml, t0())
        .await
        .unwrap();
    store.enroll(campaign, &ids, t0()).await.unwrap();
    (Catalog::load(store).await.unwrap(), ids)
}

async fn last_trace(store: &dyn Store, lead: LeadId) -> engager_store::TraceRecord {
    store.traces_for_lead(lead).await.unwrap().pop().unwrap()
}

async fn rules_choose_channels_and_evidence_follows_each_send(store: Arc<dyn Store>) {
    let rules = ComplianceRules::default();
    let config = config(rules);
    let leads = [
        // US, texts by consent: SMS.
        lead(
            "us.consent@example.com",
            "+12125550143",
            "US",
            "America/New_York",
        ),
        // US without consent for texts: email instead (CAN-SPAM only).
        lead(
            "us.none@example.com",
            "+12125550144",
            "US",
            "America/New_York",
        ),
        // Germany, no basis at all: not contacted.
        lead(
            "de.none@example.de",
            "+4915123456789",
            "DE",
            "Europe/Berlin",
        ),
        // Germany, objected: stopped for good.
        lead(
            "de.object@example.de",
            "+4915123456790",
            "DE",
            "Europe/Berlin",
        ),
    ];
    let (catalog, ids) = seed(store.as_ref(), CAMPAIGN, &leads).await;
    store
        .record_consent(&consent(
            ids[0],
            Some(Channel::Sms),
            Basis::Consent,
            t0() - Duration::days(30),
        ))
        .await
        .unwrap();
    store
        .record_consent(&consent(
            ids[3],
            None,
            Basis::Consent,
            t0() - Duration::days(30),
        ))
        .await
        .unwrap();
    store
        .record_consent(&consent(
            ids[3],
            None,
            Basis::Objection,
            t0() - Duration::days(1),
        ))
        .await
        .unwrap();
    let report = Planner::new(store.as_ref(), &catalog, &config)
        .plan_due(t0(), None, false)
        .await
        .unwrap();
    assert_eq!(report.planned, 2, "{report:?}");

    let t = last_trace(store.as_ref(), ids[0]).await;
    assert_eq!(t.channel, Some(Channel::Sms));
    assert!(
        t.gates.iter().any(|g| g.gate == "compliance"
            && g.passed
            && g.reason.contains("TCPA/CTIA: prior express consent")
            && g.reason.contains("pricing page form")),
        "{t:?}"
    );
    let t = last_trace(store.as_ref(), ids[1]).await;
    assert_eq!(t.channel, Some(Channel::Email), "{t:?}");
    assert!(t.gates.iter().any(|g| g.gate == "compliance"
        && !g.passed
        && g.reason
            == "sms: TCPA/CTIA refused: no prior express consent recorded for this number"));
    let t = last_trace(store.as_ref(), ids[2]).await;
    assert_eq!(t.outcome, "skipped");
    assert_eq!(t.code.as_deref(), Some("compliance"));
    assert!(t
        .gates
        .iter()
        .any(|g| !g.passed && g.reason.contains("GDPR refused: no lawful basis")));
    let t = last_trace(store.as_ref(), ids[3]).await;
    assert_eq!(
        (t.outcome.as_str(), t.code.as_deref()),
        ("stopped", Some("objected"))
    );

    // The US lead texts STOP-like withdrawal after planning: the dispatcher cancels the text.
    let (set, email, sms) = channels("graph");
    store
        .record_consent(&consent(
            ids[0],
            Some(Channel::Sms),
            Basis::Withdrawn,
            t0() + Duration::minutes(1),
        ))
        .await
        .unwrap();
    let sent = Dispatcher::new(store.as_ref(), &catalog, &config, &set)
        .dispatch_due(t0() + Duration::minutes(5), None)
        .await
        .unwrap();
    assert_eq!(sent.cancelled, 1, "{sent:?}");
    assert_eq!(sent.sent.len(), 1, "{sent:?}");
    assert!(sms.sent.lock().unwrap().is_empty());
    assert_eq!(email.sent.lock().unwrap().len(), 1);
    let cancelled = store
        .deliveries(&DeliveryFilter {
            lead: Some(ids[0]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(cancelled[0].state, DeliveryState::Cancelled);
    assert!(
        cancelled[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("compliance at send time") && e.contains("withdrew")),
        "{cancelled:?}"
    );

    // Evidence of the one send, and the report: a Graph email lacks the one-click header.
    let report = engager_engine::compliance::report(
        store.as_ref(),
        &catalog,
        t0() - Duration::hours(1),
        t0() + Duration::hours(1),
    )
    .await
    .unwrap();
    assert_eq!(report.sends.len(), 1, "{report:?}");
    let line = &report.sends[0];
    assert_eq!(
        (line.channel.as_str(), line.provider.as_str(), line.sends),
        ("email", "graph", 1)
    );
    assert_eq!(line.with_footer, 1);
    assert_eq!(line.with_one_click_header, 0);
    assert_eq!(line.regimes.get("can_spam"), Some(&1));
    assert_eq!(report.gaps.len(), 1);
    assert!(
        report.gaps[0].missing.contains("no one-click header"),
        "{report:?}"
    );
    let rules_blocked: Vec<&str> = report.blocks.iter().map(|b| b.rule.as_str()).collect();
    assert!(rules_blocked.contains(&"TCPA/CTIA"), "{rules_blocked:?}");
    assert!(rules_blocked.contains(&"GDPR"), "{rules_blocked:?}");
    assert!(
        rules_blocked.contains(&"objection (GDPR Art. 21)"),
        "{rules_blocked:?}"
    );
    let gdpr = report.blocks.iter().find(|b| b.rule == "GDPR").unwrap();
    assert_eq!(gdpr.leads, 1);
}

async fn a_non_compliant_campaign_halts_with_one_alert_until_resumed(store: Arc<dyn Store>) {
    let deceptive = CAMPAIGN.replace("subject = \"A question", "subject = \"Fwd: A question");
    let config = config(ComplianceRules::default());
    let (catalog, ids) = seed(
        store.as_ref(),
        &deceptive,
        &[lead(
            "us.none@example.com",
            "+12125550144",
            "US",
            "America/New_York",
        )],
    )
    .await;
    let alerter = Alerter::log_only();
    for pass in 0..3 {
        let planner = Planner::new(store.as_ref(), &catalog, &config).with_alerts(&alerter);
        let report = planner
            .plan_due(t0() + Duration::hours(pass), None, false)
            .await
            .unwrap();
        assert_eq!(report.planned, 0);
        assert_eq!(planner.halted_campaigns().len(), 1);
    }
    let alerts = alerter.raised();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].kind, AlertKind::ComplianceHalt);
    assert!(
        alerts[0].summary.contains("deceptive subject"),
        "{}",
        alerts[0].summary
    );
    let t = last_trace(store.as_ref(), ids[0]).await;
    assert_eq!(t.code.as_deref(), Some("campaign_halted"));
    let audit = store.audit_log(t0() - Duration::days(1)).await.unwrap();
    assert_eq!(audit.iter().filter(|a| a.action == "halt").count(), 1);
    // Resuming is refused while the template still breaks the rule.
    let campaign = catalog.by_slug("gate").unwrap();
    let err = engager_engine::compliance::resume(
        store.as_ref(),
        &engager_engine::compliance::rules(&config),
        campaign,
        "cli",
        "tried",
        t0(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("deceptive subject"), "{err}");
    // Fixed (the campaign file updated), then resumed: planned again.
    let id = store
        .save_campaign("gate", "Gate", CAMPAIGN, t0())
        .await
        .unwrap();
    let fixed = Catalog::load(store.as_ref()).await.unwrap();
    assert!(engager_engine::compliance::resume(
        store.as_ref(),
        &engager_engine::compliance::rules(&config),
        fixed.get(id).unwrap(),
        "cli",
        "subject fixed",
        t0(),
    )
    .await
    .unwrap());
    let report = Planner::new(store.as_ref(), &fixed, &config)
        .plan_due(t0() + Duration::hours(5), None, false)
        .await
        .unwrap();
    assert_eq!(report.planned, 1, "{report:?}");
    let audit = store.audit_log(t0() - Duration::days(1)).await.unwrap();
    assert_eq!(audit.iter().filter(|a| a.action == "override").count(), 1);
}

macro_rules! both {
    ($($name:ident),*) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let url = format!("sqlite:{}", dir.path().join("c.db").display());
                    super::$name(engager_store::open(&url).await.unwrap()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(url) = engager_testkit::postgres_url() else { return };
                    let schema = engager_testkit::unique_schema(stringify!($name));
                    let store = engager_store::postgres::PgStore::connect_isolated(&url, &schema)
                        .await
                        .unwrap();
                    super::$name(std::sync::Arc::new(store)).await;
                }
            )*
        }
    };
}

both!(
    rules_choose_channels_and_evidence_follows_each_send,
    a_non_compliant_campaign_halts_with_one_alert_until_resumed
);
