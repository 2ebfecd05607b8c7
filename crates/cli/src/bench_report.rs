//! `engager bench report`: `engager report`'s work (the grouped facts query, decoding and the
//! aggregation with intervals and the funnel) over a generated SQLite database of about a
//! million events, against the same SQL stepped through alone on the bare connection.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use chrono::{DateTime, Duration, Utc};
use clap::Args;
use engager_domain::{CountryCode, EmailAddress, LeadId, NewLead};
use engager_engine::report::{build, Dimension};
use engager_store::sqlite::SqliteStore;
use engager_store::{ReportQuery, Store, UpsertOutcome};
use serde_json::json;

use crate::output::print_json;

/// `engager bench report`
#[derive(Debug, Args)]
pub struct ReportBenchArgs {
    /// Events to generate (about 3.4 per delivery).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Timed runs of each measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Keep the generated database at this path (e.g. to time the facts query in the
    /// `sqlite3` shell: `engager bench report --keep r.db`, then `.timer on` and the query
    /// printed by `--print-query`).
    #[arg(long)]
    pub keep: Option<std::path::PathBuf>,
    /// Print the facts query with its arguments filled in, for the `sqlite3` shell, and exit.
    #[arg(long)]
    pub print_query: bool,
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-05T08:00:00Z")
        .unwrap_or_default()
        .with_timezone(&Utc)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

pub async fn run(args: ReportBenchArgs, json: bool) -> Result<ExitCode> {
    if args.print_query {
        println!(
            "{}",
            engager_store::sqlite::report_facts_sql_for_shell(
                ms_of(t0() - Duration::days(1)),
                ms_of(t0() + Duration::days(3650)),
                "bench",
            )
        );
        return Ok(ExitCode::SUCCESS);
    }
    let dir = tempfile::tempdir()?;
    let path = match &args.keep {
        Some(p) => {
            if p.exists() {
                anyhow::bail!("--keep {}: the file exists; give a new path", p.display());
            }
            p.clone()
        }
        None => dir.path().join("report.db"),
    };
    let store = SqliteStore::open(path.to_str().unwrap_or("report.db")).await?;
    // 3.4 events a delivery on average (see `bench_generate_engagement`).
    let deliveries = (args.events * 10 / 34).max(1);
    let leads = (deliveries / 3).max(1);
    let countries = ["US", "DE", "GB", "FR", "JP", "AU", "CA", "BR"];
    let new_leads: Vec<NewLead> = (0..leads)
        .map(|i| NewLead {
            email: EmailAddress::parse(&format!("lead{i}@bench{}.example", i % 97)).ok(),
            first_name: Some(format!("Lead{i}")),
            country: CountryCode::parse(countries[i % countries.len()]).ok(),
            industry: Some(["SaaS", "Retail", "Health", "Logistics"][i % 4].into()),
            source: "bench".into(),
            ..NewLead::default()
        })
        .collect();
    let generated = Instant::now();
    let ids: Vec<LeadId> = store
        .upsert_leads(&new_leads, t0())
        .await?
        .into_iter()
        .map(UpsertOutcome::id)
        .collect();
    let campaign = store
        .save_campaign("bench", "Bench", "[campaign]", t0())
        .await?;
    store.enroll(campaign, &ids, t0()).await?;
    let events = store
        .bench_generate_engagement(campaign, deliveries)
        .await?;
    let generate_secs = generated.elapsed().as_secs_f64();
    let query = ReportQuery {
        campaign: Some("bench".into()),
        since: t0() - Duration::days(1),
        until: t0() + Duration::days(3650),
    };
    // Engager: the facts query, decoding and the whole report.
    let mut engager = Vec::new();
    let mut aggregation = Vec::new();
    let mut sent = 0;
    for _ in 0..args.runs.max(1) {
        let started = Instant::now();
        let facts = store.report_facts(&query).await?;
        let built = Instant::now();
        let report = build(&facts, Dimension::Step, 0.95);
        aggregation.push(built.elapsed().as_secs_f64());
        engager.push(started.elapsed().as_secs_f64());
        sent = report.total.sent;
    }
    let aggregation = median(aggregation);
    // Baseline: the same SQL, stepped through on the bare connection, nothing decoded.
    let mut raw = Vec::new();
    for _ in 0..args.runs.max(1) {
        let secs = store.bench_report_query_alone(&query).await?;
        raw.push(secs.0);
    }
    let (p50, raw50) = (median(engager), median(raw));
    if json {
        print_json(&json!({
            "events": events,
            "deliveries": deliveries,
            "leads": leads,
            "generate_seconds": generate_secs,
            "report_p50_seconds": p50,
            "same_query_alone_p50_seconds": raw50,
            "ratio": p50 / raw50,
            "aggregation_p50_seconds": aggregation,
            "sent_in_report": sent,
        }));
    } else {
        println!(
            "{events} events over {deliveries} deliveries and {leads} leads (generated in {generate_secs:.1} s)\n\
             engager report --by step: p50 {p50:.3} s over {} runs\n\
             the same facts query alone on the bare connection: p50 {raw50:.3} s (report ÷ query = {:.2}); \
             of the report, the aggregation (intervals, funnel, attribution): {aggregation:.3} s",
            args.runs.max(1),
            p50 / raw50
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn ms_of(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}
