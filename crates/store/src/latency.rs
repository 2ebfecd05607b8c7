//! Latency histograms read from the ledger's timestamps, for `/metrics`: how long after its
//! due time a delivery was accepted by the provider, and how long after that the provider
//! reported it delivered. Aggregated in SQL (one row per channel), so a scrape moves a few
//! numbers, not the ledger.

use engager_domain::Channel;

/// Upper bounds of the buckets, seconds (the `+Inf` bucket is the count).
pub const LATENCY_BUCKETS_SECONDS: [u64; 10] =
    [1, 5, 15, 60, 300, 900, 3600, 14_400, 86_400, 604_800];

/// Which interval a histogram measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencyKind {
    /// From the delivery's due time (`send_at`) to the provider accepting it (`sent_at`):
    /// queueing, rate limits, retries and the provider call together.
    SendDelay,
    /// From the provider accepting a message (`sent_at`) to its first `delivered` event
    /// (channels that report delivery only).
    DeliveryReport,
}

/// One channel's histogram over every sent delivery in the ledger (cumulative, as
/// Prometheus expects; erasure and retention can only remove rows).
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyHistogram {
    /// What it measures.
    pub kind: LatencyKind,
    /// The channel.
    pub channel: Channel,
    /// Observations at or under each bound of [`LATENCY_BUCKETS_SECONDS`] (cumulative).
    pub buckets: Vec<u64>,
    /// Observations.
    pub count: u64,
    /// Their sum, seconds (negative intervals, e.g. a send forced before its due time, count
    /// as 0).
    pub sum_seconds: f64,
}

/// The aggregation query of `kind`, the same text on SQLite and PostgreSQL (times are
/// milliseconds in both). Columns: channel, count, sum of milliseconds, then one cumulative
/// count per bucket.
pub(crate) fn histogram_sql(kind: LatencyKind) -> String {
    let source = match kind {
        LatencyKind::SendDelay => {
            "SELECT d.channel AS channel, d.sent_at - d.send_at AS v \
               FROM deliveries d WHERE d.sent_at IS NOT NULL"
        }
        LatencyKind::DeliveryReport => {
            "SELECT d.channel AS channel, MIN(e.occurred_at) - d.sent_at AS v \
               FROM deliveries d JOIN events e ON e.delivery_id = d.id AND e.kind = 'delivered' \
              WHERE d.sent_at IS NOT NULL GROUP BY d.id, d.channel, d.sent_at"
        }
    };
    let mut sql = String::from(
        "SELECT channel, COUNT(*), CAST(COALESCE(SUM(CASE WHEN v < 0 THEN 0 ELSE v END), 0) AS BIGINT)",
    );
    for bound in LATENCY_BUCKETS_SECONDS {
        sql.push_str(&format!(
            ", CAST(COALESCE(SUM(CASE WHEN v <= {} THEN 1 ELSE 0 END), 0) AS BIGINT)",
            bound * 1000
        ));
    }
    sql.push_str(&format!(
        " FROM ({source}) t GROUP BY channel ORDER BY channel"
    ));
    sql
}

/// A histogram from one row's numbers (`count`, `sum_ms`, then the bucket counts).
pub(crate) fn histogram(
    kind: LatencyKind,
    channel: Channel,
    count: i64,
    sum_ms: i64,
    buckets: Vec<i64>,
) -> LatencyHistogram {
    LatencyHistogram {
        kind,
        channel,
        buckets: buckets.into_iter().map(|b| b.max(0) as u64).collect(),
        count: count.max(0) as u64,
        sum_seconds: sum_ms.max(0) as f64 / 1000.0,
    }
}
