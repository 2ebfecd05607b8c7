//! SQLite: the ledger's latency histograms (see `crate::latency`).

use engager_domain::Channel;
use rusqlite::Connection;

use crate::common::corrupt_in;
use crate::latency::{histogram, histogram_sql, LATENCY_BUCKETS_SECONDS};
use crate::*;

pub(super) fn latency_histograms(c: &mut Connection) -> StoreResult<Vec<LatencyHistogram>> {
    let mut out = Vec::new();
    for kind in [LatencyKind::SendDelay, LatencyKind::DeliveryReport] {
        let mut stmt = c.prepare_cached(&histogram_sql(kind))?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let channel: String = r.get(0)?;
            let channel: Channel = channel
                .parse()
                .map_err(|e| corrupt_in("deliveries", "channel", e))?;
            let mut buckets = Vec::with_capacity(LATENCY_BUCKETS_SECONDS.len());
            for i in 0..LATENCY_BUCKETS_SECONDS.len() {
                buckets.push(r.get::<_, i64>(3 + i)?);
            }
            out.push(histogram(kind, channel, r.get(1)?, r.get(2)?, buckets));
        }
    }
    Ok(out)
}
