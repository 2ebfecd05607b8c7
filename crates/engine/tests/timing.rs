//! Timing and the contact budget through the planner, and a 60-day simulation of three
//! concurrent campaigns whose budget, windows, holidays and SMS hours must hold for every lead.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, Timelike, Utc, Weekday};
use engager_channels::{ChannelSender, OutboxChannel, OutboxConfig, Sender};
use engager_domain::frequency::{BudgetRules, ChannelLimits, FrequencyPolicy};
use engager_domain::holidays::is_business_day;
use engager_domain::{
    CampaignId, Channel, CountryCode, DeliveryState, EmailAddress, Engagement, EnrollmentId,
    EventKind, Lead, LeadHistory, LeadId, LeadStatus, LinkedinUrl, NewLead, PhoneE164, TimeZone,
    Touch,
};
use engager_engine::campaign_file::parse_campaign;
use engager_engine::dispatcher::ChannelSet;
use engager_engine::planner::Planner;
use engager_engine::simulation::{simulate, EngagementModel, SimulationOptions};
use engager_engine::timing::{lead_place, slot_rules, TimingRules};
use engager_engine::{Catalog, EngineConfig};
use engager_store::{
    DeliveryFilter, DueEnrollment, EnrollmentRecord, EnrollmentState, LeadFilter, PlanDecision,
    Store,
};

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
        budget: BudgetRules::default(),
        timing: TimingRules::default(),
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
        compliance: Default::default(),
    }
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

const CAMPAIGN: &str = r#"
slug = "t"
name = "Timing"
[window]
days = ["mon", "tue", "wed", "thu", "fri"]
start = "09:00"
end = "17:00"
[[steps]]
name = "intro"
channels = ["email"]
subject = "Hi {{ lead.first_name }}"
body = "Hello."
[[steps]]
name = "nudge"
channels = ["email", "linkedin"]
delay_business_days = 3
min_delay_days = 1
max_delay_days = 5
subject = "Again"
body = "Hello again."
[[steps]]
name = "text"
channels = ["sms", "email"]
delay_days = 2
subject = "Last"
body = "Quick question."
[steps.window]
days = ["tue", "wed", "thu"]
start = "12:00"
end = "20:30"
"#;

fn lead(country: &str, city: Option<&str>, phone: Option<&str>, linkedin: bool) -> Lead {
    Lead {
        id: LeadId(7),
        status: LeadStatus::Active,
        profile: NewLead {
            email: Some(EmailAddress::parse("jana@bramble.example").unwrap()),
            phone: phone.map(|p| PhoneE164::parse(p, None).unwrap()),
            linkedin: linkedin.then(|| LinkedinUrl::parse("linkedin.com/in/jana").unwrap()),
            first_name: Some("Jana".into()),
            country: Some(CountryCode::parse(country).unwrap()),
            city: city.map(str::to_owned),
            // Opted in to email and texts (the compliance gate's tests are elsewhere).
            custom: [
                ("email_consent", "signup form"),
                ("sms_consent", "signup form"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
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

fn sent_step(at: DateTime<Utc>, channel: Channel, step: usize) -> Touch {
    Touch {
        at,
        channel,
        sent: true,
        delivery: Some(engager_domain::DeliveryId(100 + step as i64)),
        step: Some((EnrollmentId(1), step)),
    }
}

fn event(at: DateTime<Utc>, kind: EventKind) -> Engagement {
    Engagement {
        at,
        kind,
        delivery: None,
    }
}

async fn memory_store() -> Arc<dyn Store> {
    engager_store::open("sqlite::memory:").await.unwrap()
}

fn local(t: DateTime<Utc>, zone: &str) -> String {
    t.with_timezone(&TimeZone::parse(zone).unwrap().tz())
        .format("%a %Y-%m-%d %H:%M")
        .to_string()
}

fn timing_gate(e: &engager_store::Evaluation) -> String {
    e.trace
        .gates
        .iter()
        .rev()
        .find(|g| g.gate == "timing")
        .map(|g| g.reason.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_planner_applies_zone_holidays_best_time_behaviour_and_budget() {
    let store = memory_store().await;
    let campaign = parse_campaign(CAMPAIGN, "t.toml", CampaignId(1)).unwrap();
    let catalog = Catalog::from_campaigns(vec![campaign.clone()]).unwrap();
    let mut plain = config();
    plain.timing.best_time.enabled = false;
    let best = config();
    let planner = Planner::new(store.as_ref(), &catalog, &best);
    let basic = Planner::new(store.as_ref(), &catalog, &plain);
    let none = LeadHistory::default();

    // The city decides the zone: Salt Lake City is Mountain time, not the US default.
    let slc = lead("US", Some("Salt Lake City"), None, false);
    let e = basic.evaluate(
        &due(slc.clone(), 0),
        &campaign,
        &none,
        &[],
        at("2026-03-03T12:00:00Z"),
    );
    let PlanDecision::Plan(d) = &e.decision else {
        panic!("{e:?}")
    };
    assert_eq!(local(d.send_at, "America/Denver"), "Tue 2026-03-03 09:00");
    assert!(
        timing_gate(&e).contains("zone America/Denver (city)"),
        "{}",
        timing_gate(&e)
    );

    // The best-time model moves the intro to the prior's best hour, and says so.
    let e = planner.evaluate(
        &due(slc.clone(), 0),
        &campaign,
        &none,
        &[],
        at("2026-03-03T12:00:00Z"),
    );
    let PlanDecision::Plan(d) = &e.decision else {
        panic!("{e:?}")
    };
    assert_eq!(local(d.send_at, "America/Denver"), "Tue 2026-03-03 10:00");
    assert!(
        timing_gate(&e).contains("best hour tue 10:00 (score 1.00"),
        "{}",
        timing_gate(&e)
    );

    // A lead who always opens at 07:30 gets the window's first hour instead.
    let mut early = LeadHistory::default();
    for day in 0..8 {
        early.events.push(event(
            at("2026-02-09T14:30:00Z") + Duration::days(day),
            EventKind::Opened,
        ));
    }
    let e = planner.evaluate(
        &due(slc.clone(), 0),
        &campaign,
        &early,
        &[],
        at("2026-03-03T12:00:00Z"),
    );
    let PlanDecision::Plan(d) = &e.decision else {
        panic!("{e:?}")
    };
    assert_eq!(local(d.send_at, "America/Denver"), "Tue 2026-03-03 09:00");
    assert!(
        timing_gate(&e).contains("own history"),
        "{}",
        timing_gate(&e)
    );

    // Holidays of the lead's country are skipped and named.
    let e = basic.evaluate(
        &due(slc.clone(), 0),
        &campaign,
        &none,
        &[],
        at("2026-11-25T12:00:00Z"),
    );
    let PlanDecision::Plan(d) = &e.decision else {
        panic!("{e:?}")
    };
    assert_eq!(local(d.send_at, "America/Denver"), "Wed 2026-11-25 09:00");
    // Wednesday 17:00 Denver: Thanksgiving and the day after are holidays.
    let e = basic.evaluate(
        &due(slc.clone(), 0),
        &campaign,
        &none,
        &[],
        at("2026-11-26T00:00:00Z"),
    );
    let PlanDecision::Plan(d) = &e.decision else {
        panic!("{e:?}")
    };
    assert_eq!(local(d.send_at, "America/Denver"), "Mon 2026-11-30 09:00");
    assert!(
        timing_gate(&e).contains("skipped holiday(s) 2026-11-26, 2026-11-27"),
        "{}",
        timing_gate(&e)
    );

    // Follow-up by behaviour: an ignored intro waits for the usual delay before looking again…
    let intro_sent = at("2026-03-02T17:00:00Z"); // Monday 10:00 Denver
    let mut ignored = LeadHistory::default();
    ignored
        .touches
        .push(sent_step(intro_sent, Channel::Email, 0));
    // (Evaluated 48h after the intro: the global minimum gap holds first.)
    let e = planner.evaluate(
        &due(slc.clone(), 1),
        &campaign,
        &ignored,
        &[],
        at("2026-03-04T17:00:00Z"),
    );
    assert_eq!(
        e.trace.code.as_deref(),
        Some("follow_up"),
        "{:?}",
        e.trace.gates
    );
    let PlanDecision::Defer { until } = e.decision else {
        panic!()
    };
    assert_eq!(
        until,
        at("2026-03-05T17:00:00Z"),
        "3 business days after the intro"
    );
    // …and at the maximum delay goes out on another channel first.
    let mut reachable = slc.clone();
    reachable.profile.linkedin = Some(LinkedinUrl::parse("linkedin.com/in/jana").unwrap());
    let e = planner.evaluate(
        &due(reachable, 1),
        &campaign,
        &ignored,
        &[],
        at("2026-03-09T17:00:00Z"),
    );
    let PlanDecision::Plan(d) = &e.decision else {
        panic!("{e:?}")
    };
    assert_eq!(d.channel, Channel::Linkedin, "{:?}", e.trace.gates);
    // An opened intro brings the follow-up forward to the minimum delay (1 business day).
    let mut opened = ignored.clone();
    opened
        .events
        .push(event(intro_sent + Duration::hours(3), EventKind::Opened));
    let e = planner.evaluate(
        &due(slc.clone(), 1),
        &campaign,
        &opened,
        &[],
        at("2026-03-04T17:00:00Z"),
    );
    let PlanDecision::Plan(d) = &e.decision else {
        panic!("{e:?}")
    };
    assert_eq!(d.channel, Channel::Email);
    assert!(
        timing_gate(&e).contains("previous message opened: sooner"),
        "{}",
        timing_gate(&e)
    );

    // The step's own window (tue–thu 12:00–20:30) replaces the campaign's; SMS keeps its
    // hours, Florida's stricter ones for a Miami number, minus the planning margin.
    let miami = lead("US", Some("Miami"), Some("+17867667010"), false);
    let e = planner.evaluate(
        &due(miami.clone(), 2),
        &campaign,
        &none,
        &[],
        at("2026-03-02T14:00:00Z"),
    );
    let PlanDecision::Plan(d) = &e.decision else {
        panic!("{e:?}")
    };
    assert_eq!(d.channel, Channel::Sms);
    let l = d.send_at.with_timezone(&chrono_tz::America::New_York);
    assert!(
        matches!(l.weekday(), Weekday::Tue | Weekday::Wed | Weekday::Thu),
        "{l}"
    );
    assert!(
        (12..19).contains(&l.hour()) || (l.hour() == 19 && l.minute() < 30),
        "{l}"
    );
    assert!(
        timing_gate(&e).contains("SMS hours 08:00-20:00 (US-FL)"),
        "{}",
        timing_gate(&e)
    );

    // A US number without a city: SMS only when it is daytime in every US zone.
    let somewhere = lead("US", None, Some("+12062678831"), false);
    let e = basic.evaluate(
        &due(somewhere, 2),
        &campaign,
        &none,
        &[],
        at("2026-03-03T16:00:00Z"),
    );
    let PlanDecision::Plan(d) = &e.decision else {
        panic!("{e:?}")
    };
    assert_eq!(d.channel, Channel::Sms);
    assert!(
        d.send_at >= at("2026-03-03T18:00:00Z"),
        "08:00 in Honolulu, got {}",
        d.send_at
    );
    assert!(
        timing_gate(&e).contains("in all 7 zones"),
        "{}",
        timing_gate(&e)
    );

    // Per-channel limit: an SMS two days ago → the email fallback, or a deferral when SMS is
    // the only channel.
    let mut limited = config();
    limited.budget.channels = ChannelLimits::default().with(
        Channel::Sms,
        FrequencyPolicy {
            min_gap: Duration::hours(72),
            max_per_week: 1,
        },
    );
    let limited_planner = Planner::new(store.as_ref(), &catalog, &limited);
    let mut texted = LeadHistory::default();
    texted
        .touches
        .push(Touch::sent(at("2026-02-28T18:00:00Z"), Channel::Sms));
    let e = limited_planner.evaluate(
        &due(miami.clone(), 2),
        &campaign,
        &texted,
        &[],
        at("2026-03-03T16:00:00Z"),
    );
    let PlanDecision::Plan(d) = &e.decision else {
        panic!("{e:?}")
    };
    assert_eq!(d.channel, Channel::Email);
    assert!(
        e.trace
            .gates
            .iter()
            .any(|g| g.reason.contains("sms: channel limit")),
        "{:?}",
        e.trace.gates
    );
    let mut no_email = miami.clone();
    no_email.profile.email = None;
    let e = limited_planner.evaluate(
        &due(no_email, 2),
        &campaign,
        &texted,
        &[],
        at("2026-03-03T16:00:00Z"),
    );
    assert_eq!(e.trace.code.as_deref(), Some("channel_budget"));
    // One SMS a week: the next one fits a week after the last.
    assert!(
        matches!(e.decision, PlanDecision::Defer { until } if until == at("2026-03-07T18:00:00Z")),
        "{:?}",
        e.decision
    );

    // Negative signals and the reply cooldown.
    let signal = |kind| {
        let mut h = LeadHistory::default();
        h.events.push(event(at("2026-03-01T12:00:00Z"), kind));
        planner.evaluate(
            &due(slc.clone(), 0),
            &campaign,
            &h,
            &[],
            at("2026-03-03T12:00:00Z"),
        )
    };
    let e = signal(EventKind::NotInterested);
    assert_eq!(e.trace.code.as_deref(), Some("paused"));
    assert!(e
        .trace
        .gates
        .last()
        .unwrap()
        .reason
        .contains("not_interested on 2026-03-01"));
    assert_eq!(signal(EventKind::Complained).trace.outcome, "stopped");
    assert_eq!(
        signal(EventKind::Replied).trace.code.as_deref(),
        Some("reply_cooldown")
    );

    // Fatigue: three unanswered touches lengthen the gap.
    let tired = LeadHistory::from_times(&[
        at("2026-02-16T15:00:00Z"),
        at("2026-02-23T15:00:00Z"),
        at("2026-03-01T15:00:00Z"),
    ]);
    let e = planner.evaluate(
        &due(slc.clone(), 0),
        &campaign,
        &tired,
        &[],
        at("2026-03-03T17:00:00Z"),
    );
    assert_eq!(e.trace.code.as_deref(), Some("frequency"));
    assert!(e
        .trace
        .gates
        .last()
        .unwrap()
        .reason
        .contains("lengthened from 48h"));

    // A campaign's own budget: one touch a week at most.
    let strict = parse_campaign(
        &CAMPAIGN.replace("[window]", "[frequency]\nmax_per_week = 1\n[window]"),
        "strict.toml",
        CampaignId(1),
    )
    .unwrap();
    let once = LeadHistory::from_times(&[at("2026-02-27T15:00:00Z")]);
    let e = planner.evaluate(
        &due(slc, 0),
        &strict,
        &once,
        &[],
        at("2026-03-03T17:00:00Z"),
    );
    assert_eq!(
        e.trace.code.as_deref(),
        Some("frequency"),
        "{:?}",
        e.trace.gates
    );
    assert!(e.trace.gates.last().unwrap().reason.contains("cap is 1"));
}

#[test]
fn campaign_files_name_the_key_of_a_bad_timing_setting() {
    let bad = |from: &str, to: &str| {
        parse_campaign(&CAMPAIGN.replace(from, to), "t.toml", CampaignId(1))
            .unwrap_err()
            .to_string()
    };
    let e = bad(
        "delay_business_days = 3",
        "delay_business_days = 3\ndelay_days = 2",
    );
    assert!(e.contains("steps[2].delay_business_days"), "{e}");
    let e = bad("max_delay_days = 5\n", "");
    assert!(e.contains("steps[2].max_delay_days"), "{e}");
    let e = bad("min_delay_days = 1", "min_delay_days = 4");
    assert!(e.contains("must lie within"), "{e}");
    let e = bad("end = \"20:30\"", "end = \"late\"");
    assert!(e.contains("steps[3].window.end"), "{e}");
    let e = bad(
        "[window]",
        "[frequency.channels.fax]\nmax_per_week = 1\n[window]",
    );
    assert!(e.contains("frequency.channels.fax"), "{e}");
}

// --- the simulation ----------------------------------------------------------------------------

const ALPHA: &str = r#"
slug = "alpha"
name = "Alpha: email then LinkedIn or SMS"
[window]
days = ["mon", "tue", "wed", "thu", "fri"]
start = "09:00"
end = "17:00"
[[steps]]
name = "intro"
channels = ["email"]
subject = "Hi {{ lead.first_name }}"
body = "Hello {{ lead.first_name }}."
[[steps]]
name = "follow-up"
channels = ["email", "linkedin"]
delay_business_days = 2
min_delay_days = 1
max_delay_days = 4
subject = "Following up"
body = "Hello again."
[[steps]]
name = "last"
channels = ["linkedin", "sms"]
delay_days = 3
body = "Hi {{ lead.first_name }}, worth a chat?"
"#;

const BETA: &str = r#"
slug = "beta"
name = "Beta: SMS first, stricter budget"
[window]
days = ["mon", "tue", "wed", "thu", "fri", "sat"]
start = "08:00"
end = "18:00"
[frequency]
min_gap_hours = 72
max_per_week = 2
[[steps]]
name = "text"
channels = ["sms", "email"]
subject = "Hello"
body = "Hi {{ lead.first_name }}, a quick question."
[steps.window]
days = ["tue", "wed", "thu"]
start = "10:00"
end = "20:45"
[[steps]]
name = "email"
channels = ["email"]
delay_days = 5
subject = "A short note"
body = "Hello."
"#;

const GAMMA: &str = r#"
slug = "gamma"
name = "Gamma: plain window, adaptive weekly follow-up"
best_time = false
[window]
days = ["mon", "tue", "wed", "thu", "fri"]
start = "10:00"
end = "16:00"
[[steps]]
name = "intro"
channels = ["email"]
subject = "Hi"
body = "Hello."
[[steps]]
name = "weekly"
channels = ["email"]
delay_days = 7
min_delay_days = 5
max_delay_days = 9
subject = "Again"
body = "Hello again."
[[steps]]
name = "task"
channels = ["linkedin", "email"]
delay_business_days = 3
subject = "Once more"
body = "A short note."
"#;

/// A simulated lead's country, city, and phone prefix with the digits after it.
type Place = (
    &'static str,
    Option<&'static str>,
    Option<(&'static str, usize)>,
);

/// Where the simulated leads are.
const PLACES: &[Place] = &[
    ("US", Some("Miami"), Some(("+1786766", 4))),
    ("US", Some("Seattle"), Some(("+1206267", 4))),
    ("US", None, Some(("+1312266", 4))),
    ("US", Some("Salt Lake City"), None),
    ("CA", Some("Vancouver"), Some(("+1604604", 4))),
    ("AU", Some("Perth"), Some(("+6141234", 4))),
    ("BR", Some("São Paulo"), Some(("+5511988", 6))),
    ("DE", Some("Berlin"), Some(("+4915123", 6))),
    ("GB", Some("London"), None),
    ("JP", Some("Tokyo"), None),
    ("IN", Some("Pune"), None),
];

fn simulated_leads(n: usize) -> Vec<NewLead> {
    (0..n)
        .map(|i| {
            let (country, city, phone) = PLACES[i % PLACES.len()];
            let phone = phone.map(|(prefix, digits)| {
                let number = format!("{prefix}{:0digits$}", 1000 + i);
                PhoneE164::parse(&number, None).unwrap_or_else(|e| panic!("{number}: {e}"))
            });
            NewLead {
                email: EmailAddress::parse(&format!("lead{i}@firm{i}.example")).ok(),
                phone,
                linkedin: (i % 3 == 0)
                    .then(|| LinkedinUrl::parse(&format!("linkedin.com/in/lead-{i}")).ok())
                    .flatten(),
                first_name: Some(format!("Lead{i}")),
                country: CountryCode::parse(country).ok(),
                city: city.map(str::to_owned),
                industry: Some(["SaaS", "Healthcare", "Logistics"][i % 3].into()),
                source: "sim".into(),
                ..NewLead::default()
            }
        })
        .collect()
}

/// A sent message: when, on which channel, for which campaign.
type SendRow<'a> = (DateTime<Utc>, Channel, &'a str);

/// Three campaigns over 60 virtual days (through Easter, Golden Week and two DST changes):
/// for every lead, the one budget across all campaigns and channels is never exceeded, the
/// stricter campaign's own budget holds for its sends, SMS respects its channel limit and
/// the SMS hours in every zone the lead may be in, and every send was scheduled inside its
/// window in the lead's local time, never on a holiday of its country.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_days_of_three_campaigns_never_exceed_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("sim.db").display());
    let store = engager_store::open(&url).await.unwrap();
    let start = at("2026-03-23T00:00:00Z");
    let ids: Vec<LeadId> = store
        .upsert_leads(&simulated_leads(110), start)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.id())
        .collect();
    let mut campaign_ids = Vec::new();
    for (slug, text) in [("alpha", ALPHA), ("beta", BETA), ("gamma", GAMMA)] {
        campaign_ids.push(store.save_campaign(slug, slug, text, start).await.unwrap());
    }
    // Staggered enrollments: alpha now, beta on day 3, gamma for half the leads on day 10.
    store.enroll(campaign_ids[0], &ids, start).await.unwrap();
    store
        .enroll(campaign_ids[1], &ids, start + Duration::days(3))
        .await
        .unwrap();
    let half: Vec<LeadId> = ids.iter().copied().step_by(2).collect();
    store
        .enroll(campaign_ids[2], &half, start + Duration::days(10))
        .await
        .unwrap();
    let catalog = Catalog::load(store.as_ref()).await.unwrap();
    let mut config = config();
    config.max_jitter = Duration::minutes(90);
    config.budget.channels = ChannelLimits::default().with(
        Channel::Sms,
        FrequencyPolicy {
            min_gap: Duration::hours(120),
            max_per_week: 1,
        },
    );
    let outbox = OutboxConfig {
        dir: dir.path().join("outbox"),
    };
    let channels = Channel::ALL.iter().fold(ChannelSet::new(), |set, c| {
        set.with(Arc::new(OutboxChannel::new(*c, &outbox)) as Arc<dyn ChannelSender>)
    });
    let options = SimulationOptions {
        start,
        duration: Duration::days(60),
        tick: Duration::minutes(15),
        seed: 2026,
        model: EngagementModel::default(),
    };
    let report = simulate(
        store.as_ref(),
        &catalog,
        &config,
        &channels,
        &options,
        |_, _| {},
    )
    .await
    .unwrap();
    assert!(
        report.sent > 250,
        "the simulation should send a lot: {report:?}"
    );

    let deliveries = store.deliveries(&DeliveryFilter::default()).await.unwrap();
    let slug_of: HashMap<CampaignId, &str> = catalog
        .all()
        .into_iter()
        .map(|c| (c.id, c.slug.as_str()))
        .collect();
    let leads = store.lead_ids(&LeadFilter::default()).await.unwrap();
    let mut by_campaign: BTreeMap<&str, usize> = BTreeMap::new();
    let mut sms_sent = 0;
    for lead_id in leads {
        let lead = store.lead(lead_id).await.unwrap().unwrap();
        let place = lead_place(&config, &lead);
        let mine: Vec<_> = deliveries
            .iter()
            .filter(|d| d.lead_id == lead_id && d.state == DeliveryState::Sent)
            .collect();
        let mut sends: Vec<SendRow> = mine
            .iter()
            .map(|d| (d.sent_at.unwrap(), d.channel, slug_of[&d.campaign_id]))
            .collect();
        sends.sort();
        for (i, (t, channel, slug)) in sends.iter().enumerate() {
            *by_campaign.entry(slug).or_default() += 1;
            let week = |filter: &dyn Fn(&SendRow) -> bool| {
                sends[..=i]
                    .iter()
                    .filter(|s| s.0 > *t - Duration::days(7) && filter(s))
                    .count()
            };
            assert!(
                week(&|_| true) <= 3,
                "lead {lead_id}: more than 3 touches in 7 days: {sends:?}"
            );
            if i > 0 {
                let gap = *t - sends[i - 1].0;
                assert!(
                    gap >= Duration::hours(48),
                    "lead {lead_id}: touches {gap} apart: {sends:?}"
                );
                if *slug == "beta" {
                    assert!(
                        gap >= Duration::hours(72),
                        "lead {lead_id}: beta's 72h gap broken: {sends:?}"
                    );
                }
            }
            if *slug == "beta" {
                assert!(
                    week(&|_| true) <= 2,
                    "lead {lead_id}: beta's cap of 2 broken: {sends:?}"
                );
            }
            if *channel == Channel::Sms {
                sms_sent += 1;
                assert!(
                    week(&|s| s.1 == Channel::Sms) <= 1,
                    "lead {lead_id}: SMS limit broken: {sends:?}"
                );
            }
        }
        for d in &mine {
            let campaign = catalog.get(d.campaign_id).unwrap();
            let step = campaign.step(d.step_index).unwrap();
            let window = step.window_or(campaign.window);
            let (rules, sms) = slot_rules(&config, &place, window, d.channel, false);
            // Scheduled inside its window, on a business day of the lead's country when the
            // window is Monday to Friday, and never on a holiday.
            let local = d.send_at.with_timezone(&place.zone.zone.tz());
            assert!(
                rules.allows(d.send_at),
                "lead {lead_id} {} step {}: scheduled {} local {local}, outside {}",
                campaign.slug,
                d.step_index + 1,
                d.send_at,
                rules.window.describe()
            );
            if window.allows_day(local.date_naive()) && local.weekday().num_days_from_monday() < 5 {
                assert!(is_business_day(local.date_naive(), place.holidays));
            }
            assert!(d.sent_at.unwrap() >= d.send_at);
            if let Some(sms) = sms {
                // Sent (not just scheduled) inside the SMS hours in every zone it may be in.
                let sent = d.sent_at.unwrap();
                for zone in std::iter::once(place.zone.zone).chain(place.zone.spread.zones()) {
                    assert!(
                        sms.hours.contains(zone, sent),
                        "SMS to lead {lead_id} at {sent} is outside {} in {zone}",
                        sms.hours.describe()
                    );
                }
            }
        }
    }
    for slug in ["alpha", "beta", "gamma"] {
        assert!(
            by_campaign.get(slug).copied().unwrap_or(0) > 20,
            "{by_campaign:?}"
        );
    }
    assert!(sms_sent > 5, "some SMS should go out: {sms_sent}");
    // The behaviour rules were exercised.
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    let mut sooner = 0;
    for lead_id in &ids {
        for t in store.traces_for_lead(*lead_id).await.unwrap() {
            if let Some(code) = &t.code {
                *codes.entry(code.clone()).or_default() += 1;
            }
            if t.gates.iter().any(|g| {
                g.reason.contains("previous message opened: sooner")
                    || g.reason.contains("previous message clicked: sooner")
            }) {
                sooner += 1;
            }
        }
    }
    eprintln!(
        "60 days: {} sent; by campaign {by_campaign:?}; {sms_sent} SMS; trace codes {codes:?}; {sooner} sooner follow-ups",
        report.sent
    );
    assert!(
        codes.get("follow_up").copied().unwrap_or(0) > 0,
        "{codes:?}"
    );
    assert!(
        codes.get("frequency").copied().unwrap_or(0) > 0,
        "{codes:?}"
    );
    assert!(
        sooner > 0,
        "no follow-up came sooner after an open: {codes:?}"
    );
}
