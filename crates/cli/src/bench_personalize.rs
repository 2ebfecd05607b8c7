//! `engager bench personalize`: template personalization messages/s on one core (context
//! building and rendering of the example campaign's intro step), the quality gate's p50/p99
//! per message, and the AI cache hit rate of a second pass over the same messages, against
//! the local fake model.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration as StdDuration, Instant};

use anyhow::{anyhow, Result};
use chrono::{DateTime, Utc};
use clap::Args;
use engager_ai::gate::{check, CheckContext, GateConfig};
use engager_ai::llm::{Draft, LlmClient, LlmConfig};
use engager_ai::personalize::AiPersonalizer;
use engager_ai::{lead_context, SenderFacts, Templates};
use engager_domain::{
    CampaignId, Channel, CountryCode, EmailAddress, Lead, LeadHistory, LeadId, LeadStatus, NewLead,
    TimeZone,
};
use engager_engine::campaign_file::parse_campaign;
use engager_engine::personalization::{AiPersonalization, DraftInput};
use serde_json::json;

use crate::output::{print_json, table};

/// `engager bench personalize`
#[derive(Debug, Args)]
pub struct PersonalizeBenchArgs {
    /// Messages to render with the template, and to check with the gate.
    #[arg(long, default_value_t = 200_000)]
    messages: usize,
    /// Messages drafted by the fake model, twice (the second pass measures the cache).
    #[arg(long, default_value_t = 200)]
    ai_messages: usize,
}

const FIRST: [&str; 8] = [
    "Jack", "Olivia", "Ananya", "Ashley", "Lukas", "Sofia", "Kenji", "Grace",
];
const COMPANIES: [&str; 8] = [
    "Northwind Industries",
    "Driftwood Diagnostics Inc.",
    "Lumen Growth Partners",
    "Bramble GmbH",
    "Ember Commerce Ltd",
    "Harbor Logistics",
    "Quill Analytics",
    "Cobalt Health",
];
const ZONES: [(&str, &str); 8] = [
    ("America/New_York", "US"),
    ("America/Denver", "US"),
    ("Europe/Berlin", "DE"),
    ("Europe/London", "GB"),
    ("Asia/Kolkata", "IN"),
    ("Asia/Tokyo", "JP"),
    ("America/Sao_Paulo", "BR"),
    ("Australia/Sydney", "AU"),
];

fn leads(n: usize) -> Result<Vec<(Lead, TimeZone)>> {
    (0..n)
        .map(|i| {
            let (zone, country) = ZONES[i % 8];
            let mut custom = std::collections::BTreeMap::new();
            if i % 3 == 0 {
                custom.insert(
                    "custom_message".to_owned(),
                    format!("Congrats on the new office, number {}.", i % 50),
                );
            }
            let lead = Lead {
                id: LeadId(i as i64 + 1),
                status: LeadStatus::Active,
                profile: NewLead {
                    email: Some(EmailAddress::parse(&format!("lead{i}@example.com"))?),
                    first_name: Some(FIRST[i % 8].to_owned()),
                    last_name: Some(format!("L{i}")),
                    company: Some(COMPANIES[(i / 8) % 8].to_owned()),
                    industry: (i % 2 == 0).then(|| "Manufacturing".to_owned()),
                    country: Some(CountryCode::parse(country)?),
                    custom,
                    source: "bench".into(),
                    ..NewLead::default()
                },
            };
            Ok((lead, TimeZone::parse(zone)?))
        })
        .collect()
}

fn percentile(sorted: &[StdDuration], p: f64) -> StdDuration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len().saturating_sub(1))]
}

/// Runs the benchmark.
pub async fn run(args: PersonalizeBenchArgs, json: bool) -> Result<ExitCode> {
    if args.messages == 0 || args.ai_messages == 0 {
        return Err(anyhow!("--messages and --ai-messages must be at least 1"));
    }
    let source = include_str!("../../../examples/campaigns/spring-outreach.toml");
    let campaign = parse_campaign(
        source,
        "examples/campaigns/spring-outreach.toml",
        CampaignId(1),
    )?;
    let step = &campaign.steps[0];
    let mut templates = Templates::new();
    templates.add_step(&campaign.slug, 0, &step.template)?;
    let sender = SenderFacts {
        name: "Maya Chen".into(),
        company: "Acme Analytics".into(),
    };
    let now: DateTime<Utc> =
        DateTime::parse_from_rfc3339("2026-03-02T15:00:00Z")?.with_timezone(&Utc);
    let pool = leads(1024)?;

    // 1. Templates: lead context + render, one core.
    let started = Instant::now();
    let mut bytes = 0usize;
    for i in 0..args.messages {
        let (lead, zone) = &pool[i % pool.len()];
        let context = lead_context(lead, *zone, now, &sender, 0);
        let rendered = templates.render(&campaign.slug, 0, &step.template, &context)?;
        bytes += rendered.body_text.len();
    }
    let template_elapsed = started.elapsed();
    let per_second = args.messages as f64 / template_elapsed.as_secs_f64();

    // 2. The gate, per message.
    let gate = GateConfig {
        allowed_link_domains: vec!["acme-analytics.example".into()],
        forbidden_phrases: vec!["synergy".into()],
        max_similarity: 0.6,
        max_sms_segments: 2,
        sender_company: "Acme Analytics".into(),
    };
    let drafts: Vec<(Draft, CheckContext)> = pool
        .iter()
        .enumerate()
        .map(|(i, (lead, _))| {
            let name = lead.profile.first_name.clone().unwrap_or_default();
            let company = lead.profile.company.clone().unwrap_or_default();
            let body = format!(
                "Hi {name},\n\nTeams like {company} usually spend a day a week stitching reports together. \
                 We help them get that down to an hour, without changing their tools. \
                 A 200-person logistics company did it in two weeks.\n\nWould a 15-minute call next week be useful? \
                 https://acme-analytics.example/meet"
            );
            let context = CheckContext {
                channel: "email".into(),
                required_name: Some(name.clone()),
                required_company: Some((company.clone(), engager_ai::company_short_name(&company))),
                previous_body: (i % 2 == 0).then(|| {
                    format!("Hi {name}, a question about pipeline at {company}. I work with B2B teams that want to see which deals will close.")
                }),
            };
            (
                Draft {
                    subject: format!("reporting at {company}"),
                    body,
                    rationale: String::new(),
                },
                context,
            )
        })
        .collect();
    let mut times = Vec::with_capacity(args.messages);
    let mut passed = 0usize;
    for i in 0..args.messages {
        let (draft, context) = &drafts[i % drafts.len()];
        let t = Instant::now();
        let report = check(draft, context, &gate);
        times.push(t.elapsed());
        passed += usize::from(report.passed());
    }
    times.sort_unstable();
    let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));

    // 3. The AI cache: the same messages drafted twice against the fake model.
    let fake = engager_testkit::openai::FakeOpenAi::start(None, &[]).await?;
    let store = engager_store::open("sqlite::memory:").await?;
    let mut llm = LlmConfig::new(fake.base_url().parse()?, "fake-model");
    llm.timeout = StdDuration::from_secs(10);
    let stage = AiPersonalization::new(
        AiPersonalizer::new(
            LlmClient::new(llm)?,
            engager_ai::prompt::Brand::load(
                &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/brand/voice.md"),
                &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/brand/knowledge.md"),
            )?,
            gate.clone(),
        ),
        8,
    );
    let ai_leads = leads(args.ai_messages)?;
    let history = LeadHistory::default();
    let mut jobs = Vec::with_capacity(ai_leads.len());
    for (lead, zone) in &ai_leads {
        let context = lead_context(lead, *zone, now, &sender, 0);
        let rendered = templates.render(&campaign.slug, 0, &step.template, &context)?;
        jobs.push(stage.prepare(&DraftInput {
            lead,
            campaign: &campaign,
            step_index: 0,
            channel: Channel::Email,
            history: &history,
            earlier: &[],
            rendered: &rendered,
            zone: *zone,
            sender: &sender,
            now,
            variant: None,
        }));
    }
    let started = Instant::now();
    stage.outcomes(store.as_ref(), &jobs, now).await?;
    let first_pass = started.elapsed();
    let calls_first = fake.request_count();
    let before = stage.counts();
    let started = Instant::now();
    stage.outcomes(store.as_ref(), &jobs, now).await?;
    let second_pass = started.elapsed();
    let after = stage.counts();
    let hits = after.cache_hits - before.cache_hits;
    let hit_rate = hits as f64 / jobs.len() as f64;
    let new_calls = fake.request_count() - calls_first;

    if json {
        print_json(&json!({
            "template": {"messages": args.messages, "seconds": template_elapsed.as_secs_f64(), "messages_per_second": per_second, "bytes": bytes},
            "gate": {"messages": args.messages, "passed": passed, "p50_us": p50.as_secs_f64() * 1e6, "p99_us": p99.as_secs_f64() * 1e6},
            "ai_cache": {"messages": jobs.len(), "first_pass_calls": calls_first, "first_pass_seconds": first_pass.as_secs_f64(),
                          "second_pass_hit_rate": hit_rate, "second_pass_calls": new_calls, "second_pass_seconds": second_pass.as_secs_f64(),
                          "accepted": after.accepted, "tokens": after.tokens},
        }));
    } else {
        let mut t = table(&["Measure", "Result"]);
        t.add_row(vec![
            "template personalization (1 core)".to_owned(),
            format!(
                "{per_second:.0} messages/s ({} in {:.2} s)",
                args.messages,
                template_elapsed.as_secs_f64()
            ),
        ]);
        t.add_row(vec![
            "quality gate per message".to_owned(),
            format!(
                "p50 {:.1} µs, p99 {:.1} µs ({passed} of {} passed)",
                p50.as_secs_f64() * 1e6,
                p99.as_secs_f64() * 1e6,
                args.messages
            ),
        ]);
        t.add_row(vec![
            "AI drafts, first pass (fake model)".to_owned(),
            format!(
                "{} messages, {calls_first} model calls, {:.2} s",
                jobs.len(),
                first_pass.as_secs_f64()
            ),
        ]);
        t.add_row(vec![
            "AI drafts, second pass".to_owned(),
            format!(
                "cache hit rate {:.0}%, {new_calls} model calls, {:.3} s",
                hit_rate * 100.0,
                second_pass.as_secs_f64()
            ),
        ]);
        println!("{t}");
    }
    Ok(ExitCode::SUCCESS)
}
