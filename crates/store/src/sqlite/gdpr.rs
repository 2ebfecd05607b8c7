//! SQLite: exporting and erasing one person's data, the suppression hash key, the audit log.
//!
//! An erasure blanks or deletes the person's rows in one transaction with `secure_delete` on
//! (freed bytes are zeroed), then VACUUMs (an updated row's old cell can outlive the update in
//! its page's free space), checkpoints the WAL and truncates it, so the erased values remain
//! neither in the database file nor in its WAL. VACUUM rewrites the whole file: an erasure
//! costs time in proportion to the database's size.

use engager_domain::LeadId;
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::common::{from_ms, ms};
use crate::gdpr::{new_key, suppression_hash, Erase, Link, SUPPRESSION_KEY, TABLES};
use crate::*;

/// The suppression hash key, created on first use when `create`.
pub(super) fn suppression_key(c: &Connection, create: bool) -> StoreResult<Option<Vec<u8>>> {
    if create {
        c.execute(
            "INSERT INTO store_secrets (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
            params![SUPPRESSION_KEY, new_key()],
        )?;
    }
    Ok(c.query_row(
        "SELECT value FROM store_secrets WHERE name = ?1",
        [SUPPRESSION_KEY],
        |r| r.get::<_, String>(0),
    )
    .optional()?
    .map(String::into_bytes))
}

fn table_exists(c: &Connection, table: &str) -> StoreResult<bool> {
    Ok(c.query_row(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [table],
        |_| Ok(()),
    )
    .optional()?
    .is_some())
}

/// The person's contact points, read before anything is blanked.
struct Subject {
    email: Option<String>,
    phone: Option<String>,
}

fn subject(c: &Connection, lead: LeadId) -> StoreResult<Subject> {
    c.query_row(
        "SELECT email, phone FROM leads WHERE id = ?1",
        [lead.0],
        |r| {
            Ok(Subject {
                email: r.get(0)?,
                phone: r.get(1)?,
            })
        },
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("lead {}", lead.0)))
}

/// The WHERE clause and its parameters selecting the person's rows of a table; `None` when
/// the table cannot hold any (e.g. a phone link for a lead without a phone).
fn selector(
    link: Link,
    lead: LeadId,
    who: &Subject,
    key: Option<&[u8]>,
) -> Option<(String, Vec<rusqlite::types::Value>)> {
    use rusqlite::types::Value;
    match link {
        Link::LeadRow => Some(("id = ?1".into(), vec![Value::Integer(lead.0)])),
        Link::LeadId => Some(("lead_id = ?1".into(), vec![Value::Integer(lead.0)])),
        Link::Phone(column) => who
            .phone
            .clone()
            .map(|p| (format!("{column} = ?1"), vec![Value::Text(p)])),
        Link::Suppression => {
            let mut clauses = Vec::new();
            let mut values = Vec::new();
            for (kind, value) in [("email", &who.email), ("phone", &who.phone)] {
                let Some(value) = value else { continue };
                let mut candidates = vec![value.clone()];
                if let Some(key) = key {
                    candidates.push(suppression_hash(key, kind, value));
                }
                for v in candidates {
                    values.push(Value::Text(kind.into()));
                    values.push(Value::Text(v));
                    clauses.push(format!(
                        "(kind = ?{} AND value = ?{})",
                        values.len() - 1,
                        values.len()
                    ));
                }
            }
            (!clauses.is_empty()).then(|| (clauses.join(" OR "), values))
        }
        Link::None => None,
    }
}

fn cell(v: ValueRef<'_>) -> serde_json::Value {
    match v {
        ValueRef::Null => serde_json::Value::Null,
        ValueRef::Integer(i) => i.into(),
        ValueRef::Real(f) => f.into(),
        ValueRef::Text(t) => {
            let text = String::from_utf8_lossy(t).into_owned();
            // JSON stored as text is exported as JSON.
            if (text.starts_with('{') || text.starts_with('[')) && text.len() > 1 {
                serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
            } else {
                serde_json::Value::String(text)
            }
        }
        ValueRef::Blob(b) => serde_json::Value::String(format!("<{} bytes>", b.len())),
    }
}

pub(super) fn export(c: &mut Connection, lead: LeadId) -> StoreResult<serde_json::Value> {
    let tx = c.transaction()?;
    let who = subject(&tx, lead)?;
    let key = suppression_key(&tx, false)?;
    let mut out = serde_json::Map::new();
    for rule in TABLES {
        let Some((clause, args)) = selector(rule.link, lead, &who, key.as_deref()) else {
            continue;
        };
        if !table_exists(&tx, rule.table)? {
            continue;
        }
        let mut stmt = tx.prepare(&format!("SELECT * FROM {} WHERE {clause}", rule.table))?;
        let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        let mut list = Vec::new();
        while let Some(r) = rows.next()? {
            let mut obj = serde_json::Map::new();
            for (i, name) in names.iter().enumerate() {
                obj.insert(name.clone(), cell(r.get_ref(i)?));
            }
            list.push(serde_json::Value::Object(obj));
        }
        out.insert(rule.table.into(), serde_json::Value::Array(list));
    }
    Ok(serde_json::Value::Object(out))
}

pub(super) fn erase(
    c: &mut Connection,
    lead: LeadId,
    audit: &AuditEntry,
) -> StoreResult<ErasureReport> {
    c.execute_batch("PRAGMA secure_delete = ON;")?;
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let who = subject(&tx, lead)?;
    let key = suppression_key(&tx, true)?.unwrap_or_default();
    let mut report = ErasureReport {
        lead_id: Some(lead),
        ..ErasureReport::default()
    };
    // Nothing more may go to the person: sequences stop, queued sends and open tasks are
    // cancelled (before their text is blanked below).
    let now = ms(audit.at);
    let stopped = tx.execute(
        "UPDATE enrollments SET state = 'stopped', stop_reason = 'erased', next_due_at = NULL, updated_at = ?1 \
         WHERE lead_id = ?2 AND state IN ('active', 'waiting')",
        params![now, lead.0],
    )?;
    report.rows.push(("enrollments".into(), stopped as u64));
    tx.execute(
        "UPDATE deliveries SET state = 'cancelled', lease_until = NULL, updated_at = ?1 \
         WHERE lead_id = ?2 AND state IN ('planned', 'retry_wait', 'claimed')",
        params![now, lead.0],
    )?;
    if table_exists(&tx, "tasks")? {
        tx.execute(
            "UPDATE deliveries SET state = 'cancelled', lease_until = NULL, updated_at = ?1 \
             WHERE state = 'sending' AND id IN (SELECT delivery_id FROM tasks WHERE state = 'open' AND lead_id = ?2)",
            params![now, lead.0],
        )?;
        tx.execute(
            "UPDATE tasks SET state = 'cancelled', closed_at = ?1 WHERE lead_id = ?2 AND state = 'open'",
            params![now, lead.0],
        )?;
    }
    // A person who asked to be forgotten is not contacted again, even if a later import
    // brings them back: their contact points join the suppression list (hashed below).
    for (kind, value) in [("email", &who.email), ("phone", &who.phone)] {
        if let Some(value) = value {
            tx.execute(
                "INSERT INTO suppressions (kind, value, reason, source, created_at) \
                 VALUES (?1, ?2, 'erased on request', 'gdpr', ?3) ON CONFLICT (kind, value) DO NOTHING",
                params![kind, value, now],
            )?;
        }
    }
    // The leads row last: the other tables find the person through it.
    let mut order: Vec<_> = TABLES.iter().collect();
    order.sort_by_key(|r| r.link == Link::LeadRow);
    for rule in order {
        if rule.erase == Erase::Nothing || !table_exists(&tx, rule.table)? {
            continue;
        }
        let Some((clause, args)) = selector(rule.link, lead, &who, Some(&key)) else {
            continue;
        };
        let changed = match rule.erase {
            Erase::Blank(set) => tx.execute(
                &format!("UPDATE {} SET {set} WHERE {clause}", rule.table),
                rusqlite::params_from_iter(args),
            )?,
            Erase::Delete => tx.execute(
                &format!("DELETE FROM {} WHERE {clause}", rule.table),
                rusqlite::params_from_iter(args),
            )?,
            Erase::HashSuppression => {
                let mut n = 0;
                for (kind, value) in [("email", &who.email), ("phone", &who.phone)] {
                    let Some(value) = value else { continue };
                    n += tx.execute(
                        "UPDATE OR REPLACE suppressions SET value = ?3 WHERE kind = ?1 AND value = ?2",
                        params![kind, value, suppression_hash(&key, kind, value)],
                    )?;
                }
                report.suppressions_hashed += n as u64;
                n
            }
            Erase::Nothing => 0,
        };
        report.rows.push((rule.table.to_owned(), changed as u64));
    }
    insert_audit(&tx, audit)?;
    tx.commit()?;
    // An updated row's old cell can survive in its page's free space even with
    // secure_delete; VACUUM rebuilds every page from the live rows. Then the new pages go
    // into the database file and the WAL, which still holds the old ones, is emptied.
    c.execute_batch("VACUUM;")?;
    let (busy, _, _): (i64, i64, i64) =
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    if busy != 0 {
        tracing::warn!("The WAL could not be emptied after an erasure (another connection is reading); it will be on the next checkpoint.");
    }
    Ok(report)
}

pub(super) fn insert_audit(c: &Connection, e: &AuditEntry) -> StoreResult<()> {
    c.execute(
        "INSERT INTO audit_log (at, action, subject, detail, actor) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![ms(e.at), e.action, e.subject, e.detail, e.actor],
    )?;
    Ok(())
}

pub(super) fn audit_log(c: &mut Connection, since: i64) -> StoreResult<Vec<AuditEntry>> {
    let mut stmt = c.prepare_cached(
        "SELECT at, action, subject, detail, actor FROM audit_log WHERE at >= ?1 ORDER BY id",
    )?;
    let rows = stmt
        .query_map([since], |r| {
            Ok(AuditEntry {
                at: from_ms(r.get(0)?),
                action: r.get(1)?,
                subject: r.get(2)?,
                detail: r.get(3)?,
                actor: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(super) fn retention(
    c: &mut Connection,
    cutoffs: &crate::gdpr::RetentionCutoffs,
    dry_run: bool,
) -> StoreResult<crate::gdpr::RetentionReport> {
    c.execute_batch("PRAGMA secure_delete = ON;")?;
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut report = crate::gdpr::RetentionReport::default();
    let args = params![ms(cutoffs.bodies_before), ms(cutoffs.details_before)];
    for (table, predicate, set) in crate::gdpr::RETENTION {
        if !table_exists(&tx, table)? {
            continue;
        }
        let predicate = predicate.replace("{1}", "?1").replace("{2}", "?2");
        let n = if dry_run {
            tx.query_row(
                &format!("SELECT COUNT(*) FROM {table} WHERE {predicate} AND ?1 IS NOT NULL AND ?2 IS NOT NULL"),
                args,
                |r| r.get::<_, i64>(0),
            )? as usize
        } else {
            match set {
                Some(set) => tx.execute(
                    &format!("UPDATE {table} SET {set} WHERE {predicate} AND ?1 IS NOT NULL AND ?2 IS NOT NULL"),
                    args,
                )?,
                None => tx.execute(
                    &format!("DELETE FROM {table} WHERE {predicate} AND ?1 IS NOT NULL AND ?2 IS NOT NULL"),
                    args,
                )?,
            }
        };
        report.rows.push(((*table).to_owned(), n as u64));
    }
    if dry_run {
        tx.rollback()?;
    } else {
        tx.commit()?;
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    Ok(report)
}
