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
    DueEnrollment, Evaluation, FollowUp, GateRow, NewDelivery, PlanDecision, SendOutcome, Store,
    TraceRecord,
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
        /// Turn the best-time model off (the window's first open instant), to measure its cost.
        #[arg(long)]
        no_best_time: bool,
        /// Turn the compliance validators off for the whole pass, to measure their cost.
        #[arg(long)]
        no_compliance: bool,
    },
    /// Slot computations per second of the pure timing functions, on one core.
    Timing {
        /// Calls per measurement.
        #[arg(long, default_value_t = 1_000_000)]
        iterations: usize,
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
    /// Planner throughput with an A/B experiment (fixed weights; bandit with automatic
    /// promotion) against the same campaign without one, in the same run.
    Ab(crate::bench_ab::AbBenchArgs),
    /// SMTP messages/s to a real SMTP sink and CPU time per message (no DKIM, Ed25519, RSA).
    Smtp(crate::bench_smtp::SmtpBenchArgs),
    /// Template personalization messages/s, the quality gate's p50/p99, and the AI cache hit
    /// rate of a second pass (against the local fake model).
    Personalize(crate::bench_personalize::PersonalizeBenchArgs),
    /// Dispatcher throughput with the reliability layer (limiter, caps, breakers) on vs. off.
    Dispatch(crate::bench_dispatch::DispatchBenchArgs),
    /// `engager report` over about a million events on SQLite, against the same query alone.
    Report(crate::bench_report::ReportBenchArgs),
    /// Open-pixel requests/s (wrk) against a bare hello-world axum route in the same run, and
    /// the opens recorded against the pixels served (0 lost).
    Tracking(crate::bench_tracking::TrackingBenchArgs),
    /// Graph and Twilio channel throughput against the local fakes with a fixed provider
    /// latency: sends/s at each concurrency C, against the ideal C / latency.
    Channels {
        /// Concurrent senders to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
        concurrency: Vec<usize>,
        /// The fakes' latency per request, milliseconds.
        #[arg(long, default_value_t = 50)]
        latency_ms: u64,
        /// Sends per concurrent sender (per usable connection for Graph's 4-request cap).
        #[arg(long, default_value_t = 20)]
        rounds: usize,
    },
}

/// Runs a benchmark.
pub async fn run(command: BenchCommand, json: bool) -> Result<ExitCode> {
    match command {
        BenchCommand::Planner {
            leads,
            no_best_time,
            no_compliance,
        } => planner(leads, no_best_time, no_compliance, json).await,
        BenchCommand::Timing { iterations } => timing(iterations, json),
        BenchCommand::Ledger { rows, postgres } => ledger(rows, postgres, json).await,
        BenchCommand::Quickstart => quickstart(json).await,
        BenchCommand::Ab(args) => crate::bench_ab::run(args, json).await,
        BenchCommand::Smtp(args) => crate::bench_smtp::run(args, json).await,
        BenchCommand::Dispatch(args) => crate::bench_dispatch::run(args, json).await,
        BenchCommand::Report(args) => crate::bench_report::run(args, json).await,
        BenchCommand::Tracking(args) => crate::bench_tracking::run(args, json).await,
        BenchCommand::Personalize(args) => crate::bench_personalize::run(args, json).await,
        BenchCommand::Channels {
            concurrency,
            latency_ms,
            rounds,
        } => channels(&concurrency, latency_ms, rounds, json).await,
    }
}

pub(crate) fn bench_config() -> Result<EngineConfig> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/engager.example.toml");
    let text = include_str!("../../../config/engager.example.toml");
    let dir = tempfile::tempdir()?;
    let copy = dir.path().join("engager.toml");
    std::fs::write(&copy, text).with_context(|| format!("copying {}", path.display()))?;
    let (_, mut engine) = crate::settings::load_engine(Some(&copy))?;
    engine.worker_id = "bench".into();
    // The synthetic leads include EU ones: the benchmark company documented its legitimate
    // interest, so every lead goes through every gate (none is refused early).
    engine.compliance.legitimate_interest = Some("LIA-BENCH".into());
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

pub(crate) async fn seed(
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

async fn planner(
    leads: usize,
    no_best_time: bool,
    no_compliance: bool,
    json: bool,
) -> Result<ExitCode> {
    let dir = tempfile::tempdir()?;
    let store =
        engager_store::open(&format!("sqlite:{}", dir.path().join("bench.db").display())).await?;
    let mut config = bench_config()?;
    config.timing.best_time.enabled = !no_best_time;
    if no_compliance {
        config.compliance.validators.clear();
    }
    let now = DateTime::parse_from_rfc3339("2026-03-03T15:00:00Z")?.with_timezone(&Utc);
    eprintln!("Seeding {leads} leads…");
    seed(store.as_ref(), leads, now).await?;
    let catalog = Catalog::load(store.as_ref()).await?;
    // A sample of due enrollments for the in-memory evaluate() comparison below.
    let sample = store.due_enrollments(now, None, 2_000).await?;
    let rss_before = rss_kib("VmRSS:");

    // Baseline: the same reads and one trace write per lead, with no gates at all.
    let started = Instant::now();
    let mut after: Option<engager_store::DueCursor> = None;
    let mut baseline_count = 0;
    let mut base_phases = engager_engine::planner::PlanPhases::default();
    loop {
        let clock = Instant::now();
        let due = store.due_enrollments(now, after, config.batch_size).await?;
        base_phases.due += clock.elapsed();
        if due.is_empty() {
            break;
        }
        after = due.last().map(DueEnrollment::cursor);
        let clock = Instant::now();
        let _history = store
            .contact_history(
                &due.iter().map(|d| d.lead.id).collect::<Vec<_>>(),
                now - config.timing.history,
            )
            .await?;
        base_phases.context += clock.elapsed();
        let clock = Instant::now();
        let evals: Vec<_> = due.iter().map(|d| defer(d, now)).collect();
        base_phases.evaluate += clock.elapsed();
        let clock = Instant::now();
        store.record_evaluations(&evals, now).await?;
        base_phases.record += clock.elapsed();
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
    let (eval_on, eval_off) = evaluate_only(store.as_ref(), &sample, &catalog, &config, now);
    let mut no_rules = config.clone();
    no_rules.compliance.validators.clear();
    let (rules_on, rules_off) =
        evaluate_pair(store.as_ref(), &sample, &catalog, &config, &no_rules, now);
    if json {
        print_json(&json!({
            "evaluate_only_best_time_on_per_second": eval_on, "evaluate_only_best_time_off_per_second": eval_off,
            "evaluate_only_compliance_on_per_second": rules_on, "evaluate_only_compliance_off_per_second": rules_off,
            "leads": leads, "best_time": !no_best_time, "evaluated": report.evaluated, "planned": planned_ok, "outcomes": report.by_code,
            "seconds": full.as_secs_f64(), "leads_per_second": full_rate,
            "baseline_store_only_per_second": base_rate, "ratio_to_store_only": full_rate / base_rate,
            "phases_seconds": phases_json(&report.phases), "baseline_phases_seconds": phases_json(&base_phases),
            "rss_before_planning_mib": rss_before as f64 / 1024.0, "rss_after_planning_mib": after_rss as f64 / 1024.0, "peak_rss_mib": peak as f64 / 1024.0,
        }));
    } else {
        let mut t = table(&["Measure", "Value"]);
        t.add_row(vec![
            "leads evaluated / planned".into(),
            format!("{} / {}", report.evaluated, planned_ok),
        ]);
        t.add_row(vec![
            "best-time model".to_owned(),
            if no_best_time {
                "off (--no-best-time)"
            } else {
                "on"
            }
            .to_owned(),
        ]);
        t.add_row(vec![
            "planner, all gates + templates".into(),
            format!("{full_rate:.0} leads/s ({:.2} s)", full.as_secs_f64()),
        ]);
        t.add_row(vec![
            "evaluate() only, in memory: best time on / off (interleaved)".into(),
            format!(
                "{eval_on:.0} / {eval_off:.0} leads/s (on costs {:.1}%)",
                (eval_off / eval_on - 1.0) * 100.0
            ),
        ]);
        t.add_row(vec![
            "evaluate() only, in memory: compliance validators on / off (interleaved)".into(),
            format!(
                "{rules_on:.0} / {rules_off:.0} leads/s (on costs {:.1}%)",
                (rules_off / rules_on - 1.0) * 100.0
            ),
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
            "planner phases: due · context · evaluate · record".into(),
            phases_text(&report.phases),
        ]);
        t.add_row(vec![
            "baseline phases: due · context · evaluate · record".into(),
            phases_text(&base_phases),
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

fn phases_json(p: &engager_engine::planner::PlanPhases) -> serde_json::Value {
    json!({
        "due": p.due.as_secs_f64(), "context": p.context.as_secs_f64(),
        "evaluate": p.evaluate.as_secs_f64(), "record": p.record.as_secs_f64(),
    })
}

fn phases_text(p: &engager_engine::planner::PlanPhases) -> String {
    format!(
        "{:.2} · {:.2} · {:.2} · {:.2} s",
        p.due.as_secs_f64(),
        p.context.as_secs_f64(),
        p.evaluate.as_secs_f64(),
        p.record.as_secs_f64()
    )
}

/// The planner's pure evaluation over `sample`, best time on and off, interleaved in five
/// rounds so that machine noise hits both alike: leads per second for each.
fn evaluate_only(
    store: &dyn Store,
    sample: &[DueEnrollment],
    catalog: &Catalog,
    config: &EngineConfig,
    now: DateTime<Utc>,
) -> (f64, f64) {
    let mut on = config.clone();
    on.timing.best_time.enabled = true;
    let mut off = config.clone();
    off.timing.best_time.enabled = false;
    evaluate_pair(store, sample, catalog, &on, &off, now)
}

/// The planner's pure evaluation over `sample` under two configurations, interleaved in five
/// rounds so that machine noise hits both alike: leads per second for each.
fn evaluate_pair(
    store: &dyn Store,
    sample: &[DueEnrollment],
    catalog: &Catalog,
    on: &EngineConfig,
    off: &EngineConfig,
    now: DateTime<Utc>,
) -> (f64, f64) {
    let history = engager_domain::LeadHistory::default();
    let mut times = [std::time::Duration::ZERO; 2];
    for _ in 0..5 {
        for (i, cfg) in [on, off].into_iter().enumerate() {
            // evaluate() is pure: the store is never called.
            let planner = Planner::new(store, catalog, cfg);
            let started = Instant::now();
            for d in sample {
                if let Some(campaign) = catalog.get(d.enrollment.campaign_id) {
                    std::hint::black_box(planner.evaluate(d, campaign, &history, &[], now));
                }
            }
            times[i] += started.elapsed();
        }
    }
    let rate = |t: std::time::Duration| (sample.len() * 5) as f64 / t.as_secs_f64().max(1e-9);
    (rate(times[0]), rate(times[1]))
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
                    variant: None,
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
    crate::quickstart::execute(&args, false).await?;
    let secs = started.elapsed().as_secs_f64();
    if json {
        print_json(&json!({"quickstart_seconds": secs}));
    } else {
        println!("quickstart (230 leads, 14 virtual days, 1344 ticks): {secs:.2} s");
    }
    Ok(ExitCode::SUCCESS)
}

// --- channels ---------------------------------------------------------------------------

/// One channel measurement.
struct ChannelRun {
    provider: &'static str,
    concurrency: usize,
    sends: usize,
    failures: usize,
    seconds: f64,
    /// Provider requests per send (Graph: create the draft, then send it).
    requests_per_send: usize,
    /// Requests the provider lets run at once (Graph: 4 per mailbox).
    provider_cap: usize,
}

impl ChannelRun {
    fn per_second(&self) -> f64 {
        self.sends as f64 / self.seconds
    }

    /// Achieved ÷ (C / latency): the issue's figure.
    fn ratio(&self, latency: f64) -> f64 {
        self.per_second() / (self.concurrency as f64 / latency)
    }

    /// Achieved ÷ what the provider allows: min(C, cap) / (requests per send × latency).
    fn ratio_to_bound(&self, latency: f64) -> f64 {
        let slots = self.concurrency.min(self.provider_cap) as f64;
        self.per_second() / (slots / (self.requests_per_send as f64 * latency))
    }
}

fn bench_message(i: usize, channel: engager_domain::Channel) -> engager_channels::OutgoingMessage {
    let id = engager_domain::DeliveryId(i64::try_from(i).unwrap_or(i64::MAX));
    engager_channels::OutgoingMessage {
        delivery_id: id,
        lead_id: engager_domain::LeadId(1),
        campaign: "bench".into(),
        step_index: 0,
        channel,
        to: match channel {
            engager_domain::Channel::Sms => format!("+1415555{:04}", i % 10_000),
            _ => format!("lead{i}@example.com"),
        },
        to_name: None,
        subject: Some("A question".into()),
        body_text: "Hi, a quick question about your pipeline. Reply STOP to opt out.".into(),
        body_html: None,
        date: Utc::now(),
        message_id: format!("<bench.{i}@acme.example>"),
        sender: engager_channels::Sender {
            name: "Bench".into(),
            email: EmailAddress::parse("maya@acme.example").expect("a valid address"),
            postal_address: "1 Main St".into(),
            sms_from: Some("+14155550123".into()),
        },
        unsubscribe: None,
        due_by: None,
    }
}

/// Runs `sends` sends through `sender` from `concurrency` tasks; returns seconds and failures.
async fn drive(
    sender: Arc<dyn engager_channels::ChannelSender>,
    channel: engager_domain::Channel,
    concurrency: usize,
    sends: usize,
) -> Result<(f64, usize)> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let sender = Arc::clone(&sender);
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                let mut failures = 0;
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= sends {
                        return failures;
                    }
                    if sender.send(&bench_message(i, channel)).await.is_err() {
                        failures += 1;
                    }
                }
            })
        })
        .collect();
    let mut failures = 0;
    for task in tasks {
        failures += task.await.context("a bench task panicked")?;
    }
    Ok((started.elapsed().as_secs_f64(), failures))
}

async fn channels(
    concurrency: &[usize],
    latency_ms: u64,
    rounds: usize,
    json: bool,
) -> Result<ExitCode> {
    use engager_channels::{ChannelSender, GraphChannel, GraphConfig, TwilioChannel, TwilioConfig};
    use engager_testkit::graph::{FakeGraph, FakeGraphSetup};
    use engager_testkit::twilio::{FakeTwilio, FakeTwilioSetup};

    const SID: &str = "AC0123456789abcdef0123456789abcdef";
    let latency = std::time::Duration::from_millis(latency_ms);
    let mut runs = Vec::new();
    for &c in concurrency.iter().filter(|c| **c > 0) {
        let mut setup = FakeTwilioSetup::new(SID, "bench-token");
        setup.latency = latency;
        let fake = FakeTwilio::start(setup).await?;
        let mut config = TwilioConfig::new(SID, "bench-token".into(), "+14155550123");
        config.api_url = fake.api_url().to_owned();
        let sender: Arc<dyn ChannelSender> =
            Arc::new(TwilioChannel::new(config).map_err(|e| anyhow::anyhow!("{e}"))?);
        sender
            .health_check()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let sends = c * rounds;
        let (seconds, failures) = drive(sender, Channel::Sms, c, sends).await?;
        anyhow::ensure!(
            fake.accepted().len() == sends - failures,
            "Twilio fake accepted {} messages for {} successful sends",
            fake.accepted().len(),
            sends - failures
        );
        runs.push(ChannelRun {
            provider: "twilio",
            concurrency: c,
            sends,
            failures,
            seconds,
            requests_per_send: 1,
            provider_cap: usize::MAX,
        });

        let mut setup =
            FakeGraphSetup::new("contoso.example", "client", "secret", "maya@acme.example");
        setup.latency = latency;
        let fake = FakeGraph::start(setup).await?;
        let mut config = GraphConfig::new(
            "contoso.example",
            "client",
            "secret".into(),
            "maya@acme.example",
        );
        config.authority_url = fake.authority_url().to_owned();
        config.graph_url = fake.graph_url();
        let sender: Arc<dyn ChannelSender> =
            Arc::new(GraphChannel::new(config).map_err(|e| anyhow::anyhow!("{e}"))?);
        sender
            .health_check()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let cap = engager_channels::graph::MAX_MAILBOX_CONCURRENCY;
        let sends = c.min(cap) * rounds;
        let (seconds, failures) = drive(sender, Channel::Email, c, sends).await?;
        anyhow::ensure!(
            fake.sent().len() == sends - failures,
            "Graph fake sent {} messages for {} successful sends",
            fake.sent().len(),
            sends - failures
        );
        anyhow::ensure!(
            fake.throttled() == 0,
            "the Graph channel exceeded the mailbox concurrency limit"
        );
        runs.push(ChannelRun {
            provider: "graph",
            concurrency: c,
            sends,
            failures,
            seconds,
            requests_per_send: 2,
            provider_cap: cap,
        });
    }
    let latency_s = latency.as_secs_f64();
    if json {
        print_json(&json!({
            "latency_ms": latency_ms,
            "runs": runs.iter().map(|r| json!({
                "provider": r.provider, "concurrency": r.concurrency, "sends": r.sends,
                "failures": r.failures, "seconds": r.seconds, "sends_per_second": r.per_second(),
                "ratio_to_c_over_latency": r.ratio(latency_s),
                "ratio_to_provider_bound": r.ratio_to_bound(latency_s),
            })).collect::<Vec<_>>(),
        }));
    } else {
        let mut t = table(&[
            "Provider",
            "C",
            "Sends",
            "Failed",
            "Sends/s",
            "÷ (C / latency)",
            "÷ provider bound",
        ]);
        for r in &runs {
            t.add_row(vec![
                r.provider.to_owned(),
                r.concurrency.to_string(),
                r.sends.to_string(),
                r.failures.to_string(),
                format!("{:.1}", r.per_second()),
                format!("{:.3}", r.ratio(latency_s)),
                format!("{:.3}", r.ratio_to_bound(latency_s)),
            ]);
        }
        println!("Channel throughput against the local fakes, {latency_ms} ms per provider request:\n{t}");
        println!(
            "Twilio: one request per send, no client-side cap. Graph: two requests per send (draft, \
             then send) and at most {} in flight per mailbox, so its bound is min(C, 4) / (2 × latency).",
            engager_channels::graph::MAX_MAILBOX_CONCURRENCY
        );
    }
    Ok(ExitCode::SUCCESS)
}

// --- timing --------------------------------------------------------------------------------

/// Calls per second of `f` over `iterations` inputs from `make` (inputs built beforehand).
fn per_second<I, O>(iterations: usize, make: impl Fn(usize) -> I, f: impl Fn(&I) -> O) -> f64 {
    let inputs: Vec<I> = (0..iterations.max(1)).map(make).collect();
    // Warm up caches and branch predictors on a slice first.
    for input in inputs.iter().take(10_000) {
        std::hint::black_box(f(std::hint::black_box(input)));
    }
    let started = Instant::now();
    for input in &inputs {
        std::hint::black_box(f(std::hint::black_box(input)));
    }
    inputs.len() as f64 / started.elapsed().as_secs_f64()
}

fn timing(iterations: usize, json: bool) -> Result<ExitCode> {
    use engager_domain::best_time::{BestTimeModel, HourWeights, ScoreTable};
    use engager_domain::holidays::HolidayCalendar;
    use engager_domain::schedule::{choose_slot, BestTime, QuietHours, SlotRules};
    use engager_domain::timing::{next_send_slot, SendWindow};
    use engager_domain::zone::{country_zones, resolve_zone, ZoneSpread};
    use engager_domain::{Engagement, EventKind};

    const ZONES: [&str; 8] = [
        "America/New_York",
        "America/Denver",
        "Europe/Berlin",
        "Europe/London",
        "Asia/Kolkata",
        "Asia/Tokyo",
        "America/Sao_Paulo",
        "Australia/Sydney",
    ];
    const COUNTRIES: [&str; 8] = ["US", "US", "DE", "GB", "IN", "JP", "BR", "AU"];
    let zones: Vec<TimeZone> = ZONES
        .iter()
        .map(|z| TimeZone::parse(z))
        .collect::<Result<_, _>>()?;
    let start = DateTime::parse_from_rfc3339("2026-03-02T00:00:00Z")?.with_timezone(&Utc);
    // Instants spread over two years (7919 minutes apart, so every hour and weekday occurs).
    let instant = |i: usize| start + Duration::minutes((i as i64 * 7919) % (2 * 365 * 24 * 60));
    let window = SendWindow::business_hours();
    let max_jitter = Duration::minutes(90);
    let calendar = HolidayCalendar::builtin();
    let prior = ScoreTable::prior(&HourWeights::industry_default());
    let sms = QuietHours::from_hours(8, 21)?.with_end_margin(Duration::minutes(30));
    let us = ZoneSpread::of(country_zones("US"));

    let mut results: Vec<(&str, f64)> = Vec::new();
    results.push((
        "next_send_slot (window only)",
        per_second(
            iterations,
            |i| (zones[i % 8], instant(i), (i % 97) as f64 / 97.0),
            |(z, t, j)| next_send_slot(&window, *z, *t, *j, max_jitter),
        ),
    ));
    results.push((
        "choose_slot: window + holidays",
        per_second(
            iterations,
            |i| (i % 8, instant(i), (i % 97) as f64 / 97.0),
            |(k, t, j)| {
                let rules = SlotRules {
                    window,
                    zone: zones[*k],
                    holidays: calendar.for_country(Some(COUNTRIES[*k])),
                    spread_hours: None,
                };
                choose_slot(&rules, *t, None, *j, max_jitter).at
            },
        ),
    ));
    let search = BestTime {
        scores: &prior,
        horizon_days: 5,
        day_penalty: 0.1,
        latest: None,
    };
    results.push((
        "choose_slot: + best hour over 5 days",
        per_second(
            iterations,
            |i| (i % 8, instant(i), (i % 97) as f64 / 97.0),
            |(k, t, j)| {
                let rules = SlotRules {
                    window,
                    zone: zones[*k],
                    holidays: calendar.for_country(Some(COUNTRIES[*k])),
                    spread_hours: None,
                };
                choose_slot(&rules, *t, Some(&search), *j, max_jitter).at
            },
        ),
    ));
    results.push((
        "choose_slot: SMS, US number without city (7 zones)",
        per_second(
            iterations / 4,
            |i| (instant(i), (i % 97) as f64 / 97.0),
            |(t, j)| {
                let rules = SlotRules {
                    window: sms.apply_to(&window),
                    zone: zones[0],
                    holidays: calendar.for_country(Some("US")),
                    spread_hours: Some((sms, us)),
                };
                choose_slot(&rules, *t, Some(&search), *j, max_jitter).at
            },
        ),
    ));
    let leads = synthetic_leads(0, 1024);
    let default_zone = zones[0];
    results.push((
        "per lead: zone resolution + holidays + best-hour slot",
        per_second(
            iterations,
            |i| (i % 1024, instant(i)),
            |(k, t)| {
                let lead = &leads[*k];
                let zone = resolve_zone(lead, default_zone);
                let country = lead.country.as_ref().map(|c| c.as_str());
                let rules = SlotRules {
                    window,
                    zone: zone.zone,
                    holidays: calendar.for_country(country),
                    spread_hours: None,
                };
                choose_slot(&rules, *t, Some(&search), 0.5, max_jitter).at
            },
        ),
    ));
    let model = BestTimeModel::default();
    let events: Vec<Engagement> = (0..10)
        .map(|i| Engagement {
            at: start + Duration::hours(i * 26 + 7),
            kind: if i % 3 == 0 {
                EventKind::Clicked
            } else {
                EventKind::Opened
            },
            delivery: None,
        })
        .collect();
    results.push((
        "best-time blend of 10 events (leads with history only)",
        per_second(
            iterations / 10,
            |i| zones[i % 8],
            |z| model.blend(&prior, &events, *z).evidence(),
        ),
    ));
    if json {
        print_json(&json!(results
            .iter()
            .map(|(name, rate)| json!({"measure": name, "calls_per_second": rate}))
            .collect::<Vec<_>>()));
    } else {
        let mut t = table(&["Pure function (one core)", "Calls/s"]);
        for (name, rate) in &results {
            t.add_row(vec![name.to_string(), format!("{rate:.0}")]);
        }
        println!("{t}");
    }
    Ok(ExitCode::SUCCESS)
}
