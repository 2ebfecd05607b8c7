//! SQLite: the facts analytics reports are built from.

use engager_domain::{Channel, DeliveryId, LeadId};
use rusqlite::{params, Connection};

use crate::common::{corrupt_in, from_ms, ms};
use crate::*;

/// Conversions since the period's start, from the `events_kind_at` index; kept for the leads
/// of the period's sent deliveries.
const CONVERSIONS: &str = "\
SELECT e.lead_id, e.occurred_at, json_extract(e.detail, '$.value')
  FROM events e
 WHERE e.kind = 'converted' AND e.occurred_at >= ?1
 ORDER BY e.occurred_at, e.id";

/// The sent deliveries of the period, in id order (their engagement is merged in after).
const FACT_DELIVERIES: &str = "\
SELECT d.id, d.lead_id, c.slug, d.step_index, d.channel, COALESCE(l.country, ''), COALESCE(l.industry, ''),
       d.sent_at, d.variant
  FROM deliveries d
  JOIN campaigns c ON c.id = d.campaign_id
  JOIN leads l ON l.id = d.lead_id
 WHERE d.state = 'sent' AND d.sent_at >= ?1 AND d.sent_at < ?2 AND (?3 IS NULL OR c.slug = ?3)
 ORDER BY d.id";

/// The engagement of the deliveries with ids in `?1..=?2`, ordered by delivery, read from the
/// covering index `events_delivery_facts`: the machine-activity flag of opens and clicks and
/// the class of replies.
const FACT_EVENTS: &str = "\
SELECT e.delivery_id, e.kind, e.occurred_at,
       CASE WHEN e.kind IN ('opened', 'clicked') THEN COALESCE(json_extract(e.detail, '$.automated'), 0) END,
       CASE WHEN e.kind IN ('replied', 'negative_reply', 'auto_replied')
            THEN (SELECT rc.class FROM reply_classifications rc WHERE rc.event_id = e.id) END
  FROM events e
 WHERE e.delivery_id BETWEEN ?1 AND ?2 AND e.kind <> 'sent'
 ORDER BY e.delivery_id";

/// What the events of one delivery add up to (the `FACTS` aggregation, done in Rust over one
/// ordered pass: SQLite's per-row aggregate expressions cost more than the scan).
#[derive(Default)]
struct Engagement {
    delivered: bool,
    opened: bool,
    clicked: bool,
    replied: bool,
    negative_reply: bool,
    bounced: bool,
    complained: bool,
    unsubscribed: bool,
    first_reply_at: Option<i64>,
    any_plain_reply: bool,
    positive_plain_reply: bool,
}

impl Engagement {
    fn add(&mut self, kind: &str, at: i64, automated: bool, class: Option<&str>) {
        match kind {
            "delivered" => self.delivered = true,
            "opened" => self.opened |= !automated,
            "clicked" => self.clicked |= !automated,
            "replied" | "negative_reply" => {
                self.replied = true;
                self.first_reply_at = Some(self.first_reply_at.map_or(at, |f| f.min(at)));
                if kind == "negative_reply" {
                    self.negative_reply = true;
                } else {
                    self.any_plain_reply = true;
                    self.positive_plain_reply |= class.is_none_or(|c| c == "positive");
                }
            }
            "hard_bounce" => self.bounced = true,
            "complained" => self.complained = true,
            "unsubscribed" => self.unsubscribed = true,
            _ => {}
        }
        if class == Some("unsubscribe") {
            self.unsubscribed = true;
        }
    }
}

pub(super) fn report_facts(c: &mut Connection, query: &ReportQuery) -> StoreResult<ReportFacts> {
    let args = params![ms(query.since), ms(query.until), query.campaign];
    let mut deliveries = Vec::new();
    {
        let mut stmt = c.prepare_cached(FACT_DELIVERIES)?;
        let mut rows = stmt.query(args)?;
        let text = |v: rusqlite::types::ValueRef<'_>| v.as_str().unwrap_or_default().to_owned();
        while let Some(r) = rows.next()? {
            let channel = r
                .get_ref(4)?
                .as_str()
                .map_err(|e| corrupt_in("deliveries", "channel", e))?;
            deliveries.push(DeliveryFact {
                delivery_id: DeliveryId(r.get(0)?),
                lead_id: LeadId(r.get(1)?),
                campaign: text(r.get_ref(2)?),
                step_index: r.get::<_, i64>(3)? as usize,
                channel: channel
                    .parse::<Channel>()
                    .map_err(|e| corrupt_in("deliveries", "channel", e))?,
                country: text(r.get_ref(5)?),
                industry: text(r.get_ref(6)?),
                sent_at: from_ms(r.get(7)?),
                delivered: false,
                opened: false,
                clicked: false,
                replied: false,
                negative_reply: false,
                bounced: false,
                complained: false,
                unsubscribed: false,
                first_reply_at: None,
                variant: r.get(8)?,
                neutral_reply: false,
            });
        }
    }
    if let (Some(first), Some(last)) = (deliveries.first(), deliveries.last()) {
        let (low, high) = (first.delivery_id.0, last.delivery_id.0);
        let mut stmt = c.prepare_cached(FACT_EVENTS)?;
        let mut rows = stmt.query(params![low, high])?;
        // Both lists are in delivery order: one merge pass (events of deliveries outside
        // the period, whose ids fall in the range, are skipped).
        let mut i = 0;
        let mut current: Option<(usize, Engagement)> = None;
        let finish = |deliveries: &mut Vec<DeliveryFact>, (at, e): (usize, Engagement)| {
            let f = &mut deliveries[at];
            f.delivered = e.delivered;
            f.opened = e.opened;
            f.clicked = e.clicked;
            f.replied = e.replied;
            f.negative_reply = e.negative_reply;
            f.bounced = e.bounced;
            f.complained = e.complained;
            f.unsubscribed = e.unsubscribed;
            f.first_reply_at = e.first_reply_at.map(from_ms);
            f.neutral_reply = e.any_plain_reply && !e.positive_plain_reply;
        };
        while let Some(r) = rows.next()? {
            let delivery: i64 = r.get(0)?;
            while i < deliveries.len() && deliveries[i].delivery_id.0 < delivery {
                i += 1;
            }
            if i == deliveries.len() {
                break;
            }
            if deliveries[i].delivery_id.0 != delivery {
                continue;
            }
            if current.as_ref().is_some_and(|(at, _)| *at != i) {
                if let Some(done) = current.take() {
                    finish(&mut deliveries, done);
                }
            }
            let entry = current.get_or_insert_with(|| (i, Engagement::default()));
            let kind = r
                .get_ref(1)?
                .as_str()
                .map_err(|e| corrupt_in("events", "kind", e))?;
            let automated = match r.get_ref(3)? {
                rusqlite::types::ValueRef::Integer(n) => n != 0,
                rusqlite::types::ValueRef::Real(x) => x != 0.0,
                rusqlite::types::ValueRef::Text(t) => !t.is_empty() && t != b"0" && t != b"false",
                _ => false,
            };
            let class = r.get_ref(4)?.as_str().ok();
            entry.1.add(kind, r.get(2)?, automated, class);
        }
        if let Some(done) = current.take() {
            finish(&mut deliveries, done);
        }
    }
    deliveries.sort_by_key(|d| (d.sent_at, d.delivery_id.0));
    let leads: std::collections::HashSet<LeadId> = deliveries.iter().map(|d| d.lead_id).collect();
    let mut stmt = c.prepare_cached(CONVERSIONS)?;
    let conversions = stmt
        .query_map(params![ms(query.since)], |r| {
            Ok(ConversionFact {
                lead_id: LeadId(r.get(0)?),
                at: from_ms(r.get(1)?),
                value: r.get::<_, Option<f64>>(2).unwrap_or(None),
            })
        })?
        .filter(|c| c.as_ref().map_or(true, |c| leads.contains(&c.lead_id)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ReportFacts {
        deliveries,
        conversions,
    })
}

/// What was sent on a channel since an instant, and the bounces, complaints, unsubscribes
/// and replies those sends drew.
const SENDING_COUNTS: &str = "\
SELECT COUNT(*),
       COALESCE(SUM(EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = d.id AND e.kind = 'hard_bounce')), 0),
       COALESCE(SUM(EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = d.id AND e.kind = 'complained')), 0),
       COALESCE(SUM(EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = d.id AND e.kind = 'unsubscribed')), 0),
       COALESCE(SUM(EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = d.id AND e.kind IN ('replied', 'negative_reply'))), 0)
  FROM deliveries d
 WHERE d.channel = ?1 AND d.state = 'sent' AND d.sent_at >= ?2";

pub(super) fn sending_counts(
    c: &mut Connection,
    channel: Channel,
    since: i64,
) -> StoreResult<engager_domain::deliverability::SendingCounts> {
    let mut stmt = c.prepare_cached(SENDING_COUNTS)?;
    let counts = stmt.query_row(params![channel.as_str(), since], |r| {
        let n = |i: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(i)?.max(0) as u64) };
        Ok(engager_domain::deliverability::SendingCounts {
            sent: n(0)?,
            hard_bounces: n(1)?,
            complaints: n(2)?,
            unsubscribes: n(3)?,
            replies: n(4)?,
        })
    })?;
    Ok(counts)
}

pub(super) fn sending_halts(c: &mut Connection) -> StoreResult<Vec<SendingHalt>> {
    let mut stmt = c.prepare_cached(
        "SELECT channel, halted, reason, changed_by, changed_at FROM sending_halts ORDER BY channel",
    )?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let channel: String = r.get(0)?;
        out.push(SendingHalt {
            channel: channel
                .parse()
                .map_err(|e| corrupt_in("sending_halts", "channel", e))?,
            halted: r.get::<_, i64>(1)? != 0,
            reason: r.get(2)?,
            changed_by: r.get(3)?,
            changed_at: from_ms(r.get(4)?),
        });
    }
    Ok(out)
}

pub(super) fn set_sending_halt(c: &mut Connection, halt: &SendingHalt) -> StoreResult<bool> {
    // Only a change of state is written, so the first halt's reason and time are kept while
    // the monitor keeps finding the same breach.
    let changed = c.execute(
        "INSERT INTO sending_halts (channel, halted, reason, changed_by, changed_at) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (channel) DO UPDATE SET halted = excluded.halted, reason = excluded.reason, \
             changed_by = excluded.changed_by, changed_at = excluded.changed_at \
         WHERE sending_halts.halted <> excluded.halted",
        params![
            halt.channel.as_str(),
            i64::from(halt.halted),
            halt.reason,
            halt.changed_by,
            ms(halt.changed_at)
        ],
    )?;
    Ok(changed > 0)
}

pub(super) fn suppression_list(c: &mut Connection) -> StoreResult<Vec<SuppressionRecord>> {
    let mut stmt = c.prepare(
        "SELECT kind, value, reason, source, created_at FROM suppressions ORDER BY kind, value",
    )?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let kind: String = r.get(0)?;
        let key = SuppressionKey::from_parts(&kind, r.get(1)?)
            .ok_or_else(|| corrupt_in("suppressions", "kind", format!("unknown kind {kind:?}")))?;
        out.push(SuppressionRecord {
            key,
            reason: r.get(2)?,
            source: r.get(3)?,
            created_at: from_ms(r.get(4)?),
        });
    }
    Ok(out)
}

pub(super) fn add_suppressions(
    c: &mut Connection,
    entries: &[SuppressionRecord],
) -> StoreResult<u64> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut added = 0;
    {
        let mut stmt = tx.prepare(
            "INSERT INTO suppressions (kind, value, reason, source, created_at) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (kind, value) DO NOTHING",
        )?;
        for e in entries {
            added += stmt.execute(params![
                e.key.kind(),
                e.key.value(),
                e.reason,
                e.source,
                ms(e.created_at)
            ])? as u64;
        }
    }
    tx.commit()?;
    Ok(added)
}

pub(super) fn resolve_review(
    c: &mut Connection,
    id: DeliveryId,
    resolution: &ReviewResolution,
    now: i64,
) -> StoreResult<bool> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let changed = match resolution {
        ReviewResolution::Approve {
            subject,
            body_text,
            body_html,
        } => tx.execute(
            "UPDATE deliveries SET state = 'planned', subject = ?1, body_text = ?2, body_html = ?3, \
             send_at = MAX(send_at, ?4), updated_at = ?4 WHERE id = ?5 AND state = 'pending_review'",
            params![subject, body_text, body_html, now, id.0],
        )?,
        ReviewResolution::Drop { reason, next_due } => {
            let n = tx.execute(
                "UPDATE deliveries SET state = 'cancelled', last_error = ?1, updated_at = ?2 \
                 WHERE id = ?3 AND state = 'pending_review'",
                params![reason, now, id.0],
            )?;
            if n > 0 {
                tx.execute(
                    "UPDATE enrollments SET current_step = current_step + 1, next_due_at = ?1, \
                     state = CASE WHEN ?1 IS NULL THEN 'completed' ELSE 'active' END, updated_at = ?2 \
                     WHERE state = 'waiting' AND (id, current_step) = \
                       (SELECT enrollment_id, step_index FROM deliveries WHERE id = ?3)",
                    params![next_due.map(ms), now, id.0],
                )?;
            }
            n
        }
    };
    tx.commit()?;
    Ok(changed > 0)
}

pub(super) fn channel_evidence(
    c: &mut Connection,
    since: i64,
) -> StoreResult<Vec<ChannelEvidenceRow>> {
    let mut stmt = c.prepare_cached(
        "SELECT COALESCE(l.industry, ''), COALESCE(l.country, ''), d.channel, COUNT(*), \
                COALESCE(SUM(EXISTS (SELECT 1 FROM events e LEFT JOIN reply_classifications rc ON rc.event_id = e.id \
                                      WHERE e.delivery_id = d.id AND e.kind = 'replied' AND COALESCE(rc.class, 'positive') = 'positive') \
                     AND NOT EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = d.id AND e.kind = 'negative_reply')), 0) \
           FROM deliveries d JOIN leads l ON l.id = d.lead_id \
          WHERE d.state = 'sent' AND d.sent_at >= ?1 \
          GROUP BY 1, 2, 3",
    )?;
    let mut rows = stmt.query([since])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let channel: String = r.get(2)?;
        out.push(ChannelEvidenceRow {
            industry: r.get(0)?,
            country: r.get(1)?,
            channel: channel
                .parse()
                .map_err(|e| corrupt_in("deliveries", "channel", e))?,
            sent: r.get::<_, i64>(3)?.max(0) as u64,
            positive: r.get::<_, i64>(4)?.max(0) as u64,
        });
    }
    Ok(out)
}

impl super::SqliteStore {
    /// Benchmark data: `deliveries` sent deliveries of `campaign` spread over its
    /// enrollments (a step per pass over them), each with 3.4 events on average — sent,
    /// delivered, an open (every fifth automated) and for some a click, reply, bounce or
    /// unsubscribe. Returns the events written.
    pub async fn bench_generate_engagement(
        &self,
        campaign: engager_domain::CampaignId,
        deliveries: usize,
    ) -> StoreResult<usize> {
        self.with_connection(move |c| {
            let tx = c.transaction()?;
            let enrollments: Vec<(i64, i64)> = tx
                .prepare("SELECT id, lead_id FROM enrollments WHERE campaign_id = ?1 ORDER BY id")?
                .query_map([campaign.0], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            if enrollments.is_empty() {
                return Ok(0);
            }
            let start = chrono::DateTime::parse_from_rfc3339("2026-01-05T08:00:00Z")
                .map(|t| t.timestamp_millis())
                .unwrap_or(0);
            let mut events = 0usize;
            {
                let mut delivery = tx.prepare(
                    "INSERT INTO deliveries (enrollment_id, campaign_id, lead_id, step_index, channel, state, \
                     send_at, to_address, subject, body_text, sent_at, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, 'sent', ?6, 'x', 's', 'b', ?6, ?6, ?6)",
                )?;
                let mut event = tx.prepare(
                    "INSERT INTO events (lead_id, delivery_id, kind, occurred_at, detail, source) \
                     VALUES (?1, ?2, ?3, ?4, ?5, 'bench')",
                )?;
                for i in 0..deliveries {
                    let (enrollment, lead) = enrollments[i % enrollments.len()];
                    let step = (i / enrollments.len()) as i64;
                    let channel = ["email", "email", "sms", "linkedin"][i % 4];
                    let at = start + i as i64 * 60_000;
                    delivery.execute(params![enrollment, campaign.0, lead, step, channel, at])?;
                    let id = tx.last_insert_rowid();
                    let mut kinds = vec![("sent", "{}"), ("delivered", "{}")];
                    kinds.push(if i % 5 == 0 {
                        ("opened", r#"{"automated":true}"#)
                    } else {
                        ("opened", "{}")
                    });
                    match i % 10 {
                        0 => kinds.push(("clicked", "{}")),
                        1 => kinds.push(("replied", "{}")),
                        2 => kinds.push(("hard_bounce", "{}")),
                        3 => kinds.push(("unsubscribed", "{}")),
                        _ => {}
                    }
                    for (k, (kind, detail)) in kinds.into_iter().enumerate() {
                        event.execute(params![lead, id, kind, at + k as i64 * 60_000, detail])?;
                        events += 1;
                    }
                }
            }
            tx.commit()?;
            c.execute_batch("ANALYZE;")?;
            Ok(events)
        })
        .await
    }

    /// Benchmark baseline: the facts query of `report_facts` stepped through on the bare
    /// connection, nothing decoded; (seconds, rows).
    pub async fn bench_report_query_alone(&self, query: &ReportQuery) -> StoreResult<(f64, u64)> {
        let args = (ms(query.since), ms(query.until), query.campaign.clone());
        self.with_connection(move |c| {
            let started = std::time::Instant::now();
            let mut stmt = c.prepare(FACT_DELIVERIES)?;
            let mut rows = stmt.query(params![args.0, args.1, args.2])?;
            let (mut n, mut low, mut high) = (0u64, i64::MAX, i64::MIN);
            while let Some(r) = rows.next()? {
                let id: i64 = r.get(0)?;
                (low, high) = (low.min(id), high.max(id));
                n += 1;
            }
            drop(rows);
            let mut stmt = c.prepare(FACT_EVENTS)?;
            let mut rows = stmt.query(params![low, high])?;
            while rows.next()?.is_some() {}
            drop(rows);
            let mut stmt = c.prepare(CONVERSIONS)?;
            let mut rows = stmt.query(params![args.0])?;
            while rows.next()?.is_some() {}
            Ok((started.elapsed().as_secs_f64(), n))
        })
        .await
    }
}

/// The facts queries with their arguments written in, for timing them in the `sqlite3` shell
/// (`engager bench report --print-query`): the period's deliveries, then the events of the
/// delivery ids they span (here: all).
pub fn report_facts_sql_for_shell(since: i64, until: i64, campaign: &str) -> String {
    let quoted = format!("'{}'", campaign.replace('\'', "''"));
    format!(
        "{};\n{};",
        FACT_DELIVERIES
            .replace("?1", &since.to_string())
            .replace("?2", &until.to_string())
            .replace("?3", &quoted),
        FACT_EVENTS
            .replace("?1", "0")
            .replace("?2", &i64::MAX.to_string())
    )
}
