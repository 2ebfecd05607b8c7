//! SQLite: what Twilio's webhooks report (status callbacks and inbound SMS).

use engager_domain::{DeliveryId, EventKind, LeadId};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::event_effects;
use crate::common::{corrupt_in, from_ms, ms};
use crate::*;

pub(super) fn sms_message(c: &mut Connection, sid: &str) -> StoreResult<Option<SmsMessage>> {
    let row = c
        .query_row(
            "SELECT d.id, d.lead_id, d.to_address, s.status, s.error_code FROM deliveries d \
             LEFT JOIN sms_statuses s ON s.message_sid = d.provider_ref \
             WHERE d.provider_ref = ?1 AND d.channel = 'sms' ORDER BY d.id DESC LIMIT 1",
            [sid],
            |r| {
                Ok(SmsMessage {
                    delivery_id: DeliveryId(r.get(0)?),
                    lead_id: LeadId(r.get(1)?),
                    to_address: r.get(2)?,
                    status: r.get(3)?,
                    error_code: r.get::<_, Option<i64>>(4)?.map(|c| c as u32),
                })
            },
        )
        .optional()?;
    Ok(row)
}

fn insert_event(tx: &rusqlite::Transaction<'_>, event: &NewEvent) -> StoreResult<EventEffects> {
    let now = ms(event.occurred_at);
    tx.execute(
        "INSERT INTO events (lead_id, delivery_id, kind, occurred_at, detail, source) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            event.lead_id.0,
            event.delivery_id.map(|d| d.0),
            event.kind.as_str(),
            now,
            event.detail,
            event.source
        ],
    )?;
    event_effects(tx, event, now)
}

fn suppress(
    tx: &rusqlite::Transaction<'_>,
    key: &SuppressionKey,
    reason: &str,
    source: &str,
    now: i64,
) -> StoreResult<bool> {
    Ok(tx.execute(
        "INSERT INTO suppressions (kind, value, reason, source, created_at) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (kind, value) DO NOTHING",
        params![key.kind(), key.value(), reason, source, now],
    )? > 0)
}

pub(super) fn apply_sms_status(c: &mut Connection, change: &SmsStatusChange) -> StoreResult<bool> {
    let now = ms(change.now);
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let code = change.error_code.map(i64::from);
    let written = match &change.expected {
        None => tx.execute(
            "INSERT INTO sms_statuses (message_sid, delivery_id, status, error_code, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (message_sid) DO NOTHING",
            params![
                change.message_sid,
                change.delivery_id.0,
                change.status,
                code,
                now
            ],
        )?,
        Some(expected) => tx.execute(
            "UPDATE sms_statuses SET status = ?1, error_code = ?2, updated_at = ?3 \
             WHERE message_sid = ?4 AND status = ?5",
            params![change.status, code, now, change.message_sid, expected],
        )?,
    };
    if written == 0 {
        // Another callback moved the status first; the caller reads again.
        return Ok(false);
    }
    if let Some(event) = &change.event {
        insert_event(&tx, event)?;
    }
    if let Some((key, reason)) = &change.suppress {
        suppress(&tx, key, reason, &change.source, now)?;
    }
    if let Some(note) = &change.delivery_note {
        tx.execute(
            "UPDATE deliveries SET last_error = ?1, updated_at = ?2 WHERE id = ?3",
            params![note, now, change.delivery_id.0],
        )?;
    }
    tx.commit()?;
    Ok(true)
}

pub(super) fn apply_sms_inbound(
    c: &mut Connection,
    inbound: &SmsInbound,
) -> StoreResult<SmsInboundOutcome> {
    let now = ms(inbound.now);
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcome = SmsInboundOutcome::default();
    let logged = tx.execute(
        "INSERT INTO sms_inbound (message_sid, from_number, to_number, action, body, received_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (message_sid) DO NOTHING",
        params![
            inbound.message_sid,
            inbound.from,
            inbound.to,
            inbound.action.as_str(),
            inbound.body,
            now
        ],
    )?;
    if logged == 0 {
        outcome.duplicate = true;
        return Ok(outcome);
    }
    let leads: Vec<(i64, Option<i64>)> = {
        let mut stmt = tx.prepare(
            "SELECT l.id, (SELECT MAX(d.id) FROM deliveries d WHERE d.lead_id = l.id \
               AND d.channel = 'sms' AND d.to_address = ?1) \
             FROM leads l WHERE l.phone = ?1 \
                OR l.id IN (SELECT lead_id FROM deliveries WHERE channel = 'sms' AND to_address = ?1) \
             ORDER BY l.id",
        )?;
        let rows = stmt
            .query_map([&inbound.from], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        rows
    };
    outcome.leads = leads.iter().map(|(id, _)| LeadId(*id)).collect();
    let phone = SuppressionKey::Phone(inbound.from.clone());
    // STOP withdraws and START gives consent for texts to this number: the consent records
    // the compliance gate reads (TCPA/CTIA), with the message as their source.
    let basis = match inbound.action {
        SmsAction::OptOut => Some("withdrawn"),
        SmsAction::OptIn => Some("consent"),
        _ => None,
    };
    if let Some(basis) = basis {
        let source = format!(
            "text {:?} from the number (Twilio {})",
            inbound.body.trim(),
            inbound.message_sid
        );
        for (lead, _) in &leads {
            tx.execute(
                "INSERT INTO consents (lead_id, channel, basis, source, reference, contact, obtained_at, expires_at, recorded_at) \
                 VALUES (?1, 'sms', ?2, ?3, NULL, ?4, ?5, NULL, ?5)",
                params![lead, basis, source, inbound.from, now],
            )?;
        }
    }
    let kind = match inbound.action {
        SmsAction::OptOut => {
            outcome.suppressed = suppress(&tx, &phone, "unsubscribed", &inbound.source, now)?;
            Some(EventKind::Unsubscribed)
        }
        SmsAction::OptIn => {
            outcome.lifted = tx.execute(
                "DELETE FROM suppressions WHERE kind = ?1 AND value = ?2",
                params![phone.kind(), phone.value()],
            )? > 0;
            None
        }
        SmsAction::Help => None,
        SmsAction::Reply => Some(EventKind::Replied),
    };
    if let Some(kind) = kind {
        let detail = serde_json::json!({
            "message_sid": inbound.message_sid,
            "from": inbound.from,
            "body": inbound.body,
        })
        .to_string();
        for (lead, delivery) in &leads {
            let effects = insert_event(
                &tx,
                &NewEvent {
                    lead_id: LeadId(*lead),
                    delivery_id: delivery.map(DeliveryId),
                    kind,
                    occurred_at: inbound.now,
                    detail: detail.clone(),
                    source: inbound.source.clone(),
                },
            )?;
            outcome.enrollments_stopped += effects.enrollments_stopped;
            outcome.deliveries_cancelled += effects.deliveries_cancelled;
        }
    }
    tx.commit()?;
    Ok(outcome)
}

pub(super) fn sms_inbound_log(
    c: &mut Connection,
    from: &str,
) -> StoreResult<Vec<SmsInboundRecord>> {
    let mut stmt = c.prepare(
        "SELECT message_sid, from_number, to_number, action, body, received_at FROM sms_inbound \
         WHERE from_number = ?1 ORDER BY received_at, message_sid",
    )?;
    let rows = stmt
        .query_map([from], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(message_sid, from, to, action, body, at)| {
            Ok(SmsInboundRecord {
                message_sid,
                from,
                to,
                action: SmsAction::parse(&action)
                    .ok_or_else(|| corrupt_in("sms_inbound", "action", action.clone()))?,
                body,
                received_at: from_ms(at),
            })
        })
        .collect()
}
