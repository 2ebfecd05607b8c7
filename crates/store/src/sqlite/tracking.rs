//! SQLite: open and click tracking (tracked links, the writer's batches).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use engager_domain::{DeliveryId, LeadId};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::common::{from_ms_opt, ms};
use crate::*;

pub(super) fn save_tracked_message(
    c: &mut Connection,
    id: DeliveryId,
    token: i64,
    message: &TrackedMessage,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let lead: Option<i64> = tx
        .query_row(
            "UPDATE deliveries SET body_text = ?1, body_html = ?2, updated_at = ?3 \
             WHERE id = ?4 AND fencing_token = ?5 AND state IN ('claimed', 'sending') RETURNING lead_id",
            params![message.body_text, message.body_html, ms(now), id.0, token],
            |r| r.get(0),
        )
        .optional()?;
    let Some(lead) = lead else {
        return Ok(false);
    };
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO tracked_links (delivery_id, link_index, lead_id, url, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (delivery_id, link_index) DO NOTHING",
        )?;
        for (index, url) in &message.links {
            insert.execute(params![id.0, i64::from(*index), lead, url, ms(now)])?;
        }
    }
    tx.commit()?;
    Ok(true)
}

pub(super) fn tracked_link(
    c: &mut Connection,
    id: DeliveryId,
    index: u32,
) -> StoreResult<Option<String>> {
    Ok(c.prepare_cached(
        "SELECT url FROM tracked_links WHERE delivery_id = ?1 AND link_index = ?2",
    )?
    .query_row(params![id.0, i64::from(index)], |r| r.get(0))
    .optional()?)
}

pub(super) fn tracking_targets(
    c: &mut Connection,
    ids: &[DeliveryId],
) -> StoreResult<HashMap<DeliveryId, TrackingTarget>> {
    let mut out = HashMap::with_capacity(ids.len());
    let mut stmt = c.prepare_cached(
        "SELECT d.lead_id, d.sent_at, (SELECT COUNT(*) FROM tracked_links t WHERE t.delivery_id = d.id) \
         FROM deliveries d WHERE d.id = ?1",
    )?;
    for id in ids {
        if out.contains_key(id) {
            continue;
        }
        let row = stmt
            .query_row([id.0], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .optional()?;
        if let Some((lead, sent_at, links)) = row {
            out.insert(
                *id,
                TrackingTarget {
                    delivery_id: *id,
                    lead_id: LeadId(lead),
                    sent_at: from_ms_opt(sent_at),
                    links: u32::try_from(links).unwrap_or(u32::MAX),
                },
            );
        }
    }
    Ok(out)
}

pub(super) fn record_tracking_events(
    c: &mut Connection,
    events: &[NewEvent],
    reflag: &[(i64, String)],
) -> StoreResult<Vec<i64>> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut ids = Vec::with_capacity(events.len());
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO events (lead_id, delivery_id, kind, occurred_at, detail, source) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for e in events {
            ids.push(insert.insert(params![
                e.lead_id.0,
                e.delivery_id.map(|d| d.0),
                e.kind.as_str(),
                ms(e.occurred_at),
                e.detail,
                e.source
            ])?);
        }
        let mut update = tx.prepare_cached("UPDATE events SET detail = ?1 WHERE id = ?2")?;
        for (id, detail) in reflag {
            update.execute(params![detail, id])?;
        }
    }
    tx.commit()?;
    Ok(ids)
}
