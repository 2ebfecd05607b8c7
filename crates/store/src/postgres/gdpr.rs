//! PostgreSQL: exporting and erasing one person's data, the suppression hash key, the audit
//! log. The same tables, links and blanking rules as SQLite (`crate::gdpr::TABLES`).
//!
//! PostgreSQL keeps an updated row's old version until VACUUM reclaims it; the erasure runs
//! a plain `VACUUM` of the tables it touched afterwards, which makes that space reusable but
//! does not zero it (the database file check of the erasure test is SQLite's).

use engager_domain::LeadId;
use sqlx::postgres::PgConnection;
use sqlx::{Executor, Row};

use super::PgStore;
use crate::common::{from_ms, ms};
use crate::gdpr::{new_key, suppression_hash, Erase, Link, SUPPRESSION_KEY, TABLES};
use crate::*;

pub(super) async fn suppression_key(
    conn: &mut PgConnection,
    create: bool,
) -> StoreResult<Option<Vec<u8>>> {
    if create {
        sqlx::query(
            "INSERT INTO store_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(SUPPRESSION_KEY)
        .bind(new_key())
        .execute(&mut *conn)
        .await?;
    }
    let key: Option<String> = sqlx::query_scalar("SELECT value FROM store_secrets WHERE name = $1")
        .bind(SUPPRESSION_KEY)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(key.map(String::into_bytes))
}

async fn table_exists(conn: &mut PgConnection, table: &str) -> StoreResult<bool> {
    // `to_regclass` resolves through the search path, so isolated schemas work.
    let found: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(table)
        .fetch_one(&mut *conn)
        .await?;
    Ok(found.is_some())
}

struct Subject {
    email: Option<String>,
    phone: Option<String>,
}

async fn subject(conn: &mut PgConnection, lead: LeadId) -> StoreResult<Subject> {
    let row = sqlx::query("SELECT email, phone FROM leads WHERE id = $1")
        .bind(lead.0)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("lead {}", lead.0)))?;
    Ok(Subject {
        email: row.try_get(0)?,
        phone: row.try_get(1)?,
    })
}

/// A bind value of a selector.
enum Arg {
    Int(i64),
    Text(String),
}

fn selector(
    link: Link,
    lead: LeadId,
    who: &Subject,
    key: Option<&[u8]>,
) -> Option<(String, Vec<Arg>)> {
    match link {
        Link::LeadRow => Some(("id = $1".into(), vec![Arg::Int(lead.0)])),
        Link::LeadId => Some(("lead_id = $1".into(), vec![Arg::Int(lead.0)])),
        Link::Phone(column) => who
            .phone
            .clone()
            .map(|p| (format!("{column} = $1"), vec![Arg::Text(p)])),
        Link::Suppression => {
            let mut clauses = Vec::new();
            let mut args = Vec::new();
            for (kind, value) in [("email", &who.email), ("phone", &who.phone)] {
                let Some(value) = value else { continue };
                let mut candidates = vec![value.clone()];
                if let Some(key) = key {
                    candidates.push(suppression_hash(key, kind, value));
                }
                for v in candidates {
                    args.push(Arg::Text(kind.into()));
                    args.push(Arg::Text(v));
                    clauses.push(format!(
                        "(kind = ${} AND value = ${})",
                        args.len() - 1,
                        args.len()
                    ));
                }
            }
            (!clauses.is_empty()).then(|| (clauses.join(" OR "), args))
        }
        Link::None => None,
    }
}

fn bind<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    args: &'q [Arg],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    for a in args {
        q = match a {
            Arg::Int(i) => q.bind(*i),
            Arg::Text(t) => q.bind(t.as_str()),
        };
    }
    q
}

impl PgStore {
    pub(super) async fn export_subject_impl(&self, lead: LeadId) -> StoreResult<serde_json::Value> {
        let mut tx = self.pool().begin().await?;
        let who = subject(&mut tx, lead).await?;
        let key = suppression_key(&mut tx, false).await?;
        let mut out = serde_json::Map::new();
        for rule in TABLES {
            let Some((clause, args)) = selector(rule.link, lead, &who, key.as_deref()) else {
                continue;
            };
            if !table_exists(&mut tx, rule.table).await? {
                continue;
            }
            let sql = format!(
                "SELECT COALESCE(json_agg(row_to_json(t))::text, '[]') FROM (SELECT * FROM {} WHERE {clause}) t",
                rule.table
            );
            let text: String = bind(sqlx::query(&sql), &args)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            let mut rows: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| crate::common::corrupt_in("export", "row_to_json", e))?;
            // JSON stored as text is exported as JSON, as on SQLite.
            if let Some(list) = rows.as_array_mut() {
                for row in list.iter_mut().filter_map(|r| r.as_object_mut()) {
                    for v in row.values_mut() {
                        if let Some(s) = v
                            .as_str()
                            .filter(|s| s.len() > 1 && (s.starts_with('{') || s.starts_with('[')))
                        {
                            if let Ok(parsed) = serde_json::from_str(s) {
                                *v = parsed;
                            }
                        }
                    }
                }
            }
            out.insert(rule.table.into(), rows);
        }
        tx.commit().await?;
        Ok(serde_json::Value::Object(out))
    }

    pub(super) async fn erase_subject_impl(
        &self,
        lead: LeadId,
        audit: &AuditEntry,
    ) -> StoreResult<ErasureReport> {
        let mut tx = self.pool().begin().await?;
        let who = subject(&mut tx, lead).await?;
        let key = suppression_key(&mut tx, true).await?.unwrap_or_default();
        let now = ms(audit.at);
        let mut report = ErasureReport {
            lead_id: Some(lead),
            ..ErasureReport::default()
        };
        let stopped = sqlx::query(
            "UPDATE enrollments SET state = 'stopped', stop_reason = 'erased', next_due_at = NULL, updated_at = $1 \
             WHERE lead_id = $2 AND state IN ('active', 'waiting')",
        )
        .bind(now)
        .bind(lead.0)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        report.rows.push(("enrollments".into(), stopped));
        sqlx::query(
            "UPDATE deliveries SET state = 'cancelled', lease_until = NULL, updated_at = $1 \
             WHERE lead_id = $2 AND state IN ('planned', 'retry_wait', 'claimed')",
        )
        .bind(now)
        .bind(lead.0)
        .execute(&mut *tx)
        .await?;
        if table_exists(&mut tx, "tasks").await? {
            sqlx::query(
                "UPDATE deliveries SET state = 'cancelled', lease_until = NULL, updated_at = $1 \
                 WHERE state = 'sending' AND id IN (SELECT delivery_id FROM tasks WHERE state = 'open' AND lead_id = $2)",
            )
            .bind(now)
            .bind(lead.0)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE tasks SET state = 'cancelled', closed_at = $1 WHERE lead_id = $2 AND state = 'open'")
                .bind(now)
                .bind(lead.0)
                .execute(&mut *tx)
                .await?;
        }
        // A person who asked to be forgotten is not contacted again, even if a later import
        // brings them back: their contact points join the suppression list (hashed below).
        for (kind, value) in [("email", &who.email), ("phone", &who.phone)] {
            if let Some(value) = value {
                sqlx::query(
                    "INSERT INTO suppressions (kind, value, reason, source, created_at) \
                     VALUES ($1, $2, 'erased on request', 'gdpr', $3) ON CONFLICT (kind, value) DO NOTHING",
                )
                .bind(kind)
                .bind(value)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        let mut order: Vec<_> = TABLES.iter().collect();
        order.sort_by_key(|r| r.link == Link::LeadRow);
        let mut touched = Vec::new();
        for rule in order {
            if rule.erase == Erase::Nothing || !table_exists(&mut tx, rule.table).await? {
                continue;
            }
            let Some((clause, args)) = selector(rule.link, lead, &who, Some(&key)) else {
                continue;
            };
            let changed = match rule.erase {
                Erase::Blank(set) => {
                    let sql = format!("UPDATE {} SET {set} WHERE {clause}", rule.table);
                    bind(sqlx::query(&sql), &args)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                }
                Erase::Delete => {
                    let sql = format!("DELETE FROM {} WHERE {clause}", rule.table);
                    bind(sqlx::query(&sql), &args)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                }
                Erase::HashSuppression => {
                    let mut n = 0;
                    for (kind, value) in [("email", &who.email), ("phone", &who.phone)] {
                        let Some(value) = value else { continue };
                        sqlx::query(
                            "INSERT INTO suppressions (kind, value, reason, source, created_at) \
                             SELECT kind, $3, reason, source, created_at FROM suppressions WHERE kind = $1 AND value = $2 \
                             ON CONFLICT (kind, value) DO NOTHING",
                        )
                        .bind(kind)
                        .bind(value)
                        .bind(suppression_hash(&key, kind, value))
                        .execute(&mut *tx)
                        .await?;
                        n += sqlx::query("DELETE FROM suppressions WHERE kind = $1 AND value = $2")
                            .bind(kind)
                            .bind(value)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                    }
                    report.suppressions_hashed += n;
                    n
                }
                Erase::Nothing => 0,
            };
            touched.push(rule.table);
            report.rows.push((rule.table.to_owned(), changed));
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        let mut conn = self.pool().acquire().await?;
        for table in touched {
            // Best effort: the erasure is committed whatever VACUUM says.
            let _ = conn.execute(format!("VACUUM {table}").as_str()).await;
        }
        Ok(report)
    }

    pub(super) async fn audit_log_impl(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT at, action, subject, detail, actor FROM audit_log WHERE at >= $1 ORDER BY id",
        )
        .bind(ms(since))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    at: from_ms(r.try_get(0)?),
                    action: r.try_get(1)?,
                    subject: r.try_get(2)?,
                    detail: r.try_get(3)?,
                    actor: r.try_get(4)?,
                })
            })
            .collect()
    }

    pub(super) async fn append_audit_impl(&self, entry: &AuditEntry) -> StoreResult<()> {
        let mut conn = self.pool().acquire().await?;
        insert_audit(&mut conn, entry).await
    }
}

async fn insert_audit(conn: &mut PgConnection, e: &AuditEntry) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_log (at, action, subject, detail, actor) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(ms(e.at))
    .bind(&e.action)
    .bind(&e.subject)
    .bind(&e.detail)
    .bind(&e.actor)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl PgStore {
    pub(super) async fn retention_impl(
        &self,
        cutoffs: &crate::gdpr::RetentionCutoffs,
        dry_run: bool,
    ) -> StoreResult<crate::gdpr::RetentionReport> {
        let mut tx = self.pool().begin().await?;
        let mut report = crate::gdpr::RetentionReport::default();
        for (table, predicate, set) in crate::gdpr::RETENTION {
            if !table_exists(&mut tx, table).await? {
                continue;
            }
            // Both cutoffs are bound in every statement, so each placeholder's type is known.
            let predicate = format!(
                "{} AND $1::bigint IS NOT NULL AND $2::bigint IS NOT NULL",
                predicate.replace("{1}", "$1").replace("{2}", "$2")
            );
            let sql = match (dry_run, set) {
                (true, _) => format!("SELECT COUNT(*) FROM {table} WHERE {predicate}"),
                (false, Some(set)) => format!("UPDATE {table} SET {set} WHERE {predicate}"),
                (false, None) => format!("DELETE FROM {table} WHERE {predicate}"),
            };
            let q = sqlx::query(&sql)
                .bind(ms(cutoffs.bodies_before))
                .bind(ms(cutoffs.details_before));
            let n = if dry_run {
                q.fetch_one(&mut *tx).await?.try_get::<i64, _>(0)? as u64
            } else {
                q.execute(&mut *tx).await?.rows_affected()
            };
            report.rows.push(((*table).to_owned(), n));
        }
        if dry_run {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok(report)
    }
}
