//! SQLite: A/B experiment results, assignments and decisions; reply classification; leads by
//! source reference.

use engager_domain::reply::ReplyClass;
use engager_domain::{CampaignId, DeliveryId, EventKind, LeadId};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, TransactionBehavior};

use crate::common::{corrupt_in, from_ms, from_ms_opt, ms};
use crate::*;

/// Per (campaign, step, variant): sends, positive replies (the reports' rule: a reply
/// classified positive or not classified, and no negative reply), last-touch conversions,
/// unsubscribes (or replies asking to unsubscribe) and complaints.
pub(super) const VARIANT_COUNTS: &str = "\
SELECT d.campaign_id, d.step_index, d.variant, COUNT(*),
       COALESCE(SUM(EXISTS (SELECT 1 FROM events e LEFT JOIN reply_classifications rc ON rc.event_id = e.id
                             WHERE e.delivery_id = d.id AND e.kind = 'replied' AND COALESCE(rc.class, 'positive') = 'positive')
                AND NOT EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = d.id AND e.kind = 'negative_reply')), 0),
       COALESCE(SUM((SELECT COUNT(*) FROM events e
                      WHERE e.lead_id = d.lead_id AND e.kind = 'converted' AND e.occurred_at >= d.sent_at
                        AND NOT EXISTS (SELECT 1 FROM deliveries d2
                                         WHERE d2.lead_id = d.lead_id AND d2.state = 'sent' AND d2.id <> d.id
                                           AND d2.sent_at <= e.occurred_at
                                           AND (d2.sent_at > d.sent_at OR (d2.sent_at = d.sent_at AND d2.id > d.id))))), 0),
       COALESCE(SUM(EXISTS (SELECT 1 FROM events e LEFT JOIN reply_classifications rc ON rc.event_id = e.id
                             WHERE e.delivery_id = d.id AND (e.kind = 'unsubscribed' OR rc.class = 'unsubscribe'))), 0),
       COALESCE(SUM(EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = d.id AND e.kind = 'complained')), 0)
  FROM deliveries d
 WHERE d.state = 'sent' AND d.variant IS NOT NULL
 GROUP BY d.campaign_id, d.step_index, d.variant
 ORDER BY d.campaign_id, d.step_index, d.variant";

fn count(v: i64) -> u64 {
    v.max(0) as u64
}

pub(super) fn variant_counts(c: &mut Connection) -> StoreResult<Vec<VariantCountRow>> {
    let mut stmt = c.prepare_cached(VARIANT_COUNTS)?;
    let rows = stmt
        .query_map([], |r| {
            Ok(VariantCountRow {
                campaign_id: CampaignId(r.get(0)?),
                step_index: r.get::<_, i64>(1)? as usize,
                variant: r.get(2)?,
                sent: count(r.get(3)?),
                positive: count(r.get(4)?),
                conversions: count(r.get(5)?),
                unsubscribes: count(r.get(6)?),
                complaints: count(r.get(7)?),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(super) fn variant_assignments(
    c: &mut Connection,
    leads: &[LeadId],
) -> StoreResult<Vec<VariantAssignment>> {
    let mut out = Vec::new();
    for chunk in leads.chunks(500) {
        let sql = format!(
            "SELECT lead_id, campaign_id, step_index, variant FROM deliveries \
             WHERE variant IS NOT NULL AND lead_id IN ({}) ORDER BY id",
            super::placeholders(chunk.len())
        );
        let mut stmt = c.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(chunk.iter().map(|l| l.0)), |r| {
            Ok(VariantAssignment {
                lead_id: LeadId(r.get(0)?),
                campaign_id: CampaignId(r.get(1)?),
                step_index: r.get::<_, i64>(2)? as usize,
                variant: r.get(3)?,
            })
        })?;
        for row in rows {
            out.push(row?);
        }
    }
    Ok(out)
}

pub(super) fn experiment_decisions(c: &mut Connection) -> StoreResult<Vec<ExperimentDecision>> {
    let mut stmt = c.prepare_cached(
        "SELECT experiment, state, variant, source, reason, decided_at FROM experiment_decisions ORDER BY experiment",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(experiment, state, variant, source, reason, at)| {
            Ok(ExperimentDecision {
                experiment,
                state: DecisionState::parse(&state).ok_or_else(|| {
                    corrupt_in(
                        "experiment_decisions",
                        "state",
                        format!("unknown state {state:?}"),
                    )
                })?,
                variant,
                source,
                reason,
                decided_at: from_ms(at),
            })
        })
        .collect()
}

pub(super) fn save_experiment_decision(
    c: &mut Connection,
    d: &ExperimentDecision,
    audit: &AuditEntry,
) -> StoreResult<()> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO experiment_decisions (experiment, state, variant, source, reason, decided_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (experiment) DO UPDATE SET state = excluded.state, variant = excluded.variant, \
         source = excluded.source, reason = excluded.reason, decided_at = excluded.decided_at",
        params![
            d.experiment,
            d.state.as_str(),
            d.variant,
            d.source,
            d.reason,
            ms(d.decided_at)
        ],
    )?;
    super::gdpr::insert_audit(&tx, audit)?;
    tx.commit()?;
    Ok(())
}

fn describe(reply: &ReplyRef) -> String {
    match reply {
        ReplyRef::Event(id) => format!("reply event {id}"),
        ReplyRef::External(id) => format!("reply with message id {id}"),
    }
}

pub(super) fn classify_reply(
    c: &mut Connection,
    r: &ReplyClassification,
) -> StoreResult<ClassifiedReply> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    type Row = (i64, i64, Option<i64>, String);
    let map = |row: &rusqlite::Row<'_>| -> rusqlite::Result<Row> {
        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
    };
    let found: Option<Row> = match &r.reply {
        ReplyRef::Event(id) => tx
            .query_row(
                "SELECT id, lead_id, delivery_id, kind FROM events WHERE id = ?1",
                [id],
                map,
            )
            .optional()?,
        ReplyRef::External(id) => tx
            .query_row(
                "SELECT id, lead_id, delivery_id, kind FROM events WHERE external_id = ?1",
                [id],
                map,
            )
            .optional()?,
    };
    let Some((event_id, lead, delivery, kind)) = found else {
        return Err(StoreError::NotFound(describe(&r.reply)));
    };
    let kind: EventKind = kind.parse().map_err(|e| corrupt_in("events", "kind", e))?;
    if !REPLY_KINDS.contains(&kind) {
        return Err(StoreError::NotFound(format!(
            "{} as a reply (it is a {kind} event; only replied, negative_reply and auto_replied events can be classified)",
            describe(&r.reply)
        )));
    }
    let previous: Option<String> = tx
        .query_row(
            "SELECT class FROM reply_classifications WHERE event_id = ?1",
            [event_id],
            |row| row.get(0),
        )
        .optional()?;
    let previous = previous
        .map(|p| {
            p.parse::<ReplyClass>()
                .map_err(|e| corrupt_in("reply_classifications", "class", e))
        })
        .transpose()?;
    tx.execute(
        "INSERT INTO reply_classifications (event_id, lead_id, class, source, reason, classified_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (event_id) DO UPDATE SET class = excluded.class, source = excluded.source, \
         reason = excluded.reason, classified_at = excluded.classified_at",
        params![event_id, lead, r.class.as_str(), r.source, r.reason, ms(r.at)],
    )?;
    tx.execute(
        "UPDATE events SET kind = ?1 WHERE id = ?2",
        params![r.class.event_kind().as_str(), event_id],
    )?;
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
    let effects = super::event_effects(&tx, &event, ms(r.at))?;
    tx.commit()?;
    Ok(ClassifiedReply {
        event_id,
        lead_id: LeadId(lead),
        delivery_id: delivery.map(DeliveryId),
        previous,
        previous_kind: kind,
        effects,
    })
}

pub(super) fn replies(
    c: &mut Connection,
    lead: Option<LeadId>,
    limit: usize,
) -> StoreResult<Vec<ReplyRecord>> {
    let mut stmt = c.prepare_cached(
        "SELECT e.id, e.lead_id, e.delivery_id, e.kind, e.occurred_at, e.source, rc.class, rc.source, rc.reason, rc.classified_at \
           FROM events e LEFT JOIN reply_classifications rc ON rc.event_id = e.id \
          WHERE e.kind IN ('replied', 'negative_reply', 'auto_replied') AND (?1 IS NULL OR e.lead_id = ?1) \
          ORDER BY e.occurred_at DESC, e.id DESC LIMIT ?2",
    )?;
    type Row = (
        i64,
        i64,
        Option<i64>,
        String,
        i64,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<i64>,
    );
    let rows: Vec<Row> = stmt
        .query_map(
            params![lead.map(|l| l.0), i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                ))
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(
            |(id, lead, delivery, kind, at, source, class, by, reason, cat)| {
                Ok(ReplyRecord {
                    event_id: id,
                    lead_id: LeadId(lead),
                    delivery_id: delivery.map(DeliveryId),
                    kind: kind.parse().map_err(|e| corrupt_in("events", "kind", e))?,
                    occurred_at: from_ms(at),
                    event_source: source,
                    class: class
                        .map(|c| {
                            c.parse::<ReplyClass>()
                                .map_err(|e| corrupt_in("reply_classifications", "class", e))
                        })
                        .transpose()?,
                    classified_by: by,
                    reason,
                    classified_at: from_ms_opt(cat),
                })
            },
        )
        .collect()
}

pub(super) fn lead_by_source_ref(
    c: &mut Connection,
    source: &str,
    source_ref: &str,
) -> StoreResult<Option<LeadId>> {
    Ok(c.query_row(
        "SELECT id FROM leads WHERE source = ?1 AND source_ref = ?2 ORDER BY id LIMIT 1",
        params![source, source_ref],
        |r| r.get(0),
    )
    .optional()?
    .map(LeadId))
}
