//! Engager storage: the [`Store`] trait, its records and errors, and the SQLite and
//! PostgreSQL backends.
//!
//! Architecture invariant: SQL lives only in this crate. Methods are named after use cases
//! (`claim_due_deliveries`, `record_evaluations`), not generic CRUD, and every multi-row
//! change happens in one transaction. Both backends pass the same conformance story
//! (`tests/conformance.rs`).

mod common;
pub mod postgres;
mod records;
pub mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use engager_domain::{CampaignId, DeliveryId, LeadId, NewLead};

pub use records::*;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or reached.
    #[error("cannot open the database {url}: {reason}")]
    Open { url: String, reason: String },
    /// A migration failed.
    #[error("migration {version} failed: {reason}")]
    Migration { version: i64, reason: String },
    /// A SQLite error.
    #[error("SQLite error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A PostgreSQL error.
    #[error("PostgreSQL error: {0}")]
    Postgres(#[from] sqlx::Error),
    /// A stored value could not be read back into a domain type.
    #[error("corrupt stored value in {table}.{column}: {reason}")]
    Corrupt {
        table: &'static str,
        column: &'static str,
        reason: String,
    },
    /// The requested entity does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A background task running a blocking database call panicked or was cancelled.
    #[error("database task failed: {0}")]
    Task(String),
}

/// Result alias for storage calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// Opens the store named by a URL: `sqlite:path/to/file.db` (or `sqlite::memory:`) or
/// `postgres://…`. Migrations run before it is returned.
pub async fn open(url: &str) -> StoreResult<Arc<dyn Store>> {
    if let Some(path) = url.strip_prefix("sqlite:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        Ok(Arc::new(sqlite::SqliteStore::open(path).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::connect(url).await?))
    } else {
        Err(StoreError::Open {
            url: url.to_owned(),
            reason: "expected a URL starting with sqlite: or postgres://".into(),
        })
    }
}

/// Everything Engager persists, named by use case.
#[async_trait]
pub trait Store: Send + Sync {
    /// The backend's name (`sqlite` or `postgres`).
    fn backend(&self) -> &'static str;

    // --- leads ---------------------------------------------------------------------------

    /// Inserts or updates leads by normalized email (or by `source_ref`, or phone, when the
    /// lead has no email), all in one transaction: either every lead is written or none.
    async fn upsert_leads(
        &self,
        leads: &[NewLead],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<UpsertOutcome>>;
    /// One lead by id.
    async fn lead(&self, id: LeadId) -> StoreResult<Option<engager_domain::Lead>>;
    /// One lead by normalized email address.
    async fn lead_by_email(&self, email: &str) -> StoreResult<Option<engager_domain::Lead>>;
    /// Ids of leads matching a filter, in id order.
    async fn lead_ids(&self, filter: &LeadFilter) -> StoreResult<Vec<LeadId>>;
    /// Counts of leads by status.
    async fn lead_counts(&self) -> StoreResult<Vec<(String, u64)>>;

    // --- campaigns and enrollments ------------------------------------------------------

    /// Stores a campaign definition (its TOML source), replacing one with the same slug.
    async fn save_campaign(
        &self,
        slug: &str,
        name: &str,
        definition: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<CampaignId>;
    /// All campaigns.
    async fn campaigns(&self) -> StoreResult<Vec<CampaignRecord>>;
    /// Enrolls leads in a campaign, due at `now`; already enrolled leads are left alone.
    /// Returns how many were newly enrolled.
    async fn enroll(
        &self,
        campaign: CampaignId,
        leads: &[LeadId],
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;
    /// Active enrollments due at `now`, with their leads, in (due time, id) order, after
    /// `after` (keyset paging: the index is walked, never sorted).
    async fn due_enrollments(
        &self,
        now: DateTime<Utc>,
        after: Option<DueCursor>,
        limit: usize,
    ) -> StoreResult<Vec<DueEnrollment>>;
    /// The enrollments of one lead.
    async fn enrollments_for_lead(&self, lead: LeadId) -> StoreResult<Vec<EnrollmentRecord>>;
    /// Counts of enrollments by campaign and state.
    async fn enrollment_counts(&self) -> StoreResult<Vec<(CampaignId, String, u64)>>;

    // --- planning -------------------------------------------------------------------------

    /// Each lead's touches (sent, or scheduled and not cancelled) at or after `since`.
    async fn touches(
        &self,
        leads: &[LeadId],
        since: DateTime<Utc>,
    ) -> StoreResult<HashMap<LeadId, Vec<DateTime<Utc>>>>;
    /// Each lead's history at or after `since`, for a page of leads in one call: its touches
    /// (sent, or scheduled and not cancelled; with channel, enrollment and step) and its
    /// engagement events (every kind but `sent` and `delivered`), each list oldest first.
    /// Leads without history are absent from the map.
    async fn contact_history(
        &self,
        leads: &[LeadId],
        since: DateTime<Utc>,
    ) -> StoreResult<HashMap<LeadId, engager_domain::LeadHistory>>;
    /// Which of the given values are on the suppression list.
    async fn suppressed(&self, values: &[SuppressionKey]) -> StoreResult<Vec<SuppressionRecord>>;
    /// Records planner evaluations in one transaction: the trace of each, the planned
    /// delivery (at most one per enrollment and step), and the enrollment's next state.
    async fn record_evaluations(
        &self,
        evaluations: &[Evaluation],
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// The traces of one lead, oldest first.
    async fn traces_for_lead(&self, lead: LeadId) -> StoreResult<Vec<TraceRecord>>;

    // --- the ledger -------------------------------------------------------------------------

    /// Claims up to `limit` deliveries due at `now` (planned, or retry_wait past
    /// `next_attempt_at`) for `worker`, each with a lease and a new fencing token. Two
    /// claimers never get the same row.
    async fn claim_due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        worker: &str,
        lease: Duration,
    ) -> StoreResult<Vec<DeliveryRecord>>;
    /// Moves a claimed delivery to `sending` and extends its lease to cover the provider
    /// call. Atomically re-checks that the claim is still ours (token), the lease has not run
    /// out, the enrollment still waits for this delivery and the lead is still active; false
    /// otherwise, and then the provider must not be called.
    async fn begin_send(
        &self,
        id: DeliveryId,
        token: i64,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> StoreResult<bool>;
    /// Records what the provider said, and moves the enrollment on; false when the token
    /// is stale (a newer claim owns the row), in which case nothing is written.
    async fn record_outcome(
        &self,
        id: DeliveryId,
        token: i64,
        outcome: &SendOutcome,
        next: &FollowUp,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Cancels a claimed delivery before sending (the dispatcher's re-check failed).
    async fn cancel_claimed(
        &self,
        id: DeliveryId,
        token: i64,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Puts a claimed delivery back in the queue, due at `send_at` (e.g. the dispatcher found
    /// it is outside the recipient's quiet hours); false when the token is stale.
    async fn release_claim(
        &self,
        id: DeliveryId,
        token: i64,
        send_at: DateTime<Utc>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Resolves an `unknown` delivery that was not sent: back to `planned` (due now), or
    /// `cancelled` with the enrollment stopped. False when the row is not `unknown`.
    /// (A person who confirms it *was* sent records that with `record_outcome`.)
    async fn resolve_unknown(
        &self,
        id: DeliveryId,
        resolution: Resolution,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Sends per channel at or after `since` (to seed daily caps).
    async fn sent_counts_since(
        &self,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<(engager_domain::Channel, u64)>>;
    /// Saves a sending account's health (its circuit state), for every process to see.
    async fn save_account_state(&self, state: &AccountState) -> StoreResult<()>;
    /// Every account's saved health.
    async fn account_states(&self) -> StoreResult<Vec<AccountState>>;
    /// Deliveries by channel and state, with the oldest due time of each group.
    async fn ledger_overview(&self) -> StoreResult<Vec<LedgerRow>>;
    /// Expired `claimed` rows go back to `planned`; expired `sending` rows become `unknown`.
    async fn recover_expired_leases(&self, now: DateTime<Utc>) -> StoreResult<Recovered>;
    /// Deliveries matching a filter, newest first.
    async fn deliveries(&self, filter: &DeliveryFilter) -> StoreResult<Vec<DeliveryRecord>>;
    /// The earliest instant at which something in the ledger becomes due, if any.
    async fn next_due_at(&self) -> StoreResult<Option<DateTime<Utc>>>;

    // --- events and suppression ------------------------------------------------------------

    /// Appends an engagement event and applies what follows from it in the same transaction:
    /// a reply, bounce, unsubscribe or complaint stops the lead's sequences and cancels its
    /// pending deliveries; a bounce, unsubscribe or complaint suppresses the contact point.
    async fn record_event(&self, event: &NewEvent) -> StoreResult<EventEffects>;
    /// Adds a value to the suppression list; false when it was already there.
    async fn add_suppression(
        &self,
        key: &SuppressionKey,
        reason: &str,
        source: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// The events of one lead, oldest first.
    async fn events_for_lead(&self, lead: LeadId) -> StoreResult<Vec<EventRecord>>;

    // --- reporting -------------------------------------------------------------------------

    /// Per campaign, step and channel: deliveries by state, final trace outcomes by reason,
    /// and events by kind.
    async fn step_summary(&self) -> StoreResult<Vec<SummaryRow>>;

    // --- source write-back -------------------------------------------------------------------

    /// Sent deliveries of leads from `source_prefix` (e.g. `airtable:`) not yet written back.
    async fn pending_writebacks(
        &self,
        source_prefix: &str,
        limit: usize,
    ) -> StoreResult<Vec<Writeback>>;
    /// Marks deliveries as written back to their source.
    async fn mark_written_back(&self, ids: &[DeliveryId], now: DateTime<Utc>) -> StoreResult<()>;
}
