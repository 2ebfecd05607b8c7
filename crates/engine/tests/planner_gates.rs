//! Table-driven tests of the planner's gates: each case names the lead, the situation and the
//! outcome and reason the trace must show.

use chrono::{DateTime, Duration, Utc};
use engager_channels::Sender;
use engager_domain::frequency::{BudgetRules, Fatigue, FrequencyPolicy};
use engager_domain::links::verify_lead_token;
use engager_domain::{
    CampaignId, Channel, CountryCode, EmailAddress, EnrollmentId, Lead, LeadHistory, LeadId,
    LeadStatus, LinkedinUrl, NewLead, PhoneE164, TimeZone,
};
use engager_engine::campaign_file::parse_campaign;
use engager_engine::planner::Planner;
use engager_engine::timing::{BestTimeSettings, TimingRules};
use engager_engine::{Catalog, EngineConfig};
use engager_store::{
    DueEnrollment, EnrollmentRecord, EnrollmentState, PlanDecision, SuppressionKey,
    SuppressionRecord,
};

const CAMPAIGN: &str = r#"
slug = "t"
name = "Test"
[window]
days = ["mon", "tue", "wed", "thu", "fri"]
start = "09:00"
end = "17:00"
[[steps]]
name = "intro"
channels = ["email"]
subject = "Hi {{ lead.first_name }}"
body = "Hello {{ lead.first_name }} at {{ lead.company }}."
[[steps]]
name = "titled"
channels = ["email"]
delay_days = 2
subject = "For the {{ lead.title }}"
body = "Hello."
[[steps]]
name = "nudge"
channels = ["linkedin", "sms"]
delay_days = 2
body = "Hi {{ lead.first_name }}, quick question."
[[steps]]
name = "fake-reply"
channels = ["email"]
subject = "Re: our call"
body = "Hello."
"#;

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
        default_time_zone: TimeZone::parse("America/New_York").unwrap(),
        frequency: FrequencyPolicy {
            min_gap: Duration::hours(48),
            max_per_week: 3,
        },
        // These tables test each gate on its own: no fatigue, no best-time search (the
        // timing tests in engager-domain and below cover them).
        budget: BudgetRules {
            fatigue: Fatigue::off(),
            ..BudgetRules::default()
        },
        timing: TimingRules {
            best_time: BestTimeSettings {
                enabled: false,
                ..BestTimeSettings::default()
            },
            ..TimingRules::default()
        },
        max_jitter: Duration::zero(),
        sms_quiet_start_hour: 8,
        sms_quiet_end_hour: 21,
        max_sms_segments: 3,
        batch_size: 100,
        lease: Duration::minutes(5),
        max_attempts: 3,
        max_age: Duration::hours(72),
        retry_base_delay: Duration::minutes(1),
        retry_max_delay: Duration::hours(1),
        enabled_channels: Channel::ALL.to_vec(),
        worker_id: "test".into(),
        // The test company documented a legitimate interest for every channel (these are
        // German leads; the compliance gate's own tests are in tests/compliance.rs).
        compliance: engager_domain::compliance::ComplianceRules {
            legitimate_interest: Some("LIA-TEST".into()),
            legitimate_interest_channels: Channel::ALL.to_vec(),
            ..Default::default()
        },
    }
}

fn lead(email: Option<&str>, phone: Option<&str>, linkedin: Option<&str>, country: &str) -> Lead {
    Lead {
        id: LeadId(7),
        status: LeadStatus::Active,
        profile: NewLead {
            email: email.map(|e| EmailAddress::parse(e).unwrap()),
            phone: phone.map(|p| PhoneE164::parse(p, None).unwrap()),
            linkedin: linkedin.map(|l| LinkedinUrl::parse(l).unwrap()),
            first_name: Some("Jana".into()),
            company: Some("Bramble GmbH".into()),
            country: Some(CountryCode::parse(country).unwrap()),
            source: "test".into(),
            ..NewLead::default()
        },
    }
}

fn due(lead: Lead, step: usize) -> DueEnrollment {
    DueEnrollment {
        enrollment: EnrollmentRecord {
            id: EnrollmentId(1),
            campaign_id: CampaignId(1),
            lead_id: lead.id,
            state: EnrollmentState::Active,
            current_step: step,
            next_due_at: None,
            stop_reason: None,
        },
        lead,
    }
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

struct Case {
    name: &'static str,
    lead: Lead,
    step: usize,
    touches: Vec<DateTime<Utc>>,
    suppressed: Vec<SuppressionKey>,
    now: &'static str,
    outcome: &'static str,
    code: Option<&'static str>,
    failed_gate: Option<(&'static str, &'static str)>,
}

#[test]
fn every_gate_reports_its_verdict_and_reason() {
    let campaign = parse_campaign(CAMPAIGN, "t.toml", CampaignId(1)).unwrap();
    let catalog = Catalog::from_campaigns(vec![campaign.clone()]).unwrap();
    let config = config();
    let planner = Planner::new(
        // The planner's evaluate() does no I/O; a store is only needed for plan_due.
        &*Box::leak(Box::new(NoStore)),
        &catalog,
        &config,
    );
    let de = || lead(Some("jana@bramble.example"), None, None, "DE");
    let mut unsubscribed = de();
    unsubscribed.status = LeadStatus::Unsubscribed;
    let cases = vec![
        Case {
            name: "plain email",
            lead: de(),
            step: 0,
            touches: vec![],
            suppressed: vec![],
            now: "2026-03-03T10:00:00Z",
            outcome: "planned",
            code: None,
            failed_gate: None,
        },
        Case {
            name: "unsubscribed lead",
            lead: unsubscribed,
            step: 0,
            touches: vec![],
            suppressed: vec![],
            now: "2026-03-03T10:00:00Z",
            outcome: "stopped",
            code: Some("unsubscribed"),
            failed_gate: Some(("compliance", "the lead is unsubscribed")),
        },
        Case {
            name: "suppressed address",
            lead: de(),
            step: 0,
            touches: vec![],
            suppressed: vec![SuppressionKey::Email("jana@bramble.example".into())],
            now: "2026-03-03T10:00:00Z",
            outcome: "stopped",
            code: Some("suppressed"),
            failed_gate: Some(("compliance", "every contact point is suppressed")),
        },
        Case {
            name: "suppressed domain",
            lead: de(),
            step: 0,
            touches: vec![],
            suppressed: vec![SuppressionKey::Domain("bramble.example".into())],
            now: "2026-03-03T10:00:00Z",
            outcome: "stopped",
            code: Some("suppressed"),
            failed_gate: Some(("compliance", "domain bramble.example")),
        },
        Case {
            name: "touched an hour ago",
            lead: de(),
            step: 0,
            touches: vec![at("2026-03-03T09:00:00Z")],
            suppressed: vec![],
            now: "2026-03-03T10:00:00Z",
            outcome: "deferred",
            code: Some("frequency"),
            failed_gate: Some(("frequency", "minimum gap is 48h")),
        },
        Case {
            name: "weekly cap",
            lead: de(),
            step: 0,
            touches: vec![
                at("2026-02-25T10:00:00Z"),
                at("2026-02-27T10:00:00Z"),
                at("2026-03-01T10:00:00Z"),
            ],
            suppressed: vec![],
            now: "2026-03-03T11:00:00Z",
            outcome: "deferred",
            code: Some("frequency"),
            failed_gate: Some(("frequency", "cap is 3")),
        },
        Case {
            name: "missing template variable",
            lead: de(),
            step: 1,
            touches: vec![],
            suppressed: vec![],
            now: "2026-03-03T10:00:00Z",
            outcome: "skipped",
            code: Some("render_error"),
            failed_gate: Some(("personalization", "lead.title not set for this lead")),
        },
        Case {
            name: "no linkedin, no phone",
            lead: de(),
            step: 2,
            touches: vec![],
            suppressed: vec![],
            now: "2026-03-03T10:00:00Z",
            outcome: "skipped",
            code: Some("no_channel"),
            failed_gate: Some((
                "channel",
                "linkedin: no contact point; sms: no contact point",
            )),
        },
        Case {
            name: "sms fallback, number suppressed",
            lead: lead(
                Some("jana@bramble.example"),
                Some("+4915123456789"),
                None,
                "DE",
            ),
            step: 2,
            touches: vec![],
            suppressed: vec![SuppressionKey::Phone("+4915123456789".into())],
            now: "2026-03-03T10:00:00Z",
            outcome: "skipped",
            code: Some("no_channel"),
            failed_gate: Some(("channel", "sms: phone +4915123456789 is suppressed")),
        },
        Case {
            name: "fake Re: subject",
            lead: de(),
            step: 3,
            touches: vec![],
            suppressed: vec![],
            now: "2026-03-03T10:00:00Z",
            outcome: "skipped",
            code: Some("content_check"),
            failed_gate: Some(("content", "deceptive subject")),
        },
    ];
    for case in cases {
        let suppressed: Vec<SuppressionRecord> = case
            .suppressed
            .iter()
            .map(|k| SuppressionRecord {
                key: k.clone(),
                reason: "unsubscribed".into(),
                source: "test".into(),
                created_at: at("2026-01-01T00:00:00Z"),
            })
            .collect();
        let eval = planner.evaluate(
            &due(case.lead, case.step),
            &campaign,
            &LeadHistory::from_times(&case.touches),
            &suppressed,
            at(case.now),
        );
        assert_eq!(
            eval.trace.outcome, case.outcome,
            "{}: {:?}",
            case.name, eval.trace.gates
        );
        assert_eq!(eval.trace.code.as_deref(), case.code, "{}", case.name);
        match case.failed_gate {
            Some((gate, reason)) => {
                let failed = eval.trace.gates.last().unwrap();
                assert_eq!(
                    (failed.gate.as_str(), failed.passed),
                    (gate, false),
                    "{}",
                    case.name
                );
                assert!(
                    failed.reason.contains(reason),
                    "{}: {:?} lacks {reason:?}",
                    case.name,
                    failed.reason
                );
            }
            None => assert!(eval.trace.gates.iter().all(|g| g.passed), "{}", case.name),
        }
    }
}

#[test]
fn planned_messages_carry_footer_window_and_fallback() {
    let campaign = parse_campaign(CAMPAIGN, "t.toml", CampaignId(1)).unwrap();
    let catalog = Catalog::from_campaigns(vec![campaign.clone()]).unwrap();
    let config = config();
    let planner = Planner::new(&*Box::leak(Box::new(NoStore)), &catalog, &config);
    // Friday 18:00 in Berlin: the email waits for Monday 09:00 Berlin.
    let eval = planner.evaluate(
        &due(lead(Some("jana@bramble.example"), None, None, "DE"), 0),
        &campaign,
        &LeadHistory::default(),
        &[],
        at("2026-03-06T17:00:00Z"),
    );
    let PlanDecision::Plan(d) = &eval.decision else {
        panic!("{eval:?}")
    };
    assert_eq!(d.send_at, at("2026-03-09T08:00:00Z"));
    assert!(eval
        .trace
        .gates
        .iter()
        .any(|g| g.reason.contains("Europe/Berlin (country)")));
    assert!(d.body_text.contains("1 Main St, Springfield"));
    let url = d
        .body_text
        .lines()
        .find(|l| l.contains("https://acme.example/u/"))
        .unwrap();
    let token = url.rsplit('/').next().unwrap();
    assert_eq!(
        verify_lead_token(b"0123456789abcdef", "unsubscribe", token),
        Some(LeadId(7))
    );
    assert!(
        !url.contains("jana"),
        "no personal data in the unsubscribe URL"
    );
    // LinkedIn missing, phone present: the SMS fallback, inside 08:00–21:00 and the window,
    // with the sender named and STOP wording added.
    let eval = planner.evaluate(
        &due(
            lead(
                Some("jana@bramble.example"),
                Some("+4915123456789"),
                None,
                "DE",
            ),
            2,
        ),
        &campaign,
        &LeadHistory::default(),
        &[],
        at("2026-03-03T05:00:00Z"),
    );
    let PlanDecision::Plan(d) = &eval.decision else {
        panic!("{eval:?}")
    };
    assert_eq!(d.channel, Channel::Sms);
    assert_eq!(d.send_at, at("2026-03-03T08:00:00Z"), "09:00 Berlin");
    assert!(
        d.body_text.starts_with("Acme: ") && d.body_text.contains("Reply STOP"),
        "{}",
        d.body_text
    );
    assert!(eval.trace.gates.iter().any(|g| g
        .reason
        .contains("sms (fallback after linkedin: no contact point)")));
    // With LinkedIn, the first preference wins.
    let eval = planner.evaluate(
        &due(
            lead(
                None,
                Some("+4915123456789"),
                Some("linkedin.com/in/jana"),
                "DE",
            ),
            2,
        ),
        &campaign,
        &LeadHistory::default(),
        &[],
        at("2026-03-03T10:00:00Z"),
    );
    let PlanDecision::Plan(d) = &eval.decision else {
        panic!("{eval:?}")
    };
    assert_eq!(
        (d.channel, d.to_address.as_str()),
        (Channel::Linkedin, "https://www.linkedin.com/in/jana")
    );
    // A lead who says she prefers SMS gets SMS first; the trace shows the scores.
    let mut prefers_sms = lead(
        None,
        Some("+4915123456789"),
        Some("linkedin.com/in/jana"),
        "DE",
    );
    prefers_sms
        .profile
        .custom
        .insert("preferred_channel".into(), "SMS".into());
    let eval = planner.evaluate(
        &due(prefers_sms, 2),
        &campaign,
        &LeadHistory::default(),
        &[],
        at("2026-03-03T10:00:00Z"),
    );
    let PlanDecision::Plan(d) = &eval.decision else {
        panic!("{eval:?}")
    };
    assert_eq!(d.channel, Channel::Sms);
    let channel_gate = eval
        .trace
        .gates
        .iter()
        .find(|g| g.gate == "channel")
        .unwrap();
    assert!(
        channel_gate
            .reason
            .contains("scores: sms 1.35 (order 0.85, preferred +0.50), linkedin 1.00 (order 1.00)"),
        "{}",
        channel_gate.reason
    );
}

const HTML_CAMPAIGN: &str = r#"
slug = "h"
name = "HTML"
[window]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "00:00"
end = "23:59"
[[steps]]
name = "intro"
channels = ["email"]
subject = "Hi {{ lead.first_name }} at {{ lead.company }}"
body = "Hello {{ lead.first_name }} at {{ lead.company }}."
html = "<p>Hello <b>{{ lead.first_name }}</b> at {{ lead.company }}.</p>"
"#;

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]

    /// Whatever the lead's name, company and country, every commercial email the planner
    /// plans carries the postal address and the unsubscribe link (text and HTML), and the
    /// message built for a provider that allows headers carries the RFC 8058 one-click
    /// headers; the evidence says so, and says a Graph send has no one-click header.
    #[test]
    fn no_planned_email_lacks_the_footer_or_the_one_click_headers(
        first in "[\\p{L}<>&\"' ]{1,24}",
        company in "[\\p{L}0-9<>&\"' .,-]{1,30}",
        html in proptest::prelude::any::<bool>(),
        country in proptest::sample::select(vec!["DE", "US", "GB", "FR", "JP", "IN", "BR"]),
        hour in 0u32..24,
    ) {
        let source = if html { HTML_CAMPAIGN } else { CAMPAIGN };
        let campaign = parse_campaign(source, "p.toml", CampaignId(1)).unwrap();
        let catalog = Catalog::from_campaigns(vec![campaign.clone()]).unwrap();
        let config = config();
        let planner = Planner::new(&*Box::leak(Box::new(NoStore)), &catalog, &config);
        let mut l = lead(Some("pat@example.com"), None, None, country);
        l.profile.first_name = Some(first.trim().to_owned()).filter(|f| !f.is_empty());
        l.profile.company = Some(company.trim().to_owned()).filter(|c| !c.is_empty());
        let now = at("2026-03-03T00:00:00Z") + Duration::hours(i64::from(hour));
        let e = planner.evaluate(&due(l, 0), &campaign, &LeadHistory::default(), &[], now);
        let PlanDecision::Plan(d) = e.decision else {
            // A name that leaves a template variable empty is refused, never sent half-done.
            return Ok(());
        };
        let unsubscribe = planner.unsubscribe_url(LeadId(7));
        proptest::prop_assert!(d.body_text.contains(&config.sender.postal_address), "{}", d.body_text);
        proptest::prop_assert!(d.body_text.contains(&unsubscribe));
        if let Some(h) = &d.body_html {
            proptest::prop_assert!(h.contains(&unsubscribe), "{h}");
        }
        proptest::prop_assert_eq!(d.body_html.is_some(), html);
        let message = engager_channels::OutgoingMessage {
            delivery_id: engager_domain::DeliveryId(1),
            lead_id: LeadId(7),
            campaign: "p".into(),
            step_index: 0,
            channel: Channel::Email,
            to: d.to_address.clone(),
            to_name: None,
            subject: d.subject.clone(),
            body_text: d.body_text.clone(),
            body_html: d.body_html.clone(),
            date: now,
            message_id: "<1.p@acme.example>".into(),
            sender: config.sender.clone(),
            unsubscribe: Some(engager_channels::Unsubscribe {
                url: unsubscribe.clone(),
                mailto: None,
            }),
            due_by: None,
        };
        let built = engager_channels::email::build_message(&message).unwrap().formatted();
        let head = String::from_utf8_lossy(&built);
        let head = head.split("\r\n\r\n").next().unwrap().replace("\r\n ", " ");
        proptest::prop_assert!(head.contains(&format!("List-Unsubscribe: <{unsubscribe}>")), "{head}");
        proptest::prop_assert!(head.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"), "{head}");
        let record = engager_engine::compliance::MessageFacts {
            delivery_id: engager_domain::DeliveryId(1),
            lead_id: LeadId(7),
            channel: Channel::Email,
            body_text: &d.body_text,
            body_html: d.body_html.as_deref(),
        };
        let verdict = engager_domain::compliance::check(
            &engager_engine::compliance::rules(&config),
            &due(lead(Some("pat@example.com"), None, None, country), 0).lead,
            Channel::Email,
            &[],
            now,
        );
        for (provider, one_click) in [("smtp", true), ("outbox", true), ("graph", false)] {
            let ev = engager_engine::compliance::evidence(record, provider, &verdict, &config, &unsubscribe, now);
            proptest::prop_assert!(ev.footer_postal && ev.footer_unsubscribe);
            proptest::prop_assert_eq!(ev.one_click_header, one_click);
        }
    }
}

/// A store that is never called: `Planner::evaluate` is pure.
struct NoStore;

#[async_trait::async_trait]
impl engager_store::Store for NoStore {
    fn backend(&self) -> &'static str {
        "none"
    }
    async fn upsert_leads(
        &self,
        _: &[NewLead],
        _: DateTime<Utc>,
    ) -> engager_store::StoreResult<Vec<engager_store::UpsertOutcome>> {
        unreachable!()
    }
    async fn lead(&self, _: LeadId) -> engager_store::StoreResult<Option<Lead>> {
        unreachable!()
    }
    async fn lead_by_email(&self, _: &str) -> engager_store::StoreResult<Option<Lead>> {
        unreachable!()
    }
    async fn lead_ids(
        &self,
        _: &engager_store::LeadFilter,
    ) -> engager_store::StoreResult<Vec<LeadId>> {
        unreachable!()
    }
    async fn lead_counts(&self) -> engager_store::StoreResult<Vec<(String, u64)>> {
        unreachable!()
    }
    async fn save_campaign(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: DateTime<Utc>,
    ) -> engager_store::StoreResult<CampaignId> {
        unreachable!()
    }
    async fn campaigns(&self) -> engager_store::StoreResult<Vec<engager_store::CampaignRecord>> {
        unreachable!()
    }
    async fn enroll(
        &self,
        _: CampaignId,
        _: &[LeadId],
        _: DateTime<Utc>,
    ) -> engager_store::StoreResult<u64> {
        unreachable!()
    }
    async fn due_enrollments(
        &self,
        _: DateTime<Utc>,
        _: Option<engager_store::DueCursor>,
        _: usize,
    ) -> engager_store::StoreResult<Vec<DueEnrollment>> {
        unreachable!()
    }
    async fn enrollments_for_lead(
        &self,
        _: LeadId,
    ) -> engager_store::StoreResult<Vec<EnrollmentRecord>> {
        unreachable!()
    }
    async fn enrollment_counts(
        &self,
    ) -> engager_store::StoreResult<Vec<(CampaignId, String, u64)>> {
        unreachable!()
    }
    async fn touches(
        &self,
        _: &[LeadId],
        _: DateTime<Utc>,
    ) -> engager_store::StoreResult<std::collections::HashMap<LeadId, Vec<DateTime<Utc>>>> {
        unreachable!()
    }
    async fn contact_history(
        &self,
        _: &[LeadId],
        _: DateTime<Utc>,
    ) -> engager_store::StoreResult<std::collections::HashMap<LeadId, LeadHistory>> {
        unreachable!()
    }
    async fn suppressed(
        &self,
        _: &[SuppressionKey],
    ) -> engager_store::StoreResult<Vec<SuppressionRecord>> {
        unreachable!()
    }
    async fn record_evaluations(
        &self,
        _: &[engager_store::Evaluation],
        _: DateTime<Utc>,
    ) -> engager_store::StoreResult<()> {
        unreachable!()
    }
    async fn traces_for_lead(
        &self,
        _: LeadId,
    ) -> engager_store::StoreResult<Vec<engager_store::TraceRecord>> {
        unreachable!()
    }
    async fn claim_due_deliveries(
        &self,
        _: DateTime<Utc>,
        _: usize,
        _: &str,
        _: Duration,
    ) -> engager_store::StoreResult<Vec<engager_store::DeliveryRecord>> {
        unreachable!()
    }
    async fn begin_send(
        &self,
        _: engager_domain::DeliveryId,
        _: i64,
        _: DateTime<Utc>,
        _: Duration,
    ) -> engager_store::StoreResult<bool> {
        unreachable!()
    }
    async fn record_outcome(
        &self,
        _: engager_domain::DeliveryId,
        _: i64,
        _: &engager_store::SendOutcome,
        _: &engager_store::FollowUp,
        _: DateTime<Utc>,
    ) -> engager_store::StoreResult<bool> {
        unreachable!()
    }
    async fn cancel_claimed(
        &self,
        _: engager_domain::DeliveryId,
        _: i64,
        _: &str,
        _: DateTime<Utc>,
    ) -> engager_store::StoreResult<bool> {
        unreachable!()
    }
    async fn release_claim(
        &self,
        _: engager_domain::DeliveryId,
        _: i64,
        _: DateTime<Utc>,
        _: &str,
        _: DateTime<Utc>,
    ) -> engager_store::StoreResult<bool> {
        unreachable!()
    }
    async fn resolve_unknown(
        &self,
        _: engager_domain::DeliveryId,
        _: engager_store::Resolution,
        _: &str,
        _: DateTime<Utc>,
    ) -> engager_store::StoreResult<bool> {
        unreachable!()
    }
    async fn sent_counts_since(
        &self,
        _: DateTime<Utc>,
    ) -> engager_store::StoreResult<Vec<(Channel, u64)>> {
        unreachable!()
    }
    async fn set_delivery_account(
        &self,
        _: engager_domain::DeliveryId,
        _: i64,
        _: &str,
    ) -> engager_store::StoreResult<bool> {
        unreachable!()
    }
    async fn enrollment_account(
        &self,
        _: engager_domain::EnrollmentId,
        _: Channel,
    ) -> engager_store::StoreResult<Option<String>> {
        unreachable!()
    }
    async fn sent_counts_by_account_since(
        &self,
        _: DateTime<Utc>,
    ) -> engager_store::StoreResult<Vec<engager_store::AccountSentCount>> {
        unreachable!()
    }
    async fn save_account_state(
        &self,
        _: &engager_store::AccountState,
    ) -> engager_store::StoreResult<()> {
        unreachable!()
    }
    async fn account_states(&self) -> engager_store::StoreResult<Vec<engager_store::AccountState>> {
        unreachable!()
    }
    async fn ledger_overview(&self) -> engager_store::StoreResult<Vec<engager_store::LedgerRow>> {
        unreachable!()
    }
    async fn recover_expired_leases(
        &self,
        _: DateTime<Utc>,
    ) -> engager_store::StoreResult<engager_store::Recovered> {
        unreachable!()
    }
    async fn deliveries(
        &self,
        _: &engager_store::DeliveryFilter,
    ) -> engager_store::StoreResult<Vec<engager_store::DeliveryRecord>> {
        unreachable!()
    }
    async fn next_due_at(&self) -> engager_store::StoreResult<Option<DateTime<Utc>>> {
        unreachable!()
    }
    async fn record_event(
        &self,
        _: &engager_store::NewEvent,
    ) -> engager_store::StoreResult<engager_store::EventEffects> {
        unreachable!()
    }
    async fn add_suppression(
        &self,
        _: &SuppressionKey,
        _: &str,
        _: &str,
        _: DateTime<Utc>,
    ) -> engager_store::StoreResult<bool> {
        unreachable!()
    }
    async fn events_for_lead(
        &self,
        _: LeadId,
    ) -> engager_store::StoreResult<Vec<engager_store::EventRecord>> {
        unreachable!()
    }
    async fn step_summary(&self) -> engager_store::StoreResult<Vec<engager_store::SummaryRow>> {
        unreachable!()
    }
    async fn report_facts(
        &self,
        _: &engager_store::ReportQuery,
    ) -> engager_store::StoreResult<engager_store::ReportFacts> {
        unreachable!()
    }
    async fn sending_counts(
        &self,
        _: Channel,
        _: DateTime<Utc>,
    ) -> engager_store::StoreResult<engager_domain::deliverability::SendingCounts> {
        unreachable!()
    }
    async fn sending_halts(&self) -> engager_store::StoreResult<Vec<engager_store::SendingHalt>> {
        unreachable!()
    }
    async fn record_consent(
        &self,
        _: &engager_domain::compliance::ConsentRecord,
    ) -> engager_store::StoreResult<i64> {
        unreachable!()
    }
    async fn consents(
        &self,
        _: &[LeadId],
    ) -> engager_store::StoreResult<
        std::collections::HashMap<LeadId, Vec<engager_domain::compliance::ConsentRecord>>,
    > {
        unreachable!()
    }
    async fn record_evidence(
        &self,
        _: &engager_store::SendEvidence,
    ) -> engager_store::StoreResult<()> {
        unreachable!()
    }
    async fn evidence_since(
        &self,
        _: DateTime<Utc>,
    ) -> engager_store::StoreResult<Vec<engager_store::EvidenceRow>> {
        unreachable!()
    }
    async fn compliance_traces(
        &self,
        _: DateTime<Utc>,
    ) -> engager_store::StoreResult<Vec<engager_store::ComplianceTrace>> {
        unreachable!()
    }
    async fn campaign_halts(&self) -> engager_store::StoreResult<Vec<engager_store::CampaignHalt>> {
        unreachable!()
    }
    async fn pending_opt_out_writebacks(
        &self,
        _: &str,
        _: usize,
    ) -> engager_store::StoreResult<Vec<(LeadId, String)>> {
        unreachable!()
    }
    async fn mark_opt_outs_written_back(
        &self,
        _: &[LeadId],
        _: DateTime<Utc>,
    ) -> engager_store::StoreResult<()> {
        unreachable!()
    }
    async fn set_campaign_halt(
        &self,
        _: &engager_store::CampaignHalt,
    ) -> engager_store::StoreResult<bool> {
        unreachable!()
    }
    async fn suppression_list(&self) -> engager_store::StoreResult<Vec<SuppressionRecord>> {
        unreachable!()
    }
    async fn channel_evidence(
        &self,
        _: DateTime<Utc>,
    ) -> engager_store::StoreResult<Vec<engager_store::ChannelEvidenceRow>> {
        unreachable!()
    }
    async fn resolve_review(
        &self,
        _: engager_domain::DeliveryId,
        _: &engager_store::ReviewResolution,
        _: DateTime<Utc>,
    ) -> engager_store::StoreResult<bool> {
        unreachable!()
    }
    async fn add_suppressions(&self, _: &[SuppressionRecord]) -> engager_store::StoreResult<u64> {
        unreachable!()
    }
    async fn export_subject(&self, _: LeadId) -> engager_store::StoreResult<serde_json::Value> {
        unreachable!()
    }
    async fn erase_subject(
        &self,
        _: LeadId,
        _: &engager_store::AuditEntry,
    ) -> engager_store::StoreResult<engager_store::ErasureReport> {
        unreachable!()
    }
    async fn append_audit(&self, _: &engager_store::AuditEntry) -> engager_store::StoreResult<()> {
        unreachable!()
    }
    async fn apply_retention(
        &self,
        _: &engager_store::gdpr::RetentionCutoffs,
        _: bool,
    ) -> engager_store::StoreResult<engager_store::gdpr::RetentionReport> {
        unreachable!()
    }
    async fn audit_log(
        &self,
        _: DateTime<Utc>,
    ) -> engager_store::StoreResult<Vec<engager_store::AuditEntry>> {
        unreachable!()
    }
    async fn set_sending_halt(
        &self,
        _: &engager_store::SendingHalt,
    ) -> engager_store::StoreResult<bool> {
        unreachable!()
    }
    async fn sending_counts_by_account(
        &self,
        _: DateTime<Utc>,
    ) -> engager_store::StoreResult<Vec<engager_store::AccountSendingCounts>> {
        unreachable!()
    }
    async fn account_halts(&self) -> engager_store::StoreResult<Vec<engager_store::AccountHalt>> {
        unreachable!()
    }
    async fn set_account_halt(
        &self,
        _: &engager_store::AccountHalt,
    ) -> engager_store::StoreResult<bool> {
        unreachable!()
    }
    async fn save_tracked_message(
        &self,
        _: engager_domain::DeliveryId,
        _: i64,
        _: &engager_store::TrackedMessage,
        _: DateTime<Utc>,
    ) -> engager_store::StoreResult<bool> {
        unreachable!()
    }
    async fn tracked_link(
        &self,
        _: engager_domain::DeliveryId,
        _: u32,
    ) -> engager_store::StoreResult<Option<String>> {
        unreachable!()
    }
    async fn tracking_targets(
        &self,
        _: &[engager_domain::DeliveryId],
    ) -> engager_store::StoreResult<
        std::collections::HashMap<engager_domain::DeliveryId, engager_store::TrackingTarget>,
    > {
        unreachable!()
    }
    async fn record_tracking_events(
        &self,
        _: &[engager_store::NewEvent],
        _: &[(i64, String)],
    ) -> engager_store::StoreResult<Vec<i64>> {
        unreachable!()
    }
    async fn sms_message(
        &self,
        _: &str,
    ) -> engager_store::StoreResult<Option<engager_store::SmsMessage>> {
        unreachable!()
    }
    async fn apply_sms_status(
        &self,
        _: &engager_store::SmsStatusChange,
    ) -> engager_store::StoreResult<bool> {
        unreachable!()
    }
    async fn apply_sms_inbound(
        &self,
        _: &engager_store::SmsInbound,
    ) -> engager_store::StoreResult<engager_store::SmsInboundOutcome> {
        unreachable!()
    }
    async fn sms_inbound_log(
        &self,
        _: &str,
    ) -> engager_store::StoreResult<Vec<engager_store::SmsInboundRecord>> {
        unreachable!()
    }
    async fn record_external_event(
        &self,
        _: &engager_store::NewEvent,
        _: &str,
    ) -> engager_store::StoreResult<Option<engager_store::EventEffects>> {
        unreachable!()
    }
    async fn stop_domain_sequences(
        &self,
        _: &str,
        _: &str,
        _: DateTime<Utc>,
    ) -> engager_store::StoreResult<engager_store::EventEffects> {
        unreachable!()
    }
    async fn find_delivery(
        &self,
        _: engager_domain::DeliveryId,
    ) -> engager_store::StoreResult<Option<engager_store::DeliveryRecord>> {
        unreachable!()
    }
    async fn find_delivery_by_provider_ref(
        &self,
        _: &str,
    ) -> engager_store::StoreResult<Option<engager_store::DeliveryRecord>> {
        unreachable!()
    }
    async fn inbound_cursor(
        &self,
        _: &str,
    ) -> engager_store::StoreResult<Option<engager_store::InboundCursor>> {
        unreachable!()
    }
    async fn save_inbound_cursor(
        &self,
        _: &engager_store::InboundCursor,
    ) -> engager_store::StoreResult<()> {
        unreachable!()
    }
    async fn open_task(
        &self,
        _: &engager_store::NewTask,
        _: i64,
        _: DateTime<Utc>,
    ) -> engager_store::StoreResult<Option<engager_store::TaskRecord>> {
        unreachable!()
    }
    async fn task(&self, _: i64) -> engager_store::StoreResult<Option<engager_store::TaskRecord>> {
        unreachable!()
    }
    async fn tasks(
        &self,
        _: &engager_store::TaskFilter,
    ) -> engager_store::StoreResult<Vec<engager_store::TaskRecord>> {
        unreachable!()
    }
    async fn close_task(
        &self,
        _: i64,
        _: &engager_store::TaskClose,
        _: DateTime<Utc>,
    ) -> engager_store::StoreResult<bool> {
        unreachable!()
    }
    async fn pending_writebacks(
        &self,
        _: &str,
        _: usize,
    ) -> engager_store::StoreResult<Vec<engager_store::Writeback>> {
        unreachable!()
    }
    async fn mark_written_back(
        &self,
        _: &[engager_domain::DeliveryId],
        _: DateTime<Utc>,
    ) -> engager_store::StoreResult<()> {
        unreachable!()
    }
    async fn ai_cached(
        &self,
        _: &[String],
    ) -> engager_store::StoreResult<std::collections::HashMap<String, String>> {
        unreachable!()
    }
    async fn save_ai_cache(
        &self,
        _: &str,
        _: Option<LeadId>,
        _: &str,
        _: &str,
        _: DateTime<Utc>,
    ) -> engager_store::StoreResult<()> {
        unreachable!()
    }
    async fn record_fallback(
        &self,
        _: engager_domain::DeliveryId,
        _: i64,
        _: &str,
        _: &engager_store::Evaluation,
        _: DateTime<Utc>,
    ) -> engager_store::StoreResult<bool> {
        unreachable!()
    }
    async fn failed_channels(
        &self,
        _: &[engager_domain::EnrollmentId],
    ) -> engager_store::StoreResult<Vec<engager_store::FailedChannel>> {
        unreachable!()
    }
    async fn take_send_permit(
        &self,
        _: &engager_store::PermitRequest,
    ) -> engager_store::StoreResult<engager_store::Permit> {
        unreachable!()
    }
    async fn pause_account(&self, _: &str, _: DateTime<Utc>) -> engager_store::StoreResult<()> {
        unreachable!()
    }
    async fn variant_counts(
        &self,
    ) -> engager_store::StoreResult<Vec<engager_store::VariantCountRow>> {
        unreachable!()
    }
    async fn variant_assignments(
        &self,
        _: &[LeadId],
    ) -> engager_store::StoreResult<Vec<engager_store::VariantAssignment>> {
        unreachable!()
    }
    async fn experiment_decisions(
        &self,
    ) -> engager_store::StoreResult<Vec<engager_store::ExperimentDecision>> {
        unreachable!()
    }
    async fn save_experiment_decision(
        &self,
        _: &engager_store::ExperimentDecision,
        _: &engager_store::AuditEntry,
    ) -> engager_store::StoreResult<()> {
        unreachable!()
    }
    async fn classify_reply(
        &self,
        _: &engager_store::ReplyClassification,
    ) -> engager_store::StoreResult<engager_store::ClassifiedReply> {
        unreachable!()
    }
    async fn replies(
        &self,
        _: Option<LeadId>,
        _: usize,
    ) -> engager_store::StoreResult<Vec<engager_store::ReplyRecord>> {
        unreachable!()
    }
    async fn lead_by_source_ref(
        &self,
        _: &str,
        _: &str,
    ) -> engager_store::StoreResult<Option<LeadId>> {
        unreachable!()
    }
}

#[test]
fn an_open_circuit_falls_back_to_the_next_channel_or_waits() {
    let campaign = parse_campaign(CAMPAIGN, "t.toml", CampaignId(1)).unwrap();
    let catalog = Catalog::from_campaigns(vec![campaign.clone()]).unwrap();
    let config = config();
    let now = at("2026-03-03T10:00:00Z");
    let until = now + Duration::minutes(20);
    let mut open = std::collections::HashMap::new();
    open.insert(Channel::Linkedin, until);
    let planner = Planner::new(&*Box::leak(Box::new(NoStore)), &catalog, &config)
        .with_open_circuits(open.clone());
    let both = lead(
        Some("jana@bramble.example"),
        Some("+4915123456789"),
        Some("linkedin.com/in/jana"),
        "DE",
    );
    let eval = planner.evaluate(&due(both, 2), &campaign, &Default::default(), &[], now);
    let PlanDecision::Plan(d) = &eval.decision else {
        panic!("{eval:?}")
    };
    assert_eq!(d.channel, Channel::Sms);
    assert!(
        eval.trace
            .gates
            .iter()
            .any(|g| g.reason.contains("linkedin: circuit open until")),
        "{:?}",
        eval.trace.gates
    );
    // Every channel of the step down: the lead waits for the circuit, nothing is burned.
    open.insert(Channel::Sms, until + Duration::minutes(5));
    let planner =
        Planner::new(&*Box::leak(Box::new(NoStore)), &catalog, &config).with_open_circuits(open);
    let both = lead(
        Some("jana@bramble.example"),
        Some("+4915123456789"),
        Some("linkedin.com/in/jana"),
        "DE",
    );
    let eval = planner.evaluate(&due(both, 2), &campaign, &Default::default(), &[], now);
    assert_eq!(eval.decision, PlanDecision::Defer { until });
}
