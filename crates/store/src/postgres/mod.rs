//! The PostgreSQL backend: a `sqlx` pool (at most 8 connections) on one database, with the
//! same tables, columns and semantics as the SQLite backend.
//!
//! Invariants:
//!
//! - **Claims are safe across processes.** `claim_due_deliveries` is one statement that
//!   picks the due rows with `FOR UPDATE SKIP LOCKED` and claims them: concurrent claimers,
//!   in this process or in others, take disjoint rows and never wait for each other.
//! - **Fencing tokens come from the sequence `fencing_token_seq`**, drawn once per claim
//!   batch and only after the batch's rows are locked, so a newer claim of a row always
//!   carries a larger token than every older claim of it. Every later write on a claimed
//!   row (`begin_send`, `record_outcome`, `cancel_claimed`, `release_claim`) checks the token.
//! - **One transaction per use case.** Each multi-statement operation (`upsert_leads`,
//!   `record_evaluations`, `record_outcome`, `cancel_claimed`, `recover_expired_leases`,
//!   `record_event`) runs in one transaction; the set-based ones (`enroll`,
//!   `mark_written_back`) are a single statement, hence atomic too. `upsert_leads` also
//!   takes a transaction-scoped advisory lock, so importers serialize as on SQLite and
//!   cannot both insert a lead matched by `source_ref` or phone (no unique key there).
//! - **Migrations** are embedded, tracked in `schema_migrations` and applied in one
//!   transaction under `pg_advisory_xact_lock`, so processes starting together do not race.
//! - **Encoding** is shared with SQLite: times are BIGINT milliseconds, JSON is TEXT.
//! - **Passwords never leak**: connection errors carry the URL with its password redacted.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use engager_domain::{CampaignId, DeliveryId, EnrollmentId, EventKind, Lead, LeadId, NewLead};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Executor, Postgres, QueryBuilder, Row};

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
mod sms;
mod tracking;

const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        include_str!("../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        include_str!("../../migrations/postgres/0002_account_states.sql"),
    ),
    (
        3,
        include_str!("../../migrations/postgres/0003_sms_webhooks.sql"),
    ),
    (
        4,
        include_str!("../../migrations/postgres/0004_inbound_and_tasks.sql"),
    ),
    (
        5,
        include_str!("../../migrations/postgres/0005_ai_cache.sql"),
    ),
    (
        6,
        include_str!("../../migrations/postgres/0006_fallback_and_rate_buckets.sql"),
    ),
    (
        7,
        include_str!("../../migrations/postgres/0007_sending_halts.sql"),
    ),
    (8, include_str!("../../migrations/postgres/0008_gdpr.sql")),
    (
        9,
        include_str!("../../migrations/postgres/0009_variants.sql"),
    ),
    (
        10,
        include_str!("../../migrations/postgres/0010_delivery_accounts.sql"),
    ),
    (
        11,
        include_str!("../../migrations/postgres/0011_compliance.sql"),
    ),
    (
        12,
        include_str!("../../migrations/postgres/0012_tracking.sql"),
    ),
    (
        13,
        include_str!("../../migrations/postgres/0013_experiments_and_replies.sql"),
    ),
    (
        14,
        include_str!("../../migrations/postgres/0014_account_halts.sql"),
    ),
    (
        15,
        include_str!("../../migrations/postgres/0015_report_index.sql"),
    ),
    (
        16,
        include_str!("../../migrations/postgres/0016_provider_ref_partial.sql"),
    ),
];

/// Pool size: enough for a dispatcher, a planner and a few API calls per process.
const MAX_CONNECTIONS: u32 = 8;
/// A pooled connection idle this long is pinged before it is handed out.
const PING_WHEN_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a call waits for a free pooled connection before failing.
const ACQUIRE_TIMEOUT: StdDuration = StdDuration::from_secs(30);

/// Records a send outcome and moves the enrollment on, in one statement (data-modifying
/// CTEs are atomic): $1 state, $2 next attempt, $3 error, $4 provider ref, $5 sent at,
/// $6 now, $7 id, $8 fencing token, $9 next step due (NULL completes).
const RECORD_OUTCOME_SQL: &str = "WITH d AS ( \
        UPDATE deliveries SET state = $1, next_attempt_at = $2, last_error = COALESCE($3, last_error), \
        provider_ref = COALESCE($4, provider_ref), sent_at = COALESCE($5, sent_at), lease_until = NULL, updated_at = $6 \
        WHERE id = $7 AND fencing_token = $8 AND state IN ('sending', 'unknown') \
        RETURNING id, enrollment_id, lead_id, step_index \
     ), ev AS ( \
        INSERT INTO events (lead_id, delivery_id, kind, occurred_at, detail, source) \
        SELECT lead_id, id, 'sent', $6, '{}', 'dispatcher' FROM d WHERE $1 = 'sent' \
     ), en AS ( \
        UPDATE enrollments e SET \
          state = CASE WHEN $1 = 'failed' THEN 'stopped' WHEN $9::bigint IS NULL THEN 'completed' ELSE 'active' END, \
          stop_reason = CASE WHEN $1 = 'failed' THEN 'delivery_failed' ELSE e.stop_reason END, \
          current_step = CASE WHEN $1 = 'sent' THEN d.step_index + 1 ELSE e.current_step END, \
          next_due_at = CASE WHEN $1 = 'sent' THEN $9::bigint ELSE NULL END, \
          updated_at = $6 \
        FROM d WHERE e.id = d.enrollment_id AND e.state = 'waiting' AND $1 IN ('sent', 'failed') \
          AND ($1 = 'failed' OR e.current_step = d.step_index) \
     ) SELECT count(*) FROM d";

/// A store on a PostgreSQL database.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Advisory lock key serializing `upsert_leads` (its find-then-write must not race).
    upsert_lock: i64,
    /// The suppression hash key, once the database has one (it never changes after).
    suppression_key: std::sync::Arc<std::sync::OnceLock<Vec<u8>>>,
}

impl PgStore {
    /// Connects (a pool of up to 8 connections) and runs migrations.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_in(url, None).await
    }

    /// Connects with every table inside `schema` (created if missing), so that tests can
    /// share one database without seeing each other's rows.
    pub async fn connect_isolated(url: &str, schema: &str) -> StoreResult<Self> {
        if !valid_schema_name(schema) {
            return Err(StoreError::Open {
                url: redact_url(url),
                reason: format!(
                    "invalid schema name {schema:?}: expected 1 to 63 characters of [a-z0-9_]"
                ),
            });
        }
        Self::connect_in(url, Some(schema)).await
    }

    /// The connection pool (benchmarks compare Engager against bare statements on it).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs raw SQL, possibly several statements (used by benchmarks).
    pub async fn execute_raw(&self, sql: String) -> StoreResult<()> {
        self.pool.execute(sql.as_str()).await?;
        Ok(())
    }

    /// Benchmark baseline: drains due deliveries with the same statements the trait methods
    /// run (claim in batches, then per row begin-send and a record-outcome transaction), but
    /// on one connection, without record decoding. Returns (jobs, jobs per second).
    pub async fn raw_claim_complete(
        &self,
        batch: usize,
        now: DateTime<Utc>,
    ) -> StoreResult<(usize, f64)> {
        let started = std::time::Instant::now();
        let now_ms = ms(now);
        let lease = ms(now + Duration::minutes(5));
        let claim = format!("{CLAIM_SQL}d.id, d.fencing_token");
        let mut conn = self.pool.acquire().await?;
        let mut done = 0usize;
        loop {
            let claimed = sqlx::query(&claim)
                .bind(lease)
                .bind("raw")
                .bind(now_ms)
                .bind(limit_of(batch))
                .fetch_all(&mut *conn)
                .await?;
            if claimed.is_empty() {
                break;
            }
            for row in &claimed {
                let (id, token): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
                sqlx::query(BEGIN_SEND_SQL)
                    .bind(lease)
                    .bind(now_ms)
                    .bind(id)
                    .bind(token)
                    .execute(&mut *conn)
                    .await?;
                sqlx::query(RECORD_OUTCOME_SQL)
                    .bind("sent")
                    .bind(None::<i64>)
                    .bind(None::<&str>)
                    .bind("raw")
                    .bind(now_ms)
                    .bind(now_ms)
                    .bind(id)
                    .bind(token)
                    .bind(None::<i64>)
                    .fetch_one(&mut *conn)
                    .await?;
                done += 1;
            }
        }
        Ok((done, done as f64 / started.elapsed().as_secs_f64()))
    }

    async fn connect_in(url: &str, schema: Option<&str>) -> StoreResult<Self> {
        let open_err = |e: sqlx::Error| StoreError::Open {
            url: redact_url(url),
            reason: scrub_secrets(url, &e.to_string()),
        };
        let options = PgConnectOptions::from_str(url).map_err(open_err)?;
        // `schema` is validated as [a-z0-9_]+, so quoting it is enough.
        let search_path = schema.map(|s| format!("\"{s}\""));
        // One direct connection first: it reports the real cause (refused, bad password,
        // unknown database) at once, where the pool would retry until its timeout. It runs
        // the migrations and is closed; the pool then opens connections as needed.
        let mut conn = tokio::time::timeout(ACQUIRE_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| StoreError::Open {
                url: redact_url(url),
                reason: format!("no answer within {} s", ACQUIRE_TIMEOUT.as_secs()),
            })?
            .map_err(open_err)?;
        if let Some(path) = &search_path {
            set_search_path(&mut conn, path.clone()).await?;
        }
        migrate(&mut conn, schema).await?;
        // The migrations are committed; failing to say goodbye politely changes nothing.
        let _ = conn.close().await;
        let mut pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A connection that sat idle (where a server restart or a dropped socket would
            // show) is pinged before use; one handed back a moment ago is not, which saves a
            // round trip on every call of a busy dispatcher (two per message sent).
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_WHEN_IDLE {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            });
        if let Some(path) = search_path {
            // Every pooled connection works inside the schema.
            pool = pool
                .after_connect(move |conn, _meta| Box::pin(set_search_path(conn, path.clone())));
        }
        Ok(Self {
            pool: pool.connect_lazy_with(options),
            upsert_lock: lock_key("upsert_leads", schema),
            suppression_key: Default::default(),
        })
    }
}

/// Points a connection's `search_path` at `schema` (already quoted): `set_config` is the
/// function form of `SET search_path TO ...`, and binding the name keeps it out of the SQL.
async fn set_search_path(conn: &mut PgConnection, schema: String) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('search_path', $1, false)")
        .bind(schema)
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether `name` is safe to splice into SQL as a schema name.
fn valid_schema_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A stable advisory-lock key for `purpose` in `schema` (FNV-1a, so it does not depend on
/// the server's internal hash functions).
fn lock_key(purpose: &str, schema: Option<&str>) -> i64 {
    let text = format!("engager:{purpose}:{}", schema.unwrap_or(""));
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// Applies pending migrations in one transaction, under an advisory lock so that processes
/// connecting at the same time apply each migration exactly once.
async fn migrate(conn: &mut PgConnection, schema: Option<&str>) -> StoreResult<()> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(lock_key("migrate", schema))
        .execute(&mut *tx)
        .await?;
    if let Some(schema) = schema {
        let create = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
        tx.execute(create.as_str()).await?;
    }
    tx.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .await?;
    for &(version, sql) in MIGRATIONS {
        let done: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)",
        )
        .bind(version)
        .fetch_one(&mut *tx)
        .await?;
        if !done {
            // A string without arguments runs as a simple query: several statements at once.
            tx.execute(sql).await.map_err(|e| StoreError::Migration {
                version,
                reason: e.to_string(),
            })?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(version)
                .bind(ms(Utc::now()))
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

// --- redaction -------------------------------------------------------------------------------

/// Byte ranges of the secrets in a connection URL: the userinfo password and the value of
/// any `password=` parameter.
fn secret_ranges(url: &str) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    if let Some(scheme_end) = url.find("://") {
        let start = scheme_end + 3;
        // The last '@' ends the userinfo; if a later part of the URL holds an '@' this
        // redacts too much, never too little.
        if let Some(at) = url[start..].rfind('@').map(|i| start + i) {
            if let Some(colon) = url[start..at].find(':').map(|i| start + i) {
                ranges.push(colon + 1..at);
            }
        }
    }
    let lower = url.to_ascii_lowercase();
    let mut from = 0;
    while let Some(pos) = lower[from..].find("password=").map(|i| from + i) {
        let key_starts_param = pos == 0
            || matches!(
                lower.as_bytes()[pos - 1],
                b'?' | b'&' | b' ' | b'\t' | b'\n'
            );
        let value_start = pos + "password=".len();
        let value_end = url[value_start..]
            .find(|c: char| c == '&' || c == '#' || c.is_whitespace())
            .map_or(url.len(), |i| value_start + i);
        if key_starts_param && value_end > value_start {
            ranges.push(value_start..value_end);
        }
        from = value_start;
    }
    ranges
}

/// The URL with every password replaced by `***`, for error messages.
fn redact_url(url: &str) -> String {
    let mut ranges = secret_ranges(url);
    ranges.sort_by_key(|r| r.start);
    // Merge overlapping ranges, then replace from the end so earlier offsets stay valid.
    let mut merged: Vec<std::ops::Range<usize>> = Vec::new();
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    let mut out = url.to_owned();
    for r in merged.into_iter().rev() {
        out.replace_range(r, "***");
    }
    out
}

/// Removes the URL's passwords (raw and percent-decoded) from a driver message, in case the
/// driver ever echoes them. Very short secrets are left alone: replacing them would garble
/// the message, and the driver does not echo them anyway.
fn scrub_secrets(url: &str, message: &str) -> String {
    let mut out = message.to_owned();
    for r in secret_ranges(url) {
        let raw = &url[r];
        for secret in [raw.to_owned(), percent_decode(raw)] {
            if secret.len() >= 4 {
                out = out.replace(&secret, "***");
            }
        }
    }
    out
}

/// Decodes `%XX` escapes (invalid escapes are kept as they are).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// --- row decoding ----------------------------------------------------------------------------

/// A stored non-negative integer as `usize`.
fn to_usize(v: i64, table: &'static str, column: &'static str) -> StoreResult<usize> {
    usize::try_from(v).map_err(|_| corrupt_in(table, column, format!("negative value {v}")))
}

/// A `COUNT(*)` as `u64`.
fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A `usize` limit as a SQL `BIGINT`.
fn limit_of(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn lead_row(r: &PgRow, at: usize) -> Result<LeadRow, sqlx::Error> {
    Ok(LeadRow {
        id: r.try_get(at)?,
        email: r.try_get(at + 1)?,
        phone: r.try_get(at + 2)?,
        phone_region: r.try_get(at + 3)?,
        linkedin_url: r.try_get(at + 4)?,
        first_name: r.try_get(at + 5)?,
        last_name: r.try_get(at + 6)?,
        company: r.try_get(at + 7)?,
        title: r.try_get(at + 8)?,
        industry: r.try_get(at + 9)?,
        country: r.try_get(at + 10)?,
        city: r.try_get(at + 11)?,
        time_zone: r.try_get(at + 12)?,
        website: r.try_get(at + 13)?,
        custom_json: r.try_get(at + 14)?,
        source: r.try_get(at + 15)?,
        source_ref: r.try_get(at + 16)?,
        status: r.try_get(at + 17)?,
    })
}

const ENROLLMENT_COLUMNS: &str =
    "e.id, e.campaign_id, e.lead_id, e.state, e.current_step, e.next_due_at, e.stop_reason";

fn enrollment_row(r: &PgRow) -> StoreResult<EnrollmentRecord> {
    let state: String = r.try_get(3)?;
    Ok(EnrollmentRecord {
        id: EnrollmentId(r.try_get(0)?),
        campaign_id: CampaignId(r.try_get(1)?),
        lead_id: LeadId(r.try_get(2)?),
        state: EnrollmentState::parse(&state).ok_or_else(|| {
            corrupt_in("enrollments", "state", format!("unknown state {state:?}"))
        })?,
        current_step: to_usize(r.try_get(4)?, "enrollments", "current_step")?,
        next_due_at: from_ms_opt(r.try_get(5)?),
        stop_reason: r.try_get(6)?,
    })
}

/// The delivery columns every ledger query selects (table alias `d`), in `delivery_row` order.
const DELIVERY_COLUMNS: &str = "d.id, d.enrollment_id, d.campaign_id, d.lead_id, d.step_index, \
    d.channel, d.state, d.send_at, d.to_address, d.subject, d.body_text, d.body_html, d.attempts, \
    d.fencing_token, d.lease_until, d.claimed_by, d.next_attempt_at, d.last_error, d.provider_ref, \
    d.sent_at, d.updated_at, d.created_at, d.account";

fn delivery_row(r: &PgRow) -> StoreResult<DeliveryRecord> {
    let channel: String = r.try_get(5)?;
    let state: String = r.try_get(6)?;
    let attempts: i64 = r.try_get(12)?;
    Ok(DeliveryRecord {
        id: DeliveryId(r.try_get(0)?),
        enrollment_id: EnrollmentId(r.try_get(1)?),
        campaign_id: CampaignId(r.try_get(2)?),
        lead_id: LeadId(r.try_get(3)?),
        step_index: to_usize(r.try_get(4)?, "deliveries", "step_index")?,
        channel: channel
            .parse()
            .map_err(|e| corrupt_in("deliveries", "channel", e))?,
        state: state
            .parse()
            .map_err(|e| corrupt_in("deliveries", "state", e))?,
        send_at: from_ms(r.try_get(7)?),
        to_address: r.try_get(8)?,
        subject: r.try_get(9)?,
        body_text: r.try_get(10)?,
        body_html: r.try_get(11)?,
        attempts: u32::try_from(attempts).map_err(|_| {
            corrupt_in(
                "deliveries",
                "attempts",
                format!("out of range: {attempts}"),
            )
        })?,
        fencing_token: r.try_get(13)?,
        lease_until: from_ms_opt(r.try_get(14)?),
        claimed_by: r.try_get(15)?,
        next_attempt_at: from_ms_opt(r.try_get(16)?),
        last_error: r.try_get(17)?,
        provider_ref: r.try_get(18)?,
        sent_at: from_ms_opt(r.try_get(19)?),
        updated_at: from_ms(r.try_get(20)?),
        created_at: from_ms(r.try_get(21)?),
        account: r.try_get(22)?,
    })
}

// --- statements --------------------------------------------------------------------------------

/// One lead upsert in one round trip: find the existing row by `$key`, then update it or
/// insert a new one. Parameters follow `LeadValues` order, then `$17` = now. The update
/// mirrors SQLite's: new non-null values win, custom fields merge (`jsonb ||`, like
/// `json_patch` on a flat object), and the phone region follows the phone.
macro_rules! upsert_lead_sql {
    ($key:literal) => {
        concat!(
            "WITH found AS (SELECT id FROM leads WHERE ",
            $key,
            " ORDER BY id LIMIT 1), \
             upd AS (UPDATE leads SET email = COALESCE($1, leads.email), phone = COALESCE($2, leads.phone), \
               phone_region = CASE WHEN $2::text IS NULL THEN leads.phone_region ELSE $3 END, \
               linkedin_url = COALESCE($4, leads.linkedin_url), first_name = COALESCE($5, leads.first_name), \
               last_name = COALESCE($6, leads.last_name), company = COALESCE($7, leads.company), \
               title = COALESCE($8, leads.title), industry = COALESCE($9, leads.industry), \
               country = COALESCE($10, leads.country), city = COALESCE($11, leads.city), \
               time_zone = COALESCE($12, leads.time_zone), website = COALESCE($13, leads.website), \
               custom_json = (leads.custom_json::jsonb || $14::jsonb)::text, source = $15, \
               source_ref = COALESCE($16, leads.source_ref), updated_at = $17 \
               FROM found WHERE leads.id = found.id RETURNING leads.id), \
             ins AS (INSERT INTO leads (email, phone, phone_region, linkedin_url, first_name, last_name, \
               company, title, industry, country, city, time_zone, website, custom_json, source, source_ref, \
               status, created_at, updated_at) \
               SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, 'active', $17, $17 \
               WHERE NOT EXISTS (SELECT 1 FROM found) RETURNING id) \
             SELECT id, FALSE FROM upd UNION ALL SELECT id, TRUE FROM ins"
        )
    };
}

const UPSERT_BY_EMAIL: &str = upsert_lead_sql!("email = $1");
const UPSERT_BY_SOURCE_REF: &str =
    upsert_lead_sql!("source = $15 AND source_ref = $16 AND email IS NULL");
const UPSERT_BY_PHONE: &str = upsert_lead_sql!("phone = $2 AND email IS NULL");
const UPSERT_NEW: &str = upsert_lead_sql!("FALSE");

/// Claims a batch in one statement. `picked` locks the due rows (skipping rows another
/// claimer holds); `token` draws the batch's fencing token after `picked` is complete
/// (the aggregate consumes it first), and draws none for an empty batch.
const CLAIM_SQL: &str = "WITH picked AS MATERIALIZED ( \
       SELECT id FROM deliveries \
       WHERE (state = 'planned' AND send_at <= $3) OR (state = 'retry_wait' AND next_attempt_at <= $3) \
       ORDER BY send_at, id LIMIT $4 FOR UPDATE SKIP LOCKED), \
     token AS (SELECT nextval('fencing_token_seq') AS value FROM picked HAVING COUNT(*) > 0) \
     UPDATE deliveries d SET state = 'claimed', fencing_token = token.value, lease_until = $1, \
       claimed_by = $2, updated_at = $3 \
     FROM picked, token WHERE d.id = picked.id \
     RETURNING ";

/// Moves a claimed row to `sending` after re-checking token, lease, enrollment and lead
/// (see `Store::begin_send`). `$1` = new lease end, `$2` = now, `$3` = id, `$4` = token.
const BEGIN_SEND_SQL: &str = "UPDATE deliveries SET state = 'sending', attempts = attempts + 1, lease_until = $1, updated_at = $2 \
     WHERE id = $3 AND fencing_token = $4 AND state = 'claimed' AND lease_until > $2 \
     AND EXISTS (SELECT 1 FROM enrollments e WHERE e.id = deliveries.enrollment_id AND e.state = 'waiting') \
     AND EXISTS (SELECT 1 FROM leads l WHERE l.id = deliveries.lead_id AND l.status = 'active')";

/// Applies what follows from an event (see `Store::record_event`), inside its transaction.
const TASK_COLUMNS: &str =
    "id, delivery_id, enrollment_id, campaign_id, lead_id, step_index, channel, kind, \
    profile_url, body, state, due_at, on_deadline, note, created_at, closed_at";

fn task_row(r: &PgRow) -> StoreResult<TaskRecord> {
    let channel: String = r.try_get(6)?;
    let state: String = r.try_get(10)?;
    Ok(TaskRecord {
        id: r.try_get(0)?,
        delivery_id: DeliveryId(r.try_get(1)?),
        enrollment_id: EnrollmentId(r.try_get(2)?),
        campaign_id: CampaignId(r.try_get(3)?),
        lead_id: LeadId(r.try_get(4)?),
        step_index: to_usize(r.try_get(5)?, "tasks", "step_index")?,
        channel: channel
            .parse()
            .map_err(|e| corrupt_in("tasks", "channel", e))?,
        kind: r.try_get(7)?,
        profile_url: r.try_get(8)?,
        body: r.try_get(9)?,
        state: TaskState::parse(&state)
            .ok_or_else(|| corrupt_in("tasks", "state", format!("unknown state {state:?}")))?,
        due_at: from_ms(r.try_get(11)?),
        on_deadline: r.try_get(12)?,
        note: r.try_get(13)?,
        created_at: from_ms(r.try_get(14)?),
        closed_at: from_ms_opt(r.try_get(15)?),
    })
}

/// Whose open tasks to cancel: one lead, or every lead with an email at a domain (`@x.com`).
#[derive(Clone, Copy)]
enum TaskLeads<'a> {
    Lead(i64),
    Domain(&'a str),
}

/// Cancels the open tasks (and their `sending` deliveries) of some leads.
async fn cancel_open_tasks(
    conn: &mut PgConnection,
    leads: TaskLeads<'_>,
    reason: &str,
    now: i64,
) -> StoreResult<u64> {
    let filter = match leads {
        TaskLeads::Lead(_) => "lead_id = $3",
        TaskLeads::Domain(_) => {
            "lead_id IN (SELECT id FROM leads WHERE email IS NOT NULL AND right(email, length($3)) = $3)"
        }
    };
    let deliveries = format!(
        "UPDATE deliveries SET state = 'cancelled', last_error = $1, lease_until = NULL, updated_at = $2 \
         WHERE state = 'sending' AND id IN (SELECT delivery_id FROM tasks WHERE state = 'open' AND {filter})"
    );
    let tasks = format!(
        "UPDATE tasks SET state = 'cancelled', note = $1, closed_at = $2 WHERE state = 'open' AND {filter}"
    );
    let mut cancelled = 0;
    for (i, sql) in [deliveries, tasks].iter().enumerate() {
        let query = sqlx::query(sql).bind(reason).bind(now);
        let query = match leads {
            TaskLeads::Lead(id) => query.bind(id),
            TaskLeads::Domain(d) => query.bind(d),
        };
        let n = query.execute(&mut *conn).await?.rows_affected();
        if i == 0 {
            cancelled = n;
        }
    }
    Ok(cancelled)
}

/// Moves a waiting enrollment past `step` (its delivery was sent or skipped).
async fn advance_enrollment(
    conn: &mut PgConnection,
    enrollment: i64,
    step: i64,
    next: FollowUp,
    now: i64,
) -> StoreResult<()> {
    let (state, due) = match next {
        FollowUp::NextStepAt(at) => ("active", Some(ms(at))),
        FollowUp::Complete => ("completed", None),
    };
    sqlx::query(
        "UPDATE enrollments SET state = $1, current_step = $2, next_due_at = $3, updated_at = $4 \
         WHERE id = $5 AND state = 'waiting' AND current_step = $6",
    )
    .bind(state)
    .bind(step + 1)
    .bind(due)
    .bind(now)
    .bind(enrollment)
    .bind(step)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn event_effects(
    conn: &mut PgConnection,
    event: &NewEvent,
    now: i64,
) -> StoreResult<EventEffects> {
    let mut effects = EventEffects::default();
    if event.kind.stops_sequences() {
        let reason = event.kind.as_str();
        effects.enrollments_stopped = sqlx::query(
            "UPDATE enrollments SET state = 'stopped', stop_reason = $1, next_due_at = NULL, updated_at = $2 \
             WHERE lead_id = $3 AND state IN ('active', 'waiting')",
        )
        .bind(reason)
        .bind(now)
        .bind(event.lead_id.0)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        effects.deliveries_cancelled = sqlx::query(
            "UPDATE deliveries SET state = 'cancelled', last_error = $1, lease_until = NULL, updated_at = $2 \
             WHERE lead_id = $3 AND state IN ('planned', 'retry_wait', 'claimed')",
        )
        .bind(format!("cancelled: lead {reason}"))
        .bind(now)
        .bind(event.lead_id.0)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        effects.deliveries_cancelled += cancel_open_tasks(
            conn,
            TaskLeads::Lead(event.lead_id.0),
            &format!("cancelled: lead {reason}"),
            now,
        )
        .await?;
    }
    if event.kind.suppresses() {
        let target =
            match event.delivery_id {
                Some(id) => {
                    sqlx::query("SELECT channel, to_address FROM deliveries WHERE id = $1")
                        .bind(id.0)
                        .fetch_optional(&mut *conn)
                        .await?
                }
                None => sqlx::query(
                    "SELECT 'email'::text, email FROM leads WHERE id = $1 AND email IS NOT NULL",
                )
                .bind(event.lead_id.0)
                .fetch_optional(&mut *conn)
                .await?,
            };
        let target: Option<(String, String)> = target
            .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
            .transpose()?;
        let key = match target {
            Some((channel, address)) if channel == "email" => Some(SuppressionKey::Email(address)),
            Some((channel, address)) if channel == "sms" => Some(SuppressionKey::Phone(address)),
            _ => None,
        };
        if let Some(key) = key {
            effects.suppressed = sqlx::query(
                "INSERT INTO suppressions (kind, value, reason, source, created_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (kind, value) DO NOTHING",
            )
            .bind(key.kind())
            .bind(key.value())
            .bind(event.kind.as_str())
            .bind(&event.source)
            .bind(now)
            .execute(&mut *conn)
            .await?
            .rows_affected()
                > 0;
        }
        let status = match event.kind {
            EventKind::HardBounce => "bounced",
            _ => "unsubscribed",
        };
        sqlx::query(
            "UPDATE leads SET status = $1, updated_at = $2 WHERE id = $3 AND status = 'active'",
        )
        .bind(status)
        .bind(now)
        .bind(event.lead_id.0)
        .execute(&mut *conn)
        .await?;
    }
    Ok(effects)
}

/// Applies the decisions of evaluations whose enrollments are pairwise distinct, one
/// set-based statement per kind of change. Distinct enrollments touch disjoint rows, so the
/// result equals applying them one by one in order.
async fn apply_decisions(
    conn: &mut PgConnection,
    evaluations: &[Evaluation],
    now: i64,
) -> StoreResult<()> {
    // Planned deliveries, and the enrollments that now wait for them.
    let mut plan_enrollment = Vec::new();
    let mut plan_campaign = Vec::new();
    let mut plan_lead = Vec::new();
    let mut plan_step = Vec::new();
    let mut plan_channel = Vec::new();
    let mut plan_send_at = Vec::new();
    let mut plan_to = Vec::new();
    let mut plan_subject = Vec::new();
    let mut plan_text = Vec::new();
    let mut plan_html = Vec::new();
    let mut plan_state: Vec<&str> = Vec::new();
    let mut plan_variant: Vec<Option<&str>> = Vec::new();
    let (mut defer_id, mut defer_step, mut defer_until) = (Vec::new(), Vec::new(), Vec::new());
    let (mut skip_id, mut skip_step, mut skip_next) = (Vec::new(), Vec::new(), Vec::new());
    let (mut stop_id, mut stop_reason) = (Vec::new(), Vec::new());
    for ev in evaluations {
        let t = &ev.trace;
        let step = limit_of(t.step_index);
        match &ev.decision {
            PlanDecision::Plan(d) | PlanDecision::Review(d) => {
                plan_state.push(if matches!(ev.decision, PlanDecision::Review(_)) {
                    "pending_review"
                } else {
                    "planned"
                });
                plan_enrollment.push(t.enrollment_id.0);
                plan_campaign.push(t.campaign_id.0);
                plan_lead.push(t.lead_id.0);
                plan_step.push(step);
                plan_channel.push(d.channel.as_str());
                plan_send_at.push(ms(d.send_at));
                plan_to.push(d.to_address.as_str());
                plan_subject.push(d.subject.as_deref());
                plan_text.push(d.body_text.as_str());
                plan_html.push(d.body_html.as_deref());
                plan_variant.push(d.variant.as_deref());
            }
            PlanDecision::Defer { until } => {
                defer_id.push(t.enrollment_id.0);
                defer_step.push(step);
                defer_until.push(ms(*until));
            }
            PlanDecision::Skip { next_due } => {
                skip_id.push(t.enrollment_id.0);
                skip_step.push(step);
                skip_next.push(next_due.map(ms));
            }
            PlanDecision::Stop { reason } => {
                stop_id.push(t.enrollment_id.0);
                stop_reason.push(reason.as_str());
            }
        }
    }
    if !plan_enrollment.is_empty() {
        sqlx::query(
            "INSERT INTO deliveries (enrollment_id, campaign_id, lead_id, step_index, channel, state, send_at, \
               to_address, subject, body_text, body_html, created_at, updated_at, variant) \
             SELECT u.enrollment_id, u.campaign_id, u.lead_id, u.step_index, u.channel, u.state, u.send_at, \
               u.to_address, u.subject, u.body_text, u.body_html, $11, $11, u.variant \
             FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::bigint[], \
               $7::text[], $8::text[], $9::text[], $10::text[], $12::text[], $13::text[]) WITH ORDINALITY \
               AS u(enrollment_id, campaign_id, lead_id, step_index, channel, send_at, to_address, subject, \
               body_text, body_html, state, variant, ord) \
             WHERE NOT EXISTS (SELECT 1 FROM deliveries x WHERE x.enrollment_id = u.enrollment_id \
               AND x.step_index = u.step_index AND x.state <> 'failed') \
             ORDER BY u.ord \
             ON CONFLICT (enrollment_id, step_index, channel) DO NOTHING",
        )
        .bind(&plan_enrollment)
        .bind(&plan_campaign)
        .bind(&plan_lead)
        .bind(&plan_step)
        .bind(&plan_channel)
        .bind(&plan_send_at)
        .bind(&plan_to)
        .bind(&plan_subject)
        .bind(&plan_text)
        .bind(&plan_html)
        .bind(now)
        .bind(&plan_state)
        .bind(&plan_variant)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "UPDATE enrollments e SET state = 'waiting', next_due_at = NULL, updated_at = $1 \
             FROM UNNEST($2::bigint[], $3::bigint[]) AS u(id, step) \
             WHERE e.id = u.id AND e.state = 'active' AND e.current_step = u.step",
        )
        .bind(now)
        .bind(&plan_enrollment)
        .bind(&plan_step)
        .execute(&mut *conn)
        .await?;
    }
    if !defer_id.is_empty() {
        sqlx::query(
            "UPDATE enrollments e SET next_due_at = u.until, updated_at = $1 \
             FROM UNNEST($2::bigint[], $3::bigint[], $4::bigint[]) AS u(id, step, until) \
             WHERE e.id = u.id AND e.state = 'active' AND e.current_step = u.step",
        )
        .bind(now)
        .bind(&defer_id)
        .bind(&defer_step)
        .bind(&defer_until)
        .execute(&mut *conn)
        .await?;
    }
    if !skip_id.is_empty() {
        sqlx::query(
            "UPDATE enrollments e SET current_step = e.current_step + 1, next_due_at = u.next_due, \
               state = CASE WHEN u.next_due IS NULL THEN 'completed' ELSE 'active' END, updated_at = $1 \
             FROM UNNEST($2::bigint[], $3::bigint[], $4::bigint[]) AS u(id, step, next_due) \
             WHERE e.id = u.id AND e.state = 'active' AND e.current_step = u.step",
        )
        .bind(now)
        .bind(&skip_id)
        .bind(&skip_step)
        .bind(&skip_next)
        .execute(&mut *conn)
        .await?;
    }
    if !stop_id.is_empty() {
        sqlx::query(
            "UPDATE enrollments e SET state = 'stopped', stop_reason = u.reason, next_due_at = NULL, updated_at = $1 \
             FROM UNNEST($2::bigint[], $3::text[]) AS u(id, reason) \
             WHERE e.id = u.id AND e.state IN ('active', 'waiting')",
        )
        .bind(now)
        .bind(&stop_id)
        .bind(&stop_reason)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn upsert_leads(
        &self,
        leads: &[NewLead],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<UpsertOutcome>> {
        let now = ms(now);
        let mut tx = self.pool.begin().await?;
        // Matching by source_ref or phone is find-then-insert without a unique constraint;
        // serialize upserts (as SQLite's BEGIN IMMEDIATE does) so two importers cannot both
        // insert the same lead.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(self.upsert_lock)
            .execute(&mut *tx)
            .await?;
        let mut outcomes = Vec::with_capacity(leads.len());
        for lead in leads {
            let v = LeadValues::of(lead);
            let sql = if v.email.is_some() {
                UPSERT_BY_EMAIL
            } else if v.source_ref.is_some() {
                UPSERT_BY_SOURCE_REF
            } else if v.phone.is_some() {
                UPSERT_BY_PHONE
            } else {
                UPSERT_NEW
            };
            let row = sqlx::query(sql)
                .bind(v.email)
                .bind(v.phone)
                .bind(v.phone_region)
                .bind(v.linkedin_url)
                .bind(v.first_name)
                .bind(v.last_name)
                .bind(v.company)
                .bind(v.title)
                .bind(v.industry)
                .bind(v.country)
                .bind(v.city)
                .bind(v.time_zone)
                .bind(v.website)
                .bind(&v.custom_json)
                .bind(v.source)
                .bind(v.source_ref)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
            let id = LeadId(row.try_get(0)?);
            let inserted: bool = row.try_get(1)?;
            outcomes.push(if inserted {
                UpsertOutcome::Inserted(id)
            } else {
                UpsertOutcome::Updated(id)
            });
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn lead(&self, id: LeadId) -> StoreResult<Option<Lead>> {
        let sql = format!("SELECT {LEAD_COLUMNS} FROM leads l WHERE l.id = $1");
        let row = sqlx::query(&sql)
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| lead_row(&r, 0)?.into_lead()).transpose()
    }

    async fn lead_by_email(&self, email: &str) -> StoreResult<Option<Lead>> {
        let email = email.trim().to_ascii_lowercase();
        let sql = format!("SELECT {LEAD_COLUMNS} FROM leads l WHERE l.email = $1");
        let row = sqlx::query(&sql)
            .bind(email)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| lead_row(&r, 0)?.into_lead()).transpose()
    }

    async fn lead_ids(&self, filter: &LeadFilter) -> StoreResult<Vec<LeadId>> {
        let mut q = QueryBuilder::<Postgres>::new("SELECT id FROM leads WHERE TRUE");
        if let Some(country) = &filter.country {
            q.push(" AND country = ")
                .push_bind(country.to_ascii_uppercase());
        }
        if let Some(industry) = &filter.industry {
            q.push(" AND lower(industry) = lower(")
                .push_bind(industry.clone())
                .push(")");
        }
        if let Some(prefix) = &filter.source_prefix {
            q.push(" AND starts_with(source, ")
                .push_bind(prefix.clone())
                .push(")");
        }
        if filter.has_email {
            q.push(" AND email IS NOT NULL");
        }
        if filter.active_only {
            q.push(" AND status = 'active'");
        }
        q.push(" ORDER BY id");
        if let Some(limit) = filter.limit {
            q.push(" LIMIT ").push_bind(limit_of(limit));
        }
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok(LeadId(r.try_get(0)?))).collect()
    }

    async fn lead_counts(&self) -> StoreResult<Vec<(String, u64)>> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) FROM leads GROUP BY status ORDER BY status COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, count(r.try_get(1)?))))
            .collect()
    }

    async fn save_campaign(
        &self,
        slug: &str,
        name: &str,
        definition: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<CampaignId> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO campaigns (slug, name, definition, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (slug) DO UPDATE SET name = excluded.name, definition = excluded.definition, \
             updated_at = excluded.updated_at RETURNING id",
        )
        .bind(slug)
        .bind(name)
        .bind(definition)
        .bind(ms(now))
        .fetch_one(&self.pool)
        .await?;
        Ok(CampaignId(id))
    }

    async fn campaigns(&self) -> StoreResult<Vec<CampaignRecord>> {
        let rows = sqlx::query("SELECT id, slug, name, definition FROM campaigns ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(CampaignRecord {
                    id: CampaignId(r.try_get(0)?),
                    slug: r.try_get(1)?,
                    name: r.try_get(2)?,
                    definition: r.try_get(3)?,
                })
            })
            .collect()
    }

    async fn enroll(
        &self,
        campaign: CampaignId,
        leads: &[LeadId],
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        if leads.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = leads.iter().map(|l| l.0).collect();
        // One statement, so atomic; enrollment ids follow the order of `leads`.
        let added = sqlx::query(
            "INSERT INTO enrollments (campaign_id, lead_id, state, current_step, next_due_at, enrolled_at, updated_at) \
             SELECT $1, u.lead_id, 'active', 0, $3, $3, $3 \
             FROM UNNEST($2::bigint[]) WITH ORDINALITY AS u(lead_id, ord) ORDER BY u.ord \
             ON CONFLICT (campaign_id, lead_id) DO NOTHING",
        )
        .bind(campaign.0)
        .bind(&ids)
        .bind(ms(now))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(added)
    }

    async fn due_enrollments(
        &self,
        now: DateTime<Utc>,
        after: Option<DueCursor>,
        limit: usize,
    ) -> StoreResult<Vec<DueEnrollment>> {
        let sql = format!(
            "SELECT {ENROLLMENT_COLUMNS}, {LEAD_COLUMNS} FROM enrollments e JOIN leads l ON l.id = e.lead_id \
             WHERE e.state = 'active' AND e.next_due_at <= $1 AND (e.next_due_at, e.id) > ($2, $3) \
             ORDER BY e.next_due_at, e.id LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(ms(now))
            .bind(after.map_or(i64::MIN, |a| ms(a.next_due_at)))
            .bind(after.map_or(0, |a| a.id.0))
            .bind(limit_of(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(DueEnrollment {
                    enrollment: enrollment_row(r)?,
                    lead: lead_row(r, 7)?.into_lead()?,
                })
            })
            .collect()
    }

    async fn enrollments_for_lead(&self, lead: LeadId) -> StoreResult<Vec<EnrollmentRecord>> {
        let sql = format!(
            "SELECT {ENROLLMENT_COLUMNS} FROM enrollments e WHERE e.lead_id = $1 ORDER BY e.id"
        );
        let rows = sqlx::query(&sql).bind(lead.0).fetch_all(&self.pool).await?;
        rows.iter().map(enrollment_row).collect()
    }

    async fn enrollment_counts(&self) -> StoreResult<Vec<(CampaignId, String, u64)>> {
        let rows = sqlx::query(
            "SELECT campaign_id, state, COUNT(*) FROM enrollments GROUP BY campaign_id, state \
             ORDER BY campaign_id, state COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    CampaignId(r.try_get(0)?),
                    r.try_get(1)?,
                    count(r.try_get(2)?),
                ))
            })
            .collect()
    }

    async fn touches(
        &self,
        leads: &[LeadId],
        since: DateTime<Utc>,
    ) -> StoreResult<HashMap<LeadId, Vec<DateTime<Utc>>>> {
        let mut out: HashMap<LeadId, Vec<DateTime<Utc>>> = HashMap::new();
        if leads.is_empty() {
            return Ok(out);
        }
        let ids: Vec<i64> = leads.iter().map(|l| l.0).collect();
        let rows = sqlx::query(
            "SELECT lead_id, COALESCE(sent_at, send_at) AS at FROM deliveries WHERE lead_id = ANY($1) \
             AND state IN ('planned', 'claimed', 'sending', 'sent', 'retry_wait', 'unknown') \
             AND COALESCE(sent_at, send_at) >= $2 \
             ORDER BY lead_id, at, id",
        )
        .bind(&ids)
        .bind(ms(since))
        .fetch_all(&self.pool)
        .await?;
        for r in &rows {
            out.entry(LeadId(r.try_get(0)?))
                .or_default()
                .push(from_ms(r.try_get(1)?));
        }
        Ok(out)
    }

    async fn contact_history(
        &self,
        leads: &[LeadId],
        since: DateTime<Utc>,
    ) -> StoreResult<HashMap<LeadId, engager_domain::LeadHistory>> {
        let mut out: HashMap<LeadId, engager_domain::LeadHistory> = HashMap::new();
        if leads.is_empty() {
            return Ok(out);
        }
        let ids: Vec<i64> = leads.iter().map(|l| l.0).collect();
        let touches = sqlx::query(
            "SELECT lead_id, id, enrollment_id, step_index, channel, state, COALESCE(sent_at, send_at) AS at \
             FROM deliveries WHERE lead_id = ANY($1) \
             AND state IN ('planned', 'claimed', 'sending', 'sent', 'retry_wait', 'unknown') \
             AND COALESCE(sent_at, send_at) >= $2 \
             ORDER BY lead_id, at, id",
        )
        .bind(&ids)
        .bind(ms(since))
        .fetch_all(&self.pool)
        .await?;
        for r in &touches {
            let channel: String = r.try_get(4)?;
            let state: String = r.try_get(5)?;
            let step: i64 = r.try_get(3)?;
            out.entry(LeadId(r.try_get(0)?))
                .or_default()
                .touches
                .push(engager_domain::Touch {
                    at: from_ms(r.try_get(6)?),
                    channel: channel
                        .parse()
                        .map_err(|e| corrupt_in("deliveries", "channel", e))?,
                    sent: state == "sent",
                    delivery: Some(DeliveryId(r.try_get(1)?)),
                    step: Some((EnrollmentId(r.try_get(2)?), step as usize)),
                });
        }
        let events = sqlx::query(
            "SELECT lead_id, kind, occurred_at, delivery_id FROM events WHERE lead_id = ANY($1) \
             AND kind NOT IN ('sent', 'delivered') AND occurred_at >= $2 \
             AND NOT (kind IN ('opened', 'clicked') AND detail LIKE '%\"automated\":true%') \
             ORDER BY lead_id, occurred_at, id",
        )
        .bind(&ids)
        .bind(ms(since))
        .fetch_all(&self.pool)
        .await?;
        for r in &events {
            let kind: String = r.try_get(1)?;
            let delivery: Option<i64> = r.try_get(3)?;
            out.entry(LeadId(r.try_get(0)?))
                .or_default()
                .events
                .push(engager_domain::Engagement {
                    at: from_ms(r.try_get(2)?),
                    kind: kind.parse().map_err(|e| corrupt_in("events", "kind", e))?,
                    delivery: delivery.map(DeliveryId),
                });
        }
        for (lead, consents) in self.consents_impl(leads).await? {
            out.entry(lead).or_default().consents = consents;
        }
        Ok(out)
    }

    async fn suppressed(&self, values: &[SuppressionKey]) -> StoreResult<Vec<SuppressionRecord>> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let kinds: Vec<&str> = values.iter().map(SuppressionKey::kind).collect();
        let vals: Vec<&str> = values.iter().map(SuppressionKey::value).collect();
        // An erased person's entry keeps only a keyed hash of the value.
        // Read once it exists: suppression checks run for every planned and sent message.
        let hash_key = match self.suppression_key.get() {
            Some(key) => Some(key.clone()),
            None => {
                let mut conn = self.pool.acquire().await?;
                let key = gdpr::suppression_key(&mut conn, false).await?;
                if let Some(k) = &key {
                    let _ = self.suppression_key.set(k.clone());
                }
                key
            }
        };
        let hashed: Vec<String> = values
            .iter()
            .map(|k| {
                hash_key.as_deref().map_or_else(
                    || k.value().to_owned(),
                    |key| crate::gdpr::suppression_hash(key, k.kind(), k.value()),
                )
            })
            .collect();
        let rows = sqlx::query(
            "SELECT DISTINCT ON (k.ord) k.ord, s.reason, s.source, s.created_at \
             FROM UNNEST($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS k(kind, value, hashed, ord) \
             JOIN suppressions s ON s.kind = k.kind AND (s.value = k.value OR s.value = k.hashed) \
             ORDER BY k.ord",
        )
        .bind(&kinds)
        .bind(&vals)
        .bind(&hashed)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let ord: i64 = r.try_get(0)?;
                // WITH ORDINALITY counts from 1; the key is the caller's own value.
                let key = usize::try_from(ord - 1)
                    .ok()
                    .and_then(|i| values.get(i))
                    .ok_or_else(|| {
                        corrupt_in("suppressions", "value", format!("no key at position {ord}"))
                    })?;
                Ok(SuppressionRecord {
                    key: key.clone(),
                    reason: r.try_get(1)?,
                    source: r.try_get(2)?,
                    created_at: from_ms(r.try_get(3)?),
                })
            })
            .collect()
    }

    async fn record_evaluations(
        &self,
        evaluations: &[Evaluation],
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        if evaluations.is_empty() {
            return Ok(());
        }
        let now = ms(now);
        let mut tx = self.pool.begin().await?;
        // Every trace in one statement, in evaluation order (they only ever get appended).
        let traces: Vec<&TraceRecord> = evaluations.iter().map(|e| &e.trace).collect();
        sqlx::query(
            "INSERT INTO traces (enrollment_id, campaign_id, lead_id, step_index, evaluated_at, outcome, code, \
               channel, at, gates_json) \
             SELECT u.enrollment_id, u.campaign_id, u.lead_id, u.step_index, u.evaluated_at, u.outcome, u.code, \
               u.channel, u.at, u.gates_json \
             FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[], \
               $7::text[], $8::text[], $9::bigint[], $10::text[]) WITH ORDINALITY \
               AS u(enrollment_id, campaign_id, lead_id, step_index, evaluated_at, outcome, code, channel, at, \
               gates_json, ord) \
             ORDER BY u.ord",
        )
        .bind(traces.iter().map(|t| t.enrollment_id.0).collect::<Vec<_>>())
        .bind(traces.iter().map(|t| t.campaign_id.0).collect::<Vec<_>>())
        .bind(traces.iter().map(|t| t.lead_id.0).collect::<Vec<_>>())
        .bind(traces.iter().map(|t| limit_of(t.step_index)).collect::<Vec<_>>())
        .bind(traces.iter().map(|t| ms(t.evaluated_at)).collect::<Vec<_>>())
        .bind(traces.iter().map(|t| t.outcome.as_str()).collect::<Vec<_>>())
        .bind(traces.iter().map(|t| t.code.as_deref()).collect::<Vec<_>>())
        .bind(traces.iter().map(|t| t.channel.map(|c| c.as_str())).collect::<Vec<_>>())
        .bind(traces.iter().map(|t| t.at.map(ms)).collect::<Vec<_>>())
        .bind(traces.iter().map(|t| gates_json(&t.gates)).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        // Decisions in runs of distinct enrollments: within a run, set-based statements give
        // the same result as one-by-one; an enrollment seen again starts a new run, so the
        // order of its decisions is kept.
        let mut start = 0;
        while start < evaluations.len() {
            let mut seen = HashSet::new();
            let mut end = start;
            while end < evaluations.len() && seen.insert(evaluations[end].trace.enrollment_id) {
                end += 1;
            }
            apply_decisions(&mut tx, &evaluations[start..end], now).await?;
            start = end;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn traces_for_lead(&self, lead: LeadId) -> StoreResult<Vec<TraceRecord>> {
        let rows = sqlx::query(
            "SELECT enrollment_id, campaign_id, lead_id, step_index, evaluated_at, outcome, code, channel, at, gates_json \
             FROM traces WHERE lead_id = $1 ORDER BY id",
        )
        .bind(lead.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let channel: Option<String> = r.try_get(7)?;
                let gates: String = r.try_get(9)?;
                Ok(TraceRecord {
                    enrollment_id: EnrollmentId(r.try_get(0)?),
                    campaign_id: CampaignId(r.try_get(1)?),
                    lead_id: LeadId(r.try_get(2)?),
                    step_index: to_usize(r.try_get(3)?, "traces", "step_index")?,
                    evaluated_at: from_ms(r.try_get(4)?),
                    outcome: r.try_get(5)?,
                    code: r.try_get(6)?,
                    channel: channel
                        .map(|ch| ch.parse().map_err(|e| corrupt_in("traces", "channel", e)))
                        .transpose()?,
                    at: from_ms_opt(r.try_get(8)?),
                    gates: parse_gates(&gates)?,
                })
            })
            .collect()
    }

    async fn claim_due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        worker: &str,
        lease: Duration,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        let sql = format!("{CLAIM_SQL}{DELIVERY_COLUMNS}");
        let rows = sqlx::query(&sql)
            .bind(ms(now + lease))
            .bind(worker)
            .bind(ms(now))
            .bind(limit_of(limit))
            .fetch_all(&self.pool)
            .await?;
        let mut out = rows
            .iter()
            .map(delivery_row)
            .collect::<StoreResult<Vec<_>>>()?;
        out.sort_by_key(|d| (d.send_at, d.id));
        Ok(out)
    }

    async fn begin_send(
        &self,
        id: DeliveryId,
        token: i64,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> StoreResult<bool> {
        let n = sqlx::query(BEGIN_SEND_SQL)
            .bind(ms(now + lease))
            .bind(ms(now))
            .bind(id.0)
            .bind(token)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    async fn record_outcome(
        &self,
        id: DeliveryId,
        token: i64,
        outcome: &SendOutcome,
        next: &FollowUp,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let now = ms(now);
        let (state, next_attempt, error, provider_ref, sent_at) = match outcome {
            SendOutcome::Sent { provider_ref } => {
                ("sent", None, None, Some(provider_ref.as_str()), Some(now))
            }
            SendOutcome::Retry { at, error } => (
                "retry_wait",
                Some(ms(*at)),
                Some(error.as_str()),
                None,
                None,
            ),
            SendOutcome::Failed { error } => ("failed", None, Some(error.as_str()), None, None),
            SendOutcome::Unknown { error } => ("unknown", None, Some(error.as_str()), None, None),
        };
        // One statement (data-modifying CTEs) is atomic in PostgreSQL and costs one round
        // trip instead of five for BEGIN, three statements and COMMIT.
        let next_due: Option<i64> = match next {
            FollowUp::NextStepAt(at) => Some(ms(*at)),
            FollowUp::Complete => None,
        };
        let row = sqlx::query(RECORD_OUTCOME_SQL)
            .bind(state)
            .bind(next_attempt)
            .bind(error)
            .bind(provider_ref)
            .bind(sent_at)
            .bind(now)
            .bind(id.0)
            .bind(token)
            .bind(next_due)
            .fetch_one(&self.pool)
            .await?;
        let updated: i64 = row.try_get(0)?;
        Ok(updated == 1)
    }

    async fn cancel_claimed(
        &self,
        id: DeliveryId,
        token: i64,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let now = ms(now);
        let mut tx = self.pool.begin().await?;
        let enrollment: Option<i64> = sqlx::query_scalar(
            "UPDATE deliveries SET state = 'cancelled', last_error = $1, lease_until = NULL, updated_at = $2 \
             WHERE id = $3 AND fencing_token = $4 AND state = 'claimed' RETURNING enrollment_id",
        )
        .bind(reason)
        .bind(now)
        .bind(id.0)
        .bind(token)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(enrollment) = enrollment {
            sqlx::query(
                "UPDATE enrollments SET state = 'stopped', stop_reason = $1, next_due_at = NULL, updated_at = $2 \
                 WHERE id = $3 AND state = 'waiting'",
            )
            .bind(reason)
            .bind(now)
            .bind(enrollment)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(enrollment.is_some())
    }

    async fn release_claim(
        &self,
        id: DeliveryId,
        token: i64,
        send_at: DateTime<Utc>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let n = sqlx::query(
            "UPDATE deliveries SET state = 'planned', send_at = $1, last_error = $2, lease_until = NULL, \
             claimed_by = NULL, updated_at = $3 \
             WHERE id = $4 AND fencing_token = $5 AND state = 'claimed'",
        )
        .bind(ms(send_at))
        .bind(reason)
        .bind(ms(now))
        .bind(id.0)
        .bind(token)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn resolve_unknown(
        &self,
        id: DeliveryId,
        resolution: Resolution,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let state = match resolution {
            Resolution::Retry => "planned",
            Resolution::Drop => "cancelled",
        };
        let row = sqlx::query(
            "WITH d AS ( \
                UPDATE deliveries SET state = $1, send_at = CASE WHEN $1 = 'planned' THEN $2 ELSE send_at END, \
                last_error = $3, lease_until = NULL, claimed_by = NULL, updated_at = $2 \
                WHERE id = $4 AND state = 'unknown' RETURNING enrollment_id \
             ), en AS ( \
                UPDATE enrollments e SET state = 'stopped', stop_reason = 'delivery_dropped', next_due_at = NULL, updated_at = $2 \
                FROM d WHERE e.id = d.enrollment_id AND e.state = 'waiting' AND $1 = 'cancelled' \
             ) SELECT count(*) FROM d",
        )
        .bind(state)
        .bind(ms(now))
        .bind(reason)
        .bind(id.0)
        .fetch_one(&self.pool)
        .await?;
        let n: i64 = row.try_get(0)?;
        Ok(n == 1)
    }

    async fn record_fallback(
        &self,
        id: DeliveryId,
        token: i64,
        error: &str,
        evaluation: &Evaluation,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let now = ms(now);
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE deliveries SET state = 'failed', next_attempt_at = NULL, last_error = $1, \
               lease_until = NULL, updated_at = $2 \
             WHERE id = $3 AND fencing_token = $4 AND state IN ('sending', 'unknown') \
             RETURNING enrollment_id, step_index",
        )
        .bind(error)
        .bind(now)
        .bind(id.0)
        .bind(token)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let enrollment: i64 = row.try_get(0)?;
        let step: i64 = row.try_get(1)?;
        // The enrollment is planned again at the same step, only if it still waits for this
        // step (a reply or unsubscribe may have stopped it meanwhile).
        let reopened = sqlx::query(
            "UPDATE enrollments SET state = 'active', updated_at = $1 \
             WHERE id = $2 AND state = 'waiting' AND current_step = $3",
        )
        .bind(now)
        .bind(enrollment)
        .bind(step)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let t = &evaluation.trace;
        let same_step = t.enrollment_id.0 == enrollment && limit_of(t.step_index) == step;
        if reopened == 1 && same_step {
            sqlx::query(
                "INSERT INTO traces (enrollment_id, campaign_id, lead_id, step_index, evaluated_at, outcome, \
                   code, channel, at, gates_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(t.enrollment_id.0)
            .bind(t.campaign_id.0)
            .bind(t.lead_id.0)
            .bind(step)
            .bind(ms(t.evaluated_at))
            .bind(t.outcome.as_str())
            .bind(t.code.as_deref())
            .bind(t.channel.map(|c| c.as_str()))
            .bind(t.at.map(ms))
            .bind(gates_json(&t.gates))
            .execute(&mut *tx)
            .await?;
            apply_decisions(&mut tx, std::slice::from_ref(evaluation), now).await?;
        } else if reopened == 1 {
            sqlx::query(
                "UPDATE enrollments SET state = 'stopped', stop_reason = 'delivery_failed', \
                   next_due_at = NULL, updated_at = $1 WHERE id = $2",
            )
            .bind(now)
            .bind(enrollment)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn failed_channels(
        &self,
        enrollments: &[engager_domain::EnrollmentId],
    ) -> StoreResult<Vec<FailedChannel>> {
        let ids: Vec<i64> = enrollments.iter().map(|e| e.0).collect();
        let rows = sqlx::query(
            "SELECT enrollment_id, step_index, channel, COALESCE(last_error, '') FROM deliveries \
             WHERE enrollment_id = ANY($1) AND state = 'failed' ORDER BY enrollment_id, step_index, id",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let channel: String = r.try_get(2)?;
                Ok(FailedChannel {
                    enrollment_id: engager_domain::EnrollmentId(r.try_get(0)?),
                    step_index: to_usize(r.try_get(1)?, "deliveries", "step_index")?,
                    channel: channel
                        .parse()
                        .map_err(|e| corrupt_in("deliveries", "channel", e))?,
                    error: r.try_get(3)?,
                })
            })
            .collect()
    }

    async fn take_send_permit(&self, request: &PermitRequest) -> StoreResult<Permit> {
        let keys = PermitKeys::new(request);
        let mut tx = self.pool.begin().await?;
        // Every process on the database takes this account's permits one at a time.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
            .bind(format!("engager rate {}", request.account))
            .execute(&mut *tx)
            .await?;
        let mut read = Vec::with_capacity(keys.rates.len() + 2);
        read.push(keys.pause.clone());
        read.extend(keys.rates.iter().cloned());
        if let Some((key, _)) = &keys.day {
            read.push(key.clone());
        }
        let rows =
            sqlx::query("SELECT bucket, tat, count FROM rate_buckets WHERE bucket = ANY($1)")
                .bind(&read)
                .fetch_all(&mut *tx)
                .await?;
        let mut stored: HashMap<String, (i64, i64)> = HashMap::with_capacity(rows.len());
        for r in &rows {
            stored.insert(r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?));
        }
        let paused = stored.get(&keys.pause).map(|(tat, _)| *tat);
        let rates: Vec<Option<i64>> = keys
            .rates
            .iter()
            .map(|k| stored.get(k).map(|(tat, _)| *tat))
            .collect();
        let taken = match &keys.day {
            None => 0,
            Some((key, day_start)) => match stored.get(key) {
                Some((_, n)) => *n,
                // The day's first permit: start from what the ledger sent today through
                // this account (rows without an account predate 0010).
                None => sqlx::query_scalar(
                    "SELECT COUNT(*) FROM deliveries WHERE channel = $1 AND state = 'sent' AND sent_at >= $2 \
                     AND (account = $3 OR account IS NULL)",
                )
                .bind(request.channel.as_str())
                .bind(*day_start)
                .bind(&request.account)
                .fetch_one(&mut *tx)
                .await?,
            },
        };
        match decide_permit(request, paused, &rates, taken) {
            Err((until, reason)) => Ok(Permit::Wait { until, reason }),
            Ok(tats) => {
                let mut keys_out: Vec<String> = keys.rates.clone();
                let mut tats_out = tats;
                let mut counts_out: Vec<i64> = vec![0; keys_out.len()];
                if let Some((key, day_start)) = &keys.day {
                    keys_out.push(key.clone());
                    tats_out.push(*day_start);
                    counts_out.push(taken + 1);
                }
                sqlx::query(
                    "INSERT INTO rate_buckets (bucket, tat, count, updated_at) \
                     SELECT u.bucket, u.tat, u.count, $4 FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) \
                       AS u(bucket, tat, count) \
                     ON CONFLICT (bucket) DO UPDATE SET tat = excluded.tat, count = excluded.count, \
                       updated_at = excluded.updated_at",
                )
                .bind(&keys_out)
                .bind(&tats_out)
                .bind(&counts_out)
                .bind(ms(request.now))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Permit::Granted)
            }
        }
    }

    async fn pause_account(&self, account: &str, until: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO rate_buckets (bucket, tat, count, updated_at) VALUES ($1, $2, 0, $3) \
             ON CONFLICT (bucket) DO UPDATE SET tat = GREATEST(rate_buckets.tat, excluded.tat), \
               updated_at = excluded.updated_at",
        )
        .bind(pause_key(account))
        .bind(micros(until))
        .bind(ms(Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn sent_counts_since(
        &self,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<(engager_domain::Channel, u64)>> {
        let rows = sqlx::query(
            "SELECT channel, COUNT(*) FROM deliveries WHERE state = 'sent' AND sent_at >= $1 \
             GROUP BY channel ORDER BY channel COLLATE \"C\"",
        )
        .bind(ms(since))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let channel: String = r.try_get(0)?;
                let n: i64 = r.try_get(1)?;
                Ok((
                    channel
                        .parse()
                        .map_err(|e| corrupt_in("deliveries", "channel", e))?,
                    n.max(0) as u64,
                ))
            })
            .collect()
    }

    async fn set_delivery_account(
        &self,
        id: DeliveryId,
        token: i64,
        account: &str,
    ) -> StoreResult<bool> {
        self.set_delivery_account_impl(id, token, account).await
    }

    async fn enrollment_account(
        &self,
        enrollment: EnrollmentId,
        channel: engager_domain::Channel,
    ) -> StoreResult<Option<String>> {
        self.enrollment_account_impl(enrollment, channel).await
    }

    async fn sent_counts_by_account_since(
        &self,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<AccountSentCount>> {
        self.sent_counts_by_account_since_impl(since).await
    }

    async fn save_account_state(&self, state: &AccountState) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO account_states (account, circuit, open_until, last_error, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (account) DO UPDATE SET circuit = excluded.circuit, open_until = excluded.open_until, \
             last_error = excluded.last_error, updated_at = excluded.updated_at",
        )
        .bind(&state.account)
        .bind(&state.circuit)
        .bind(state.open_until.map(ms))
        .bind(&state.last_error)
        .bind(ms(state.updated_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn account_states(&self) -> StoreResult<Vec<AccountState>> {
        let rows = sqlx::query(
            "SELECT account, circuit, open_until, last_error, updated_at FROM account_states ORDER BY account COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AccountState {
                    account: r.try_get(0)?,
                    circuit: r.try_get(1)?,
                    open_until: from_ms_opt(r.try_get(2)?),
                    last_error: r.try_get(3)?,
                    updated_at: from_ms(r.try_get(4)?),
                })
            })
            .collect()
    }

    async fn ledger_overview(&self) -> StoreResult<Vec<LedgerRow>> {
        let rows = sqlx::query(
            "SELECT channel, state, COUNT(*), MIN(COALESCE(next_attempt_at, send_at)) FROM deliveries \
             GROUP BY channel, state ORDER BY channel COLLATE \"C\", state COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let channel: String = r.try_get(0)?;
                let state: String = r.try_get(1)?;
                let n: i64 = r.try_get(2)?;
                Ok(LedgerRow {
                    channel: channel
                        .parse()
                        .map_err(|e| corrupt_in("deliveries", "channel", e))?,
                    state: state
                        .parse()
                        .map_err(|e| corrupt_in("deliveries", "state", e))?,
                    count: n.max(0) as u64,
                    oldest_due: from_ms_opt(r.try_get(3)?),
                })
            })
            .collect()
    }

    async fn recover_expired_leases(&self, now: DateTime<Utc>) -> StoreResult<Recovered> {
        let now = ms(now);
        let mut tx = self.pool.begin().await?;
        let requeued = sqlx::query(
            "UPDATE deliveries SET state = 'planned', lease_until = NULL, claimed_by = NULL, updated_at = $1 \
             WHERE state = 'claimed' AND lease_until <= $1",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let unknown = sqlx::query(
            "UPDATE deliveries SET state = 'unknown', last_error = 'lease expired while sending: the provider may have accepted it', \
             lease_until = NULL, updated_at = $1 WHERE state = 'sending' AND lease_until <= $1",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(Recovered { requeued, unknown })
    }

    async fn deliveries(&self, filter: &DeliveryFilter) -> StoreResult<Vec<DeliveryRecord>> {
        let mut q = QueryBuilder::<Postgres>::new(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE TRUE"
        ));
        if let Some(state) = filter.state {
            q.push(" AND d.state = ").push_bind(state.as_str());
        }
        if let Some(channel) = filter.channel {
            q.push(" AND d.channel = ").push_bind(channel.as_str());
        }
        if let Some(lead) = filter.lead {
            q.push(" AND d.lead_id = ").push_bind(lead.0);
        }
        if let Some(campaign) = filter.campaign {
            q.push(" AND d.campaign_id = ").push_bind(campaign.0);
        }
        q.push(" ORDER BY d.id DESC");
        if let Some(limit) = filter.limit {
            q.push(" LIMIT ").push_bind(limit_of(limit));
        }
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(delivery_row).collect()
    }

    async fn next_due_at(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let v: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(t) FROM ( \
               SELECT MIN(next_due_at) AS t FROM enrollments WHERE state = 'active' \
               UNION ALL SELECT MIN(send_at) FROM deliveries WHERE state = 'planned' \
               UNION ALL SELECT MIN(next_attempt_at) FROM deliveries WHERE state = 'retry_wait' \
               UNION ALL SELECT MIN(lease_until) FROM deliveries WHERE state IN ('claimed', 'sending')) AS due",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(from_ms_opt(v))
    }

    async fn record_event(&self, event: &NewEvent) -> StoreResult<EventEffects> {
        let now = ms(event.occurred_at);
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO events (lead_id, delivery_id, kind, occurred_at, detail, source) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(event.lead_id.0)
        .bind(event.delivery_id.map(|d| d.0))
        .bind(event.kind.as_str())
        .bind(now)
        .bind(&event.detail)
        .bind(&event.source)
        .execute(&mut *tx)
        .await?;
        let effects = event_effects(&mut tx, event, now).await?;
        tx.commit().await?;
        Ok(effects)
    }

    async fn add_suppression(
        &self,
        key: &SuppressionKey,
        reason: &str,
        source: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let n = sqlx::query(
            "INSERT INTO suppressions (kind, value, reason, source, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (kind, value) DO NOTHING",
        )
        .bind(key.kind())
        .bind(key.value())
        .bind(reason)
        .bind(source)
        .bind(ms(now))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn events_for_lead(&self, lead: LeadId) -> StoreResult<Vec<EventRecord>> {
        let rows = sqlx::query(
            "SELECT id, lead_id, delivery_id, kind, occurred_at, detail, source FROM events \
             WHERE lead_id = $1 ORDER BY occurred_at, id",
        )
        .bind(lead.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get(3)?;
                let delivery: Option<i64> = r.try_get(2)?;
                Ok(EventRecord {
                    id: r.try_get(0)?,
                    event: NewEvent {
                        lead_id: LeadId(r.try_get(1)?),
                        delivery_id: delivery.map(DeliveryId),
                        kind: kind.parse().map_err(|e| corrupt_in("events", "kind", e))?,
                        occurred_at: from_ms(r.try_get(4)?),
                        detail: r.try_get(5)?,
                        source: r.try_get(6)?,
                    },
                })
            })
            .collect()
    }

    async fn record_external_event(
        &self,
        event: &NewEvent,
        external_id: &str,
    ) -> StoreResult<Option<EventEffects>> {
        let now = ms(event.occurred_at);
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO events (lead_id, delivery_id, kind, occurred_at, detail, source, external_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(event.lead_id.0)
        .bind(event.delivery_id.map(|d| d.0))
        .bind(event.kind.as_str())
        .bind(now)
        .bind(&event.detail)
        .bind(&event.source)
        .bind(external_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(None);
        }
        let effects = event_effects(&mut tx, event, now).await?;
        tx.commit().await?;
        Ok(Some(effects))
    }

    async fn stop_domain_sequences(
        &self,
        domain: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<EventEffects> {
        let now = ms(now);
        let at_domain = format!("@{}", domain.to_ascii_lowercase());
        let leads =
            "SELECT id FROM leads WHERE email IS NOT NULL AND right(email, length($3)) = $3";
        let mut tx = self.pool.begin().await?;
        let enrollments_stopped = sqlx::query(&format!(
            "UPDATE enrollments SET state = 'stopped', stop_reason = $1, next_due_at = NULL, updated_at = $2 \
             WHERE state IN ('active', 'waiting') AND lead_id IN ({leads})"
        ))
        .bind(reason)
        .bind(now)
        .bind(&at_domain)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let mut deliveries_cancelled = sqlx::query(&format!(
            "UPDATE deliveries SET state = 'cancelled', last_error = $1, lease_until = NULL, updated_at = $2 \
             WHERE state IN ('planned', 'retry_wait', 'claimed') AND lead_id IN ({leads})"
        ))
        .bind(format!("cancelled: {reason}"))
        .bind(now)
        .bind(&at_domain)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        deliveries_cancelled += cancel_open_tasks(
            &mut tx,
            TaskLeads::Domain(&at_domain),
            &format!("cancelled: {reason}"),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(EventEffects {
            enrollments_stopped,
            deliveries_cancelled,
            suppressed: false,
        })
    }

    async fn find_delivery(&self, id: DeliveryId) -> StoreResult<Option<DeliveryRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.id = $1"
        ))
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(delivery_row).transpose()
    }

    async fn find_delivery_by_provider_ref(
        &self,
        provider_ref: &str,
    ) -> StoreResult<Option<DeliveryRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.provider_ref = $1 ORDER BY d.id LIMIT 1"
        ))
        .bind(provider_ref)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(delivery_row).transpose()
    }

    async fn inbound_cursor(&self, source: &str) -> StoreResult<Option<InboundCursor>> {
        let row = sqlx::query(
            "SELECT source, uid_validity, last_uid, last_received_at, updated_at FROM inbound_cursors WHERE source = $1",
        )
        .bind(source)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let u32_of = |v: Option<i64>, column: &'static str| {
            v.map(|v| u32::try_from(v).map_err(|e| corrupt_in("inbound_cursors", column, e)))
                .transpose()
        };
        Ok(Some(InboundCursor {
            source: r.try_get(0)?,
            uid_validity: u32_of(r.try_get(1)?, "uid_validity")?,
            last_uid: u32_of(r.try_get(2)?, "last_uid")?,
            last_received_at: from_ms_opt(r.try_get(3)?),
            updated_at: from_ms(r.try_get(4)?),
        }))
    }

    async fn save_inbound_cursor(&self, cursor: &InboundCursor) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO inbound_cursors (source, uid_validity, last_uid, last_received_at, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (source) DO UPDATE SET uid_validity = EXCLUDED.uid_validity, last_uid = EXCLUDED.last_uid, \
             last_received_at = EXCLUDED.last_received_at, updated_at = EXCLUDED.updated_at",
        )
        .bind(&cursor.source)
        .bind(cursor.uid_validity.map(i64::from))
        .bind(cursor.last_uid.map(i64::from))
        .bind(cursor.last_received_at.map(ms))
        .bind(ms(cursor.updated_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn open_task(
        &self,
        task: &NewTask,
        token: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<TaskRecord>> {
        let now = ms(now);
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT enrollment_id, campaign_id, lead_id, step_index, channel FROM deliveries \
             WHERE id = $1 AND fencing_token = $2 AND state = 'sending' FOR UPDATE",
        )
        .bind(task.delivery_id.0)
        .bind(token)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let (enrollment, campaign, lead, step, channel): (i64, i64, i64, i64, String) = (
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
            row.try_get(4)?,
        );
        sqlx::query(
            "INSERT INTO tasks (delivery_id, enrollment_id, campaign_id, lead_id, step_index, channel, kind, profile_url, body, \
             state, due_at, on_deadline, fencing_token, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'open', $10, $11, $12, $13) ON CONFLICT (delivery_id) DO NOTHING",
        )
        .bind(task.delivery_id.0)
        .bind(enrollment)
        .bind(campaign)
        .bind(lead)
        .bind(step)
        .bind(channel)
        .bind(&task.kind)
        .bind(&task.profile_url)
        .bind(&task.body)
        .bind(ms(task.due_at))
        .bind(&task.on_deadline)
        .bind(token)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE delivery_id = $1"
        ))
        .bind(task.delivery_id.0)
        .fetch_one(&mut *tx)
        .await?;
        let record = task_row(&row)?;
        sqlx::query(
            "UPDATE deliveries SET lease_until = NULL, claimed_by = $1, updated_at = $2 WHERE id = $3",
        )
        .bind(format!("task:{}", record.id))
        .bind(now)
        .bind(task.delivery_id.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(record))
    }

    async fn task(&self, id: i64) -> StoreResult<Option<TaskRecord>> {
        let row = sqlx::query(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(task_row).transpose()
    }

    async fn tasks(&self, filter: &TaskFilter) -> StoreResult<Vec<TaskRecord>> {
        let mut q =
            QueryBuilder::<Postgres>::new(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE TRUE"));
        if let Some(state) = filter.state {
            q.push(" AND state = ").push_bind(state.as_str());
        }
        if let Some(before) = filter.due_before {
            q.push(" AND due_at <= ").push_bind(ms(before));
        }
        if let Some(lead) = filter.lead {
            q.push(" AND lead_id = ").push_bind(lead.0);
        }
        q.push(" ORDER BY due_at, id");
        if let Some(limit) = filter.limit {
            q.push(" LIMIT ").push_bind(limit_of(limit));
        }
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(task_row).collect()
    }

    async fn close_task(
        &self,
        id: i64,
        close: &TaskClose,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let now = ms(now);
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT delivery_id, enrollment_id, lead_id, step_index, fencing_token FROM tasks WHERE id = $1 AND state = 'open' FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(false) };
        let (delivery, enrollment, lead, step, token): (i64, i64, i64, i64, i64) = (
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
            row.try_get(4)?,
        );
        match close {
            TaskClose::Done { follow_up } => {
                let n = sqlx::query(
                    "UPDATE deliveries SET state = 'sent', provider_ref = $1, sent_at = $2, lease_until = NULL, updated_at = $2 \
                     WHERE id = $3 AND fencing_token = $4 AND state = 'sending'",
                )
                .bind(format!("task:{id}"))
                .bind(now)
                .bind(delivery)
                .bind(token)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n != 1 {
                    return Ok(false);
                }
                sqlx::query(
                    "INSERT INTO events (lead_id, delivery_id, kind, occurred_at, detail, source) VALUES ($1, $2, 'sent', $3, '{}', 'task')",
                )
                .bind(lead)
                .bind(delivery)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE tasks SET state = 'done', closed_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                advance_enrollment(&mut tx, enrollment, step, *follow_up, now).await?;
            }
            TaskClose::Skipped { reason, follow_up } => {
                let n = sqlx::query(
                    "UPDATE deliveries SET state = 'cancelled', last_error = $1, lease_until = NULL, updated_at = $2 \
                     WHERE id = $3 AND fencing_token = $4 AND state = 'sending'",
                )
                .bind(format!("task skipped: {reason}"))
                .bind(now)
                .bind(delivery)
                .bind(token)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n != 1 {
                    return Ok(false);
                }
                sqlx::query(
                    "UPDATE tasks SET state = 'skipped', note = $1, closed_at = $2 WHERE id = $3",
                )
                .bind(reason)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                advance_enrollment(&mut tx, enrollment, step, *follow_up, now).await?;
            }
            TaskClose::Fallback {
                reason,
                delivery: new,
            } => {
                let n = sqlx::query(
                    "UPDATE deliveries SET state = 'cancelled', last_error = $1, lease_until = NULL, updated_at = $2 \
                     WHERE id = $3 AND fencing_token = $4 AND state = 'sending'",
                )
                .bind(format!("task not done: {reason}; fell back to {}", new.channel))
                .bind(now)
                .bind(delivery)
                .bind(token)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n != 1 {
                    return Ok(false);
                }
                sqlx::query(
                    "INSERT INTO deliveries (enrollment_id, campaign_id, lead_id, step_index, channel, state, send_at, to_address, \
                     subject, body_text, body_html, created_at, updated_at, variant) \
                     SELECT enrollment_id, campaign_id, lead_id, step_index, $1, 'planned', $2, $3, $4, $5, $6, $7, $7, $9 \
                     FROM deliveries WHERE id = $8",
                )
                .bind(new.channel.as_str())
                .bind(ms(new.send_at))
                .bind(&new.to_address)
                .bind(&new.subject)
                .bind(&new.body_text)
                .bind(&new.body_html)
                .bind(now)
                .bind(delivery)
                .bind(&new.variant)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE tasks SET state = 'fell_back', note = $1, closed_at = $2 WHERE id = $3",
                )
                .bind(format!("{reason}; fell back to {}", new.channel))
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn sms_message(&self, message_sid: &str) -> StoreResult<Option<SmsMessage>> {
        self.sms_message_impl(message_sid).await
    }

    async fn apply_sms_status(&self, change: &SmsStatusChange) -> StoreResult<bool> {
        self.apply_sms_status_impl(change).await
    }

    async fn apply_sms_inbound(&self, inbound: &SmsInbound) -> StoreResult<SmsInboundOutcome> {
        self.apply_sms_inbound_impl(inbound).await
    }

    async fn sms_inbound_log(&self, from: &str) -> StoreResult<Vec<SmsInboundRecord>> {
        self.sms_inbound_log_impl(from).await
    }

    async fn variant_counts(&self) -> StoreResult<Vec<VariantCountRow>> {
        self.variant_counts_impl().await
    }

    async fn variant_assignments(&self, leads: &[LeadId]) -> StoreResult<Vec<VariantAssignment>> {
        self.variant_assignments_impl(leads).await
    }

    async fn experiment_decisions(&self) -> StoreResult<Vec<ExperimentDecision>> {
        self.experiment_decisions_impl().await
    }

    async fn save_experiment_decision(
        &self,
        decision: &ExperimentDecision,
        audit: &AuditEntry,
    ) -> StoreResult<()> {
        self.save_experiment_decision_impl(decision, audit).await
    }

    async fn classify_reply(&self, c: &ReplyClassification) -> StoreResult<ClassifiedReply> {
        self.classify_reply_impl(c).await
    }

    async fn replies(&self, lead: Option<LeadId>, limit: usize) -> StoreResult<Vec<ReplyRecord>> {
        self.replies_impl(lead, limit).await
    }

    async fn lead_by_source_ref(
        &self,
        source: &str,
        source_ref: &str,
    ) -> StoreResult<Option<LeadId>> {
        self.lead_by_source_ref_impl(source, source_ref).await
    }

    async fn report_facts(&self, query: &ReportQuery) -> StoreResult<ReportFacts> {
        self.report_facts_impl(query).await
    }

    async fn sending_counts(
        &self,
        channel: engager_domain::Channel,
        since: DateTime<Utc>,
    ) -> StoreResult<engager_domain::deliverability::SendingCounts> {
        self.sending_counts_impl(channel, since).await
    }

    async fn sending_halts(&self) -> StoreResult<Vec<SendingHalt>> {
        self.sending_halts_impl().await
    }

    async fn latency_histograms(&self) -> StoreResult<Vec<LatencyHistogram>> {
        self.latency_histograms_impl().await
    }

    async fn suppression_list(&self) -> StoreResult<Vec<SuppressionRecord>> {
        self.suppression_list_impl().await
    }

    async fn channel_evidence(&self, since: DateTime<Utc>) -> StoreResult<Vec<ChannelEvidenceRow>> {
        self.channel_evidence_impl(since).await
    }

    async fn resolve_review(
        &self,
        id: DeliveryId,
        resolution: &ReviewResolution,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.resolve_review_impl(id, resolution, now).await
    }

    async fn add_suppressions(&self, entries: &[SuppressionRecord]) -> StoreResult<u64> {
        self.add_suppressions_impl(entries).await
    }

    async fn export_subject(&self, lead: LeadId) -> StoreResult<serde_json::Value> {
        self.export_subject_impl(lead).await
    }

    async fn erase_subject(&self, lead: LeadId, audit: &AuditEntry) -> StoreResult<ErasureReport> {
        self.erase_subject_impl(lead, audit).await
    }

    async fn record_consent(
        &self,
        record: &engager_domain::compliance::ConsentRecord,
    ) -> StoreResult<i64> {
        self.record_consent_impl(record).await
    }

    async fn consents(
        &self,
        leads: &[LeadId],
    ) -> StoreResult<HashMap<LeadId, Vec<engager_domain::compliance::ConsentRecord>>> {
        self.consents_impl(leads).await
    }

    async fn record_evidence(&self, evidence: &SendEvidence) -> StoreResult<()> {
        self.record_evidence_impl(evidence).await
    }

    async fn evidence_since(&self, since: DateTime<Utc>) -> StoreResult<Vec<EvidenceRow>> {
        self.evidence_since_impl(since).await
    }

    async fn compliance_traces(&self, since: DateTime<Utc>) -> StoreResult<Vec<ComplianceTrace>> {
        self.compliance_traces_impl(since).await
    }

    async fn campaign_halts(&self) -> StoreResult<Vec<CampaignHalt>> {
        self.campaign_halts_impl().await
    }

    async fn set_campaign_halt(&self, halt: &CampaignHalt) -> StoreResult<bool> {
        self.set_campaign_halt_impl(halt).await
    }

    async fn pending_opt_out_writebacks(
        &self,
        source_prefix: &str,
        limit: usize,
    ) -> StoreResult<Vec<(LeadId, String)>> {
        self.pending_opt_out_writebacks_impl(source_prefix, limit)
            .await
    }

    async fn mark_opt_outs_written_back(
        &self,
        leads: &[LeadId],
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.mark_opt_outs_written_back_impl(leads, now).await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        self.append_audit_impl(entry).await
    }

    async fn audit_log(&self, since: DateTime<Utc>) -> StoreResult<Vec<AuditEntry>> {
        self.audit_log_impl(since).await
    }

    async fn apply_retention(
        &self,
        cutoffs: &crate::gdpr::RetentionCutoffs,
        dry_run: bool,
    ) -> StoreResult<crate::gdpr::RetentionReport> {
        self.retention_impl(cutoffs, dry_run).await
    }

    async fn set_sending_halt(&self, halt: &SendingHalt) -> StoreResult<bool> {
        self.set_sending_halt_impl(halt).await
    }

    async fn sending_counts_by_account(
        &self,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<AccountSendingCounts>> {
        self.sending_counts_by_account_impl(since).await
    }

    async fn account_halts(&self) -> StoreResult<Vec<AccountHalt>> {
        self.account_halts_impl().await
    }

    async fn set_account_halt(&self, halt: &AccountHalt) -> StoreResult<bool> {
        self.set_account_halt_impl(halt).await
    }

    async fn save_tracked_message(
        &self,
        id: DeliveryId,
        token: i64,
        message: &TrackedMessage,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.save_tracked_message_impl(id, token, message, now)
            .await
    }

    async fn tracked_link(&self, id: DeliveryId, index: u32) -> StoreResult<Option<String>> {
        self.tracked_link_impl(id, index).await
    }

    async fn tracking_targets(
        &self,
        ids: &[DeliveryId],
    ) -> StoreResult<HashMap<DeliveryId, TrackingTarget>> {
        self.tracking_targets_impl(ids).await
    }

    async fn record_tracking_events(
        &self,
        events: &[NewEvent],
        reflag: &[(i64, String)],
    ) -> StoreResult<Vec<i64>> {
        self.record_tracking_events_impl(events, reflag).await
    }

    async fn step_summary(&self) -> StoreResult<Vec<SummaryRow>> {
        // Text columns sort bytewise (COLLATE "C"), as on SQLite.
        let rows = sqlx::query(
            "SELECT campaign, step_index, channel, metric, n FROM ( \
               SELECT c.slug AS campaign, d.step_index, d.channel, 'delivery:' || d.state AS metric, COUNT(*) AS n \
                 FROM deliveries d JOIN campaigns c ON c.id = d.campaign_id GROUP BY 1, 2, 3, 4 \
               UNION ALL \
               SELECT c.slug, t.step_index, COALESCE(t.channel, '-'), t.outcome || ':' || COALESCE(t.code, ''), COUNT(*) \
                 FROM traces t JOIN campaigns c ON c.id = t.campaign_id WHERE t.outcome IN ('skipped', 'stopped') \
                 GROUP BY 1, 2, 3, 4 \
               UNION ALL \
               SELECT c.slug, d.step_index, d.channel, 'event:' || e.kind, COUNT(*) \
                 FROM events e JOIN deliveries d ON d.id = e.delivery_id JOIN campaigns c ON c.id = d.campaign_id \
                 GROUP BY 1, 2, 3, 4) AS s \
             ORDER BY campaign COLLATE \"C\", step_index, channel COLLATE \"C\", metric COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SummaryRow {
                    campaign: r.try_get(0)?,
                    step_index: to_usize(r.try_get(1)?, "deliveries", "step_index")?,
                    channel: r.try_get(2)?,
                    metric: r.try_get(3)?,
                    count: count(r.try_get(4)?),
                })
            })
            .collect()
    }

    async fn pending_writebacks(
        &self,
        source_prefix: &str,
        limit: usize,
    ) -> StoreResult<Vec<Writeback>> {
        let rows = sqlx::query(
            "SELECT d.id, l.source_ref, l.source, d.sent_at FROM deliveries d JOIN leads l ON l.id = d.lead_id \
             WHERE d.state = 'sent' AND d.written_back_at IS NULL AND l.source_ref IS NOT NULL \
             AND starts_with(l.source, $1) ORDER BY d.id LIMIT $2",
        )
        .bind(source_prefix)
        .bind(limit_of(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let sent_at: Option<i64> = r.try_get(3)?;
                let sent_at = sent_at.ok_or_else(|| {
                    corrupt_in("deliveries", "sent_at", "a sent delivery without sent_at")
                })?;
                Ok(Writeback {
                    delivery_id: DeliveryId(r.try_get(0)?),
                    source_ref: r.try_get(1)?,
                    source: r.try_get(2)?,
                    sent_at: from_ms(sent_at),
                })
            })
            .collect()
    }

    async fn mark_written_back(&self, ids: &[DeliveryId], now: DateTime<Utc>) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = ids.iter().map(|d| d.0).collect();
        // One statement, so atomic.
        sqlx::query("UPDATE deliveries SET written_back_at = $1 WHERE id = ANY($2)")
            .bind(ms(now))
            .bind(&ids)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn ai_cached(&self, keys: &[String]) -> StoreResult<HashMap<String, String>> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query("SELECT key, outcome FROM ai_cache WHERE key = ANY($1)")
            .bind(keys)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?)))
            .collect()
    }

    async fn save_ai_cache(
        &self,
        key: &str,
        lead: Option<LeadId>,
        model: &str,
        outcome: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO ai_cache (key, model, outcome, created_at, lead_id) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(model)
        .bind(outcome)
        .bind(ms(now))
        .bind(lead.map(|l| l.0))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compile-time check (never run): the public futures can be spawned on a multi-threaded runtime.
    /// (`sqlx::raw_sql` on a connection would break this: sqlx 0.8's future for it is not
    /// `Send` for every lifetime, which is why migrations run through `Executor::execute`.)
    #[allow(dead_code)]
    fn public_futures_are_send(url: &str, store: &PgStore) {
        fn is_send<T: Send>(_: T) {}
        is_send(PgStore::connect(url));
        is_send(PgStore::connect_isolated(url, url));
        is_send(store.execute_raw(String::new()));
        is_send(store.raw_claim_complete(1, chrono::Utc::now()));
    }

    #[test]
    fn redacts_the_userinfo_password() {
        assert_eq!(
            redact_url("postgres://app:s3cr%40t@db.example:5432/engager"),
            "postgres://app:***@db.example:5432/engager"
        );
        assert_eq!(
            redact_url("postgres://a:p@ss@h/db"),
            "postgres://a:***@h/db"
        );
        assert_eq!(
            redact_url("postgres://a:p/s?s@h/db"),
            "postgres://a:***@h/db"
        );
    }

    #[test]
    fn leaves_urls_without_a_password_alone() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/test",
            "postgres://h:5432/db",
            "postgresql:///db",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn redacts_password_parameters() {
        assert_eq!(
            redact_url("postgres://u@h/db?sslmode=require&password=hunter22&application_name=x"),
            "postgres://u@h/db?sslmode=require&password=***&application_name=x"
        );
        assert_eq!(
            redact_url("postgres://u:one1@h/db?PASSWORD=two2"),
            "postgres://u:***@h/db?PASSWORD=***"
        );
    }

    #[test]
    fn scrubs_echoed_secrets() {
        let url = "postgres://u:p%40ssw0rd@h/db";
        assert_eq!(
            scrub_secrets(url, "bad p@ssw0rd and p%40ssw0rd"),
            "bad *** and ***"
        );
    }

    #[test]
    fn schema_names_are_validated() {
        assert!(valid_schema_name("t_claims_123_0"));
        for bad in ["", "Public", "a-b", "a;drop", "x\"y", &"a".repeat(64)] {
            assert!(!valid_schema_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn lock_keys_differ_by_purpose_and_schema() {
        assert_ne!(lock_key("migrate", None), lock_key("upsert_leads", None));
        assert_ne!(
            lock_key("migrate", Some("a")),
            lock_key("migrate", Some("b"))
        );
        assert_eq!(
            lock_key("migrate", Some("a")),
            lock_key("migrate", Some("a"))
        );
    }
}
