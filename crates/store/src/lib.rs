//! Engager storage: the [`Store`] trait, its records and errors, and the SQLite and
//! PostgreSQL backends.
//!
//! Architecture invariant: SQL lives only in this crate. Methods are named after use cases
//! (`claim_due_deliveries`, `record_evaluations`), not generic CRUD, and every multi-row
//! change happens in one transaction. Both backends pass the same conformance story
//! (`tests/conformance.rs`).

mod common;
mod compliance_records;
mod deliverability_records;
mod experiment_records;
pub mod gdpr;
mod latency;
pub mod postgres;
mod records;
mod report_records;
mod sms_records;
pub mod sqlite;
mod tracking_records;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use engager_domain::{CampaignId, DeliveryId, LeadId, NewLead};

pub use compliance_records::{CampaignHalt, ComplianceTrace, EvidenceRow, SendEvidence};
pub use deliverability_records::{AccountHalt, AccountSendingCounts};
pub use experiment_records::*;
pub use gdpr::{AuditEntry, ErasureReport};
pub use latency::{LatencyHistogram, LatencyKind, LATENCY_BUCKETS_SECONDS};
pub use records::*;
pub use report_records::*;
pub use sms_records::*;
pub use tracking_records::*;

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
    /// Records a permanent failure of a channel and the planner's re-evaluation of the same
    /// step without it, in one transaction: the row becomes `failed` with `error` (checked
    /// against the fencing token like `record_outcome`), the evaluation's trace is appended
    /// and its decision applied to the enrollment as if it were active at that step (a
    /// `Plan` adds the fallback row, which the enrollment then waits for). False when the
    /// token is stale, in which case nothing is written.
    async fn record_fallback(
        &self,
        id: DeliveryId,
        token: i64,
        error: &str,
        evaluation: &Evaluation,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// The `failed` deliveries of these enrollments (every step), so that a re-planned step
    /// never tries a channel that already failed for good.
    async fn failed_channels(
        &self,
        enrollments: &[engager_domain::EnrollmentId],
    ) -> StoreResult<Vec<FailedChannel>>;
    /// Takes one send permit of an account from the limiter shared by every process on the
    /// database (a pause set by `pause_account`, a GCRA row per rate, a daily count), all or
    /// nothing in one transaction.
    async fn take_send_permit(&self, request: &PermitRequest) -> StoreResult<Permit>;
    /// Holds every permit of an account until `until` (the provider asked us to slow
    /// down); a later pause never shortens an earlier one.
    async fn pause_account(&self, account: &str, until: DateTime<Utc>) -> StoreResult<()>;
    /// Sends per channel at or after `since` (to seed daily caps).
    async fn sent_counts_since(
        &self,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<(engager_domain::Channel, u64)>>;
    /// Records the sending account a claimed or sending delivery goes through (mailbox
    /// rotation); false when the claim (`token`) is no longer current.
    async fn set_delivery_account(
        &self,
        id: DeliveryId,
        token: i64,
        account: &str,
    ) -> StoreResult<bool>;
    /// The account of the earliest delivery of this enrollment on this channel that went
    /// through an account (sent, or at least begun), so that its follow-ups stay on it.
    async fn enrollment_account(
        &self,
        enrollment: engager_domain::EnrollmentId,
        channel: engager_domain::Channel,
    ) -> StoreResult<Option<String>>;
    /// Sends per channel and account at or after `since` (per-account daily caps, status).
    async fn sent_counts_by_account_since(
        &self,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<AccountSentCount>>;
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
    /// Approves (with checked text) or drops a message held for review; false when it is no
    /// longer `pending_review`.
    async fn resolve_review(
        &self,
        id: DeliveryId,
        resolution: &ReviewResolution,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Sends and positive replies at or after `since`, per lead industry, lead country and
    /// channel (channel choice learns from similar leads).
    async fn channel_evidence(&self, since: DateTime<Utc>) -> StoreResult<Vec<ChannelEvidenceRow>>;
    /// The whole suppression list, by kind and value.
    async fn suppression_list(&self) -> StoreResult<Vec<SuppressionRecord>>;
    /// Adds many entries in one transaction (those already listed are left as they are);
    /// returns how many were new.
    async fn add_suppressions(&self, entries: &[SuppressionRecord]) -> StoreResult<u64>;
    /// The events of one lead, oldest first.
    async fn events_for_lead(&self, lead: LeadId) -> StoreResult<Vec<EventRecord>>;

    // --- inbound mail (replies, bounces) ----------------------------------------------------

    /// Like [`Store::record_event`], once per `external_id` (e.g. the inbound message's
    /// Message-ID): `None`, and nothing written, when an event with that id already exists.
    async fn record_external_event(
        &self,
        event: &NewEvent,
        external_id: &str,
    ) -> StoreResult<Option<EventEffects>>;
    /// Stops the active sequences of every lead whose email is at `domain` (a reply from one
    /// person at a company stops the company), cancelling their pending deliveries and open
    /// tasks.
    async fn stop_domain_sequences(
        &self,
        domain: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<EventEffects>;
    /// One ledger row by id.
    async fn find_delivery(&self, id: DeliveryId) -> StoreResult<Option<DeliveryRecord>>;
    /// The ledger row whose provider reference (e.g. Graph's internetMessageId) is this.
    async fn find_delivery_by_provider_ref(
        &self,
        provider_ref: &str,
    ) -> StoreResult<Option<DeliveryRecord>>;
    /// How far an inbound mailbox has been read.
    async fn inbound_cursor(&self, source: &str) -> StoreResult<Option<InboundCursor>>;
    /// Saves how far an inbound mailbox has been read.
    async fn save_inbound_cursor(&self, cursor: &InboundCursor) -> StoreResult<()>;

    // --- tasks for a person (LinkedIn) -----------------------------------------------------

    /// Hands a claimed delivery to a person: atomically checks the claim (`token`, state
    /// `sending`), opens the task and drops the delivery's lease (a task is never recovered
    /// as an interrupted send). `None` when the claim was lost. At most one task per delivery.
    async fn open_task(
        &self,
        task: &NewTask,
        token: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<TaskRecord>>;
    /// One task.
    async fn task(&self, id: i64) -> StoreResult<Option<TaskRecord>>;
    /// Tasks matching a filter, by deadline then id.
    async fn tasks(&self, filter: &TaskFilter) -> StoreResult<Vec<TaskRecord>>;
    /// Closes an open task and moves its delivery and enrollment on, in one transaction;
    /// false when the task is not open.
    async fn close_task(&self, id: i64, close: &TaskClose, now: DateTime<Utc>)
        -> StoreResult<bool>;

    // --- SMS webhooks (Twilio status callbacks and inbound messages) -----------------------

    /// The SMS delivery whose provider reference is this Message SID, with the provider
    /// status applied so far.
    async fn sms_message(&self, message_sid: &str) -> StoreResult<Option<SmsMessage>>;
    /// Applies a provider status to an SMS delivery in one transaction: the status (only if
    /// the current one is still `change.expected`; false, and nothing written, otherwise),
    /// its event with that event's effects, its suppression and its delivery note.
    async fn apply_sms_status(&self, change: &SmsStatusChange) -> StoreResult<bool>;
    /// Applies an inbound SMS in one transaction, once per Message SID: an opt-out suppresses
    /// the number and records an `unsubscribed` event for each lead with that number (which
    /// stops its sequences); an opt-in lifts the number's suppression; a reply records a
    /// `replied` event for each such lead (which stops its sequences); every message is
    /// logged (the audit trail of consent by number).
    async fn apply_sms_inbound(&self, inbound: &SmsInbound) -> StoreResult<SmsInboundOutcome>;
    /// The inbound SMS logged from a number, oldest first.
    async fn sms_inbound_log(&self, from: &str) -> StoreResult<Vec<SmsInboundRecord>>;

    // --- reporting -------------------------------------------------------------------------

    /// Per campaign, step and channel: deliveries by state, final trace outcomes by reason,
    /// and events by kind.
    async fn step_summary(&self) -> StoreResult<Vec<SummaryRow>>;
    /// The sent deliveries of a period (one fact each, with the engagement that followed
    /// it) and the conversions of their leads, for `engager report`.
    async fn report_facts(&self, query: &ReportQuery) -> StoreResult<ReportFacts>;
    /// What was sent on a channel at or after `since`, with the hard bounces, complaints,
    /// unsubscribes and replies those sends drew (the deliverability monitor's input).
    async fn sending_counts(
        &self,
        channel: engager_domain::Channel,
        since: DateTime<Utc>,
    ) -> StoreResult<engager_domain::deliverability::SendingCounts>;
    /// The deliverability monitor's halts and resumptions, one per channel.
    async fn sending_halts(&self) -> StoreResult<Vec<SendingHalt>>;
    /// Halts or resumes a channel; false when it was already in that state (the first
    /// halt's reason and time are kept).
    async fn set_sending_halt(&self, halt: &SendingHalt) -> StoreResult<bool>;
    /// [`Store::sending_counts`] per channel and sending account (`deliveries.account`), for
    /// sends at or after `since`; sends without a recorded account come as `account: None`.
    async fn sending_counts_by_account(
        &self,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<AccountSendingCounts>>;
    /// The deliverability monitor's halts and resumptions of sending accounts and domains.
    async fn account_halts(&self) -> StoreResult<Vec<AccountHalt>>;
    /// Halts or resumes an account or domain; false when it was already in that state (the
    /// first halt's reason and time are kept).
    async fn set_account_halt(&self, halt: &AccountHalt) -> StoreResult<bool>;

    // --- open and click tracking -----------------------------------------------------------

    /// Stores the tracked version of a claimed (or sending) delivery's message, so the ledger
    /// holds what is actually sent, and its links' destinations (kept when already stored), in
    /// one transaction; false when the claim (`token`) is no longer current.
    async fn save_tracked_message(
        &self,
        id: DeliveryId,
        token: i64,
        message: &TrackedMessage,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// The destination of link `index` of a delivery.
    async fn tracked_link(&self, id: DeliveryId, index: u32) -> StoreResult<Option<String>>;
    /// The lead, send time and tracked-link count of these deliveries (unknown ones left out).
    async fn tracking_targets(
        &self,
        ids: &[DeliveryId],
    ) -> StoreResult<HashMap<DeliveryId, TrackingTarget>>;
    /// Records opens and clicks in one transaction (plain inserts: they neither stop sequences
    /// nor suppress anything) and replaces the detail of earlier ones flagged since
    /// (`(event id, detail)`); the new events' ids, in order.
    async fn record_tracking_events(
        &self,
        events: &[NewEvent],
        reflag: &[(i64, String)],
    ) -> StoreResult<Vec<i64>>;

    // --- compliance: consent evidence, per-send evidence, campaign halts -------------------

    /// Records a consent, legitimate-interest, implied-consent, withdrawal or objection
    /// record (its `id` is ignored); the stored id.
    async fn record_consent(
        &self,
        record: &engager_domain::compliance::ConsentRecord,
    ) -> StoreResult<i64>;
    /// The consent records of these leads, oldest first per lead.
    async fn consents(
        &self,
        leads: &[LeadId],
    ) -> StoreResult<HashMap<LeadId, Vec<engager_domain::compliance::ConsentRecord>>>;
    /// Stores what was checked for a send (once per delivery; a retry replaces it).
    async fn record_evidence(&self, evidence: &SendEvidence) -> StoreResult<()>;
    /// The evidence of sends checked at or after `since`, with their deliveries' state.
    async fn evidence_since(&self, since: DateTime<Utc>) -> StoreResult<Vec<EvidenceRow>>;
    /// Decision traces at or after `since` in which a compliance check refused something.
    async fn compliance_traces(&self, since: DateTime<Utc>) -> StoreResult<Vec<ComplianceTrace>>;
    /// Campaigns halted for compliance, and resumed ones.
    async fn campaign_halts(&self) -> StoreResult<Vec<CampaignHalt>>;
    /// Halts or resumes a campaign; false when it was already in that state.
    async fn set_campaign_halt(&self, halt: &CampaignHalt) -> StoreResult<bool>;
    /// Leads from a source (`airtable:` prefix) that opted out (unsubscribed, or objected)
    /// and whose opt-out was not written back yet: (lead, its record id in the source).
    async fn pending_opt_out_writebacks(
        &self,
        source_prefix: &str,
        limit: usize,
    ) -> StoreResult<Vec<(LeadId, String)>>;
    /// Marks leads' opt-outs as written back to their source.
    async fn mark_opt_outs_written_back(
        &self,
        leads: &[LeadId],
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    // --- data-subject rights and the audit log ---------------------------------------------

    /// Everything held about one lead, table by table (every table `gdpr::TABLES` marks as
    /// holding personal data), as JSON.
    async fn export_subject(&self, lead: LeadId) -> StoreResult<serde_json::Value>;
    /// Erases one lead's personal data everywhere in one transaction: sequences stopped,
    /// queued sends cancelled, personal columns blanked or rows deleted, suppression entries
    /// kept as a keyed hash (the person stays suppressed), and `audit` appended to the log.
    async fn erase_subject(&self, lead: LeadId, audit: &AuditEntry) -> StoreResult<ErasureReport>;
    /// Appends to the compliance audit log (which cannot be changed or deleted).
    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()>;
    /// The audit log at or after `since`, oldest first.
    async fn audit_log(&self, since: DateTime<Utc>) -> StoreResult<Vec<AuditEntry>>;
    /// Latency histograms over the ledger's sent deliveries, by channel (`/metrics`): due →
    /// sent and sent → delivery report. Both backends implement it; the default (empty)
    /// serves test doubles only.
    async fn latency_histograms(&self) -> StoreResult<Vec<LatencyHistogram>> {
        Ok(Vec::new())
    }
    /// The retention policy: blanks the texts of finished deliveries older than one cutoff,
    /// and event details, traces' gates, SMS received, AI drafts and closed tasks' texts
    /// older than the other (rows and counts stay; suppression entries are never touched).
    /// With `dry_run`, counts what would change and changes nothing.
    async fn apply_retention(
        &self,
        cutoffs: &gdpr::RetentionCutoffs,
        dry_run: bool,
    ) -> StoreResult<gdpr::RetentionReport>;

    // --- source write-back -------------------------------------------------------------------

    /// Sent deliveries of leads from `source_prefix` (e.g. `airtable:`) not yet written back.
    async fn pending_writebacks(
        &self,
        source_prefix: &str,
        limit: usize,
    ) -> StoreResult<Vec<Writeback>>;
    /// Marks deliveries as written back to their source.
    async fn mark_written_back(&self, ids: &[DeliveryId], now: DateTime<Utc>) -> StoreResult<()>;

    // --- AI personalization cache -------------------------------------------------------------

    /// The cached AI outcomes (JSON) of the keys that have one.
    async fn ai_cached(&self, keys: &[String]) -> StoreResult<HashMap<String, String>>;
    // --- A/B experiments and reply classification (experiment_records.rs) ---------------------

    /// Per campaign, step and variant: sends and what followed them (the bandit's and the
    /// automatic promotion's input), in one aggregate query.
    async fn variant_counts(&self) -> StoreResult<Vec<VariantCountRow>>;
    /// The variants these leads already got (deliveries that carry one, any state).
    async fn variant_assignments(&self, leads: &[LeadId]) -> StoreResult<Vec<VariantAssignment>>;
    /// Every experiment's latest decision (promotion or reset).
    async fn experiment_decisions(&self) -> StoreResult<Vec<ExperimentDecision>>;
    /// Records an experiment's decision (replacing the previous one) and appends `audit` to
    /// the audit log, in one transaction.
    async fn save_experiment_decision(
        &self,
        decision: &ExperimentDecision,
        audit: &AuditEntry,
    ) -> StoreResult<()>;
    /// Classifies a reply event (replacing an earlier class): the event's kind becomes the
    /// class's (`replied`, `negative_reply`, `auto_replied`) and its effects apply — a class
    /// that stops sequences stops them, `unsubscribe` also suppresses the address and opts
    /// the lead out. A reclassification never restarts a stopped sequence. `NotFound` when
    /// the event does not exist or is not a reply.
    async fn classify_reply(&self, c: &ReplyClassification) -> StoreResult<ClassifiedReply>;
    /// Reply events (all leads, or one), newest first, with their classification.
    async fn replies(&self, lead: Option<LeadId>, limit: usize) -> StoreResult<Vec<ReplyRecord>>;
    /// The lead imported from `source` with this source reference (e.g. an Airtable record).
    async fn lead_by_source_ref(
        &self,
        source: &str,
        source_ref: &str,
    ) -> StoreResult<Option<LeadId>>;

    /// Stores an AI outcome under its key; an existing entry is kept (same key, same inputs).
    async fn save_ai_cache(
        &self,
        key: &str,
        lead: Option<LeadId>,
        model: &str,
        outcome: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
}
