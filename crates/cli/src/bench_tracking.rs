//! `engager bench tracking`: requests/s of the open pixel (`GET /o/<token>.gif` through the
//! whole router: tracing, timeouts, body limits, token check, the queue to the batched
//! writer) against a bare hello-world axum route, both served by this process on the same
//! runtime and driven by `wrk` in turns in the same run. After the run the server is drained
//! and the events in the database are counted against the pixels it served: 0 lost.

use std::future::IntoFuture;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use axum::routing::get;
use chrono::{DateTime, Duration, Utc};
use clap::Args;
use engager_domain::tracking::open_token;
use engager_domain::{Channel, DeliveryId, EmailAddress, NewLead};
use engager_server::{router, ServerConfig, ServerState, TrackingConfig};
use engager_store::sqlite::SqliteStore;
use engager_store::*;
use serde_json::json;

use crate::output::{print_json, table};

/// `engager bench tracking`
#[derive(Debug, Args)]
pub struct TrackingBenchArgs {
    /// Seconds of load per turn.
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// Turns of each route (alternating; the median is reported).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// wrk's open connections.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// wrk's threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// The wrk binary.
    #[arg(long, default_value = "wrk")]
    pub wrk: String,
}

const BROWSER: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15";

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-05T08:00:00Z")
        .unwrap_or_default()
        .with_timezone(&Utc)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// One sent email to track: (delivery, lead).
async fn sent_delivery(store: &dyn Store) -> Result<DeliveryId> {
    let lead = NewLead {
        email: Some(EmailAddress::parse("ada@example.com")?),
        first_name: Some("Ada".into()),
        source: "bench".into(),
        ..NewLead::default()
    };
    let id = store.upsert_leads(&[lead], t0()).await?[0].id();
    let campaign = store
        .save_campaign("bench", "Benchmark", "[campaign]", t0())
        .await?;
    store.enroll(campaign, &[id], t0()).await?;
    let due = store.due_enrollments(t0(), None, 10).await?;
    let d = due.first().ok_or_else(|| anyhow!("no due enrollment"))?;
    store
        .record_evaluations(
            &[Evaluation {
                trace: TraceRecord {
                    enrollment_id: d.enrollment.id,
                    campaign_id: campaign,
                    lead_id: id,
                    step_index: 0,
                    evaluated_at: t0(),
                    outcome: "planned".into(),
                    code: None,
                    channel: Some(Channel::Email),
                    at: Some(t0()),
                    gates: vec![],
                },
                decision: PlanDecision::Plan(NewDelivery {
                    channel: Channel::Email,
                    send_at: t0(),
                    to_address: "ada@example.com".into(),
                    subject: Some("Hello".into()),
                    body_text: "Hi".into(),
                    body_html: Some("<p>Hi</p>".into()),
                    variant: None,
                }),
            }],
            t0(),
        )
        .await?;
    let claimed = store
        .claim_due_deliveries(t0(), 1, "bench", Duration::minutes(5))
        .await?;
    let c = claimed.first().ok_or_else(|| anyhow!("nothing claimed"))?;
    store
        .begin_send(c.id, c.fencing_token, t0(), Duration::minutes(5))
        .await?;
    store
        .record_outcome(
            c.id,
            c.fencing_token,
            &SendOutcome::Sent {
                provider_ref: "bench".into(),
            },
            &FollowUp::Complete,
            t0(),
        )
        .await?;
    Ok(c.id)
}

/// What one wrk turn measured.
struct Turn {
    rps: f64,
    requests: u64,
    errors: u64,
}

async fn wrk(args: &TrackingBenchArgs, url: &str) -> Result<Turn> {
    let out = tokio::process::Command::new(&args.wrk)
        .arg(format!("-t{}", args.threads))
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{}s", args.seconds))
        .arg("-H")
        .arg(format!("User-Agent: {BROWSER}"))
        .arg(url)
        .output()
        .await
        .with_context(|| {
            format!(
                "running {:?} (install it: apt-get install wrk, or pass --wrk <path>)",
                args.wrk
            )
        })?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(anyhow!(
            "wrk failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let field = |prefix: &str| -> Option<String> {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .map(|l| l[prefix.len()..].trim().to_owned())
    };
    let rps = field("Requests/sec:")
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| anyhow!("no Requests/sec in wrk's output:\n{text}"))?;
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let errors = field("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(Turn {
        rps,
        requests,
        errors,
    })
}

/// Runs the benchmark.
pub async fn run(args: TrackingBenchArgs, json: bool) -> Result<ExitCode> {
    if args.rounds == 0 || args.seconds == 0 {
        return Err(anyhow!("--rounds and --seconds must be at least 1"));
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tracking.db");
    let sqlite = SqliteStore::open(path.to_str().unwrap_or("tracking.db")).await?;
    let store: Arc<dyn Store> = Arc::new(sqlite.clone());
    let delivery = sent_delivery(store.as_ref()).await?;

    let engine = crate::bench::bench_config()?;
    let mut config = ServerConfig::from_engine(&engine);
    config.public_base_url = "http://127.0.0.1".into();
    let state = ServerState::new(Arc::clone(&store), config)?.with_tracking(TrackingConfig {
        machine_window: Duration::seconds(0),
        ..TrackingConfig::default()
    });
    let served = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&served);
    let app = router(state.clone()).layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let counter = Arc::clone(&counter);
            async move {
                let response = next.run(request).await;
                if response.status() == axum::http::StatusCode::OK {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                response
            }
        },
    ));
    let hello = axum::Router::new().route("/hello", get(|| async { "Hello, world!" }));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tracking_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hello_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let tracking_addr = tracking_listener.local_addr()?;
    let hello_addr = hello_listener.local_addr()?;
    let stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let tracking_server = tokio::spawn(
        axum::serve(
            tracking_listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(stop(stop_rx.clone()))
        .into_future(),
    );
    let hello_server = tokio::spawn(
        axum::serve(hello_listener, hello)
            .with_graceful_shutdown(stop(stop_rx))
            .into_future(),
    );

    let pixel_url = format!(
        "http://{tracking_addr}/o/{}.gif",
        open_token(&engine.link_secret, delivery)
    );
    let hello_url = format!("http://{hello_addr}/hello");
    let mut rows = Vec::new();
    let (mut hello_rps, mut pixel_rps) = (Vec::new(), Vec::new());
    let mut wrk_pixels = 0u64;
    for round in 0..args.rounds {
        let h = wrk(&args, &hello_url).await?;
        let p = wrk(&args, &pixel_url).await?;
        if h.errors > 0 || p.errors > 0 {
            return Err(anyhow!(
                "non-2xx answers: hello {}, pixel {}",
                h.errors,
                p.errors
            ));
        }
        wrk_pixels += p.requests;
        rows.push((round + 1, h.rps, p.rps));
        hello_rps.push(h.rps);
        pixel_rps.push(p.rps);
    }
    let _ = stop_tx.send(true);
    tracking_server.await??;
    hello_server.await??;
    // Every request answered: write what is still queued, as `engager serve` does on exit.
    state.drain_tracking().await;
    let served = served.load(Ordering::Relaxed);
    let recorded: u64 = sqlite
        .with_connection(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM events WHERE kind = 'opened'",
                [],
                |r| r.get::<_, i64>(0),
            )? as u64)
        })
        .await?;
    let lost = served.saturating_sub(recorded);
    let (hello, pixel) = (median(hello_rps), median(pixel_rps));
    let ratio = if hello > 0.0 { pixel / hello } else { 0.0 };
    if json {
        print_json(&json!({
            "benchmark": "tracking",
            "seconds_per_turn": args.seconds,
            "connections": args.connections,
            "wrk_threads": args.threads,
            "rounds": rows.iter().map(|(r, h, p)| json!({"round": r, "hello_rps": h, "pixel_rps": p})).collect::<Vec<_>>(),
            "hello_rps": hello,
            "pixel_rps": pixel,
            "ratio": ratio,
            "pixels_served": served,
            "pixels_counted_by_wrk": wrk_pixels,
            "opens_recorded": recorded,
            "lost": lost,
        }));
    } else {
        let mut t = table(&[
            "Round",
            "Hello world (req/s)",
            "Open pixel (req/s)",
            "Ratio",
        ]);
        for (r, h, p) in &rows {
            t.add_row(vec![
                r.to_string(),
                format!("{h:.0}"),
                format!("{p:.0}"),
                format!("{:.2}", p / h.max(1e-9)),
            ]);
        }
        println!("{t}");
        println!(
            "Median: open pixel {pixel:.0} req/s ÷ hello world {hello:.0} req/s = {ratio:.2} (target ≥ 0.6)."
        );
        println!(
            "Pixels served: {served} (wrk counted {wrk_pixels}); opens in the database: {recorded}; lost: {lost}."
        );
    }
    Ok(if lost == 0 && served == recorded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
