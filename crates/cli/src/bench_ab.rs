//! `engager bench ab`: planner throughput when a step runs an A/B experiment — fixed weights,
//! and a bandit with automatic promotion (figures and decisions read once per pass, the
//! variants a page's leads already got once per page) — against the same campaign without an
//! experiment, measured in the same run on fresh SQLite stores with the same leads and history
//! (interleaved dry passes: every read and evaluation, no writes; the median is kept).

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use chrono::{DateTime, Duration, Utc};
use clap::Args;
use engager_domain::{CountryCode, EmailAddress, EventKind, LeadId, NewLead, TimeZone};
use engager_engine::planner::Planner;
use engager_engine::Catalog;
use engager_store::{FollowUp, NewEvent, SendOutcome, Store};
use serde_json::json;

use crate::output::{print_json, table};

/// `engager bench ab`
#[derive(Debug, Args)]
pub struct AbBenchArgs {
    /// Leads per configuration: half are planned, sent and answered first (the history the
    /// bandit reads), the other half is the measured pass.
    #[arg(long, default_value_t = 10_000)]
    pub leads: usize,
    /// Interleaved rounds of the measured (dry) pass per configuration; the median is kept.
    #[arg(long, default_value_t = 7)]
    pub rounds: usize,
}

fn campaign(experiment: &str) -> String {
    format!(
        r#"
slug = "ab"
name = "A/B bench"
best_time = false
[window]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "00:00"
end = "23:59"
[[steps]]
name = "intro"
channels = ["email"]
subject = "{{{{ lead.first_name }}}}, a question"
body = "{{{{ greeting }}}} {{{{ lead.first_name }}}}, teams like {{{{ lead.company }}}} use us to forecast."
{experiment}
"#
    )
}

const VARIANTS: &str = "[[steps.variants]]\nname = \"a\"\n[[steps.variants]]\nname = \"b\"\nsubject = \"A quick idea for {{ lead.company }}\"\n";

fn leads(from: usize, count: usize) -> Vec<NewLead> {
    (from..from + count)
        .map(|i| NewLead {
            email: EmailAddress::parse(&format!("lead{i}@company{}.example", i % 7919)).ok(),
            first_name: Some(format!("Lead{i}")),
            company: Some(format!("Company {} Inc.", i % 7919)),
            country: CountryCode::parse("US").ok(),
            time_zone: TimeZone::parse("America/Chicago").ok(),
            source: "bench".into(),
            ..NewLead::default()
        })
        .collect()
}

async fn enroll(
    store: &dyn Store,
    campaign: engager_domain::CampaignId,
    from: usize,
    count: usize,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut start = from;
    while start < from + count {
        let n = (from + count - start).min(2_000);
        let ids: Vec<LeadId> = store
            .upsert_leads(&leads(start, n), now)
            .await?
            .into_iter()
            .map(|o| o.id())
            .collect();
        store.enroll(campaign, &ids, now).await?;
        start += n;
    }
    Ok(())
}

/// Sends every planned delivery and answers one in 10 of variant b's (or of the step's, when
/// it runs no experiment) and one in 30 of variant a's.
async fn send_and_answer(store: &dyn Store, now: DateTime<Utc>) -> Result<usize> {
    let lease = Duration::minutes(5);
    let mut sent = 0;
    loop {
        let claimed = store
            .claim_due_deliveries(now + Duration::days(7), 500, "bench", lease)
            .await?;
        if claimed.is_empty() {
            break;
        }
        for d in claimed {
            store.begin_send(d.id, d.fencing_token, now, lease).await?;
            store
                .record_outcome(
                    d.id,
                    d.fencing_token,
                    &SendOutcome::Sent {
                        provider_ref: format!("<{}@bench>", d.id.0),
                    },
                    &FollowUp::Complete,
                    now,
                )
                .await?;
            let b = d
                .subject
                .as_deref()
                .is_some_and(|s| s.starts_with("A quick idea"));
            if sent % if b { 10 } else { 30 } == 0 {
                store
                    .record_event(&NewEvent {
                        lead_id: d.lead_id,
                        delivery_id: Some(d.id),
                        kind: EventKind::Replied,
                        occurred_at: now + Duration::hours(5),
                        detail: "{}".into(),
                        source: "bench".into(),
                    })
                    .await?;
            }
            sent += 1;
        }
    }
    Ok(sent)
}

struct Measured {
    name: &'static str,
    history: usize,
    evaluated: usize,
    planned: usize,
    /// Seconds of each measured pass, in round order.
    passes: Vec<f64>,
    /// One `variant_counts` query, and one `variant_assignments` of 500 leads, timed alone.
    counts_query: f64,
    assignments_query: f64,
}

impl Measured {
    fn median(&self) -> f64 {
        let mut p = self.passes.clone();
        p.sort_by(f64::total_cmp);
        p[p.len() / 2]
    }
}

/// A store with the campaign, a first half of the leads planned, sent and answered, and the
/// second half enrolled and due.
async fn prepare(
    experiment: &str,
    leads: usize,
    dir: &std::path::Path,
) -> Result<(std::sync::Arc<dyn Store>, Catalog, usize, DateTime<Utc>)> {
    let store = engager_store::open(&format!("sqlite:{}", dir.join("ab.db").display())).await?;
    let config = crate::bench::bench_config()?;
    let t0 = DateTime::parse_from_rfc3339("2026-03-03T15:00:00Z")?.with_timezone(&Utc);
    let id = store
        .save_campaign("ab", "A/B bench", &campaign(experiment), t0)
        .await?;
    let catalog = Catalog::load(store.as_ref()).await?;
    let half = leads / 2;
    enroll(store.as_ref(), id, 0, half, t0).await?;
    Planner::new(store.as_ref(), &catalog, &config)
        .plan_due(t0, None, false)
        .await?;
    let history = send_and_answer(store.as_ref(), t0).await?;
    let later = t0 + Duration::days(8);
    enroll(store.as_ref(), id, half, leads - half, later).await?;
    Ok((store, catalog, history, later))
}

pub async fn run(args: AbBenchArgs, json: bool) -> Result<ExitCode> {
    let leads = args.leads.max(2);
    let rounds = args.rounds.max(1);
    let config = crate::bench::bench_config()?;
    let configurations = [
        ("no experiment (baseline)", String::new()),
        ("fixed weights 1:1", VARIANTS.to_owned()),
        (
            "bandit + auto-promote",
            format!("{VARIANTS}[steps.experiment]\nmode = \"bandit\"\nauto_promote = true\nmin_sample = 1000000\n"),
        ),
    ];
    let mut prepared = Vec::new();
    let mut dirs = Vec::new();
    for (name, experiment) in &configurations {
        eprintln!("Preparing {name} ({leads} leads)…");
        let dir = tempfile::tempdir()?;
        let (store, catalog, history, at) = prepare(experiment, leads, dir.path()).await?;
        dirs.push(dir);
        prepared.push((*name, store, catalog, history, at));
    }
    let mut results: Vec<Measured> = prepared
        .iter()
        .map(|(name, _, _, history, _)| Measured {
            name,
            history: *history,
            evaluated: 0,
            planned: 0,
            passes: Vec::new(),
            counts_query: 0.0,
            assignments_query: 0.0,
        })
        .collect();
    // Interleaved rounds of the same dry pass (every read and evaluation, no writes, so each
    // round sees the same state), so that machine noise hits every configuration alike.
    for round in 0..rounds {
        eprintln!("Round {}/{rounds}…", round + 1);
        for (i, (_, store, catalog, _, at)) in prepared.iter().enumerate() {
            let started = Instant::now();
            let report = Planner::new(store.as_ref(), catalog, &config)
                .plan_due(*at, None, true)
                .await?;
            results[i].passes.push(started.elapsed().as_secs_f64());
            results[i].evaluated = report.evaluated;
            results[i].planned = report.planned;
        }
    }
    for (i, (_, store, _, _, _)) in prepared.iter().enumerate() {
        let q = Instant::now();
        store.variant_counts().await?;
        results[i].counts_query = q.elapsed().as_secs_f64();
        let page: Vec<LeadId> = (1..=500).map(LeadId).collect();
        let q = Instant::now();
        store.variant_assignments(&page).await?;
        results[i].assignments_query = q.elapsed().as_secs_f64();
    }
    let base = results[0].evaluated as f64 / results[0].median();
    if json {
        print_json(&json!(results
            .iter()
            .map(|m| json!({
                "configuration": m.name,
                "history_sends": m.history,
                "evaluated": m.evaluated,
                "planned": m.planned,
                "pass_seconds": m.passes,
                "median_leads_per_second": m.evaluated as f64 / m.median(),
                "ratio_to_baseline": m.evaluated as f64 / m.median() / base,
                "variant_counts_query_seconds": m.counts_query,
                "variant_assignments_500_leads_seconds": m.assignments_query,
            }))
            .collect::<Vec<_>>()));
    } else {
        let mut t = table(&[
            "Configuration (dry pass)",
            "History sends",
            "Evaluated / planned",
            "Median leads/s",
            "÷ baseline",
            "variant_counts / assignments of 500 (alone)",
        ]);
        for m in &results {
            let rate = m.evaluated as f64 / m.median();
            t.add_row(vec![
                m.name.to_owned(),
                m.history.to_string(),
                format!("{} / {}", m.evaluated, m.planned),
                format!(
                    "{rate:.0} (median of {} passes, {:.3} s)",
                    m.passes.len(),
                    m.median()
                ),
                format!("{:.2}", rate / base),
                format!(
                    "{:.1} ms / {:.1} ms",
                    m.counts_query * 1e3,
                    m.assignments_query * 1e3
                ),
            ]);
        }
        println!("{t}");
    }
    Ok(ExitCode::SUCCESS)
}
