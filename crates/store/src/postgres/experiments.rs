//! PostgreSQL: A/B experiment results, assignments and decisions; reply classification; leads
//! by source reference (the same rows as SQLite's).

use engager_domain::reply::ReplyClass;
use engager_domain::{CampaignId, DeliveryId, EventKind, LeadId};
use sqlx::Row;

use super::PgStore;
use crate::common::{corrupt_in, from_ms, from_ms_opt, ms};
use crate::*;

/// See the SQLite query: the same counts, with `COUNT(*) FILTER` for SQLite's boolean sums.
const VARIANT_COUNTS: &str = "\
SELECT d.campaign_id, d.step_index, d.variant, COUNT(*),
       COUNT(*) FILTER (WHERE EXISTS (SELECT 1 FROM events e LEFT JOIN reply_classifications rc ON rc.event_id = e.id
                                       WHERE e.delivery_id = d.id AND e.kind = 'replied' AND COALESCE(rc.class, 'positive') = 'positive')
                          AND NOT EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = d.id AND e.kind = 'negative_reply')),
       COALESCE(SUM((SELECT COUNT(*) FROM events e
                      WHERE e.lead_id = d.lead_id AND e.kind = 'converted' AND e.occurred_at >= d.sent_at
                        AND NOT EXISTS (SELECT 1 FROM deliveries d2
                                         WHERE d2.lead_id = d.lead_id AND d2.state = 'sent' AND d2.id <> d.id
                                           AND d2.sent_at <= e.occurred_at
                                           AND (d2.sent_at > d.sent_at OR (d2.sent_at = d.sent_at AND d2.id > d.id))))), 0)::BIGINT,
       COUNT(*) FILTER (WHERE EXISTS (SELECT 1 FROM events e LEFT JOIN reply_classifications rc ON rc.event_id = e.id
                                       WHERE e.delivery_id = d.id AND (e.kind = 'unsubscribed' OR rc.class = 'unsubscribe'))),
       COUNT(*) FILTER (WHERE EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = d.id AND e.kind = 'complained'))
  FROM deliveries d
 WHERE d.state = 'sent' AND d.variant IS NOT NULL
 GROUP BY d.campaign_id, d.step_index, d.variant
 ORDER BY d.campaign_id, d.step_index, d.variant";

fn count(v: i64) -> u64 {
    v.max(0) as u64
}

fn describe(reply: &ReplyRef) -> String {
    match reply {
        ReplyRef::Event(id) => format!("reply event {id}"),
        ReplyRef::External(id) => format!("reply with message id {id}"),
    }
}

impl PgStore {
    pub(super) async fn variant_counts_impl(&self) -> StoreResult<Vec<VariantCountRow>> {
        let rows = sqlx::query(VARIANT_COUNTS).fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| {
                Ok(VariantCountRow {
                    campaign_id: CampaignId(r.try_get(0)?),
                    step_index: r.try_get::<i64, _>(1)? as usize,
                    variant: r.try_get(2)?,
                    sent: count(r.try_get(3)?),
                    positive: count(r.try_get(4)?),
                    conversions: count(r.try_get(5)?),
                    unsubscribes: count(r.try_get(6)?),
                    complaints: count(r.try_get(7)?),
                })
            })
            .collect()
    }

    pub(super) async fn variant_assignments_impl(
        &self,
        leads: &[LeadId],
    ) -> StoreResult<Vec<VariantAssignment>> {
        let ids: Vec<i64> = leads.iter().map(|l| l.0).collect();
        let rows = sqlx::query(
            "SELECT lead_id, campaign_id, step_index, variant FROM deliveries \
             WHERE variant IS NOT NULL AND lead_id = ANY($1) ORDER BY id",
        )
        .bind(&ids)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(VariantAssignment {
                    lead_id: LeadId(r.try_get(0)?),
                    campaign_id: CampaignId(r.try_get(1)?),
                    step_index: r.try_get::<i64, _>(2)? as usize,
                    variant: r.try_get(3)?,
                })
            })
            .collect()
    }

    pub(super) async fn experiment_decisions_impl(&self) -> StoreResult<Vec<ExperimentDecision>> {
        let rows = sqlx::query(
            "SELECT experiment, state, variant, source, reason, decided_at FROM experiment_decisions ORDER BY experiment",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get(1)?;
                Ok(ExperimentDecision {
                    experiment: r.try_get(0)?,
                    state: DecisionState::parse(&state).ok_or_else(|| {
                        corrupt_in(
                            "experiment_decisions",
                            "state",
                            format!("unknown state {state:?}"),
                        )
                    })?,
                    variant: r.try_get(2)?,
                    source: r.try_get(3)?,
                    reason: r.try_get(4)?,
                    decided_at: from_ms(r.try_get(5)?),
                })
            })
            .collect()
    }

    pub(super) async fn save_experiment_decision_impl(
        &self,
        d: &ExperimentDecision,
        audit: &AuditEntry,
    ) -> StoreResult<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO experiment_decisions (experiment, state, variant, source, reason, decided_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (experiment) DO UPDATE SET state = EXCLUDED.state, variant = EXCLUDED.variant, \
             source = EXCLUDED.source, reason = EXCLUDED.reason, decided_at = EXCLUDED.decided_at",
        )
        .bind(&d.experiment)
        .bind(d.state.as_str())
        .bind(&d.variant)
        .bind(&d.source)
        .bind(&d.reason)
        .bind(ms(d.decided_at))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO audit_log (at, action, subject, detail, actor) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(ms(audit.at))
        .bind(&audit.action)
        .bind(&audit.subject)
        .bind(&audit.detail)
        .bind(&audit.actor)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn classify_reply_impl(
        &self,
        r: &ReplyClassification,
    ) -> StoreResult<ClassifiedReply> {
        let mut tx = self.pool().begin().await?;
        let row = match &r.reply {
            ReplyRef::Event(id) => {
                sqlx::query(
                    "SELECT id, lead_id, delivery_id, kind FROM events WHERE id = $1 FOR UPDATE",
                )
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
            }
            ReplyRef::External(id) => {
                sqlx::query(
                    "SELECT id, lead_id, delivery_id, kind FROM events WHERE external_id = $1 FOR UPDATE",
                )
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
            }
        };
        let Some(row) = row else {
            return Err(StoreError::NotFound(describe(&r.reply)));
        };
        let event_id: i64 = row.try_get(0)?;
        let lead: i64 = row.try_get(1)?;
        let delivery: Option<i64> = row.try_get(2)?;
        let kind: String = row.try_get(3)?;
        let kind: EventKind = kind.parse().map_err(|e| corrupt_in("events", "kind", e))?;
        if !REPLY_KINDS.contains(&kind) {
            return Err(StoreError::NotFound(format!(
                "{} as a reply (it is a {kind} event; only replied, negative_reply and auto_replied events can be classified)",
                describe(&r.reply)
            )));
        }
        let previous: Option<String> =
            sqlx::query_scalar("SELECT class FROM reply_classifications WHERE event_id = $1")
                .bind(event_id)
                .fetch_optional(&mut *tx)
                .await?;
        let previous = previous
            .map(|p| {
                p.parse::<ReplyClass>()
                    .map_err(|e| corrupt_in("reply_classifications", "class", e))
            })
            .transpose()?;
        sqlx::query(
            "INSERT INTO reply_classifications (event_id, lead_id, class, source, reason, classified_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (event_id) DO UPDATE SET class = EXCLUDED.class, source = EXCLUDED.source, \
             reason = EXCLUDED.reason, classified_at = EXCLUDED.classified_at",
        )
        .bind(event_id)
        .bind(lead)
        .bind(r.class.as_str())
        .bind(&r.source)
        .bind(&r.reason)
        .bind(ms(r.at))
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE events SET kind = $1 WHERE id = $2")
            .bind(r.class.event_kind().as_str())
            .bind(event_id)
            .execute(&mut *tx)
            .await?;
        let effect = if r.class.opts_out() {
            EventKind::Unsubscribed
        } else {
            r.class.event_kind()
        };
        let event = NewEvent {
            lead_id: LeadId(lead),
            delivery_id: delivery.map(DeliveryId),
            kind: effect,
            occurred_at: r.at,
            detail: "{}".into(),
            source: format!("reply-classification:{}", r.source),
        };
        let effects = super::event_effects(&mut tx, &event, ms(r.at)).await?;
        tx.commit().await?;
        Ok(ClassifiedReply {
            event_id,
            lead_id: LeadId(lead),
            delivery_id: delivery.map(DeliveryId),
            previous,
            previous_kind: kind,
            effects,
        })
    }

    pub(super) async fn replies_impl(
        &self,
        lead: Option<LeadId>,
        limit: usize,
    ) -> StoreResult<Vec<ReplyRecord>> {
        let rows = sqlx::query(
            "SELECT e.id, e.lead_id, e.delivery_id, e.kind, e.occurred_at, e.source, rc.class, rc.source, rc.reason, rc.classified_at \
               FROM events e LEFT JOIN reply_classifications rc ON rc.event_id = e.id \
              WHERE e.kind IN ('replied', 'negative_reply', 'auto_replied') AND ($1::BIGINT IS NULL OR e.lead_id = $1) \
              ORDER BY e.occurred_at DESC, e.id DESC LIMIT $2",
        )
        .bind(lead.map(|l| l.0))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get(3)?;
                let class: Option<String> = r.try_get(6)?;
                Ok(ReplyRecord {
                    event_id: r.try_get(0)?,
                    lead_id: LeadId(r.try_get(1)?),
                    delivery_id: r.try_get::<Option<i64>, _>(2)?.map(DeliveryId),
                    kind: kind.parse().map_err(|e| corrupt_in("events", "kind", e))?,
                    occurred_at: from_ms(r.try_get(4)?),
                    event_source: r.try_get(5)?,
                    class: class
                        .map(|c| {
                            c.parse::<ReplyClass>()
                                .map_err(|e| corrupt_in("reply_classifications", "class", e))
                        })
                        .transpose()?,
                    classified_by: r.try_get(7)?,
                    reason: r.try_get(8)?,
                    classified_at: from_ms_opt(r.try_get(9)?),
                })
            })
            .collect()
    }

    pub(super) async fn lead_by_source_ref_impl(
        &self,
        source: &str,
        source_ref: &str,
    ) -> StoreResult<Option<LeadId>> {
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM leads WHERE source = $1 AND source_ref = $2 ORDER BY id LIMIT 1",
        )
        .bind(source)
        .bind(source_ref)
        .fetch_optional(self.pool())
        .await?;
        Ok(id.map(LeadId))
    }
}
