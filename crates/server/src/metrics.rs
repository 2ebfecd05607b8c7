//! `GET /metrics`: the ledger, the sending accounts and the deliverability halts in
//! Prometheus' text format, read from the database (so every process's work shows, whichever
//! serves the scrape). Counts only: no address, name or message text.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use engager_domain::{Channel, DeliveryState};
use tracing::warn;

use crate::ServerState;

/// The route of the metrics.
pub const METRICS_PATH: &str = "/metrics";
/// The readiness route.
pub const READY_PATH: &str = "/readyz";

pub(crate) fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub(crate) async fn metrics(State(state): State<ServerState>) -> Response {
    let now = state.clock.now();
    let (ledger, accounts, halts) = match (
        state.store.ledger_overview().await,
        state.store.account_states().await,
        state.store.sending_halts().await,
    ) {
        (Ok(l), Ok(a), Ok(h)) => (l, a, h),
        (l, a, h) => {
            let error = [l.err(), a.err(), h.err()]
                .into_iter()
                .flatten()
                .map(|e| e.to_string())
                .next()
                .unwrap_or_default();
            warn!(%error, "Metrics: the store does not answer.");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "# the store does not answer\nengager_up 0\n",
            )
                .into_response();
        }
    };
    let mut out = String::with_capacity(4096);
    let _ = writeln!(
        out,
        "# HELP engager_up Whether the store answered this scrape."
    );
    let _ = writeln!(out, "# TYPE engager_up gauge\nengager_up 1");
    let _ = writeln!(
        out,
        "# HELP engager_deliveries Deliveries in the ledger, by channel and state."
    );
    let _ = writeln!(out, "# TYPE engager_deliveries gauge");
    for channel in Channel::ALL {
        for state in DeliveryState::ALL {
            let count = ledger
                .iter()
                .filter(|r| r.channel == channel && r.state == state)
                .map(|r| r.count)
                .sum::<u64>();
            let _ = writeln!(
                out,
                "engager_deliveries{{channel=\"{}\",state=\"{}\"}} {count}",
                channel.as_str(),
                state.as_str()
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP engager_queue_due Deliveries due now (planned or waiting to retry, due time passed), by channel."
    );
    let _ = writeln!(out, "# TYPE engager_queue_due gauge");
    let _ = writeln!(
        out,
        "# HELP engager_oldest_due_age_seconds Age of the oldest due delivery, by channel (0 when none is due)."
    );
    let _ = writeln!(out, "# TYPE engager_oldest_due_age_seconds gauge");
    for channel in Channel::ALL {
        let (due, oldest) = due_queue(&ledger, channel, now);
        let _ = writeln!(
            out,
            "engager_queue_due{{channel=\"{}\"}} {due}",
            channel.as_str()
        );
        let _ = writeln!(
            out,
            "engager_oldest_due_age_seconds{{channel=\"{}\"}} {}",
            channel.as_str(),
            oldest.map_or(0, |t| (now - t).num_seconds().max(0))
        );
    }
    let _ = writeln!(
        out,
        "# HELP engager_circuit_open Whether a sending account's circuit is open (1) or not (0)."
    );
    let _ = writeln!(out, "# TYPE engager_circuit_open gauge");
    for a in &accounts {
        let open = a.open_until.is_some_and(|u| u > now);
        let _ = writeln!(
            out,
            "engager_circuit_open{{account=\"{}\",state=\"{}\"}} {}",
            label(&a.account),
            label(&a.circuit),
            u8::from(open)
        );
    }
    let _ = writeln!(
        out,
        "# HELP engager_sending_halted Whether the deliverability monitor halted a channel (1) or not (0)."
    );
    let _ = writeln!(out, "# TYPE engager_sending_halted gauge");
    for channel in Channel::ALL {
        let halted = halts.iter().any(|h| h.channel == channel && h.halted);
        let _ = writeln!(
            out,
            "engager_sending_halted{{channel=\"{}\"}} {}",
            channel.as_str(),
            u8::from(halted)
        );
    }
    state.http_latency.render(&mut out);
    match state.store.latency_histograms().await {
        Ok(histograms) => crate::latency::render_ledger(&histograms, &mut out),
        Err(e) => warn!(error = %e, "Metrics: the ledger's latency histograms are unavailable."),
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// A channel's due queue: deliveries planned or waiting to retry, counted when the oldest
/// due time has passed, and that oldest due time.
pub(crate) fn due_queue(
    ledger: &[engager_store::LedgerRow],
    channel: Channel,
    now: chrono::DateTime<chrono::Utc>,
) -> (u64, Option<chrono::DateTime<chrono::Utc>>) {
    let waiting: Vec<_> = ledger
        .iter()
        .filter(|r| {
            r.channel == channel
                && matches!(r.state, DeliveryState::Planned | DeliveryState::RetryWait)
        })
        .collect();
    let oldest = waiting
        .iter()
        .filter_map(|r| r.oldest_due)
        .filter(|t| *t <= now)
        .min();
    let due = if oldest.is_some() {
        waiting.iter().map(|r| r.count).sum::<u64>()
    } else {
        0
    };
    (due, oldest)
}

pub(crate) async fn ready(State(state): State<ServerState>) -> Response {
    match state.store.next_due_at().await {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => {
            warn!(error = %e, "Readiness: the store does not answer.");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the store does not answer\n",
            )
                .into_response()
        }
    }
}
