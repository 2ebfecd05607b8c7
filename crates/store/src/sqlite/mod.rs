//! The SQLite backend: one file, WAL mode, one connection per store handle.
//!
//! Every write that must be atomic runs in a `BEGIN IMMEDIATE` transaction, so several
//! processes on one file serialize their claims instead of interleaving them. Calls run on
//! tokio's blocking pool so they never stall the async runtime.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use engager_domain::{
    CampaignId, Channel, DeliveryId, DeliveryState, EnrollmentId, EventKind, Lead, LeadId, NewLead,
};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row, TransactionBehavior};

use crate::common::{
    corrupt_in, decide_permit, from_ms, from_ms_opt, gates_json, micros, ms, parse_gates,
    pause_key, LeadRow, LeadValues, PermitKeys, LEAD_COLUMNS,
};
use crate::*;

mod accounts;
mod compliance;
mod deliverability;
mod experiments;
mod gdpr;
mod latency;
mod report;
pub use report::report_facts_sql_for_shell;
mod sms;
mod tracking;

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_initial.sql")),
    (
        2,
        include_str!("../../migrations/sqlite/0002_account_states.sql"),
    ),
    (
        3,
        include_str!("../../migrations/sqlite/0003_sms_webhooks.sql"),
    ),
    (
        4,
        include_str!("../../migrations/sqlite/0004_inbound_and_tasks.sql"),
    ),
    (5, include_str!("../../migrations/sqlite/0005_ai_cache.sql")),
    (
        6,
        include_str!("../../migrations/sqlite/0006_fallback_and_rate_buckets.sql"),
    ),
    (
        7,
        include_str!("../../migrations/sqlite/0007_sending_halts.sql"),
    ),
    (8, include_str!("../../migrations/sqlite/0008_gdpr.sql")),
    (9, include_str!("../../migrations/sqlite/0009_variants.sql")),
    (
        10,
        include_str!("../../migrations/sqlite/0010_delivery_accounts.sql"),
    ),
    (
        11,
        include_str!("../../migrations/sqlite/0011_compliance.sql"),
    ),
    (
        12,
        include_str!("../../migrations/sqlite/0012_tracking.sql"),
    ),
    (
        13,
        include_str!("../../migrations/sqlite/0013_experiments_and_replies.sql"),
    ),
    (
        14,
        include_str!("../../migrations/sqlite/0014_account_halts.sql"),
    ),
    (
        15,
        include_str!("../../migrations/sqlite/0015_report_index.sql"),
    ),
    (
        16,
        include_str!("../../migrations/sqlite/0016_provider_ref_partial.sql"),
    ),
];

/// A store on a SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// Wakes the background checkpointer after a write (none for an in-memory database).
    checkpoints: Option<Arc<Checkpointer>>,
}

/// Copies the write-ahead log back into the database file on a thread of its own, so that a
/// writer's commit only appends to the log: the copy and its fsyncs (a quarter of a planning
/// pass's time when the committing connection did them) overlap with the next page's work.
/// The writing connection keeps an automatic checkpoint at [`WAL_SAFETY_PAGES`] as a bound
/// on the log's size should this thread fall behind; by then it finds little left to copy.
struct Checkpointer {
    wake: std::sync::mpsc::SyncSender<()>,
}

/// Log size (pages of 4 KiB) at which a writing connection checkpoints by itself.
const WAL_SAFETY_PAGES: u32 = 4000;
/// Shortest pause between two background checkpoints, so that a burst of commits is
/// copied in a few larger passes rather than one pass per commit.
const CHECKPOINT_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

impl Checkpointer {
    fn start(path: &str) -> Option<Arc<Self>> {
        if path == ":memory:" || path.starts_with("file::memory:") {
            return None;
        }
        let conn = Connection::open(path).ok()?;
        conn.execute_batch("PRAGMA synchronous = NORMAL;").ok()?;
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                // Ends when the last handle on the store is dropped, after a final pass.
                while woken.recv().is_ok() {
                    // PASSIVE never waits for (nor blocks) the writer or any reader.
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::debug!(error = %e, "background checkpoint");
                    }
                    std::thread::sleep(CHECKPOINT_PAUSE);
                }
                let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            })
            .ok()?;
        Some(Arc::new(Self { wake }))
    }

    fn wake(&self) {
        // A full channel means a pass is already due.
        let _ = self.wake.try_send(());
    }
}

/// On a multi-threaded runtime, store calls run in place (the worker hands its other tasks
/// to its peers): cheaper than a hop to the blocking pool for calls of microseconds. A
/// current-thread runtime must not block, so there calls go to the pool.
fn runs_in_place() -> bool {
    matches!(
        tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()),
        Ok(tokio::runtime::RuntimeFlavor::MultiThread)
    )
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and runs migrations. `:memory:` gives a
    /// private in-memory database.
    pub async fn open(path: &str) -> StoreResult<Self> {
        let path = path.to_owned();
        let (conn, checkpoints) = tokio::task::spawn_blocking(move || {
            open_connection(&path).map(|conn| (conn, Checkpointer::start(&path)))
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            checkpoints,
        })
    }

    /// Runs `f` on the connection and wakes the checkpointer when it wrote anything.
    fn call<T>(
        conn: &Mutex<Connection>,
        checkpoints: Option<&Checkpointer>,
        f: impl FnOnce(&mut Connection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let before = guard.total_changes();
        let result = f(&mut guard);
        let wrote = guard.total_changes() != before;
        drop(guard);
        if let (true, Some(c)) = (wrote, checkpoints) {
            c.wake();
        }
        result
    }

    /// Runs `f` in place with what it borrows; only where [`runs_in_place`] holds.
    fn run_borrowing<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        tokio::task::block_in_place(|| Self::call(&self.conn, self.checkpoints.as_deref(), f))
    }

    /// Runs `f` on the connection (a panic while it was held does not make the connection
    /// unusable: every write is a transaction, which SQLite rolled back).
    async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let checkpoints = self.checkpoints.clone();
        let call = move || Self::call(&conn, checkpoints.as_deref(), f);
        if runs_in_place() {
            tokio::task::block_in_place(call)
        } else {
            tokio::task::spawn_blocking(call)
                .await
                .map_err(|e| StoreError::Task(e.to_string()))?
        }
    }

    /// Runs raw SQL (used by benchmarks to compare Engager against the bare statements).
    pub async fn execute_raw(&self, sql: String) -> StoreResult<()> {
        self.run(move |c| Ok(c.execute_batch(&sql)?)).await
    }

    /// Runs a closure on the connection (benchmarks only).
    pub async fn with_connection<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        self.run(f).await
    }
}

impl SqliteStore {
    /// Benchmark baseline: drains due deliveries with the same statements the trait methods
    /// run (claim in batches, then per row begin-send and record-outcome transactions), but
    /// called directly on the connection, without the async hop or record decoding.
    /// Returns (jobs, jobs per second).
    pub async fn raw_claim_complete(
        &self,
        batch: usize,
        now: DateTime<Utc>,
    ) -> StoreResult<(usize, f64)> {
        self.run(move |c| {
            let started = std::time::Instant::now();
            let now_ms = ms(now);
            let lease = ms(now + Duration::minutes(5));
            let mut done = 0usize;
            loop {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let token: i64 = tx.query_row(
                    "UPDATE counters SET value = value + 1 WHERE name = 'fencing_token' RETURNING value",
                    [],
                    |r| r.get(0),
                )?;
                let ids: Vec<i64> = {
                    let mut stmt = tx.prepare_cached(
                        "UPDATE deliveries SET state = 'claimed', fencing_token = ?1, lease_until = ?2, claimed_by = 'raw', updated_at = ?3 \
                         WHERE id IN (SELECT id FROM deliveries WHERE (state = 'planned' AND send_at <= ?3) \
                         OR (state = 'retry_wait' AND next_attempt_at <= ?3) ORDER BY send_at, id LIMIT ?4) RETURNING id",
                    )?;
                    let rows = stmt.query_map(params![token, lease, now_ms, batch as i64], |r| r.get(0))?;
                    rows.collect::<Result<Vec<_>, _>>()?
                };
                tx.commit()?;
                if ids.is_empty() {
                    break;
                }
                for id in ids {
                    c.prepare_cached(
                        "UPDATE deliveries SET state = 'sending', attempts = attempts + 1, lease_until = ?1, updated_at = ?2 \
                         WHERE id = ?3 AND fencing_token = ?4 AND state = 'claimed' AND lease_until > ?2 \
                         AND EXISTS (SELECT 1 FROM enrollments e WHERE e.id = deliveries.enrollment_id AND e.state = 'waiting') \
                         AND EXISTS (SELECT 1 FROM leads l WHERE l.id = deliveries.lead_id AND l.status = 'active')",
                    )?
                    .execute(params![lease, now_ms, id, token])?;
                    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    let (enrollment, lead, step): (i64, i64, i64) = tx.query_row(
                        "UPDATE deliveries SET state = 'sent', provider_ref = 'raw', sent_at = ?1, lease_until = NULL, updated_at = ?1 \
                         WHERE id = ?2 AND fencing_token = ?3 AND state IN ('sending', 'unknown') RETURNING enrollment_id, lead_id, step_index",
                        params![now_ms, id, token],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )?;
                    tx.execute(
                        "INSERT INTO events (lead_id, delivery_id, kind, occurred_at, detail, source) VALUES (?1, ?2, 'sent', ?3, '{}', 'dispatcher')",
                        params![lead, id, now_ms],
                    )?;
                    tx.execute(
                        "UPDATE enrollments SET state = 'completed', current_step = ?1, next_due_at = NULL, updated_at = ?2 \
                         WHERE id = ?3 AND state = 'waiting' AND current_step = ?4",
                        params![step + 1, now_ms, enrollment, step],
                    )?;
                    tx.commit()?;
                    done += 1;
                }
            }
            Ok((done, done as f64 / started.elapsed().as_secs_f64()))
        })
        .await
    }
}

fn open_connection(path: &str) -> StoreResult<Connection> {
    let open_err = |e: rusqlite::Error| StoreError::Open {
        url: format!("sqlite:{path}"),
        reason: e.to_string(),
    };
    let mut conn = Connection::open(path).map_err(open_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(open_err)?;
    // WAL keeps readers off the writer's back; NORMAL sync loses nothing on a process crash
    // (kill -9), only possibly the last transactions on a power cut.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
         PRAGMA cache_size = -65536; PRAGMA mmap_size = 268435456;",
    )
    .map_err(open_err)?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_SAFETY_PAGES)
        .map_err(open_err)?;
    migrate(&mut conn)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    // Foreign keys are off while migrating (a pragma that cannot change inside a
    // transaction), so that a table can be rebuilt (migration 6); they are checked before
    // the commit and switched on again after it.
    conn.execute_batch("PRAGMA foreign_keys = OFF")?;
    let result = migrate_in_transaction(conn);
    conn.execute_batch("PRAGMA foreign_keys = ON")?;
    result
}

fn migrate_in_transaction(conn: &mut Connection) -> StoreResult<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )?;
    let mut applied = false;
    for (version, sql) in MIGRATIONS {
        let done: Option<i64> = tx
            .query_row(
                "SELECT version FROM schema_migrations WHERE version = ?1",
                [version],
                |r| r.get(0),
            )
            .optional()?;
        if done.is_none() {
            applied = true;
            if *version == 6 {
                rebuild_deliveries_unique(&tx).map_err(|e| StoreError::Migration {
                    version: *version,
                    reason: e.to_string(),
                })?;
            }
            tx.execute_batch(sql).map_err(|e| StoreError::Migration {
                version: *version,
                reason: e.to_string(),
            })?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                params![version, ms(Utc::now())],
            )?;
        }
    }
    let violations: Option<String> = if applied {
        tx.query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
            .optional()?
    } else {
        None
    };
    if let Some(table) = violations {
        return Err(StoreError::Migration {
            version: MIGRATIONS.last().map_or(0, |m| m.0),
            reason: format!("a foreign key of table {table} points nowhere after migrating"),
        });
    }
    tx.commit()?;
    Ok(())
}

/// Migration 6: rebuilds `deliveries` with UNIQUE (enrollment_id, step_index, channel)
/// instead of (enrollment_id, step_index), so a step can keep a failed row per channel. The
/// table's own CREATE statement is reused (columns added by earlier migrations stay), and
/// its indexes and triggers are re-created. Runs with foreign keys off (see `migrate`):
/// tables referencing `deliveries` by name then point at the new table.
fn rebuild_deliveries_unique(tx: &rusqlite::Transaction<'_>) -> StoreResult<()> {
    let create: String = tx.query_row(
        "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'deliveries'",
        [],
        |r| r.get(0),
    )?;
    const OLD: &str = "UNIQUE (enrollment_id, step_index)";
    // A table renamed by an earlier rebuild is stored with its name quoted.
    let create = create.replacen("CREATE TABLE \"deliveries\"", "CREATE TABLE deliveries", 1);
    if !create.contains(OLD) || !create.starts_with("CREATE TABLE deliveries") {
        return Err(StoreError::Corrupt {
            table: "sqlite_schema",
            column: "sql",
            reason: format!("unexpected definition of table deliveries: {create}"),
        });
    }
    let create = create
        .replacen(OLD, "UNIQUE (enrollment_id, step_index, channel)", 1)
        .replacen(
            "CREATE TABLE deliveries",
            "CREATE TABLE deliveries_rebuilt",
            1,
        );
    let extras: Vec<String> = tx
        .prepare(
            "SELECT sql FROM sqlite_schema WHERE tbl_name = 'deliveries' \
             AND type IN ('index', 'trigger') AND sql IS NOT NULL ORDER BY type, name",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    tx.execute_batch(&create)?;
    tx.execute_batch(
        "INSERT INTO deliveries_rebuilt SELECT * FROM deliveries; \
         DROP TABLE deliveries; \
         ALTER TABLE deliveries_rebuilt RENAME TO deliveries;",
    )?;
    for sql in extras {
        tx.execute_batch(&sql)?;
    }
    Ok(())
}

/// Appends the traces of evaluations and applies their decisions, in the caller's
/// transaction. A planned row is only added while no other row of its step is live (every
/// earlier row of the step failed: a fallback), and never twice for one channel.
fn apply_evaluations(
    tx: &rusqlite::Transaction<'_>,
    evaluations: &[Evaluation],
    now: i64,
) -> StoreResult<()> {
    let mut trace = tx.prepare_cached(
        "INSERT INTO traces (enrollment_id, campaign_id, lead_id, step_index, evaluated_at, outcome, code, channel, at, gates_json) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    // A step has at most one live delivery (a failed one may be followed by a fallback on
    // another channel). The check is its own statement: an INSERT … SELECT that reads the
    // table it writes makes SQLite stage every row in a temporary table first.
    let mut live = tx.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM deliveries WHERE enrollment_id = ?1 AND step_index = ?2 AND state <> 'failed')",
    )?;
    let mut plan = tx.prepare_cached(
        "INSERT INTO deliveries (enrollment_id, campaign_id, lead_id, step_index, channel, state, send_at, \
         to_address, subject, body_text, body_html, created_at, updated_at, variant) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?12, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?13) \
         ON CONFLICT (enrollment_id, step_index, channel) DO NOTHING",
    )?;
    let mut wait = tx.prepare_cached(
        "UPDATE enrollments SET state = 'waiting', next_due_at = NULL, updated_at = ?1 \
         WHERE id = ?2 AND state = 'active' AND current_step = ?3",
    )?;
    let mut defer = tx.prepare_cached(
        "UPDATE enrollments SET next_due_at = ?1, updated_at = ?2 WHERE id = ?3 AND state = 'active' AND current_step = ?4",
    )?;
    let mut skip = tx.prepare_cached(
        "UPDATE enrollments SET current_step = current_step + 1, next_due_at = ?1, \
         state = CASE WHEN ?1 IS NULL THEN 'completed' ELSE 'active' END, updated_at = ?2 \
         WHERE id = ?3 AND state = 'active' AND current_step = ?4",
    )?;
    let mut stop = tx.prepare_cached(
        "UPDATE enrollments SET state = 'stopped', stop_reason = ?1, next_due_at = NULL, updated_at = ?2 \
         WHERE id = ?3 AND state IN ('active', 'waiting')",
    )?;
    for ev in evaluations {
        let t = &ev.trace;
        let step = t.step_index as i64;
        trace.execute(params![
            t.enrollment_id.0,
            t.campaign_id.0,
            t.lead_id.0,
            step,
            ms(t.evaluated_at),
            t.outcome,
            t.code,
            t.channel.map(|c| c.as_str()),
            t.at.map(ms),
            gates_json(&t.gates),
        ])?;
        match &ev.decision {
            PlanDecision::Plan(d) | PlanDecision::Review(d) => {
                let state = if matches!(ev.decision, PlanDecision::Review(_)) {
                    "pending_review"
                } else {
                    "planned"
                };
                let exists: bool =
                    live.query_row(params![t.enrollment_id.0, step], |r| r.get(0))?;
                if !exists {
                    plan.execute(params![
                        t.enrollment_id.0,
                        t.campaign_id.0,
                        t.lead_id.0,
                        step,
                        d.channel.as_str(),
                        ms(d.send_at),
                        d.to_address,
                        d.subject,
                        d.body_text,
                        d.body_html,
                        now,
                        state,
                        d.variant
                    ])?;
                }
                wait.execute(params![now, t.enrollment_id.0, step])?;
            }
            PlanDecision::Defer { until } => {
                defer.execute(params![ms(*until), now, t.enrollment_id.0, step])?;
            }
            PlanDecision::Skip { next_due } => {
                skip.execute(params![next_due.map(ms), now, t.enrollment_id.0, step])?;
            }
            PlanDecision::Stop { reason } => {
                stop.execute(params![reason, now, t.enrollment_id.0])?;
            }
        }
    }
    Ok(())
}

fn lead_row(r: &Row<'_>, at: usize) -> rusqlite::Result<LeadRow> {
    Ok(LeadRow {
        id: r.get(at)?,
        email: r.get(at + 1)?,
        phone: r.get(at + 2)?,
        phone_region: r.get(at + 3)?,
        linkedin_url: r.get(at + 4)?,
        first_name: r.get(at + 5)?,
        last_name: r.get(at + 6)?,
        company: r.get(at + 7)?,
        title: r.get(at + 8)?,
        industry: r.get(at + 9)?,
        country: r.get(at + 10)?,
        city: r.get(at + 11)?,
        time_zone: r.get(at + 12)?,
        website: r.get(at + 13)?,
        custom_json: r.get(at + 14)?,
        source: r.get(at + 15)?,
        source_ref: r.get(at + 16)?,
        status: r.get(at + 17)?,
    })
}

const ENROLLMENT_COLUMNS: &str =
    "e.id, e.campaign_id, e.lead_id, e.state, e.current_step, e.next_due_at, e.stop_reason";

fn enrollment_row(r: &Row<'_>) -> rusqlite::Result<(EnrollmentRecord, String)> {
    let state: String = r.get(3)?;
    Ok((
        EnrollmentRecord {
            id: EnrollmentId(r.get(0)?),
            campaign_id: CampaignId(r.get(1)?),
            lead_id: LeadId(r.get(2)?),
            state: EnrollmentState::Active,
            current_step: r.get::<_, i64>(4)? as usize,
            next_due_at: from_ms_opt(r.get(5)?),
            stop_reason: r.get(6)?,
        },
        state,
    ))
}

fn finish_enrollment((mut e, state): (EnrollmentRecord, String)) -> StoreResult<EnrollmentRecord> {
    e.state = EnrollmentState::parse(&state)
        .ok_or_else(|| corrupt_in("enrollments", "state", format!("unknown state {state:?}")))?;
    Ok(e)
}

const DELIVERY_COLUMNS: &str =
    "id, enrollment_id, campaign_id, lead_id, step_index, channel, state, \
    send_at, to_address, subject, body_text, body_html, attempts, fencing_token, lease_until, \
    claimed_by, next_attempt_at, last_error, provider_ref, sent_at, updated_at, created_at, account";

struct RawDelivery {
    record: DeliveryRecord,
    channel: String,
    state: String,
}

fn delivery_row(r: &Row<'_>) -> rusqlite::Result<RawDelivery> {
    Ok(RawDelivery {
        record: DeliveryRecord {
            id: DeliveryId(r.get(0)?),
            enrollment_id: EnrollmentId(r.get(1)?),
            campaign_id: CampaignId(r.get(2)?),
            lead_id: LeadId(r.get(3)?),
            step_index: r.get::<_, i64>(4)? as usize,
            channel: Channel::Email,
            state: DeliveryState::Planned,
            send_at: from_ms(r.get(7)?),
            to_address: r.get(8)?,
            subject: r.get(9)?,
            body_text: r.get(10)?,
            body_html: r.get(11)?,
            attempts: r.get::<_, i64>(12)? as u32,
            fencing_token: r.get(13)?,
            lease_until: from_ms_opt(r.get(14)?),
            claimed_by: r.get(15)?,
            next_attempt_at: from_ms_opt(r.get(16)?),
            last_error: r.get(17)?,
            provider_ref: r.get(18)?,
            sent_at: from_ms_opt(r.get(19)?),
            updated_at: from_ms(r.get(20)?),
            created_at: from_ms(r.get(21)?),
            account: r.get(22)?,
        },
        channel: r.get(5)?,
        state: r.get(6)?,
    })
}

fn finish_delivery(raw: RawDelivery) -> StoreResult<DeliveryRecord> {
    let mut d = raw.record;
    d.channel = raw
        .channel
        .parse()
        .map_err(|e| corrupt_in("deliveries", "channel", e))?;
    d.state = raw
        .state
        .parse()
        .map_err(|e| corrupt_in("deliveries", "state", e))?;
    Ok(d)
}

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(",")
}

const TASK_COLUMNS: &str =
    "id, delivery_id, enrollment_id, campaign_id, lead_id, step_index, channel, kind, \
    profile_url, body, state, due_at, on_deadline, note, created_at, closed_at";

fn task_row(r: &Row<'_>) -> rusqlite::Result<(TaskRecord, String, String)> {
    Ok((
        TaskRecord {
            id: r.get(0)?,
            delivery_id: DeliveryId(r.get(1)?),
            enrollment_id: EnrollmentId(r.get(2)?),
            campaign_id: CampaignId(r.get(3)?),
            lead_id: LeadId(r.get(4)?),
            step_index: r.get::<_, i64>(5)? as usize,
            channel: Channel::Linkedin,
            kind: r.get(7)?,
            profile_url: r.get(8)?,
            body: r.get(9)?,
            state: TaskState::Open,
            due_at: from_ms(r.get(11)?),
            on_deadline: r.get(12)?,
            note: r.get(13)?,
            created_at: from_ms(r.get(14)?),
            closed_at: from_ms_opt(r.get(15)?),
        },
        r.get(6)?,
        r.get(10)?,
    ))
}

fn finish_task((mut t, channel, state): (TaskRecord, String, String)) -> StoreResult<TaskRecord> {
    t.channel = channel
        .parse()
        .map_err(|e| corrupt_in("tasks", "channel", e))?;
    t.state = TaskState::parse(&state)
        .ok_or_else(|| corrupt_in("tasks", "state", format!("unknown state {state:?}")))?;
    Ok(t)
}

/// Cancels the open tasks (and their `sending` deliveries) of the leads `lead_sql` selects.
fn cancel_open_tasks(
    tx: &rusqlite::Transaction<'_>,
    lead_sql: &str,
    arg: &dyn rusqlite::ToSql,
    reason: &str,
    now: i64,
) -> StoreResult<u64> {
    let cancelled = tx.execute(
        &format!(
            "UPDATE deliveries SET state = 'cancelled', last_error = ?1, lease_until = NULL, updated_at = ?2 \
             WHERE state = 'sending' AND id IN (SELECT delivery_id FROM tasks WHERE state = 'open' AND lead_id IN ({lead_sql}))"
        ),
        params![reason, now, arg],
    )? as u64;
    tx.execute(
        &format!(
            "UPDATE tasks SET state = 'cancelled', note = ?1, closed_at = ?2 WHERE state = 'open' AND lead_id IN ({lead_sql})"
        ),
        params![reason, now, arg],
    )?;
    Ok(cancelled)
}

/// Moves a waiting enrollment past `step` (its delivery was sent or skipped).
fn advance_enrollment(
    tx: &rusqlite::Transaction<'_>,
    enrollment: i64,
    step: i64,
    next: FollowUp,
    now: i64,
) -> StoreResult<()> {
    match next {
        FollowUp::NextStepAt(at) => tx.execute(
            "UPDATE enrollments SET state = 'active', current_step = ?1, next_due_at = ?2, updated_at = ?3 \
             WHERE id = ?4 AND state = 'waiting' AND current_step = ?5",
            params![step + 1, ms(at), now, enrollment, step],
        )?,
        FollowUp::Complete => tx.execute(
            "UPDATE enrollments SET state = 'completed', current_step = ?1, next_due_at = NULL, updated_at = ?2 \
             WHERE id = ?3 AND state = 'waiting' AND current_step = ?4",
            params![step + 1, now, enrollment, step],
        )?,
    };
    Ok(())
}

fn event_effects(
    tx: &rusqlite::Transaction<'_>,
    event: &NewEvent,
    now: i64,
) -> StoreResult<EventEffects> {
    let mut effects = EventEffects::default();
    if event.kind.stops_sequences() {
        let reason = event.kind.as_str();
        effects.enrollments_stopped = tx.execute(
            "UPDATE enrollments SET state = 'stopped', stop_reason = ?1, next_due_at = NULL, updated_at = ?2 \
             WHERE lead_id = ?3 AND state IN ('active', 'waiting')",
            params![reason, now, event.lead_id.0],
        )? as u64;
        effects.deliveries_cancelled = tx.execute(
            "UPDATE deliveries SET state = 'cancelled', last_error = ?1, lease_until = NULL, updated_at = ?2 \
             WHERE lead_id = ?3 AND state IN ('planned', 'retry_wait', 'claimed')",
            params![format!("cancelled: lead {reason}"), now, event.lead_id.0],
        )? as u64;
        effects.deliveries_cancelled += cancel_open_tasks(
            tx,
            "?3",
            &event.lead_id.0,
            &format!("cancelled: lead {reason}"),
            now,
        )?;
    }
    if event.kind.suppresses() {
        let target: Option<(String, String)> = match event.delivery_id {
            Some(id) => tx
                .query_row(
                    "SELECT channel, to_address FROM deliveries WHERE id = ?1",
                    [id.0],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?,
            None => tx
                .query_row(
                    "SELECT 'email', email FROM leads WHERE id = ?1 AND email IS NOT NULL",
                    [event.lead_id.0],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?,
        };
        let key = match target {
            Some((channel, address)) if channel == "email" => Some(SuppressionKey::Email(address)),
            Some((channel, address)) if channel == "sms" => Some(SuppressionKey::Phone(address)),
            _ => None,
        };
        if let Some(key) = key {
            effects.suppressed = tx.execute(
                "INSERT INTO suppressions (kind, value, reason, source, created_at) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (kind, value) DO NOTHING",
                params![key.kind(), key.value(), event.kind.as_str(), event.source, now],
            )? > 0;
        }
        let status = match event.kind {
            EventKind::HardBounce => "bounced",
            _ => "unsubscribed",
        };
        tx.execute(
            "UPDATE leads SET status = ?1, updated_at = ?2 WHERE id = ?3 AND status = 'active'",
            params![status, now, event.lead_id.0],
        )?;
    }
    Ok(effects)
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn upsert_leads(
        &self,
        leads: &[NewLead],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<UpsertOutcome>> {
        let leads = leads.to_vec();
        self.run(move |c| {
            let now = ms(now);
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut outcomes = Vec::with_capacity(leads.len());
            {
                let mut by_email = tx.prepare_cached("SELECT id FROM leads WHERE email = ?1")?;
                let mut by_ref = tx.prepare_cached(
                    "SELECT id FROM leads WHERE source = ?1 AND source_ref = ?2 AND email IS NULL",
                )?;
                let mut by_phone =
                    tx.prepare_cached("SELECT id FROM leads WHERE phone = ?1 AND email IS NULL")?;
                let mut insert = tx.prepare_cached(
                    "INSERT INTO leads (email, phone, phone_region, linkedin_url, first_name, last_name, company, \
                     title, industry, country, city, time_zone, website, custom_json, source, source_ref, \
                     status, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, 'active', ?17, ?17)",
                )?;
                let mut update = tx.prepare_cached(
                    "UPDATE leads SET email = COALESCE(?1, email), phone = COALESCE(?2, phone), \
                     phone_region = CASE WHEN ?2 IS NULL THEN phone_region ELSE ?3 END, \
                     linkedin_url = COALESCE(?4, linkedin_url), first_name = COALESCE(?5, first_name), \
                     last_name = COALESCE(?6, last_name), company = COALESCE(?7, company), \
                     title = COALESCE(?8, title), industry = COALESCE(?9, industry), \
                     country = COALESCE(?10, country), city = COALESCE(?11, city), \
                     time_zone = COALESCE(?12, time_zone), website = COALESCE(?13, website), \
                     custom_json = json_patch(custom_json, ?14), source = ?15, \
                     source_ref = COALESCE(?16, source_ref), updated_at = ?17 WHERE id = ?18",
                )?;
                for lead in &leads {
                    let v = LeadValues::of(lead);
                    let existing: Option<i64> = if let Some(email) = v.email {
                        by_email.query_row([email], |r| r.get(0)).optional()?
                    } else if let Some(source_ref) = v.source_ref {
                        by_ref.query_row([v.source, source_ref], |r| r.get(0)).optional()?
                    } else if let Some(phone) = v.phone {
                        by_phone.query_row([phone], |r| r.get(0)).optional()?
                    } else {
                        None
                    };
                    let values = params![
                        v.email, v.phone, v.phone_region, v.linkedin_url, v.first_name, v.last_name,
                        v.company, v.title, v.industry, v.country, v.city, v.time_zone, v.website,
                        v.custom_json, v.source, v.source_ref, now
                    ];
                    match existing {
                        Some(id) => {
                            let mut all: Vec<&dyn rusqlite::ToSql> = values.to_vec();
                            all.push(&id);
                            update.execute(all.as_slice())?;
                            outcomes.push(UpsertOutcome::Updated(LeadId(id)));
                        }
                        None => {
                            insert.execute(values)?;
                            outcomes.push(UpsertOutcome::Inserted(LeadId(tx.last_insert_rowid())));
                        }
                    }
                }
            }
            tx.commit()?;
            Ok(outcomes)
        })
        .await
    }

    async fn lead(&self, id: LeadId) -> StoreResult<Option<Lead>> {
        self.run(move |c| {
            let sql = format!("SELECT {LEAD_COLUMNS} FROM leads l WHERE l.id = ?1");
            let row = c.query_row(&sql, [id.0], |r| lead_row(r, 0)).optional()?;
            row.map(LeadRow::into_lead).transpose()
        })
        .await
    }

    async fn lead_by_email(&self, email: &str) -> StoreResult<Option<Lead>> {
        let email = email.trim().to_ascii_lowercase();
        self.run(move |c| {
            let sql = format!("SELECT {LEAD_COLUMNS} FROM leads l WHERE l.email = ?1");
            let row = c.query_row(&sql, [email], |r| lead_row(r, 0)).optional()?;
            row.map(LeadRow::into_lead).transpose()
        })
        .await
    }

    async fn lead_ids(&self, filter: &LeadFilter) -> StoreResult<Vec<LeadId>> {
        let filter = filter.clone();
        self.run(move |c| {
            let mut sql = String::from("SELECT id FROM leads WHERE 1 = 1");
            let mut args: Vec<String> = Vec::new();
            if let Some(country) = &filter.country {
                sql.push_str(" AND country = ?");
                args.push(country.to_ascii_uppercase());
            }
            if let Some(industry) = &filter.industry {
                sql.push_str(" AND lower(industry) = lower(?)");
                args.push(industry.clone());
            }
            if let Some(prefix) = &filter.source_prefix {
                sql.push_str(" AND substr(source, 1, length(?)) = ?");
                args.push(prefix.clone());
                args.push(prefix.clone());
            }
            if filter.has_email {
                sql.push_str(" AND email IS NOT NULL");
            }
            if filter.active_only {
                sql.push_str(" AND status = 'active'");
            }
            sql.push_str(" ORDER BY id");
            if let Some(limit) = filter.limit {
                sql.push_str(&format!(" LIMIT {limit}"));
            }
            let mut stmt = c.prepare(&sql)?;
            let ids = stmt
                .query_map(params_from_iter(args.iter()), |r| r.get(0).map(LeadId))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ids)
        })
        .await
    }

    async fn lead_counts(&self) -> StoreResult<Vec<(String, u64)>> {
        self.run(|c| {
            let mut stmt =
                c.prepare("SELECT status, COUNT(*) FROM leads GROUP BY status ORDER BY status")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn save_campaign(
        &self,
        slug: &str,
        name: &str,
        definition: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<CampaignId> {
        let (slug, name, definition) = (slug.to_owned(), name.to_owned(), definition.to_owned());
        self.run(move |c| {
            let id = c.query_row(
                "INSERT INTO campaigns (slug, name, definition, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4) \
                 ON CONFLICT (slug) DO UPDATE SET name = excluded.name, definition = excluded.definition, \
                 updated_at = excluded.updated_at RETURNING id",
                params![slug, name, definition, ms(now)],
                |r| r.get(0),
            )?;
            Ok(CampaignId(id))
        })
        .await
    }

    async fn campaigns(&self) -> StoreResult<Vec<CampaignRecord>> {
        self.run(|c| {
            let mut stmt =
                c.prepare("SELECT id, slug, name, definition FROM campaigns ORDER BY id")?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(CampaignRecord {
                        id: CampaignId(r.get(0)?),
                        slug: r.get(1)?,
                        name: r.get(2)?,
                        definition: r.get(3)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn enroll(
        &self,
        campaign: CampaignId,
        leads: &[LeadId],
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let leads = leads.to_vec();
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut added = 0;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO enrollments (campaign_id, lead_id, state, current_step, next_due_at, enrolled_at, updated_at) \
                     VALUES (?1, ?2, 'active', 0, ?3, ?3, ?3) ON CONFLICT (campaign_id, lead_id) DO NOTHING",
                )?;
                for lead in &leads {
                    added += stmt.execute(params![campaign.0, lead.0, ms(now)])? as u64;
                }
            }
            tx.commit()?;
            Ok(added)
        })
        .await
    }

    async fn due_enrollments(
        &self,
        now: DateTime<Utc>,
        after: Option<DueCursor>,
        limit: usize,
    ) -> StoreResult<Vec<DueEnrollment>> {
        self.run(move |c| {
            let sql = format!(
                "SELECT {ENROLLMENT_COLUMNS}, {LEAD_COLUMNS} FROM enrollments e JOIN leads l ON l.id = e.lead_id \
                 WHERE e.state = 'active' AND e.next_due_at <= ?1 AND (e.next_due_at, e.id) > (?2, ?3) \
                 ORDER BY e.next_due_at, e.id LIMIT ?4"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt
                .query_map(params![
                        ms(now),
                        after.map_or(i64::MIN, |a| ms(a.next_due_at)),
                        after.map_or(0, |a| a.id.0),
                        limit as i64
                    ], |r| {
                    Ok((enrollment_row(r)?, lead_row(r, 7)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(e, l)| {
                    Ok(DueEnrollment {
                        enrollment: finish_enrollment(e)?,
                        lead: l.into_lead()?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn enrollments_for_lead(&self, lead: LeadId) -> StoreResult<Vec<EnrollmentRecord>> {
        self.run(move |c| {
            let sql = format!(
                "SELECT {ENROLLMENT_COLUMNS} FROM enrollments e WHERE e.lead_id = ?1 ORDER BY e.id"
            );
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt
                .query_map([lead.0], enrollment_row)?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().map(finish_enrollment).collect()
        })
        .await
    }

    async fn enrollment_counts(&self) -> StoreResult<Vec<(CampaignId, String, u64)>> {
        self.run(|c| {
            let mut stmt = c.prepare(
                "SELECT campaign_id, state, COUNT(*) FROM enrollments GROUP BY campaign_id, state ORDER BY campaign_id, state",
            )?;
            let rows = stmt
                .query_map([], |r| Ok((CampaignId(r.get(0)?), r.get(1)?, r.get::<_, i64>(2)? as u64)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn touches(
        &self,
        leads: &[LeadId],
        since: DateTime<Utc>,
    ) -> StoreResult<HashMap<LeadId, Vec<DateTime<Utc>>>> {
        let leads = leads.to_vec();
        self.run(move |c| {
            let mut out: HashMap<LeadId, Vec<DateTime<Utc>>> = HashMap::new();
            for chunk in leads.chunks(900) {
                let sql = format!(
                    "SELECT lead_id, COALESCE(sent_at, send_at) FROM deliveries WHERE lead_id IN ({}) \
                     AND +state IN ('planned', 'claimed', 'sending', 'sent', 'retry_wait', 'unknown') \
                     AND COALESCE(sent_at, send_at) >= ?",
                    placeholders(chunk.len())
                );
                let mut stmt = c.prepare_cached(&sql)?;
                let mut args: Vec<i64> = chunk.iter().map(|l| l.0).collect();
                args.push(ms(since));
                let rows = stmt.query_map(params_from_iter(args.iter()), |r| {
                    Ok((LeadId(r.get(0)?), from_ms(r.get(1)?)))
                })?;
                for row in rows {
                    let (lead, at) = row?;
                    out.entry(lead).or_default().push(at);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn contact_history(
        &self,
        leads: &[LeadId],
        since: DateTime<Utc>,
    ) -> StoreResult<HashMap<LeadId, engager_domain::LeadHistory>> {
        let leads = leads.to_vec();
        self.run(move |c| {
            let mut out: HashMap<LeadId, engager_domain::LeadHistory> = HashMap::new();
            for chunk in leads.chunks(900) {
                let mut args: Vec<i64> = chunk.iter().map(|l| l.0).collect();
                args.push(ms(since));
                let sql = format!(
                    "SELECT lead_id, id, enrollment_id, step_index, channel, state, COALESCE(sent_at, send_at) AS at \
                     FROM deliveries WHERE lead_id IN ({}) \
                     AND +state IN ('planned', 'claimed', 'sending', 'sent', 'retry_wait', 'unknown') \
                     AND COALESCE(sent_at, send_at) >= ? ORDER BY lead_id, at, id",
                    placeholders(chunk.len())
                );
                let mut stmt = c.prepare_cached(&sql)?;
                let rows = stmt.query_map(params_from_iter(args.iter()), |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, i64>(6)?,
                    ))
                })?;
                for row in rows {
                    let (lead, id, enrollment, step, channel, state, at) = row?;
                    out.entry(LeadId(lead))
                        .or_default()
                        .touches
                        .push(engager_domain::Touch {
                            at: from_ms(at),
                            channel: channel
                                .parse()
                                .map_err(|e| corrupt_in("deliveries", "channel", e))?,
                            sent: state == "sent",
                            delivery: Some(DeliveryId(id)),
                            step: Some((EnrollmentId(enrollment), step as usize)),
                        });
                }
                let sql = format!(
                    "SELECT lead_id, kind, occurred_at, delivery_id FROM events WHERE lead_id IN ({}) \
                     AND kind NOT IN ('sent', 'delivered') AND occurred_at >= ? \
                     AND NOT (kind IN ('opened', 'clicked') AND detail LIKE '%\"automated\":true%') \
                     ORDER BY lead_id, occurred_at, id",
                    placeholders(chunk.len())
                );
                let mut stmt = c.prepare_cached(&sql)?;
                let rows = stmt.query_map(params_from_iter(args.iter()), |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                    ))
                })?;
                for row in rows {
                    let (lead, kind, at, delivery) = row?;
                    out.entry(LeadId(lead))
                        .or_default()
                        .events
                        .push(engager_domain::Engagement {
                            at: from_ms(at),
                            kind: kind.parse().map_err(|e| corrupt_in("events", "kind", e))?,
                            delivery: delivery.map(DeliveryId),
                        });
                }
            }
            for (lead, consents) in compliance::consents(c, &leads)? {
                out.entry(lead).or_default().consents = consents;
            }
            Ok(out)
        })
        .await
    }

    async fn suppressed(&self, values: &[SuppressionKey]) -> StoreResult<Vec<SuppressionRecord>> {
        let values = values.to_vec();
        self.run(move |c| {
            // One read transaction for the whole batch: outside one, every lookup would take
            // and release the database's shared lock on its own (two fcntl calls per key).
            let tx = c.transaction()?;
            // An erased person's entry keeps only a keyed hash of the value.
            let hash_key = gdpr::suppression_key(&tx, false)?;
            // Without erasures there is no hashed form to look for; an `IN` list would cost
            // SQLite a temporary index per lookup.
            let mut stmt = tx.prepare_cached(if hash_key.is_some() {
                "SELECT reason, source, created_at FROM suppressions WHERE kind = ?1 AND value IN (?2, ?3) LIMIT 1"
            } else {
                "SELECT reason, source, created_at FROM suppressions WHERE kind = ?1 AND value = ?2 LIMIT 1"
            })?;
            let mut out = Vec::new();
            for key in values {
                let row = |r: &Row<'_>| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
                };
                let hit = match hash_key.as_deref() {
                    Some(k) => {
                        let hashed = crate::gdpr::suppression_hash(k, key.kind(), key.value());
                        stmt.query_row(params![key.kind(), key.value(), hashed], row)
                    }
                    None => stmt.query_row(params![key.kind(), key.value()], row),
                }
                .optional()?;
                if let Some((reason, source, created_at)) = hit {
                    out.push(SuppressionRecord {
                        key,
                        reason,
                        source,
                        created_at: from_ms(created_at),
                    });
                }
            }
            drop(stmt);
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn record_evaluations(
        &self,
        evaluations: &[Evaluation],
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let write = move |c: &mut Connection, evaluations: &[Evaluation]| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            apply_evaluations(&tx, evaluations, ms(now))?;
            tx.commit()?;
            Ok(())
        };
        // A planning pass writes a page of evaluations at a time: where the call can run in
        // place, it borrows them instead of copying every rendered message and trace.
        if runs_in_place() {
            return self.run_borrowing(|c| write(c, evaluations));
        }
        let evaluations = evaluations.to_vec();
        self.run(move |c| write(c, &evaluations)).await
    }

    async fn traces_for_lead(&self, lead: LeadId) -> StoreResult<Vec<TraceRecord>> {
        self.run(move |c| {
            let mut stmt = c.prepare(
                "SELECT enrollment_id, campaign_id, lead_id, step_index, evaluated_at, outcome, code, channel, at, gates_json \
                 FROM traces WHERE lead_id = ?1 ORDER BY id",
            )?;
            let rows = stmt
                .query_map([lead.0], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, Option<String>>(7)?,
                        r.get::<_, Option<i64>>(8)?,
                        r.get::<_, String>(9)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(e, c, l, s, at, outcome, code, channel, when, gates)| {
                    Ok(TraceRecord {
                        enrollment_id: EnrollmentId(e),
                        campaign_id: CampaignId(c),
                        lead_id: LeadId(l),
                        step_index: s as usize,
                        evaluated_at: from_ms(at),
                        outcome,
                        code,
                        channel: channel
                            .map(|ch| ch.parse().map_err(|e| corrupt_in("traces", "channel", e)))
                            .transpose()?,
                        at: from_ms_opt(when),
                        gates: parse_gates(&gates)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn claim_due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        worker: &str,
        lease: Duration,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        let worker = worker.to_owned();
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let token: i64 = tx.query_row(
                "UPDATE counters SET value = value + 1 WHERE name = 'fencing_token' RETURNING value",
                [],
                |r| r.get(0),
            )?;
            let sql = format!(
                "UPDATE deliveries SET state = 'claimed', fencing_token = ?1, lease_until = ?2, claimed_by = ?3, updated_at = ?4 \
                 WHERE id IN (SELECT id FROM deliveries WHERE (state = 'planned' AND send_at <= ?4) \
                 OR (state = 'retry_wait' AND next_attempt_at <= ?4) ORDER BY send_at, id LIMIT ?5) \
                 RETURNING {DELIVERY_COLUMNS}"
            );
            let rows = {
                let mut stmt = tx.prepare_cached(&sql)?;
                let rows = stmt
                    .query_map(
                        params![token, ms(now + lease), worker, ms(now), limit as i64],
                        delivery_row,
                    )?
                    .collect::<Result<Vec<_>, _>>()?;
                rows
            };
            tx.commit()?;
            let mut out = rows.into_iter().map(finish_delivery).collect::<StoreResult<Vec<_>>>()?;
            out.sort_by_key(|d| (d.send_at, d.id));
            Ok(out)
        })
        .await
    }

    async fn begin_send(
        &self,
        id: DeliveryId,
        token: i64,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> StoreResult<bool> {
        self.run(move |c| {
            let n = c.prepare_cached(
                "UPDATE deliveries SET state = 'sending', attempts = attempts + 1, lease_until = ?1, updated_at = ?2 \
                 WHERE id = ?3 AND fencing_token = ?4 AND state = 'claimed' AND lease_until > ?2 \
                 AND EXISTS (SELECT 1 FROM enrollments e WHERE e.id = deliveries.enrollment_id AND e.state = 'waiting') \
                 AND EXISTS (SELECT 1 FROM leads l WHERE l.id = deliveries.lead_id AND l.status = 'active')",
            )?
            .execute(params![ms(now + lease), ms(now), id.0, token])?;
            Ok(n == 1)
        })
        .await
    }

    async fn record_outcome(
        &self,
        id: DeliveryId,
        token: i64,
        outcome: &SendOutcome,
        next: &FollowUp,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (outcome, next) = (outcome.clone(), *next);
        self.run(move |c| {
            let now = ms(now);
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let (state, next_attempt, error, provider_ref, sent_at) = match &outcome {
                SendOutcome::Sent { provider_ref } => ("sent", None, None, Some(provider_ref.clone()), Some(now)),
                SendOutcome::Retry { at, error } => ("retry_wait", Some(ms(*at)), Some(error.clone()), None, None),
                SendOutcome::Failed { error } => ("failed", None, Some(error.clone()), None, None),
                SendOutcome::Unknown { error } => ("unknown", None, Some(error.clone()), None, None),
            };
            let row: Option<(i64, i64, i64)> = tx
                .query_row(
                    "UPDATE deliveries SET state = ?1, next_attempt_at = ?2, last_error = COALESCE(?3, last_error), \
                     provider_ref = COALESCE(?4, provider_ref), sent_at = COALESCE(?5, sent_at), lease_until = NULL, updated_at = ?6 \
                     WHERE id = ?7 AND fencing_token = ?8 AND state IN ('sending', 'unknown') \
                     RETURNING enrollment_id, lead_id, step_index",
                    params![state, next_attempt, error, provider_ref, sent_at, now, id.0, token],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let Some((enrollment, lead, step)) = row else {
                return Ok(false);
            };
            match &outcome {
                SendOutcome::Sent { .. } => {
                    tx.execute(
                        "INSERT INTO events (lead_id, delivery_id, kind, occurred_at, detail, source) VALUES (?1, ?2, 'sent', ?3, '{}', 'dispatcher')",
                        params![lead, id.0, now],
                    )?;
                    match next {
                        FollowUp::NextStepAt(at) => tx.execute(
                            "UPDATE enrollments SET state = 'active', current_step = ?1, next_due_at = ?2, updated_at = ?3 \
                             WHERE id = ?4 AND state = 'waiting' AND current_step = ?5",
                            params![step + 1, ms(at), now, enrollment, step],
                        )?,
                        FollowUp::Complete => tx.execute(
                            "UPDATE enrollments SET state = 'completed', current_step = ?1, next_due_at = NULL, updated_at = ?2 \
                             WHERE id = ?3 AND state = 'waiting' AND current_step = ?4",
                            params![step + 1, now, enrollment, step],
                        )?,
                    };
                }
                SendOutcome::Failed { .. } => {
                    tx.execute(
                        "UPDATE enrollments SET state = 'stopped', stop_reason = 'delivery_failed', next_due_at = NULL, updated_at = ?1 \
                         WHERE id = ?2 AND state = 'waiting'",
                        params![now, enrollment],
                    )?;
                }
                SendOutcome::Retry { .. } | SendOutcome::Unknown { .. } => {}
            }
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn cancel_claimed(
        &self,
        id: DeliveryId,
        token: i64,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let reason = reason.to_owned();
        self.run(move |c| {
            let now = ms(now);
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let enrollment: Option<i64> = tx
                .query_row(
                    "UPDATE deliveries SET state = 'cancelled', last_error = ?1, lease_until = NULL, updated_at = ?2 \
                     WHERE id = ?3 AND fencing_token = ?4 AND state = 'claimed' RETURNING enrollment_id",
                    params![reason, now, id.0, token],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(enrollment) = enrollment {
                tx.execute(
                    "UPDATE enrollments SET state = 'stopped', stop_reason = ?1, next_due_at = NULL, updated_at = ?2 \
                     WHERE id = ?3 AND state = 'waiting'",
                    params![reason, now, enrollment],
                )?;
            }
            tx.commit()?;
            Ok(enrollment.is_some())
        })
        .await
    }

    async fn release_claim(
        &self,
        id: DeliveryId,
        token: i64,
        send_at: DateTime<Utc>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let reason = reason.to_owned();
        self.run(move |c| {
            let n = c.execute(
                "UPDATE deliveries SET state = 'planned', send_at = ?1, last_error = ?2, lease_until = NULL, claimed_by = NULL, updated_at = ?3 \
                 WHERE id = ?4 AND fencing_token = ?5 AND state = 'claimed'",
                params![ms(send_at), reason, ms(now), id.0, token],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn resolve_unknown(
        &self,
        id: DeliveryId,
        resolution: Resolution,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let reason = reason.to_owned();
        self.run(move |c| {
            let now = ms(now);
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let state = match resolution {
                Resolution::Retry => "planned",
                Resolution::Drop => "cancelled",
            };
            let enrollment: Option<i64> = tx
                .query_row(
                    "UPDATE deliveries SET state = ?1, send_at = CASE WHEN ?1 = 'planned' THEN ?2 ELSE send_at END, \
                     last_error = ?3, lease_until = NULL, claimed_by = NULL, updated_at = ?2 \
                     WHERE id = ?4 AND state = 'unknown' RETURNING enrollment_id",
                    params![state, now, reason, id.0],
                    |r| r.get(0),
                )
                .optional()?;
            if let (Some(enrollment), Resolution::Drop) = (enrollment, resolution) {
                tx.execute(
                    "UPDATE enrollments SET state = 'stopped', stop_reason = 'delivery_dropped', next_due_at = NULL, updated_at = ?1 \
                     WHERE id = ?2 AND state = 'waiting'",
                    params![now, enrollment],
                )?;
            }
            tx.commit()?;
            Ok(enrollment.is_some())
        })
        .await
    }

    async fn record_fallback(
        &self,
        id: DeliveryId,
        token: i64,
        error: &str,
        evaluation: &Evaluation,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (error, evaluation) = (error.to_owned(), evaluation.clone());
        self.run(move |c| {
            let now = ms(now);
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let row: Option<(i64, i64)> = tx
                .query_row(
                    "UPDATE deliveries SET state = 'failed', next_attempt_at = NULL, last_error = ?1, \
                     lease_until = NULL, updated_at = ?2 \
                     WHERE id = ?3 AND fencing_token = ?4 AND state IN ('sending', 'unknown') \
                     RETURNING enrollment_id, step_index",
                    params![error, now, id.0, token],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((enrollment, step)) = row else {
                return Ok(false);
            };
            // The enrollment is planned again at the same step, only if it still waits for
            // this step (a reply or unsubscribe may have stopped it meanwhile).
            let reopened = tx.execute(
                "UPDATE enrollments SET state = 'active', updated_at = ?1 \
                 WHERE id = ?2 AND state = 'waiting' AND current_step = ?3",
                params![now, enrollment, step],
            )?;
            let same_step = evaluation.trace.enrollment_id.0 == enrollment
                && evaluation.trace.step_index as i64 == step;
            if reopened == 1 && same_step {
                apply_evaluations(&tx, std::slice::from_ref(&evaluation), now)?;
            } else if reopened == 1 {
                tx.execute(
                    "UPDATE enrollments SET state = 'stopped', stop_reason = 'delivery_failed', \
                     next_due_at = NULL, updated_at = ?1 WHERE id = ?2",
                    params![now, enrollment],
                )?;
            }
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn failed_channels(
        &self,
        enrollments: &[EnrollmentId],
    ) -> StoreResult<Vec<FailedChannel>> {
        let ids: Vec<i64> = enrollments.iter().map(|e| e.0).collect();
        self.run(move |c| {
            let mut out = Vec::new();
            for chunk in ids.chunks(900) {
                let sql = format!(
                    "SELECT enrollment_id, step_index, channel, COALESCE(last_error, '') FROM deliveries \
                     WHERE enrollment_id IN ({}) AND state = 'failed' ORDER BY enrollment_id, step_index, id",
                    placeholders(chunk.len())
                );
                let mut stmt = c.prepare_cached(&sql)?;
                let rows = stmt
                    .query_map(params_from_iter(chunk.iter()), |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                for (enrollment, step, channel, error) in rows {
                    out.push(FailedChannel {
                        enrollment_id: EnrollmentId(enrollment),
                        step_index: step as usize,
                        channel: channel
                            .parse()
                            .map_err(|e| corrupt_in("deliveries", "channel", e))?,
                        error,
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn take_send_permit(&self, request: &PermitRequest) -> StoreResult<Permit> {
        let request = request.clone();
        self.run(move |c| {
            let keys = PermitKeys::new(&request);
            // BEGIN IMMEDIATE: every process on the file takes permits one at a time.
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let (paused, rates, taken) = {
                let mut get = tx.prepare_cached(
                    "SELECT tat, count FROM rate_buckets WHERE bucket = ?1",
                )?;
                let mut read = |key: &str| {
                    get.query_row([key], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
                        .optional()
                };
                let paused = read(&keys.pause)?.map(|(tat, _)| tat);
                let mut rates = Vec::with_capacity(keys.rates.len());
                for key in &keys.rates {
                    rates.push(read(key)?.map(|(tat, _)| tat));
                }
                let taken = match &keys.day {
                    None => 0,
                    Some((key, day_start)) => match read(key)? {
                        Some((_, n)) => n,
                        // The day's first permit: start from what the ledger sent today
                        // through this account (rows without an account predate 0010).
                        None => tx.query_row(
                            "SELECT COUNT(*) FROM deliveries WHERE channel = ?1 AND state = 'sent' AND sent_at >= ?2 \
                             AND (account = ?3 OR account IS NULL)",
                            params![request.channel.as_str(), day_start, request.account],
                            |r| r.get(0),
                        )?,
                    },
                };
                (paused, rates, taken)
            };
            match decide_permit(&request, paused, &rates, taken) {
                Err((until, reason)) => Ok(Permit::Wait { until, reason }),
                Ok(tats) => {
                    let now = ms(request.now);
                    {
                        let mut put = tx.prepare_cached(
                            "INSERT INTO rate_buckets (bucket, tat, count, updated_at) VALUES (?1, ?2, ?3, ?4) \
                             ON CONFLICT (bucket) DO UPDATE SET tat = excluded.tat, count = excluded.count, \
                             updated_at = excluded.updated_at",
                        )?;
                        for (key, tat) in keys.rates.iter().zip(tats) {
                            put.execute(params![key, tat, 0, now])?;
                        }
                        if let Some((key, day_start)) = &keys.day {
                            put.execute(params![key, day_start, taken + 1, now])?;
                        }
                    }
                    tx.commit()?;
                    Ok(Permit::Granted)
                }
            }
        })
        .await
    }

    async fn pause_account(&self, account: &str, until: DateTime<Utc>) -> StoreResult<()> {
        let key = pause_key(account);
        self.run(move |c| {
            c.prepare_cached(
                "INSERT INTO rate_buckets (bucket, tat, count, updated_at) VALUES (?1, ?2, 0, ?3) \
                 ON CONFLICT (bucket) DO UPDATE SET tat = max(rate_buckets.tat, excluded.tat), \
                 updated_at = excluded.updated_at",
            )?
            .execute(params![key, micros(until), ms(Utc::now())])?;
            Ok(())
        })
        .await
    }

    async fn sent_counts_since(&self, since: DateTime<Utc>) -> StoreResult<Vec<(Channel, u64)>> {
        self.run(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT channel, COUNT(*) FROM deliveries WHERE state = 'sent' AND sent_at >= ?1 GROUP BY channel ORDER BY channel",
            )?;
            let rows = stmt
                .query_map([ms(since)], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(ch, n)| Ok((ch.parse().map_err(|e| corrupt_in("deliveries", "channel", e))?, n as u64)))
                .collect()
        })
        .await
    }

    async fn set_delivery_account(
        &self,
        id: DeliveryId,
        token: i64,
        account: &str,
    ) -> StoreResult<bool> {
        let account = account.to_owned();
        self.run(move |c| accounts::set_delivery_account(c, id, token, &account))
            .await
    }

    async fn enrollment_account(
        &self,
        enrollment: EnrollmentId,
        channel: Channel,
    ) -> StoreResult<Option<String>> {
        self.run(move |c| accounts::enrollment_account(c, enrollment, channel))
            .await
    }

    async fn sent_counts_by_account_since(
        &self,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<AccountSentCount>> {
        let since = ms(since);
        self.run(move |c| accounts::sent_counts_by_account_since(c, since))
            .await
    }

    async fn save_account_state(&self, state: &AccountState) -> StoreResult<()> {
        let state = state.clone();
        self.run(move |c| {
            c.execute(
                "INSERT INTO account_states (account, circuit, open_until, last_error, updated_at) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (account) DO UPDATE SET circuit = excluded.circuit, open_until = excluded.open_until, \
                 last_error = excluded.last_error, updated_at = excluded.updated_at",
                params![state.account, state.circuit, state.open_until.map(ms), state.last_error, ms(state.updated_at)],
            )?;
            Ok(())
        })
        .await
    }

    async fn account_states(&self) -> StoreResult<Vec<AccountState>> {
        self.run(|c| {
            let mut stmt = c.prepare("SELECT account, circuit, open_until, last_error, updated_at FROM account_states ORDER BY account")?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(AccountState {
                        account: r.get(0)?,
                        circuit: r.get(1)?,
                        open_until: from_ms_opt(r.get(2)?),
                        last_error: r.get(3)?,
                        updated_at: from_ms(r.get(4)?),
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn ledger_overview(&self) -> StoreResult<Vec<LedgerRow>> {
        self.run(|c| {
            let mut stmt = c.prepare(
                "SELECT channel, state, COUNT(*), MIN(COALESCE(next_attempt_at, send_at)) FROM deliveries GROUP BY channel, state ORDER BY channel, state",
            )?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, Option<i64>>(3)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(ch, st, n, oldest)| {
                    Ok(LedgerRow {
                        channel: ch.parse().map_err(|e| corrupt_in("deliveries", "channel", e))?,
                        state: st.parse().map_err(|e| corrupt_in("deliveries", "state", e))?,
                        count: n as u64,
                        oldest_due: from_ms_opt(oldest),
                    })
                })
                .collect()
        })
        .await
    }

    async fn recover_expired_leases(&self, now: DateTime<Utc>) -> StoreResult<Recovered> {
        self.run(move |c| {
            let now = ms(now);
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let requeued = tx.execute(
                "UPDATE deliveries SET state = 'planned', lease_until = NULL, claimed_by = NULL, updated_at = ?1 \
                 WHERE state = 'claimed' AND lease_until <= ?1",
                [now],
            )? as u64;
            let unknown = tx.execute(
                "UPDATE deliveries SET state = 'unknown', last_error = 'lease expired while sending: the provider may have accepted it', \
                 lease_until = NULL, updated_at = ?1 WHERE state = 'sending' AND lease_until <= ?1",
                [now],
            )? as u64;
            tx.commit()?;
            Ok(Recovered { requeued, unknown })
        })
        .await
    }

    async fn deliveries(&self, filter: &DeliveryFilter) -> StoreResult<Vec<DeliveryRecord>> {
        let filter = filter.clone();
        self.run(move |c| {
            let mut sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE 1 = 1");
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            if let Some(state) = filter.state {
                sql.push_str(" AND state = ?");
                args.push(state.as_str().to_owned().into());
            }
            if let Some(channel) = filter.channel {
                sql.push_str(" AND channel = ?");
                args.push(channel.as_str().to_owned().into());
            }
            if let Some(lead) = filter.lead {
                sql.push_str(" AND lead_id = ?");
                args.push(lead.0.into());
            }
            if let Some(campaign) = filter.campaign {
                sql.push_str(" AND campaign_id = ?");
                args.push(campaign.0.into());
            }
            sql.push_str(" ORDER BY id DESC");
            if let Some(limit) = filter.limit {
                sql.push_str(&format!(" LIMIT {limit}"));
            }
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt
                .query_map(params_from_iter(args.iter()), delivery_row)?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().map(finish_delivery).collect()
        })
        .await
    }

    async fn next_due_at(&self) -> StoreResult<Option<DateTime<Utc>>> {
        self.run(|c| {
            let v: Option<i64> = c.query_row(
                "SELECT MIN(t) FROM ( \
                   SELECT MIN(next_due_at) AS t FROM enrollments WHERE state = 'active' \
                   UNION ALL SELECT MIN(send_at) FROM deliveries WHERE state = 'planned' \
                   UNION ALL SELECT MIN(next_attempt_at) FROM deliveries WHERE state = 'retry_wait' \
                   UNION ALL SELECT MIN(lease_until) FROM deliveries WHERE state IN ('claimed', 'sending'))",
                [],
                |r| r.get(0),
            )?;
            Ok(from_ms_opt(v))
        })
        .await
    }

    async fn record_event(&self, event: &NewEvent) -> StoreResult<EventEffects> {
        let event = event.clone();
        self.run(move |c| {
            let now = ms(event.occurred_at);
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
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
            let effects = event_effects(&tx, &event, now)?;
            tx.commit()?;
            Ok(effects)
        })
        .await
    }

    async fn add_suppression(
        &self,
        key: &SuppressionKey,
        reason: &str,
        source: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (key, reason, source) = (key.clone(), reason.to_owned(), source.to_owned());
        self.run(move |c| {
            let n = c.execute(
                "INSERT INTO suppressions (kind, value, reason, source, created_at) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (kind, value) DO NOTHING",
                params![key.kind(), key.value(), reason, source, ms(now)],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn events_for_lead(&self, lead: LeadId) -> StoreResult<Vec<EventRecord>> {
        self.run(move |c| {
            let mut stmt = c.prepare(
                "SELECT id, lead_id, delivery_id, kind, occurred_at, detail, source FROM events WHERE lead_id = ?1 ORDER BY occurred_at, id",
            )?;
            let rows = stmt
                .query_map([lead.0], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, String>(6)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(id, lead, delivery, kind, at, detail, source)| {
                    Ok(EventRecord {
                        id,
                        event: NewEvent {
                            lead_id: LeadId(lead),
                            delivery_id: delivery.map(DeliveryId),
                            kind: kind.parse().map_err(|e| corrupt_in("events", "kind", e))?,
                            occurred_at: from_ms(at),
                            detail,
                            source,
                        },
                    })
                })
                .collect()
        })
        .await
    }

    async fn record_external_event(
        &self,
        event: &NewEvent,
        external_id: &str,
    ) -> StoreResult<Option<EventEffects>> {
        let (event, external_id) = (event.clone(), external_id.to_owned());
        self.run(move |c| {
            let now = ms(event.occurred_at);
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let inserted = tx.execute(
                "INSERT INTO events (lead_id, delivery_id, kind, occurred_at, detail, source, external_id) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                params![
                    event.lead_id.0,
                    event.delivery_id.map(|d| d.0),
                    event.kind.as_str(),
                    now,
                    event.detail,
                    event.source,
                    external_id
                ],
            )?;
            if inserted == 0 {
                return Ok(None);
            }
            let effects = event_effects(&tx, &event, now)?;
            tx.commit()?;
            Ok(Some(effects))
        })
        .await
    }

    async fn stop_domain_sequences(
        &self,
        domain: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<EventEffects> {
        let (at_domain, reason) = (
            format!("@{}", domain.to_ascii_lowercase()),
            reason.to_owned(),
        );
        self.run(move |c| {
            let now = ms(now);
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let leads = "SELECT id FROM leads WHERE email IS NOT NULL AND substr(email, length(email) - length(?3) + 1) = ?3";
            let mut effects = EventEffects {
                enrollments_stopped: tx.execute(
                    &format!("UPDATE enrollments SET state = 'stopped', stop_reason = ?1, next_due_at = NULL, updated_at = ?2 \
                     WHERE state IN ('active', 'waiting') AND lead_id IN ({leads})"),
                    params![reason, now, at_domain],
                )? as u64,
                deliveries_cancelled: tx.execute(
                    &format!("UPDATE deliveries SET state = 'cancelled', last_error = ?1, lease_until = NULL, updated_at = ?2 \
                     WHERE state IN ('planned', 'retry_wait', 'claimed') AND lead_id IN ({leads})"),
                    params![format!("cancelled: {reason}"), now, at_domain],
                )? as u64,
                suppressed: false,
            };
            effects.deliveries_cancelled +=
                cancel_open_tasks(&tx, leads, &at_domain, &format!("cancelled: {reason}"), now)?;
            tx.commit()?;
            Ok(effects)
        })
        .await
    }

    async fn find_delivery(&self, id: DeliveryId) -> StoreResult<Option<DeliveryRecord>> {
        self.run(move |c| {
            c.query_row(
                &format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?1"),
                [id.0],
                delivery_row,
            )
            .optional()?
            .map(finish_delivery)
            .transpose()
        })
        .await
    }

    async fn find_delivery_by_provider_ref(
        &self,
        provider_ref: &str,
    ) -> StoreResult<Option<DeliveryRecord>> {
        let provider_ref = provider_ref.to_owned();
        self.run(move |c| {
            c.query_row(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE provider_ref = ?1 ORDER BY id LIMIT 1"
                ),
                [provider_ref],
                delivery_row,
            )
            .optional()?
            .map(finish_delivery)
            .transpose()
        })
        .await
    }

    async fn inbound_cursor(&self, source: &str) -> StoreResult<Option<InboundCursor>> {
        let source = source.to_owned();
        self.run(move |c| {
            let row = c
                .query_row(
                    "SELECT source, uid_validity, last_uid, last_received_at, updated_at FROM inbound_cursors WHERE source = ?1",
                    [source],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, Option<i64>>(1)?,
                            r.get::<_, Option<i64>>(2)?,
                            r.get::<_, Option<i64>>(3)?,
                            r.get::<_, i64>(4)?,
                        ))
                    },
                )
                .optional()?;
            row.map(|(source, validity, uid, received, updated)| {
                let u32_of = |v: Option<i64>, column: &'static str| {
                    v.map(|v| u32::try_from(v).map_err(|e| corrupt_in("inbound_cursors", column, e)))
                        .transpose()
                };
                Ok(InboundCursor {
                    source,
                    uid_validity: u32_of(validity, "uid_validity")?,
                    last_uid: u32_of(uid, "last_uid")?,
                    last_received_at: from_ms_opt(received),
                    updated_at: from_ms(updated),
                })
            })
            .transpose()
        })
        .await
    }

    async fn save_inbound_cursor(&self, cursor: &InboundCursor) -> StoreResult<()> {
        let cursor = cursor.clone();
        self.run(move |c| {
            c.execute(
                "INSERT INTO inbound_cursors (source, uid_validity, last_uid, last_received_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (source) DO UPDATE SET uid_validity = excluded.uid_validity, last_uid = excluded.last_uid, \
                 last_received_at = excluded.last_received_at, updated_at = excluded.updated_at",
                params![
                    cursor.source,
                    cursor.uid_validity.map(i64::from),
                    cursor.last_uid.map(i64::from),
                    cursor.last_received_at.map(ms),
                    ms(cursor.updated_at)
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn open_task(
        &self,
        task: &NewTask,
        token: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<TaskRecord>> {
        let task = task.clone();
        self.run(move |c| {
            let now = ms(now);
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let row: Option<(i64, i64, i64, i64, String)> = tx
                .query_row(
                    "SELECT enrollment_id, campaign_id, lead_id, step_index, channel FROM deliveries \
                     WHERE id = ?1 AND fencing_token = ?2 AND state = 'sending'",
                    params![task.delivery_id.0, token],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()?;
            let Some((enrollment, campaign, lead, step, channel)) = row else {
                return Ok(None);
            };
            tx.execute(
                "INSERT INTO tasks (delivery_id, enrollment_id, campaign_id, lead_id, step_index, channel, kind, profile_url, body, \
                 state, due_at, on_deadline, fencing_token, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'open', ?10, ?11, ?12, ?13) ON CONFLICT (delivery_id) DO NOTHING",
                params![
                    task.delivery_id.0, enrollment, campaign, lead, step, channel, task.kind, task.profile_url, task.body,
                    ms(task.due_at), task.on_deadline, token, now
                ],
            )?;
            let record = tx
                .query_row(
                    &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE delivery_id = ?1"),
                    [task.delivery_id.0],
                    task_row,
                )
                .map_err(StoreError::from)
                .and_then(finish_task)?;
            tx.execute(
                "UPDATE deliveries SET lease_until = NULL, claimed_by = ?1, updated_at = ?2 WHERE id = ?3",
                params![format!("task:{}", record.id), now, task.delivery_id.0],
            )?;
            tx.commit()?;
            Ok(Some(record))
        })
        .await
    }

    async fn task(&self, id: i64) -> StoreResult<Option<TaskRecord>> {
        self.run(move |c| {
            c.query_row(
                &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"),
                [id],
                task_row,
            )
            .optional()?
            .map(finish_task)
            .transpose()
        })
        .await
    }

    async fn tasks(&self, filter: &TaskFilter) -> StoreResult<Vec<TaskRecord>> {
        let filter = filter.clone();
        self.run(move |c| {
            let mut sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE 1 = 1");
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            if let Some(state) = filter.state {
                sql.push_str(" AND state = ?");
                args.push(state.as_str().to_owned().into());
            }
            if let Some(before) = filter.due_before {
                sql.push_str(" AND due_at <= ?");
                args.push(ms(before).into());
            }
            if let Some(lead) = filter.lead {
                sql.push_str(" AND lead_id = ?");
                args.push(lead.0.into());
            }
            sql.push_str(" ORDER BY due_at, id");
            if let Some(limit) = filter.limit {
                sql.push_str(&format!(" LIMIT {limit}"));
            }
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt
                .query_map(params_from_iter(args), task_row)?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().map(finish_task).collect()
        })
        .await
    }

    async fn close_task(
        &self,
        id: i64,
        close: &TaskClose,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let close = close.clone();
        self.run(move |c| {
            let now = ms(now);
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let row: Option<(i64, i64, i64, i64, i64)> = tx
                .query_row(
                    "SELECT delivery_id, enrollment_id, lead_id, step_index, fencing_token FROM tasks WHERE id = ?1 AND state = 'open'",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()?;
            let Some((delivery, enrollment, lead, step, token)) = row else {
                return Ok(false);
            };
            let moved = match &close {
                TaskClose::Done { follow_up } => {
                    let n = tx.execute(
                        "UPDATE deliveries SET state = 'sent', provider_ref = ?1, sent_at = ?2, lease_until = NULL, updated_at = ?2 \
                         WHERE id = ?3 AND fencing_token = ?4 AND state = 'sending'",
                        params![format!("task:{id}"), now, delivery, token],
                    )?;
                    if n == 1 {
                        tx.execute(
                            "INSERT INTO events (lead_id, delivery_id, kind, occurred_at, detail, source) VALUES (?1, ?2, 'sent', ?3, '{}', 'task')",
                            params![lead, delivery, now],
                        )?;
                        tx.execute(
                            "UPDATE tasks SET state = 'done', closed_at = ?1 WHERE id = ?2",
                            params![now, id],
                        )?;
                        advance_enrollment(&tx, enrollment, step, *follow_up, now)?;
                    }
                    n
                }
                TaskClose::Skipped { reason, follow_up } => {
                    let n = tx.execute(
                        "UPDATE deliveries SET state = 'cancelled', last_error = ?1, lease_until = NULL, updated_at = ?2 \
                         WHERE id = ?3 AND fencing_token = ?4 AND state = 'sending'",
                        params![format!("task skipped: {reason}"), now, delivery, token],
                    )?;
                    if n == 1 {
                        tx.execute(
                            "UPDATE tasks SET state = 'skipped', note = ?1, closed_at = ?2 WHERE id = ?3",
                            params![reason, now, id],
                        )?;
                        advance_enrollment(&tx, enrollment, step, *follow_up, now)?;
                    }
                    n
                }
                TaskClose::Fallback { reason, delivery: new } => {
                    let n = tx.execute(
                        "UPDATE deliveries SET state = 'cancelled', last_error = ?1, lease_until = NULL, updated_at = ?2 \
                         WHERE id = ?3 AND fencing_token = ?4 AND state = 'sending'",
                        params![format!("task not done: {reason}; fell back to {}", new.channel), now, delivery, token],
                    )?;
                    if n == 1 {
                        tx.execute(
                            "INSERT INTO deliveries (enrollment_id, campaign_id, lead_id, step_index, channel, state, send_at, to_address, \
                             subject, body_text, body_html, created_at, updated_at, variant) \
                             SELECT enrollment_id, campaign_id, lead_id, step_index, ?1, 'planned', ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?9 \
                             FROM deliveries WHERE id = ?8",
                            params![
                                new.channel.as_str(), ms(new.send_at), new.to_address, new.subject, new.body_text, new.body_html,
                                now, delivery, new.variant
                            ],
                        )?;
                        tx.execute(
                            "UPDATE tasks SET state = 'fell_back', note = ?1, closed_at = ?2 WHERE id = ?3",
                            params![format!("{reason}; fell back to {}", new.channel), now, id],
                        )?;
                    }
                    n
                }
            };
            if moved != 1 {
                return Ok(false);
            }
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn sms_message(&self, message_sid: &str) -> StoreResult<Option<SmsMessage>> {
        let sid = message_sid.to_owned();
        self.run(move |c| sms::sms_message(c, &sid)).await
    }

    async fn apply_sms_status(&self, change: &SmsStatusChange) -> StoreResult<bool> {
        let change = change.clone();
        self.run(move |c| sms::apply_sms_status(c, &change)).await
    }

    async fn apply_sms_inbound(&self, inbound: &SmsInbound) -> StoreResult<SmsInboundOutcome> {
        let inbound = inbound.clone();
        self.run(move |c| sms::apply_sms_inbound(c, &inbound)).await
    }

    async fn sms_inbound_log(&self, from: &str) -> StoreResult<Vec<SmsInboundRecord>> {
        let from = from.to_owned();
        self.run(move |c| sms::sms_inbound_log(c, &from)).await
    }

    async fn variant_counts(&self) -> StoreResult<Vec<VariantCountRow>> {
        self.run(experiments::variant_counts).await
    }

    async fn variant_assignments(&self, leads: &[LeadId]) -> StoreResult<Vec<VariantAssignment>> {
        let leads = leads.to_vec();
        self.run(move |c| experiments::variant_assignments(c, &leads))
            .await
    }

    async fn experiment_decisions(&self) -> StoreResult<Vec<ExperimentDecision>> {
        self.run(experiments::experiment_decisions).await
    }

    async fn save_experiment_decision(
        &self,
        decision: &ExperimentDecision,
        audit: &AuditEntry,
    ) -> StoreResult<()> {
        let (decision, audit) = (decision.clone(), audit.clone());
        self.run(move |c| experiments::save_experiment_decision(c, &decision, &audit))
            .await
    }

    async fn classify_reply(&self, c: &ReplyClassification) -> StoreResult<ClassifiedReply> {
        let r = c.clone();
        self.run(move |c| experiments::classify_reply(c, &r)).await
    }

    async fn replies(&self, lead: Option<LeadId>, limit: usize) -> StoreResult<Vec<ReplyRecord>> {
        self.run(move |c| experiments::replies(c, lead, limit))
            .await
    }

    async fn lead_by_source_ref(
        &self,
        source: &str,
        source_ref: &str,
    ) -> StoreResult<Option<LeadId>> {
        let (source, source_ref) = (source.to_owned(), source_ref.to_owned());
        self.run(move |c| experiments::lead_by_source_ref(c, &source, &source_ref))
            .await
    }

    async fn report_facts(&self, query: &ReportQuery) -> StoreResult<ReportFacts> {
        let query = query.clone();
        self.run(move |c| report::report_facts(c, &query)).await
    }

    async fn sending_counts(
        &self,
        channel: engager_domain::Channel,
        since: DateTime<Utc>,
    ) -> StoreResult<engager_domain::deliverability::SendingCounts> {
        let since = ms(since);
        self.run(move |c| report::sending_counts(c, channel, since))
            .await
    }

    async fn sending_halts(&self) -> StoreResult<Vec<SendingHalt>> {
        self.run(report::sending_halts).await
    }

    async fn latency_histograms(&self) -> StoreResult<Vec<LatencyHistogram>> {
        self.run(latency::latency_histograms).await
    }

    async fn suppression_list(&self) -> StoreResult<Vec<SuppressionRecord>> {
        self.run(report::suppression_list).await
    }

    async fn channel_evidence(&self, since: DateTime<Utc>) -> StoreResult<Vec<ChannelEvidenceRow>> {
        let since = ms(since);
        self.run(move |c| report::channel_evidence(c, since)).await
    }

    async fn resolve_review(
        &self,
        id: DeliveryId,
        resolution: &ReviewResolution,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (resolution, now) = (resolution.clone(), ms(now));
        self.run(move |c| report::resolve_review(c, id, &resolution, now))
            .await
    }

    async fn add_suppressions(&self, entries: &[SuppressionRecord]) -> StoreResult<u64> {
        let entries = entries.to_vec();
        self.run(move |c| report::add_suppressions(c, &entries))
            .await
    }

    async fn export_subject(&self, lead: LeadId) -> StoreResult<serde_json::Value> {
        self.run(move |c| gdpr::export(c, lead)).await
    }

    async fn erase_subject(&self, lead: LeadId, audit: &AuditEntry) -> StoreResult<ErasureReport> {
        let audit = audit.clone();
        self.run(move |c| gdpr::erase(c, lead, &audit)).await
    }

    async fn record_consent(
        &self,
        record: &engager_domain::compliance::ConsentRecord,
    ) -> StoreResult<i64> {
        let record = record.clone();
        let now = ms(Utc::now());
        self.run(move |c| compliance::record_consent(c, &record, now))
            .await
    }

    async fn consents(
        &self,
        leads: &[LeadId],
    ) -> StoreResult<HashMap<LeadId, Vec<engager_domain::compliance::ConsentRecord>>> {
        let leads = leads.to_vec();
        self.run(move |c| compliance::consents(c, &leads)).await
    }

    async fn record_evidence(&self, evidence: &SendEvidence) -> StoreResult<()> {
        let evidence = evidence.clone();
        self.run(move |c| compliance::record_evidence(c, &evidence))
            .await
    }

    async fn evidence_since(&self, since: DateTime<Utc>) -> StoreResult<Vec<EvidenceRow>> {
        let since = ms(since);
        self.run(move |c| compliance::evidence_since(c, since))
            .await
    }

    async fn compliance_traces(&self, since: DateTime<Utc>) -> StoreResult<Vec<ComplianceTrace>> {
        let since = ms(since);
        self.run(move |c| compliance::compliance_traces(c, since))
            .await
    }

    async fn campaign_halts(&self) -> StoreResult<Vec<CampaignHalt>> {
        self.run(compliance::campaign_halts).await
    }

    async fn set_campaign_halt(&self, halt: &CampaignHalt) -> StoreResult<bool> {
        let halt = halt.clone();
        self.run(move |c| compliance::set_campaign_halt(c, &halt))
            .await
    }

    async fn pending_opt_out_writebacks(
        &self,
        source_prefix: &str,
        limit: usize,
    ) -> StoreResult<Vec<(LeadId, String)>> {
        let prefix = source_prefix.to_owned();
        self.run(move |c| compliance::pending_opt_out_writebacks(c, &prefix, limit))
            .await
    }

    async fn mark_opt_outs_written_back(
        &self,
        leads: &[LeadId],
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let leads = leads.to_vec();
        let now = ms(now);
        self.run(move |c| compliance::mark_opt_outs_written_back(c, &leads, now))
            .await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        let entry = entry.clone();
        self.run(move |c| gdpr::insert_audit(c, &entry)).await
    }

    async fn audit_log(&self, since: DateTime<Utc>) -> StoreResult<Vec<AuditEntry>> {
        let since = ms(since);
        self.run(move |c| gdpr::audit_log(c, since)).await
    }

    async fn apply_retention(
        &self,
        cutoffs: &crate::gdpr::RetentionCutoffs,
        dry_run: bool,
    ) -> StoreResult<crate::gdpr::RetentionReport> {
        let cutoffs = *cutoffs;
        self.run(move |c| gdpr::retention(c, &cutoffs, dry_run))
            .await
    }

    async fn set_sending_halt(&self, halt: &SendingHalt) -> StoreResult<bool> {
        let halt = halt.clone();
        self.run(move |c| report::set_sending_halt(c, &halt)).await
    }

    async fn sending_counts_by_account(
        &self,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<AccountSendingCounts>> {
        let since = ms(since);
        self.run(move |c| deliverability::sending_counts_by_account(c, since))
            .await
    }

    async fn account_halts(&self) -> StoreResult<Vec<AccountHalt>> {
        self.run(deliverability::account_halts).await
    }

    async fn set_account_halt(&self, halt: &AccountHalt) -> StoreResult<bool> {
        let halt = halt.clone();
        self.run(move |c| deliverability::set_account_halt(c, &halt))
            .await
    }

    async fn save_tracked_message(
        &self,
        id: DeliveryId,
        token: i64,
        message: &TrackedMessage,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let message = message.clone();
        self.run(move |c| tracking::save_tracked_message(c, id, token, &message, now))
            .await
    }

    async fn tracked_link(&self, id: DeliveryId, index: u32) -> StoreResult<Option<String>> {
        self.run(move |c| tracking::tracked_link(c, id, index))
            .await
    }

    async fn tracking_targets(
        &self,
        ids: &[DeliveryId],
    ) -> StoreResult<HashMap<DeliveryId, TrackingTarget>> {
        let ids = ids.to_vec();
        self.run(move |c| tracking::tracking_targets(c, &ids)).await
    }

    async fn record_tracking_events(
        &self,
        events: &[NewEvent],
        reflag: &[(i64, String)],
    ) -> StoreResult<Vec<i64>> {
        let (events, reflag) = (events.to_vec(), reflag.to_vec());
        self.run(move |c| tracking::record_tracking_events(c, &events, &reflag))
            .await
    }

    async fn step_summary(&self) -> StoreResult<Vec<SummaryRow>> {
        self.run(|c| {
            let mut stmt = c.prepare(
                "SELECT c.slug, d.step_index, d.channel, 'delivery:' || d.state, COUNT(*) \
                   FROM deliveries d JOIN campaigns c ON c.id = d.campaign_id GROUP BY 1, 2, 3, 4 \
                 UNION ALL \
                 SELECT c.slug, t.step_index, COALESCE(t.channel, '-'), t.outcome || ':' || COALESCE(t.code, ''), COUNT(*) \
                   FROM traces t JOIN campaigns c ON c.id = t.campaign_id WHERE t.outcome IN ('skipped', 'stopped') GROUP BY 1, 2, 3, 4 \
                 UNION ALL \
                 SELECT c.slug, d.step_index, d.channel, 'event:' || e.kind, COUNT(*) \
                   FROM events e JOIN deliveries d ON d.id = e.delivery_id JOIN campaigns c ON c.id = d.campaign_id GROUP BY 1, 2, 3, 4 \
                 ORDER BY 1, 2, 3, 4",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(SummaryRow {
                        campaign: r.get(0)?,
                        step_index: r.get::<_, i64>(1)? as usize,
                        channel: r.get(2)?,
                        metric: r.get(3)?,
                        count: r.get::<_, i64>(4)? as u64,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn pending_writebacks(
        &self,
        source_prefix: &str,
        limit: usize,
    ) -> StoreResult<Vec<Writeback>> {
        let prefix = source_prefix.to_owned();
        self.run(move |c| {
            let mut stmt = c.prepare(
                "SELECT d.id, l.source_ref, l.source, d.sent_at FROM deliveries d JOIN leads l ON l.id = d.lead_id \
                 WHERE d.state = 'sent' AND d.written_back_at IS NULL AND l.source_ref IS NOT NULL \
                 AND substr(l.source, 1, length(?1)) = ?1 ORDER BY d.id LIMIT ?2",
            )?;
            let rows = stmt
                .query_map(params![prefix, limit as i64], |r| {
                    Ok(Writeback {
                        delivery_id: DeliveryId(r.get(0)?),
                        source_ref: r.get(1)?,
                        source: r.get(2)?,
                        sent_at: from_ms(r.get(3)?),
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn mark_written_back(&self, ids: &[DeliveryId], now: DateTime<Utc>) -> StoreResult<()> {
        let ids = ids.to_vec();
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut stmt =
                    tx.prepare_cached("UPDATE deliveries SET written_back_at = ?1 WHERE id = ?2")?;
                for id in &ids {
                    stmt.execute(params![ms(now), id.0])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn ai_cached(&self, keys: &[String]) -> StoreResult<HashMap<String, String>> {
        let keys = keys.to_vec();
        self.run(move |c| {
            let mut stmt = c.prepare_cached("SELECT outcome FROM ai_cache WHERE key = ?1")?;
            let mut found = HashMap::new();
            for key in keys {
                if let Some(outcome) = stmt
                    .query_row([&key], |r| r.get::<_, String>(0))
                    .optional()?
                {
                    found.insert(key, outcome);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn save_ai_cache(
        &self,
        key: &str,
        lead: Option<LeadId>,
        model: &str,
        outcome: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let (key, model, outcome) = (key.to_owned(), model.to_owned(), outcome.to_owned());
        self.run(move |c| {
            c.prepare_cached(
                "INSERT INTO ai_cache (key, model, outcome, created_at, lead_id) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (key) DO NOTHING",
            )?
            .execute(params![key, model, outcome, ms(now), lead.map(|l| l.0)])?;
            Ok(())
        })
        .await
    }
}
