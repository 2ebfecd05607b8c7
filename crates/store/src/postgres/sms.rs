//! PostgreSQL: what Twilio's webhooks report (status callbacks and inbound SMS).
//!
//! Races are settled by the database: the status change is a compare-and-set (`UPDATE …
//! WHERE status = expected`, or an insert that loses on conflict), and an inbound message is
//! applied by whichever transaction inserts its Message SID first; the loser waits for the
//! winner's commit, sees zero rows and writes nothing.

use engager_domain::{DeliveryId, EventKind, LeadId};
use sqlx::postgres::PgConnection;
use sqlx::Row;

use super::{event_effects, PgStore};
use crate::common::{corrupt_in, from_ms, ms};
use crate::*;

async fn insert_event(conn: &mut PgConnection, event: &NewEvent) -> StoreResult<EventEffects> {
    let now = ms(event.occurred_at);
    sqlx::query(
        "INSERT INTO events (lead_id, delivery_id, kind, occurred_at, detail, source) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(event.lead_id.0)
    .bind(event.delivery_id.map(|d| d.0))
    .bind(event.kind.as_str())
    .bind(now)
    .bind(&event.detail)
    .bind(&event.source)
    .execute(&mut *conn)
    .await?;
    event_effects(conn, event, now).await
}

async fn suppress(
    conn: &mut PgConnection,
    key: &SuppressionKey,
    reason: &str,
    source: &str,
    now: i64,
) -> StoreResult<bool> {
    Ok(sqlx::query(
        "INSERT INTO suppressions (kind, value, reason, source, created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (kind, value) DO NOTHING",
    )
    .bind(key.kind())
    .bind(key.value())
    .bind(reason)
    .bind(source)
    .bind(now)
    .execute(conn)
    .await?
    .rows_affected()
        > 0)
}

impl PgStore {
    pub(super) async fn sms_message_impl(&self, sid: &str) -> StoreResult<Option<SmsMessage>> {
        let row = sqlx::query(
            "SELECT d.id, d.lead_id, d.to_address, s.status, s.error_code FROM deliveries d \
             LEFT JOIN sms_statuses s ON s.message_sid = d.provider_ref \
             WHERE d.provider_ref = $1 AND d.channel = 'sms' ORDER BY d.id DESC LIMIT 1",
        )
        .bind(sid)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(SmsMessage {
                delivery_id: DeliveryId(r.try_get(0)?),
                lead_id: LeadId(r.try_get(1)?),
                to_address: r.try_get(2)?,
                status: r.try_get(3)?,
                error_code: r.try_get::<Option<i64>, _>(4)?.map(|c| c as u32),
            })
        })
        .transpose()
    }

    pub(super) async fn apply_sms_status_impl(
        &self,
        change: &SmsStatusChange,
    ) -> StoreResult<bool> {
        let now = ms(change.now);
        let code = change.error_code.map(i64::from);
        let mut tx = self.pool().begin().await?;
        let written = match &change.expected {
            None => sqlx::query(
                "INSERT INTO sms_statuses (message_sid, delivery_id, status, error_code, updated_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (message_sid) DO NOTHING",
            )
            .bind(&change.message_sid)
            .bind(change.delivery_id.0)
            .bind(&change.status)
            .bind(code)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
            Some(expected) => sqlx::query(
                "UPDATE sms_statuses SET status = $1, error_code = $2, updated_at = $3 \
                 WHERE message_sid = $4 AND status = $5",
            )
            .bind(&change.status)
            .bind(code)
            .bind(now)
            .bind(&change.message_sid)
            .bind(expected)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
        };
        if written == 0 {
            // Another callback moved the status first; the caller reads again.
            tx.rollback().await?;
            return Ok(false);
        }
        if let Some(event) = &change.event {
            insert_event(&mut tx, event).await?;
        }
        if let Some((key, reason)) = &change.suppress {
            suppress(&mut tx, key, reason, &change.source, now).await?;
        }
        if let Some(note) = &change.delivery_note {
            sqlx::query("UPDATE deliveries SET last_error = $1, updated_at = $2 WHERE id = $3")
                .bind(note)
                .bind(now)
                .bind(change.delivery_id.0)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    pub(super) async fn apply_sms_inbound_impl(
        &self,
        inbound: &SmsInbound,
    ) -> StoreResult<SmsInboundOutcome> {
        let now = ms(inbound.now);
        let mut tx = self.pool().begin().await?;
        let mut outcome = SmsInboundOutcome::default();
        let logged = sqlx::query(
            "INSERT INTO sms_inbound (message_sid, from_number, to_number, action, body, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (message_sid) DO NOTHING",
        )
        .bind(&inbound.message_sid)
        .bind(&inbound.from)
        .bind(&inbound.to)
        .bind(inbound.action.as_str())
        .bind(&inbound.body)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if logged == 0 {
            tx.rollback().await?;
            outcome.duplicate = true;
            return Ok(outcome);
        }
        let rows = sqlx::query(
            "SELECT l.id, (SELECT MAX(d.id) FROM deliveries d WHERE d.lead_id = l.id \
               AND d.channel = 'sms' AND d.to_address = $1) \
             FROM leads l WHERE l.phone = $1 \
                OR l.id IN (SELECT lead_id FROM deliveries WHERE channel = 'sms' AND to_address = $1) \
             ORDER BY l.id",
        )
        .bind(&inbound.from)
        .fetch_all(&mut *tx)
        .await?;
        let leads: Vec<(i64, Option<i64>)> = rows
            .iter()
            .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, _>>()?;
        outcome.leads = leads.iter().map(|(id, _)| LeadId(*id)).collect();
        let phone = SuppressionKey::Phone(inbound.from.clone());
        // STOP withdraws and START gives consent for texts to this number (TCPA/CTIA).
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
                sqlx::query(
                    "INSERT INTO consents (lead_id, channel, basis, source, reference, contact, obtained_at, expires_at, recorded_at) \
                     VALUES ($1, 'sms', $2, $3, NULL, $4, $5, NULL, $5)",
                )
                .bind(lead)
                .bind(basis)
                .bind(&source)
                .bind(&inbound.from)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        let kind = match inbound.action {
            SmsAction::OptOut => {
                outcome.suppressed =
                    suppress(&mut tx, &phone, "unsubscribed", &inbound.source, now).await?;
                Some(EventKind::Unsubscribed)
            }
            SmsAction::OptIn => {
                outcome.lifted =
                    sqlx::query("DELETE FROM suppressions WHERE kind = $1 AND value = $2")
                        .bind(phone.kind())
                        .bind(phone.value())
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                        > 0;
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
                    &mut tx,
                    &NewEvent {
                        lead_id: LeadId(*lead),
                        delivery_id: delivery.map(DeliveryId),
                        kind,
                        occurred_at: inbound.now,
                        detail: detail.clone(),
                        source: inbound.source.clone(),
                    },
                )
                .await?;
                outcome.enrollments_stopped += effects.enrollments_stopped;
                outcome.deliveries_cancelled += effects.deliveries_cancelled;
            }
        }
        tx.commit().await?;
        Ok(outcome)
    }

    pub(super) async fn sms_inbound_log_impl(
        &self,
        from: &str,
    ) -> StoreResult<Vec<SmsInboundRecord>> {
        let rows = sqlx::query(
            "SELECT message_sid, from_number, to_number, action, body, received_at FROM sms_inbound \
             WHERE from_number = $1 ORDER BY received_at, message_sid",
        )
        .bind(from)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let action: String = r.try_get(3)?;
                Ok(SmsInboundRecord {
                    message_sid: r.try_get(0)?,
                    from: r.try_get(1)?,
                    to: r.try_get(2)?,
                    action: SmsAction::parse(&action)
                        .ok_or_else(|| corrupt_in("sms_inbound", "action", action.clone()))?,
                    body: r.try_get(4)?,
                    received_at: from_ms(r.try_get(5)?),
                })
            })
            .collect()
    }
}
