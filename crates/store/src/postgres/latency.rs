//! PostgreSQL: the ledger's latency histograms (see `crate::latency`).

use engager_domain::Channel;
use sqlx::Row;

use super::PgStore;
use crate::common::corrupt_in;
use crate::latency::{histogram, histogram_sql, LATENCY_BUCKETS_SECONDS};
use crate::*;

impl PgStore {
    pub(super) async fn latency_histograms_impl(&self) -> StoreResult<Vec<LatencyHistogram>> {
        let mut out = Vec::new();
        for kind in [LatencyKind::SendDelay, LatencyKind::DeliveryReport] {
            let rows = sqlx::query(&histogram_sql(kind))
                .fetch_all(self.pool())
                .await?;
            for r in rows {
                let channel: String = r.try_get(0)?;
                let channel: Channel = channel
                    .parse()
                    .map_err(|e| corrupt_in("deliveries", "channel", e))?;
                let mut buckets = Vec::with_capacity(LATENCY_BUCKETS_SECONDS.len());
                for i in 0..LATENCY_BUCKETS_SECONDS.len() {
                    buckets.push(r.try_get::<i64, _>(3 + i)?);
                }
                out.push(histogram(
                    kind,
                    channel,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    buckets,
                ));
            }
        }
        Ok(out)
    }
}
