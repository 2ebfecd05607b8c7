//! A/B experiments through the planner on a real store (SQLite, and PostgreSQL when
//! `ENGAGER_TEST_DATABASE_URL` is set): a bandit shifts new leads to the better variant, the
//! same state gives the same assignment, a lead keeps its variant, and a winner is promoted
//! automatically (recorded, audited, traced) and can be reset by a person.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use engager_channels::Sender;
use engager_domain::frequency::FrequencyPolicy;
use engager_domain::{Channel, CountryCode, EmailAddress, EventKind, LeadId, NewLead, TimeZone};
use engager_engine::experiments::{reset, ExperimentBook};
use engager_engine::planner::Planner;
use engager_engine::timing::{BestTimeSettings, TimingRules};
use engager_engine::{Catalog, EngineConfig};
use engager_store::{
    DecisionState, DeliveryFilter, DeliveryRecord, FollowUp, NewEvent, SendOutcome, Store,
};

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
        default_time_zone: TimeZone::parse("Europe/London").unwrap(),
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

fn definition(experiment: &str) -> String {
    format!(
        r#"
slug = "ab"
name = "A/B"
best_time = false
[window]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "00:00"
end = "23:59"
[[steps]]
name = "hello"
channels = ["email"]
subject = "Hello {{{{ lead.first_name }}}}"
body = "Hi {{{{ lead.first_name }}}}, a quick note."
[[steps.variants]]
name = "a"
subject = "Subject A"
[[steps.variants]]
name = "b"
subject = "Subject B"
[steps.experiment]
{experiment}
"#
    )
}

/// Imports leads `from..to` and enrolls them in the campaign.
async fn enroll(store: &dyn Store, campaign: engager_domain::CampaignId, from: usize, to: usize) {
    let leads: Vec<NewLead> = (from..to)
        .map(|i| NewLead {
            email: Some(EmailAddress::parse(&format!("lead{i}@example.com")).unwrap()),
            first_name: Some(format!("L{i}")),
            country: Some(CountryCode::parse("US").unwrap()),
            time_zone: Some(TimeZone::parse("America/New_York").unwrap()),
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
    store.enroll(campaign, &ids, t0()).await.unwrap();
}

/// Sends every planned delivery (as a provider would) and returns every delivery.
async fn send_all(store: &dyn Store, at: DateTime<Utc>) -> Vec<DeliveryRecord> {
    let lease = Duration::minutes(5);
    loop {
        let claimed = store
            .claim_due_deliveries(at + Duration::days(3), 500, "w", lease)
            .await
            .unwrap();
        if claimed.is_empty() {
            break;
        }
        for d in claimed {
            assert!(store
                .begin_send(d.id, d.fencing_token, at, lease)
                .await
                .unwrap());
            let sent = SendOutcome::Sent {
                provider_ref: format!("<{}@x>", d.id.0),
            };
            store
                .record_outcome(d.id, d.fencing_token, &sent, &FollowUp::Complete, at)
                .await
                .unwrap();
        }
    }
    store.deliveries(&DeliveryFilter::default()).await.unwrap()
}

fn variant_of(d: &DeliveryRecord) -> &str {
    match d.subject.as_deref() {
        Some("Subject A") => "a",
        Some("Subject B") => "b",
        other => panic!("unexpected subject {other:?}"),
    }
}

/// Records a reply to every `every`-th sent delivery of a variant.
async fn reply(store: &dyn Store, sent: &[DeliveryRecord], variant: &str, every: usize) {
    for (i, d) in sent.iter().filter(|d| variant_of(d) == variant).enumerate() {
        if i % every == 0 {
            store
                .record_event(&NewEvent {
                    lead_id: d.lead_id,
                    delivery_id: Some(d.id),
                    kind: EventKind::Replied,
                    occurred_at: t0() + Duration::days(1),
                    detail: "{}".into(),
                    source: "test".into(),
                })
                .await
                .unwrap();
        }
    }
}

fn share_b(ds: &[&DeliveryRecord]) -> f64 {
    ds.iter().filter(|d| variant_of(d) == "b").count() as f64 / ds.len() as f64
}

async fn a_bandit_shifts_new_leads_to_the_better_variant(store: Arc<dyn Store>) {
    let config = config();
    let campaign = store
        .save_campaign(
            "ab",
            "A/B",
            &definition("mode = \"bandit\"\nfloor = 0.05"),
            t0(),
        )
        .await
        .unwrap();
    let catalog = Catalog::load(store.as_ref()).await.unwrap();
    // Cohort 1: no results yet, so the bandit splits evenly.
    enroll(store.as_ref(), campaign, 0, 300).await;
    let planned = Planner::new(store.as_ref(), &catalog, &config)
        .plan_due(t0(), None, false)
        .await
        .unwrap();
    assert_eq!(planned.planned, 300, "{:?}", planned.by_code);
    let first = send_all(store.as_ref(), t0()).await;
    let cohort1: Vec<&DeliveryRecord> = first.iter().collect();
    assert_eq!(cohort1.len(), 300);
    let s1 = share_b(&cohort1);
    assert!((0.4..0.6).contains(&s1), "an even split without data: {s1}");
    // b draws a reply from every 4th send, a from every 25th.
    reply(store.as_ref(), &first, "b", 4).await;
    reply(store.as_ref(), &first, "a", 25).await;
    // Cohort 2: the bandit sends most new leads to b, but a keeps its floor.
    let later = t0() + Duration::days(2);
    enroll(store.as_ref(), campaign, 300, 600).await;
    // A dry run twice: the same state gives every lead the same variant.
    let planner = Planner::new(store.as_ref(), &catalog, &config);
    let dry1 = planner.plan_due(later, None, true).await.unwrap();
    let dry2 = Planner::new(store.as_ref(), &catalog, &config)
        .plan_due(later, None, true)
        .await
        .unwrap();
    let picks = |r: &engager_engine::planner::PlanReport| {
        let mut v: Vec<(LeadId, String)> = r
            .plans
            .iter()
            .map(|p| (p.lead_id, p.summary.clone()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(dry1.plans.len(), 300);
    assert_eq!(picks(&dry1), picks(&dry2));
    Planner::new(store.as_ref(), &catalog, &config)
        .plan_due(later, None, false)
        .await
        .unwrap();
    let all = send_all(store.as_ref(), later).await;
    let cohort2: Vec<&DeliveryRecord> = all
        .iter()
        .filter(|d| !first.iter().any(|f| f.id == d.id))
        .collect();
    assert_eq!(cohort2.len(), 300);
    let s2 = share_b(&cohort2);
    assert!(
        (0.85..=0.99).contains(&s2),
        "b should get most new leads but not all: {s2}"
    );
    // The trace says how the variant was chosen, with the figures.
    let traces = store.traces_for_lead(cohort2[0].lead_id).await.unwrap();
    let personalization = traces
        .iter()
        .flat_map(|t| &t.gates)
        .find(|g| g.gate == "personalization")
        .unwrap();
    // The figures are cohort 1's: every 25th send of a and every 4th of b replied.
    let (na, nb) = (
        cohort1.iter().filter(|d| variant_of(d) == "a").count(),
        cohort1.iter().filter(|d| variant_of(d) == "b").count(),
    );
    let expected = format!(
        "bandit: Thompson sampling on positive-replies per send (a {}/{na}, b {}/{nb}), floor 5% per variant",
        na.div_ceil(25),
        nb.div_ceil(4)
    );
    assert!(
        personalization.reason.contains(&expected),
        "{} does not contain {expected}",
        personalization.reason
    );
    // A lead keeps the variant of its delivery whatever happens later: even with a promoted
    // winner, the book gives cohort 1's leads their own variant.
    let catalog_campaign = catalog.by_slug("ab").unwrap();
    let step = &catalog_campaign.steps[0];
    engager_engine::experiments::promote(
        store.as_ref(),
        catalog_campaign,
        step,
        "a",
        "test",
        later,
    )
    .await
    .unwrap();
    let mut book = ExperimentBook::load(store.as_ref(), &catalog, later, true)
        .await
        .unwrap();
    let leads: Vec<LeadId> = first.iter().map(|d| d.lead_id).collect();
    book.set_assignments(store.variant_assignments(&leads).await.unwrap());
    for d in &first {
        let a = book.assign(catalog_campaign, step, d.lead_id).unwrap();
        assert_eq!(a.variant.name, variant_of(d));
        assert!(a.how.starts_with("kept"), "{}", a.how);
    }
    // A new lead gets the promoted variant.
    let fresh = book
        .assign(catalog_campaign, step, LeadId(999_999))
        .unwrap();
    assert_eq!(fresh.variant.name, "a");
    assert!(
        fresh.how.starts_with("promoted winner (by a person"),
        "{}",
        fresh.how
    );
}

async fn a_winner_is_promoted_automatically_and_can_be_reset(store: Arc<dyn Store>) {
    let config = config();
    let campaign = store
        .save_campaign(
            "ab",
            "A/B",
            &definition("auto_promote = true\nmin_sample = 100"),
            t0(),
        )
        .await
        .unwrap();
    let catalog = Catalog::load(store.as_ref()).await.unwrap();
    enroll(store.as_ref(), campaign, 0, 400).await;
    Planner::new(store.as_ref(), &catalog, &config)
        .plan_due(t0(), None, false)
        .await
        .unwrap();
    let first = send_all(store.as_ref(), t0()).await;
    assert!(store.experiment_decisions().await.unwrap().is_empty());
    reply(store.as_ref(), &first, "b", 4).await;
    reply(store.as_ref(), &first, "a", 25).await;
    // The next pass promotes b (significant, enough sends, no guardrail) and gives it to
    // every new lead.
    let later = t0() + Duration::days(2);
    enroll(store.as_ref(), campaign, 400, 500).await;
    Planner::new(store.as_ref(), &catalog, &config)
        .plan_due(later, None, false)
        .await
        .unwrap();
    let decisions = store.experiment_decisions().await.unwrap();
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0].experiment, "ab#1");
    assert_eq!(decisions[0].state, DecisionState::Promoted);
    assert_eq!(decisions[0].variant.as_deref(), Some("b"));
    assert_eq!(decisions[0].source, "auto");
    assert!(
        decisions[0]
            .reason
            .starts_with("b beats the control a on positive-replies"),
        "{}",
        decisions[0].reason
    );
    let audit = store.audit_log(t0()).await.unwrap();
    assert!(audit.iter().any(|e| e.action == "ab_promote"
        && e.subject == "ab#1"
        && e.detail.contains("automatically")));
    let all = send_all(store.as_ref(), later).await;
    let cohort2: Vec<&DeliveryRecord> = all
        .iter()
        .filter(|d| !first.iter().any(|f| f.id == d.id))
        .collect();
    assert_eq!(cohort2.len(), 100);
    assert_eq!(share_b(&cohort2), 1.0, "every new lead gets the winner");
    let traces = store.traces_for_lead(cohort2[0].lead_id).await.unwrap();
    assert!(traces.iter().flat_map(|t| &t.gates).any(|g| g
        .reason
        .contains("(promoted winner (automatically on 2026-03-05))")));
    // A person resets it: new leads are split by the weights again, and the still-winning
    // verdict does not promote b again.
    let c = catalog.by_slug("ab").unwrap();
    reset(
        store.as_ref(),
        c,
        &c.steps[0],
        "checking the next cohort",
        later,
    )
    .await
    .unwrap();
    enroll(store.as_ref(), campaign, 500, 700).await;
    let third = Planner::new(store.as_ref(), &catalog, &config)
        .plan_due(later + Duration::days(1), None, true)
        .await
        .unwrap();
    assert_eq!(third.plans.len(), 200);
    let b = third
        .plans
        .iter()
        .filter(|p| p.summary == "Subject B")
        .count();
    assert!(
        (70..=130).contains(&b),
        "weights 1:1 again: {b} of 200 got b"
    );
    let decisions = store.experiment_decisions().await.unwrap();
    assert_eq!(decisions[0].state, DecisionState::Reset);
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let url = format!("sqlite:{}", dir.path().join("t.db").display());
                    super::$name(engager_store::open(&url).await.unwrap()).await;
                }
            )*
        }
        mod postgres {
            use std::sync::Arc;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(url) = engager_testkit::postgres_url() else { return };
                    let schema = engager_testkit::unique_schema(stringify!($name));
                    let store = engager_store::postgres::PgStore::connect_isolated(&url, &schema).await.unwrap();
                    super::$name(Arc::new(store)).await;
                }
            )*
        }
    };
}

both_backends!(
    a_bandit_shifts_new_leads_to_the_better_variant,
    a_winner_is_promoted_automatically_and_can_be_reset,
);
