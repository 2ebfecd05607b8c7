//! PostgreSQL: open and click tracking (tracked links, the writer's batches).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use engager_domain::{DeliveryId, LeadId};
use sqlx::{QueryBuilder, Row};

use super::PgStore;
use crate::common::{from_ms_opt, ms};
use crate::*;

impl PgStore {
    pub(super) async fn save_tracked_message_impl(
        &self,
        id: DeliveryId,
        token: i64,
        message: &TrackedMessage,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let lead: Option<i64> = sqlx::query_scalar(
            "UPDATE deliveries SET body_text = $1, body_html = $2, updated_at = $3 \
             WHERE id = $4 AND fencing_token = $5 AND state IN ('claimed', 'sending') RETURNING lead_id",
        )
        .bind(&message.body_text)
        .bind(&message.body_html)
        .bind(ms(now))
        .bind(id.0)
        .bind(token)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(lead) = lead else {
            return Ok(false);
        };
        if !message.links.is_empty() {
            let mut q = QueryBuilder::new(
                "INSERT INTO tracked_links (delivery_id, link_index, lead_id, url, created_at) ",
            );
            q.push_values(&message.links, |mut b, (index, url)| {
                b.push_bind(id.0)
                    .push_bind(i32::try_from(*index).unwrap_or(i32::MAX))
                    .push_bind(lead)
                    .push_bind(url)
                    .push_bind(ms(now));
            });
            q.push(" ON CONFLICT (delivery_id, link_index) DO NOTHING");
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    pub(super) async fn tracked_link_impl(
        &self,
        id: DeliveryId,
        index: u32,
    ) -> StoreResult<Option<String>> {
        let Ok(index) = i32::try_from(index) else {
            return Ok(None);
        };
        Ok(sqlx::query_scalar(
            "SELECT url FROM tracked_links WHERE delivery_id = $1 AND link_index = $2",
        )
        .bind(id.0)
        .bind(index)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub(super) async fn tracking_targets_impl(
        &self,
        ids: &[DeliveryId],
    ) -> StoreResult<HashMap<DeliveryId, TrackingTarget>> {
        let ids: Vec<i64> = ids.iter().map(|d| d.0).collect();
        let rows = sqlx::query(
            "SELECT d.id, d.lead_id, d.sent_at, \
                    (SELECT COUNT(*) FROM tracked_links t WHERE t.delivery_id = d.id) \
               FROM deliveries d WHERE d.id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in rows {
            let id = DeliveryId(r.try_get(0)?);
            out.insert(
                id,
                TrackingTarget {
                    delivery_id: id,
                    lead_id: LeadId(r.try_get(1)?),
                    sent_at: from_ms_opt(r.try_get(2)?),
                    links: u32::try_from(r.try_get::<i64, _>(3)?).unwrap_or(u32::MAX),
                },
            );
        }
        Ok(out)
    }

    pub(super) async fn record_tracking_events_impl(
        &self,
        events: &[NewEvent],
        reflag: &[(i64, String)],
    ) -> StoreResult<Vec<i64>> {
        let mut tx = self.pool.begin().await?;
        let mut ids = Vec::with_capacity(events.len());
        for chunk in events.chunks(1000) {
            let mut q = QueryBuilder::new(
                "INSERT INTO events (lead_id, delivery_id, kind, occurred_at, detail, source) ",
            );
            q.push_values(chunk, |mut b, e| {
                b.push_bind(e.lead_id.0)
                    .push_bind(e.delivery_id.map(|d| d.0))
                    .push_bind(e.kind.as_str())
                    .push_bind(ms(e.occurred_at))
                    .push_bind(&e.detail)
                    .push_bind(&e.source);
            });
            q.push(" RETURNING id");
            let rows = q.build().fetch_all(&mut *tx).await?;
            // Identity values are drawn row by row in VALUES order: sorted, they line up with
            // the chunk whatever order RETURNING gives them in.
            let mut chunk_ids = rows
                .iter()
                .map(|r| r.try_get::<i64, _>(0))
                .collect::<Result<Vec<_>, _>>()?;
            chunk_ids.sort_unstable();
            ids.extend(chunk_ids);
        }
        for (id, detail) in reflag {
            sqlx::query("UPDATE events SET detail = $1 WHERE id = $2")
                .bind(detail)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(ids)
    }
}
