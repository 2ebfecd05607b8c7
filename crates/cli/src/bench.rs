//! `engager bench`: throughput figures measured in-process, each next to a baseline run in
//! the same process, because shared machines make absolute numbers noisy.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use chrono::{DateTime, Duration, Utc};
use clap::Subcommand;
use engager_domain::{Channel, CountryCode, EmailAddress, NewLead, TimeZone};
use engager_engine::planner::Planner;
use engager_engine::{Catalog, EngineConfig};
use engager_store::{
    DueEnrollment, Evaluation, FollowUp, GateRow, LeadFilter, NewDelivery, PlanDecision,
    SendOutcome, Store, TraceRecord,
};
use serde_json::json;

use crate::output::{print_json, table};

/// What to measure.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Planner throughput through all gates, with template personalization, on SQLite.
    Planner {
        /// Leads to plan.
        #[arg(long, default_value_t = 100_000)]
        leads: usize,
    },
    /// Ledger claim+complete throughput: single-row vs batched claims, and raw statements.
    Ledger {
        /// Deliveries per measurement.
        #[arg(long, default_value_t = 5_000)]
        rows: usize,
        /// Also measure PostgreSQL at this URL (each measurement in a fresh schema).
        #[arg(long)]
        postgres: Option<String>,
    },
    /// Wall time of the quickstart simulation.
    Quickstart,
}

/// Runs a benchmark.
pub async fn run(command: BenchCommand, json: bool) -> Result<ExitCode> {
    match command {
        BenchCommand::Planner { leads } => planner(leads, json).await,
        BenchCommand::Ledger { rows, postgres } => ledger(rows, postgres, json).await,
        BenchCommand::Quickstart => quickstart(json).await,
    }
}

fn bench_config() -> Result<EngineConfig> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/engager.example.toml");
    let text = include_str!("../../../config/engager.example.toml");
    let dir = tempfile::tempdir()?;
    let copy = dir.path().join("engager.toml");
    std::fs::write(&copy, text).with_context(|| format!("copying {}", path.display()))?;
    let (_, mut engine) = crate::settings::load_engine(Some(&copy))?;
    engine.worker_id = "bench".into();
    Ok(engine)
}

const BENCH_CAMPAIGN: &str = r#"
slug = "bench"
name = "Benchmark"
[window]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "00:00"
end = "23:59"
[[steps]]
name = "intro"
channels = ["email"]
subject = "{{ lead.first_name }}, a question about {{ lead.company_short }}"
body = """{{ greeting }} {{ lead.first_name }},
{% if lead.custom.note is defined %}{{ lead.custom.note }}
{% endif %}Teams in {{ lead.industry | default("B2B") }} like {{ lead.company }} use us to forecast.
{{ sender.name }}"""
[[steps]]
name = "follow-up"
channels = ["email"]
delay_days = 3
subject = "Following up"
body = "Hi {{ lead.first_name }}."
"#;

fn synthetic_leads(from: usize, count: usize) -> Vec<NewLead> {
    const FIRST: [&str; 8] = [
        "Ada", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hiro",
    ];
    const COUNTRIES: [&str; 8] = ["US", "GB", "DE", "FR", "IN", "JP", "BR", "AU"];
    const INDUSTRIES: [&str; 4] = ["SaaS", "Fintech", "Logistics", "Healthcare"];
    (from..from + count)
        .map(|i| {
            let country = CountryCode::parse(COUNTRIES[i % COUNTRIES.len()]).ok();
            let mut lead = NewLead {
                email: EmailAddress::parse(&format!("lead{i}@company{}.example", i % 7919)).ok(),
                first_name: Some(FIRST[i % FIRST.len()].into()),
                last_name: Some(format!("Tester{i}")),
                company: Some(format!("Company {} Inc.", i % 7919)),
                industry: Some(INDUSTRIES[i % INDUSTRIES.len()].into()),
                time_zone: if i % 2 == 0 {
                    country.as_ref().and_then(TimeZone::for_country)
                } else {
                    None
                },
                country,
                source: "bench".into(),
                ..NewLead::default()
            };
            if i % 3 == 0 {
                lead.custom
                    .insert("note".into(), format!("Congrats on round {}.", i % 5));
            }
            lead
        })
        .collect()
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn seed(
    store: &dyn Store,
    leads: usize,
    now: DateTime<Utc>,
) -> Result<engager_domain::CampaignId> {
    let campaign = store
        .save_campaign("bench", "Benchmark", BENCH_CAMPAIGN, now)
        .await?;
    let mut start = 0;
    while start < leads {
        let n = (leads - start).min(2_000);
        let ids: Vec<_> = store
            .upsert_leads(&synthetic_leads(start, n), now)
            .await?
            .into_iter()
            .map(|o| o.id())
            .collect();
        store.enroll(campaign, &ids, now).await?;
        start += n;
    }
    Ok(campaign)
}

fn defer(due: &DueEnrollment, now: DateTime<Utc>) -> Evaluation {
    Evaluation {
        trace: TraceRecord {
            enrollment_id: due.enrollment.id,
            campaign_id: due.enrollment.campaign_id,
            lead_id: due.lead.id,
            step_index: due.enrollment.current_step,
            evaluated_at: now,
            outcome: "deferred".into(),
            code: Some("baseline".into()),
            channel: None,
            at: Some(now),
            gates: vec![GateRow {
                gate: "baseline".into(),
                passed: true,
                reason: "store round trip only".into(),
            }],
        },
        decision: PlanDecision::Defer { until: now },
    }
}

async fn planner(leads: usize, json: bool) -> Result<ExitCode> {
    let dir = tempfile::tempdir()?;
    let store =
        engager_store::open(&format!("sqlite:{}", dir.path().join("bench.db").display())).await?;
    let config = bench_config()?;
    let now = DateTime::parse_from_rfc3339("2026-03-03T15:00:00Z")?.with_timezone(&Utc);
    eprintln!("Seeding {leads} leads…");
    seed(store.as_ref(), leads, now).await?;
    let catalog = Catalog::load(store.as_ref()).await?;
    let rss_before = rss_kib("VmRSS:");

    // Baseline: the same reads and one trace write per lead, with no gates at all.
    let started = Instant::now();
    let mut after: Option<engager_store::DueCursor> = None;
    let mut baseline_count = 0;
    loop {
        let due = store.due_enrollments(now, after, config.batch_size).await?;
        if due.is_empty() {
            break;
        }
        after = due.last().map(DueEnrollment::cursor);
        let _touches = store
            .touches(
                &due.iter().map(|d| d.lead.id).collect::<Vec<_>>(),
                now - Duration::days(7),
            )
            .await?;
        let evals: Vec<_> = due.iter().map(|d| defer(d, now)).collect();
        store.record_evaluations(&evals, now).await?;
        baseline_count += due.len();
    }
    let baseline = started.elapsed();

    let started = Instant::now();
    let report = Planner::new(store.as_ref(), &catalog, &config)
        .plan_due(now, None, false)
        .await?;
    let full = started.elapsed();
    let planned_ok = report.planned;
    let full_rate = report.evaluated as f64 / full.as_secs_f64();
    let base_rate = baseline_count as f64 / baseline.as_secs_f64();
    let peak = rss_kib("VmHWM:");
    let after_rss = rss_kib("VmRSS:");
    if json {
        print_json(&json!({
            "leads": leads, "evaluated": report.evaluated, "planned": planned_ok, "outcomes": report.by_code,
            "seconds": full.as_secs_f64(), "leads_per_second": full_rate,
            "baseline_store_only_per_second": base_rate, "ratio_to_store_only": full_rate / base_rate,
            "rss_before_planning_mib": rss_before as f64 / 1024.0, "rss_after_planning_mib": after_rss as f64 / 1024.0, "peak_rss_mib": peak as f64 / 1024.0,
        }));
    } else {
        let mut t = table(&["Measure", "Value"]);
        t.add_row(vec![
            "leads evaluated / planned".into(),
            format!("{} / {}", report.evaluated, planned_ok),
        ]);
        t.add_row(vec![
            "planner, all gates + templates".into(),
            format!("{full_rate:.0} leads/s ({:.2} s)", full.as_secs_f64()),
        ]);
        t.add_row(vec![
            "baseline: same reads + one trace write, no gates".into(),
            format!("{base_rate:.0} leads/s ({:.2} s)", baseline.as_secs_f64()),
        ]);
        t.add_row(vec![
            "planner ÷ baseline".into(),
            format!("{:.2}", full_rate / base_rate),
        ]);
        t.add_row(vec![
            "RSS before → after planning".into(),
            format!(
                "{:.1} MiB → {:.1} MiB",
                rss_before as f64 / 1024.0,
                after_rss as f64 / 1024.0
            ),
        ]);
        t.add_row(vec![
            "peak RSS (whole process, seeding included)".into(),
            format!("{:.1} MiB", peak as f64 / 1024.0),
        ]);
        println!("{t}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Seeds `rows` planned deliveries due at `now`.
async fn seed_ledger(store: &dyn Store, rows: usize, now: DateTime<Utc>) -> Result<()> {
    seed(store, rows, now).await?;
    let mut after = None;
    loop {
        let due = store.due_enrollments(now, after, 1_000).await?;
        if due.is_empty() {
            break;
        }
        after = due.last().map(DueEnrollment::cursor);
        let evals: Vec<_> = due
            .iter()
            .map(|d| {
                let mut e = defer(d, now);
                e.trace.outcome = "planned".into();
                e.decision = PlanDecision::Plan(NewDelivery {
                    channel: Channel::Email,
                    send_at: now,
                    to_address: d
                        .lead
                        .profile
                        .email
                        .as_ref()
                        .map(|e| e.to_string())
                        .unwrap_or_default(),
                    subject: Some("Hello".into()),
                    body_text: "Hello there, a benchmark message.".into(),
                    body_html: None,
                });
                e
            })
            .collect();
        store.record_evaluations(&evals, now).await?;
    }
    Ok(())
}

/// Claims in batches of `batch` and completes each row (begin_send + record_outcome), as the
/// dispatcher does. Returns jobs per second.
async fn drain(store: &dyn Store, batch: usize, now: DateTime<Utc>) -> Result<(usize, f64)> {
    let lease = Duration::minutes(5);
    let started = Instant::now();
    let mut done = 0;
    loop {
        let claimed = store
            .claim_due_deliveries(now, batch, "bench", lease)
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
                        provider_ref: "bench".into(),
                    },
                    &FollowUp::Complete,
                    now,
                )
                .await?;
            done += 1;
        }
    }
    Ok((done, done as f64 / started.elapsed().as_secs_f64()))
}

async fn open_fresh(
    backend: &str,
    url: Option<&str>,
    dir: &std::path::Path,
    n: usize,
) -> Result<Arc<dyn Store>> {
    Ok(match backend {
        "sqlite" => {
            engager_store::open(&format!(
                "sqlite:{}",
                dir.join(format!("ledger{n}.db")).display()
            ))
            .await?
        }
        _ => {
            let schema = format!("bench_{}_{}", std::process::id(), n);
            Arc::new(
                engager_store::postgres::PgStore::connect_isolated(
                    url.unwrap_or_default(),
                    &schema,
                )
                .await?,
            )
        }
    })
}

async fn ledger(rows: usize, postgres: Option<String>, json: bool) -> Result<ExitCode> {
    let dir = tempfile::tempdir()?;
    let now = DateTime::parse_from_rfc3339("2026-03-03T15:00:00Z")?.with_timezone(&Utc);
    let mut backends = vec![("sqlite", None)];
    if let Some(url) = postgres.as_deref() {
        backends.push(("postgres", Some(url)));
    }
    let mut results = Vec::new();
    let mut n = 0;
    for (backend, url) in backends {
        let mut measure = |label: &'static str, rate: f64, count: usize| {
            results.push((backend, label, rate, count))
        };
        n += 1;
        let store = open_fresh(backend, url, dir.path(), n).await?;
        seed_ledger(store.as_ref(), rows, now).await?;
        let (count, single) = drain(store.as_ref(), 1, now).await?;
        measure("engager, single-row claims", single, count);
        n += 1;
        let store = open_fresh(backend, url, dir.path(), n).await?;
        seed_ledger(store.as_ref(), rows, now).await?;
        let (count, batched) = drain(store.as_ref(), 100, now).await?;
        measure("engager, claims of 100", batched, count);
        n += 1;
        let store = open_fresh(backend, url, dir.path(), n).await?;
        seed_ledger(store.as_ref(), rows, now).await?;
        let (count, raw) = match backend {
            "sqlite" => {
                let sqlite = engager_store::sqlite::SqliteStore::open(
                    &dir.path()
                        .join(format!("ledger{n}.db"))
                        .display()
                        .to_string(),
                )
                .await?;
                sqlite.raw_claim_complete(100, now).await?
            }
            _ => {
                engager_store::postgres::PgStore::connect_isolated(
                    url.unwrap_or_default(),
                    &format!("bench_{}_{}", std::process::id(), n),
                )
                .await?
                .raw_claim_complete(100, now)
                .await?
            }
        };
        measure("raw statements, claims of 100", raw, count);
    }
    if json {
        print_json(&json!(results
            .iter()
            .map(
                |(b, l, r, c)| json!({"backend": b, "measure": l, "jobs_per_second": r, "jobs": c})
            )
            .collect::<Vec<_>>()));
    } else {
        let mut t = table(&["Backend", "Measure", "Jobs", "Jobs/s", "Ratio"]);
        for (b, l, r, c) in &results {
            let single = results
                .iter()
                .find(|(bb, ll, _, _)| bb == b && ll.contains("single"))
                .map(|x| x.2)
                .unwrap_or(1.0);
            let raw = results
                .iter()
                .find(|(bb, ll, _, _)| bb == b && ll.starts_with("raw"))
                .map(|x| x.2)
                .unwrap_or(1.0);
            let ratio = if l.starts_with("raw") {
                String::new()
            } else if l.contains("single") {
                format!("{:.2}× of raw", r / raw)
            } else {
                format!("{:.2}× single, {:.2}× of raw", r / single, r / raw)
            };
            t.add_row(vec![
                b.to_string(),
                l.to_string(),
                c.to_string(),
                format!("{r:.0}"),
                ratio,
            ]);
        }
        println!("{t}");
    }
    let _ = LeadFilter::default();
    Ok(ExitCode::SUCCESS)
}

async fn quickstart(json: bool) -> Result<ExitCode> {
    let dir = tempfile::tempdir()?;
    let args = crate::quickstart::QuickstartArgs {
        dir: dir.path().join("qs"),
        seed: 42,
        days: 14,
        start: "2026-03-02T00:00:00Z".into(),
    };
    let started = Instant::now();
    let outcome = crate::quickstart::execute(&args, false).await?;
    drop(outcome);
    let secs = started.elapsed().as_secs_f64();
    if json {
        print_json(&json!({"quickstart_seconds": secs}));
    } else {
        println!("quickstart (230 leads, 14 virtual days, 1344 ticks): {secs:.2} s");
    }
    Ok(ExitCode::SUCCESS)
}
