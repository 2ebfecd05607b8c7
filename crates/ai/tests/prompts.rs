//! Snapshots (insta) of the prompts and rendered messages for a set of fixture leads, and a
//! property test of the gate: whatever the model writes, a message that passes has no `{{`,
//! no empty subject or body, and no link off the allowlist.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use engager_ai::gate::{check, link_hosts, CheckContext, GateConfig};
use engager_ai::insights::{analyse, EarlierMessage};
use engager_ai::llm::Draft;
use engager_ai::prompt::{build_prompt, Brand, PromptInput};
use engager_ai::{lead_context, SenderFacts, Templates};
use engager_domain::campaign::StepTemplate;
use engager_domain::history::{Engagement, Touch};
use engager_domain::{
    Channel, DeliveryId, EmailAddress, EventKind, Lead, LeadHistory, LeadId, LeadStatus, NewLead,
    TimeZone,
};
use proptest::prelude::*;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn brand() -> Brand {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/brand");
    Brand::load(&dir.join("voice.md"), &dir.join("knowledge.md")).unwrap()
}

fn gate() -> GateConfig {
    GateConfig {
        allowed_link_domains: vec!["acme-analytics.example".into()],
        forbidden_phrases: vec!["synergy".into()],
        max_similarity: 0.6,
        max_sms_segments: 2,
        sender_company: "Acme Analytics".into(),
    }
}

fn sender() -> SenderFacts {
    SenderFacts {
        name: "Maya Chen".into(),
        company: "Acme Analytics".into(),
    }
}

struct Fixture {
    name: &'static str,
    lead: Lead,
    zone: &'static str,
    history: LeadHistory,
    earlier: Vec<EarlierMessage>,
    step_index: usize,
    channel: Channel,
}

fn lead(id: i64, f: impl FnOnce(&mut NewLead)) -> Lead {
    let mut profile = NewLead {
        source: "fixture".into(),
        ..NewLead::default()
    };
    f(&mut profile);
    Lead {
        id: LeadId(id),
        status: LeadStatus::Active,
        profile,
    }
}

fn fixtures() -> Vec<Fixture> {
    let sent = at("2026-03-02T15:00:00Z");
    let mut custom = BTreeMap::new();
    custom.insert(
        "custom_message".to_owned(),
        "Saw Northwind launched a partner program, curious how it's going.".to_owned(),
    );
    vec![
        Fixture {
            name: "first_touch_full_profile",
            lead: lead(1, |p| {
                p.email = Some(EmailAddress::parse("jack.kelly@northwind.example").unwrap());
                p.first_name = Some("Jack".into());
                p.last_name = Some("Kelly".into());
                p.company = Some("Northwind Industries Ltd".into());
                p.title = Some("Head of Sales".into());
                p.industry = Some("Manufacturing".into());
                p.city = Some("Perth".into());
                p.custom = custom.clone();
            }),
            zone: "Australia/Perth",
            history: LeadHistory::default(),
            earlier: vec![],
            step_index: 0,
            channel: Channel::Email,
        },
        Fixture {
            name: "follow_up_after_a_click",
            lead: lead(2, |p| {
                p.email = Some(EmailAddress::parse("olivia@driftwood.example").unwrap());
                p.first_name = Some("Olivia".into());
                p.company = Some("Driftwood Diagnostics".into());
                p.title = Some("COO".into());
                p.industry = Some("Healthcare".into());
            }),
            zone: "America/New_York",
            history: LeadHistory {
                touches: vec![Touch {
                    at: sent,
                    channel: Channel::Email,
                    sent: true,
                    delivery: Some(DeliveryId(10)),
                    step: None,
                }],
                events: vec![
                    Engagement {
                        at: at("2026-03-02T16:10:00Z"),
                        kind: EventKind::Opened,
                        delivery: Some(DeliveryId(10)),
                    },
                    Engagement {
                        at: at("2026-03-02T16:12:00Z"),
                        kind: EventKind::Clicked,
                        delivery: Some(DeliveryId(10)),
                    },
                ],
                consents: Vec::new(),
            },
            earlier: vec![EarlierMessage {
                at: sent,
                channel: Channel::Email,
                subject: Some("reporting at driftwood".into()),
                body: "Hi Olivia, ...".into(),
                delivery: Some(DeliveryId(10)),
            }],
            step_index: 1,
            channel: Channel::Email,
        },
        Fixture {
            name: "sms_after_two_ignored_emails",
            lead: lead(3, |p| {
                p.first_name = Some("Ananya".into());
                p.company = Some("Lumen Growth Partners".into());
                p.industry = Some("Marketing Agency".into());
            }),
            zone: "Asia/Kolkata",
            history: LeadHistory::from_times(&[
                at("2026-02-20T05:00:00Z"),
                at("2026-02-25T05:00:00Z"),
            ]),
            earlier: vec![],
            step_index: 2,
            channel: Channel::Sms,
        },
        Fixture {
            name: "linkedin_minimal_profile",
            lead: lead(4, |p| {
                p.first_name = Some("Sam".into());
            }),
            zone: "Europe/London",
            history: LeadHistory::default(),
            earlier: vec![],
            step_index: 0,
            channel: Channel::Linkedin,
        },
    ]
}

fn template(channel: Channel) -> StepTemplate {
    match channel {
        Channel::Email => StepTemplate {
            subject: Some("{{ lead.first_name }}, a question about {{ lead.company_short | default('your team') }}".into()),
            body: "{{ greeting }} {{ lead.first_name }},\n\n{{ lead.custom.custom_message | default('I work with teams like yours on their weekly reporting.') }}\n\nWorth a short call?".into(),
            html: None,
        },
        _ => StepTemplate {
            subject: None,
            body: "Hi {{ lead.first_name }}, Maya from Acme here. Worth a quick chat about reporting?".into(),
            html: None,
        },
    }
}

#[test]
fn prompts_and_template_messages_for_fixture_leads() {
    let now = at("2026-03-05T12:00:00Z");
    for f in fixtures() {
        let zone = TimeZone::parse(f.zone).unwrap();
        let step = template(f.channel);
        let mut templates = Templates::new();
        templates.add_step("spring", f.step_index, &step).unwrap();
        let context = lead_context(&f.lead, zone, now, &sender(), f.step_index);
        let rendered = templates
            .render("spring", f.step_index, &step, &context)
            .unwrap();
        let insights = analyse(&f.history, &f.earlier, zone, now);
        let prompt = build_prompt(
            &brand(),
            &gate(),
            &PromptInput {
                lead: &f.lead,
                sender: &sender(),
                insights: &insights,
                campaign: "Spring outreach",
                step_index: f.step_index,
                step_count: 3,
                step_name: "touch",
                channel: f.channel,
                template_subject: rendered.subject.as_deref(),
                template_body: &rendered.body_text,
                angle: (f.step_index == 1).then_some("time saved, with the proof point"),
            },
        );
        insta::assert_snapshot!(format!("{}_prompt", f.name), prompt.user);
        insta::assert_snapshot!(
            format!("{}_template", f.name),
            format!(
                "subject: {:?}\n---\n{}",
                rendered.subject, rendered.body_text
            )
        );
    }
    // The system part is the same for every lead: voice, knowledge, rules.
    let f = &fixtures()[0];
    let insights = analyse(
        &f.history,
        &f.earlier,
        TimeZone::parse(f.zone).unwrap(),
        now,
    );
    let prompt = build_prompt(
        &brand(),
        &gate(),
        &PromptInput {
            lead: &f.lead,
            sender: &sender(),
            insights: &insights,
            campaign: "Spring outreach",
            step_index: 0,
            step_count: 3,
            step_name: "touch",
            channel: Channel::Email,
            template_subject: None,
            template_body: "x",
            angle: None,
        },
    );
    insta::assert_snapshot!("system_prompt", prompt.system);
}

#[test]
fn gate_reports_for_a_good_and_a_bad_draft() {
    let context = CheckContext {
        channel: "email".into(),
        required_name: Some("Jack".into()),
        required_company: Some((
            "Northwind Industries Ltd".into(),
            "Northwind Industries".into(),
        )),
        previous_body: None,
    };
    let good = Draft {
        subject: "partner program at northwind".into(),
        body: "Hi Jack,\n\nSaw Northwind Industries launched a partner program. Teams in that phase often spend a day a week on reporting; we get that to under an hour.\n\nWorth 15 minutes? https://acme-analytics.example/meet".into(),
        rationale: "r".into(),
    };
    let bad = Draft {
        subject: "Re: {{ lead.company }}".into(),
        body: "Dear [First Name], act now for real synergy: https://bit.ly/x".into(),
        rationale: "r".into(),
    };
    insta::assert_snapshot!(
        "gate_good",
        serde_json::to_string_pretty(&check(&good, &context, &gate())).unwrap()
    );
    insta::assert_snapshot!(
        "gate_bad",
        serde_json::to_string_pretty(&check(&bad, &context, &gate())).unwrap()
    );
}

fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z]{1,10}",
        Just("Jack".to_owned()),
        Just("Northwind".to_owned()),
        Just("{{".to_owned()),
        Just("{{ lead.first_name }}".to_owned()),
        Just("}}".to_owned()),
        Just("https://acme-analytics.example/meet".to_owned()),
        Just("https://docs.acme-analytics.example".to_owned()),
        Just("http://evil.example/x".to_owned()),
        Just("www.tracker.example".to_owned()),
        Just("HTTPS://Acme-Analytics.Example.evil.example".to_owned()),
        Just("act now".to_owned()),
        Just("".to_owned()),
        Just("\n".to_owned()),
    ]
}

fn text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 0..max).prop_map(|p| p.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn an_accepted_message_never_has_braces_empty_parts_or_off_list_links(
        subject in text(8),
        body in text(60),
        channel in prop_oneof![Just("email"), Just("sms"), Just("linkedin")],
    ) {
        let draft = Draft { subject, body, rationale: String::new() };
        let context = CheckContext {
            channel: channel.to_owned(),
            required_name: Some("Jack".into()),
            required_company: None,
            previous_body: None,
        };
        let report = check(&draft, &context, &gate());
        if report.passed() {
            let parts: Vec<&str> = if channel == "email" {
                vec![draft.subject.as_str(), draft.body.as_str()]
            } else {
                vec![draft.body.as_str()]
            };
            for part in parts {
                prop_assert!(!part.trim().is_empty());
                prop_assert!(!part.contains("{{") && !part.contains("}}"));
                for host in link_hosts(part) {
                    let host = host.trim_start_matches("www.");
                    prop_assert!(
                        host == "acme-analytics.example" || host.ends_with(".acme-analytics.example"),
                        "off-list link {host} in {part:?}"
                    );
                }
            }
        }
    }
}
