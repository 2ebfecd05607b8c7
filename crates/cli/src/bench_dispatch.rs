//! `engager bench dispatch`: the dispatcher's throughput with the reliability layer (rate
//! limiter, daily caps, circuit breakers, retry classification) on vs. off, against the same
//! instant in-process provider — the worst case for the layer's relative overhead. The layer
//! is measured with the in-process limiter (governor) and with the database-backed one
//! shared by every process (`[limits] shared = true`: one transaction per permit), and with
//! two accounts in rotation (the sequence's account looked up for every delivery).

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use clap::Args;
use engager_channels::{Accepted, ChannelSender, DeliveryError, OutgoingMessage};
use engager_domain::circuit::CircuitPolicy;
use engager_domain::Channel;
use engager_engine::dispatcher::{ChannelSet, Dispatcher};
use engager_engine::guard::{AccountLimits, SendGuard, StoreLimiter};
use engager_engine::planner::Planner;
use engager_engine::Catalog;
use serde_json::json;

use crate::output::{print_json, table};

/// `engager bench dispatch`
#[derive(Debug, Args)]
pub struct DispatchBenchArgs {
    /// Deliveries per measurement.
    #[arg(long, default_value_t = 5_000)]
    pub rows: usize,
    /// Measurements of each mode, alternated.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

/// A provider that accepts everything at once.
struct Instant0(AtomicU64);

#[async_trait]
impl ChannelSender for Instant0 {
    fn channel(&self) -> Channel {
        Channel::Email
    }
    fn name(&self) -> &str {
        "instant"
    }
    async fn health_check(&self) -> Result<(), DeliveryError> {
        Ok(())
    }
    async fn send(&self, m: &OutgoingMessage) -> Result<Accepted, DeliveryError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(Accepted {
            provider_ref: m.message_id.clone(),
        })
    }
}

/// What stands between the dispatcher and the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Nothing.
    Off,
    /// Limiter in this process.
    InProcess,
    /// Limiter in the database.
    Shared,
    /// Limiter in this process, two accounts in rotation (mailbox rotation: the sequence's
    /// account looked up per delivery, accounts ordered by remaining capacity).
    Rotated,
}

async fn measure(rows: usize, mode: Mode, n: usize, dir: &std::path::Path) -> Result<f64> {
    let store = engager_store::open(&format!(
        "sqlite:{}",
        dir.join(format!("d{n}.db")).display()
    ))
    .await?;
    let now: DateTime<Utc> =
        DateTime::parse_from_rfc3339("2026-03-03T15:00:00Z")?.with_timezone(&Utc);
    crate::bench::seed(store.as_ref(), rows, now).await?;
    let catalog = Catalog::load(store.as_ref()).await?;
    let mut config = crate::bench::bench_config()?;
    config.timing.best_time.enabled = false;
    Planner::new(store.as_ref(), &catalog, &config)
        .plan_due(now, None, false)
        .await?;
    // What the planner let through (the compliance gate skips some synthetic leads).
    let rows: usize = store
        .ledger_overview()
        .await?
        .iter()
        .filter(|r| r.state == engager_domain::DeliveryState::Planned)
        .map(|r| r.count as usize)
        .sum();
    anyhow::ensure!(rows > 0, "the planner planned nothing to dispatch");
    let provider = Arc::new(Instant0(AtomicU64::new(0)));
    let channels = if mode == Mode::Rotated {
        let accounts: Vec<Arc<dyn ChannelSender>> = ["maya@acme.example", "sam@acme.example"]
            .into_iter()
            .map(|a| {
                Arc::new(engager_engine::accounts::AccountSender::new(
                    provider.clone(),
                    a,
                )) as Arc<dyn ChannelSender>
            })
            .collect();
        ChannelSet::new().with_accounts(accounts)
    } else {
        ChannelSet::new().with(provider.clone())
    };
    let mut limits = HashMap::new();
    limits.insert(
        Channel::Email,
        AccountLimits {
            per_second: Some(1_000_000),
            daily_cap: Some(10_000_000),
            ..AccountLimits::default()
        },
    );
    let mut guard = SendGuard::new(limits.clone(), CircuitPolicy::default());
    if mode == Mode::Shared {
        guard = guard.with_limiter(Box::new(StoreLimiter::new(store.clone(), limits)));
    } else if mode == Mode::Rotated {
        let own = channels
            .accounts(Channel::Email)
            .iter()
            .map(|s| {
                (
                    SendGuard::account(Channel::Email, s.name()),
                    limits[&Channel::Email].clone(),
                )
            })
            .collect();
        guard = guard.with_account_limits(own);
    }
    // Not before the real clock: the dispatcher reads it for every delivery.
    let at = (now + Duration::days(10)).max(Utc::now());
    let started = Instant::now();
    // On the real clock, as `engager run` dispatches: a limiter spacing sends (the shared
    // one has no burst) then sees the time each send takes.
    let dispatcher = Dispatcher::new(store.as_ref(), &catalog, &config, &channels).real_time();
    let report = if mode != Mode::Off {
        dispatcher.with_guard(&guard).dispatch_due(at, None).await?
    } else {
        dispatcher.dispatch_due(at, None).await?
    };
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        report.sent.len() == rows,
        "sent {} of {rows}: {report:?}",
        report.sent.len()
    );
    Ok(rows as f64 / secs)
}

/// Runs the benchmark.
pub async fn run(args: DispatchBenchArgs, json: bool) -> Result<ExitCode> {
    let dir = tempfile::tempdir()?;
    let (mut off, mut on, mut shared) = (Vec::new(), Vec::new(), Vec::new());
    let mut rotated = Vec::new();
    for round in 0..args.rounds {
        off.push(measure(args.rows, Mode::Off, round * 4, dir.path()).await?);
        on.push(measure(args.rows, Mode::InProcess, round * 4 + 1, dir.path()).await?);
        shared.push(measure(args.rows, Mode::Shared, round * 4 + 2, dir.path()).await?);
        rotated.push(measure(args.rows, Mode::Rotated, round * 4 + 3, dir.path()).await?);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (off_m, on_m, shared_m) = (median(&mut off), median(&mut on), median(&mut shared));
    let rotated_m = median(&mut rotated);
    if json {
        print_json(
            &json!({"rows": args.rows, "sends_per_second_without_guard": off_m, "sends_per_second_with_guard": on_m, "ratio": on_m / off_m, "sends_per_second_with_shared_limiter": shared_m, "shared_ratio": shared_m / off_m, "sends_per_second_two_accounts_rotated": rotated_m, "rotated_ratio": rotated_m / off_m, "rotated_vs_one_account": rotated_m / on_m}),
        );
    } else {
        let mut t = table(&["Mode", "Sends/s (median)", "Ratio"]);
        t.add_row(vec![
            "dispatcher, no limiter or breaker".into(),
            format!("{off_m:.0}"),
            "1.00".into(),
        ]);
        t.add_row(vec![
            "dispatcher + limiter + daily cap + circuit breaker".into(),
            format!("{on_m:.0}"),
            format!("{:.2}", on_m / off_m),
        ]);
        t.add_row(vec![
            "dispatcher + shared (database) limiter + daily cap + circuit breaker".into(),
            format!("{shared_m:.0}"),
            format!("{:.2}", shared_m / off_m),
        ]);
        t.add_row(vec![
            "dispatcher + limiter + daily cap + circuit breaker, two accounts in rotation".into(),
            format!("{rotated_m:.0}"),
            format!("{:.2}", rotated_m / off_m),
        ]);
        println!("{t}");
    }
    Ok(ExitCode::SUCCESS)
}
