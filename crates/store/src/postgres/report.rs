//! PostgreSQL: the facts analytics reports are built from (the same rows as SQLite's).

use engager_domain::{Channel, DeliveryId, LeadId};
use sqlx::Row;

use super::PgStore;
use crate::common::{corrupt_in, from_ms, ms};
use crate::*;

/// The per-delivery aggregation; `$1..$3` are since, until and the campaign slug (or NULL).
/// Event details are JSON text written by Engager itself.
const FACTS: &str = "\
SELECT d.id, d.lead_id, c.slug, d.step_index, d.channel, COALESCE(l.country, '') AS country,
       COALESCE(l.industry, '') AS industry, d.sent_at,
       COALESCE(bool_or(e.kind = 'delivered'), false),
       COALESCE(bool_or(e.kind = 'opened' AND COALESCE(e.detail::jsonb ->> 'automated', 'false') <> 'true'), false),
       COALESCE(bool_or(e.kind = 'clicked' AND COALESCE(e.detail::jsonb ->> 'automated', 'false') <> 'true'), false),
       COALESCE(bool_or(e.kind IN ('replied', 'negative_reply')), false),
       COALESCE(bool_or(e.kind = 'negative_reply'), false),
       COALESCE(bool_or(e.kind = 'hard_bounce'), false),
       COALESCE(bool_or(e.kind = 'complained'), false),
       COALESCE(bool_or(e.kind = 'unsubscribed' OR rc.class = 'unsubscribe'), false),
       MIN(CASE WHEN e.kind IN ('replied', 'negative_reply') THEN e.occurred_at END),
       d.variant,
       COALESCE(bool_or(e.kind = 'replied'), false) AND NOT COALESCE(bool_or(e.kind = 'replied' AND COALESCE(rc.class, 'positive') = 'positive'), false)
  FROM deliveries d
  JOIN campaigns c ON c.id = d.campaign_id
  JOIN leads l ON l.id = d.lead_id
  LEFT JOIN events e ON e.delivery_id = d.id
  LEFT JOIN reply_classifications rc ON rc.event_id = e.id
 WHERE d.state = 'sent' AND d.sent_at >= $1 AND d.sent_at < $2 AND ($3::text IS NULL OR c.slug = $3)
 GROUP BY d.id, c.slug, l.country, l.industry
 ORDER BY d.sent_at, d.id";

const CONVERSIONS: &str = "\
SELECT e.lead_id, e.occurred_at,
       CASE WHEN jsonb_typeof(e.detail::jsonb -> 'value') = 'number' THEN (e.detail::jsonb ->> 'value')::float8 END
  FROM events e
 WHERE e.kind = 'converted' AND e.occurred_at >= $1
   AND e.lead_id IN (SELECT d.lead_id FROM deliveries d JOIN campaigns c ON c.id = d.campaign_id
                      WHERE d.state = 'sent' AND d.sent_at >= $1 AND d.sent_at < $2 AND ($3::text IS NULL OR c.slug = $3))
 ORDER BY e.occurred_at, e.id";

impl PgStore {
    pub(super) async fn report_facts_impl(&self, query: &ReportQuery) -> StoreResult<ReportFacts> {
        let rows = sqlx::query(FACTS)
            .bind(ms(query.since))
            .bind(ms(query.until))
            .bind(query.campaign.as_deref())
            .fetch_all(self.pool())
            .await?;
        let mut deliveries = Vec::with_capacity(rows.len());
        for r in rows {
            let channel: String = r.try_get(4)?;
            deliveries.push(DeliveryFact {
                delivery_id: DeliveryId(r.try_get(0)?),
                lead_id: LeadId(r.try_get(1)?),
                campaign: r.try_get(2)?,
                step_index: r.try_get::<i64, _>(3)? as usize,
                channel: channel
                    .parse::<Channel>()
                    .map_err(|e| corrupt_in("deliveries", "channel", e))?,
                country: r.try_get(5)?,
                industry: r.try_get(6)?,
                sent_at: from_ms(r.try_get(7)?),
                delivered: r.try_get(8)?,
                opened: r.try_get(9)?,
                clicked: r.try_get(10)?,
                replied: r.try_get(11)?,
                negative_reply: r.try_get(12)?,
                bounced: r.try_get(13)?,
                complained: r.try_get(14)?,
                unsubscribed: r.try_get(15)?,
                first_reply_at: r.try_get::<Option<i64>, _>(16)?.map(from_ms),
                variant: r.try_get(17)?,
                neutral_reply: r.try_get(18)?,
            });
        }
        let conversions = sqlx::query(CONVERSIONS)
            .bind(ms(query.since))
            .bind(ms(query.until))
            .bind(query.campaign.as_deref())
            .fetch_all(self.pool())
            .await?
            .into_iter()
            .map(|r| {
                Ok(ConversionFact {
                    lead_id: LeadId(r.try_get(0)?),
                    at: from_ms(r.try_get(1)?),
                    value: r.try_get(2)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(ReportFacts {
            deliveries,
            conversions,
        })
    }
}

impl PgStore {
    pub(super) async fn sending_counts_impl(
        &self,
        channel: Channel,
        since: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<engager_domain::deliverability::SendingCounts> {
        let r = sqlx::query(
            "SELECT COUNT(*),
                    COUNT(*) FILTER (WHERE EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = d.id AND e.kind = 'hard_bounce')),
                    COUNT(*) FILTER (WHERE EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = d.id AND e.kind = 'complained')),
                    COUNT(*) FILTER (WHERE EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = d.id AND e.kind = 'unsubscribed')),
                    COUNT(*) FILTER (WHERE EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = d.id AND e.kind IN ('replied', 'negative_reply')))
               FROM deliveries d
              WHERE d.channel = $1 AND d.state = 'sent' AND d.sent_at >= $2",
        )
        .bind(channel.as_str())
        .bind(ms(since))
        .fetch_one(self.pool())
        .await?;
        let n = |i: usize| -> StoreResult<u64> { Ok(r.try_get::<i64, _>(i)?.max(0) as u64) };
        Ok(engager_domain::deliverability::SendingCounts {
            sent: n(0)?,
            hard_bounces: n(1)?,
            complaints: n(2)?,
            unsubscribes: n(3)?,
            replies: n(4)?,
        })
    }

    pub(super) async fn sending_halts_impl(&self) -> StoreResult<Vec<SendingHalt>> {
        let rows = sqlx::query(
            "SELECT channel, halted, reason, changed_by, changed_at FROM sending_halts ORDER BY channel",
        )
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|r| {
                let channel: String = r.try_get(0)?;
                Ok(SendingHalt {
                    channel: channel
                        .parse()
                        .map_err(|e| corrupt_in("sending_halts", "channel", e))?,
                    halted: r.try_get::<i32, _>(1)? != 0,
                    reason: r.try_get(2)?,
                    changed_by: r.try_get(3)?,
                    changed_at: from_ms(r.try_get(4)?),
                })
            })
            .collect()
    }

    pub(super) async fn set_sending_halt_impl(&self, halt: &SendingHalt) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO sending_halts (channel, halted, reason, changed_by, changed_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (channel) DO UPDATE SET halted = excluded.halted, reason = excluded.reason, \
                 changed_by = excluded.changed_by, changed_at = excluded.changed_at \
             WHERE sending_halts.halted <> excluded.halted",
        )
        .bind(halt.channel.as_str())
        .bind(i32::from(halt.halted))
        .bind(&halt.reason)
        .bind(&halt.changed_by)
        .bind(ms(halt.changed_at))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }
}

impl PgStore {
    pub(super) async fn suppression_list_impl(&self) -> StoreResult<Vec<SuppressionRecord>> {
        let rows = sqlx::query(
            "SELECT kind, value, reason, source, created_at FROM suppressions ORDER BY kind, value",
        )
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|r| {
                let kind: String = r.try_get(0)?;
                let key = SuppressionKey::from_parts(&kind, r.try_get(1)?).ok_or_else(|| {
                    corrupt_in("suppressions", "kind", format!("unknown kind {kind:?}"))
                })?;
                Ok(SuppressionRecord {
                    key,
                    reason: r.try_get(2)?,
                    source: r.try_get(3)?,
                    created_at: from_ms(r.try_get(4)?),
                })
            })
            .collect()
    }

    pub(super) async fn add_suppressions_impl(
        &self,
        entries: &[SuppressionRecord],
    ) -> StoreResult<u64> {
        let mut tx = self.pool().begin().await?;
        let mut added = 0;
        for chunk in entries.chunks(1000) {
            let kinds: Vec<&str> = chunk.iter().map(|e| e.key.kind()).collect();
            let values: Vec<&str> = chunk.iter().map(|e| e.key.value()).collect();
            let reasons: Vec<&str> = chunk.iter().map(|e| e.reason.as_str()).collect();
            let sources: Vec<&str> = chunk.iter().map(|e| e.source.as_str()).collect();
            let times: Vec<i64> = chunk.iter().map(|e| ms(e.created_at)).collect();
            added += sqlx::query(
                "INSERT INTO suppressions (kind, value, reason, source, created_at) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) \
                 ON CONFLICT (kind, value) DO NOTHING",
            )
            .bind(&kinds)
            .bind(&values)
            .bind(&reasons)
            .bind(&sources)
            .bind(&times)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(added)
    }
}

impl PgStore {
    pub(super) async fn resolve_review_impl(
        &self,
        id: DeliveryId,
        resolution: &ReviewResolution,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<bool> {
        let now = ms(now);
        let mut tx = self.pool().begin().await?;
        let changed = match resolution {
            ReviewResolution::Approve {
                subject,
                body_text,
                body_html,
            } => sqlx::query(
                "UPDATE deliveries SET state = 'planned', subject = $1, body_text = $2, body_html = $3, \
                 send_at = GREATEST(send_at, $4), updated_at = $4 WHERE id = $5 AND state = 'pending_review'",
            )
            .bind(subject.as_deref())
            .bind(body_text)
            .bind(body_html.as_deref())
            .bind(now)
            .bind(id.0)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
            ReviewResolution::Drop { reason, next_due } => {
                let n = sqlx::query(
                    "UPDATE deliveries SET state = 'cancelled', last_error = $1, updated_at = $2 \
                     WHERE id = $3 AND state = 'pending_review'",
                )
                .bind(reason)
                .bind(now)
                .bind(id.0)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n > 0 {
                    sqlx::query(
                        "UPDATE enrollments e SET current_step = e.current_step + 1, next_due_at = $1, \
                         state = CASE WHEN $1::bigint IS NULL THEN 'completed' ELSE 'active' END, updated_at = $2 \
                         FROM deliveries d WHERE d.id = $3 AND e.id = d.enrollment_id \
                           AND e.current_step = d.step_index AND e.state = 'waiting'",
                    )
                    .bind(next_due.map(ms))
                    .bind(now)
                    .bind(id.0)
                    .execute(&mut *tx)
                    .await?;
                }
                n
            }
        };
        tx.commit().await?;
        Ok(changed > 0)
    }
}

impl PgStore {
    pub(super) async fn channel_evidence_impl(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<Vec<ChannelEvidenceRow>> {
        let rows = sqlx::query(
            "SELECT COALESCE(l.industry, ''), COALESCE(l.country, ''), d.channel, COUNT(*), \
                    COUNT(*) FILTER (WHERE EXISTS (SELECT 1 FROM events e LEFT JOIN reply_classifications rc ON rc.event_id = e.id \
                                          WHERE e.delivery_id = d.id AND e.kind = 'replied' AND COALESCE(rc.class, 'positive') = 'positive') \
                         AND NOT EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = d.id AND e.kind = 'negative_reply')) \
               FROM deliveries d JOIN leads l ON l.id = d.lead_id \
              WHERE d.state = 'sent' AND d.sent_at >= $1 \
              GROUP BY 1, 2, 3",
        )
        .bind(ms(since))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|r| {
                let channel: String = r.try_get(2)?;
                Ok(ChannelEvidenceRow {
                    industry: r.try_get(0)?,
                    country: r.try_get(1)?,
                    channel: channel
                        .parse()
                        .map_err(|e| corrupt_in("deliveries", "channel", e))?,
                    sent: r.try_get::<i64, _>(3)?.max(0) as u64,
                    positive: r.try_get::<i64, _>(4)?.max(0) as u64,
                })
            })
            .collect()
    }
}
