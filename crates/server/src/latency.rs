//! Latency histograms for `/metrics`.
//!
//! - `engager_http_request_duration_seconds{route,method,status}`: measured in this process by
//!   a middleware around every matched route (the route's template, e.g. `/u/{token}`, never
//!   the token itself), from the request reaching the router to the response head being ready.
//!   Requests cut by the request timeout and unmatched paths are not counted. Resets when the
//!   process restarts, as Prometheus counters may.
//! - `engager_send_delay_seconds{channel}` and `engager_delivery_report_seconds{channel}`:
//!   read from the ledger at each scrape (every process's sends, whichever serves the scrape),
//!   see `engager_store::LatencyKind`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use engager_store::{LatencyHistogram, LatencyKind, LATENCY_BUCKETS_SECONDS};

/// Upper bounds of the HTTP buckets, seconds.
pub const HTTP_BUCKETS_SECONDS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Per bucket (not cumulative here; summed when rendered).
    buckets: [u64; HTTP_BUCKETS_SECONDS.len()],
    count: u64,
    sum: f64,
}

/// The HTTP request durations of this process, by (route, method, status class).
#[derive(Debug, Default)]
pub struct HttpLatency {
    series: Mutex<BTreeMap<(String, String, &'static str), Histogram>>,
}

impl HttpLatency {
    /// Records one request.
    pub fn observe(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let h = series
            .entry((route.to_owned(), method.to_owned(), class))
            .or_default();
        if let Some(i) = HTTP_BUCKETS_SECONDS.iter().position(|b| seconds <= *b) {
            h.buckets[i] += 1;
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// The histogram in Prometheus' text format.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP engager_http_request_duration_seconds Time to answer an HTTP request, by route template, method and status class (measured in this process since it started)."
        );
        let _ = writeln!(
            out,
            "# TYPE engager_http_request_duration_seconds histogram"
        );
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        for ((route, method, status), h) in series.iter() {
            let labels = format!(
                "route=\"{}\",method=\"{}\",status=\"{status}\"",
                crate::metrics::label(route),
                crate::metrics::label(method)
            );
            let mut cumulative = 0;
            for (bound, n) in HTTP_BUCKETS_SECONDS.iter().zip(h.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "engager_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "engager_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "engager_http_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "engager_http_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
    }
}

/// The middleware: times each matched request.
pub(crate) async fn track(
    axum::extract::State(state): axum::extract::State<crate::ServerState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    state.http_latency.observe(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// The ledger's latency histograms in Prometheus' text format.
pub(crate) fn render_ledger(histograms: &[LatencyHistogram], out: &mut String) {
    for (kind, name, help) in [
        (
            LatencyKind::SendDelay,
            "engager_send_delay_seconds",
            "From a delivery's due time to the provider accepting it (queueing, rate limits, retries and the provider call), over every sent delivery in the ledger, by channel.",
        ),
        (
            LatencyKind::DeliveryReport,
            "engager_delivery_report_seconds",
            "From the provider accepting a message to its delivery report, over every reported delivery in the ledger, by channel.",
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for h in histograms.iter().filter(|h| h.kind == kind) {
            let channel = h.channel.as_str();
            for (bound, n) in LATENCY_BUCKETS_SECONDS.iter().zip(&h.buckets) {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{channel=\"{channel}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{channel=\"{channel}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "{name}_sum{{channel=\"{channel}\"}} {}", h.sum_seconds);
            let _ = writeln!(out, "{name}_count{{channel=\"{channel}\"}} {}", h.count);
        }
    }
}
