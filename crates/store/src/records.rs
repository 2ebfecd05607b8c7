//! Records read from and written to the store.

use chrono::{DateTime, Utc};
use engager_domain::{
    CampaignId, Channel, DeliveryId, DeliveryState, EnrollmentId, EventKind, Lead, LeadId,
};

/// What an upsert did to one lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsertOutcome {
    /// A new lead was created.
    Inserted(LeadId),
    /// An existing lead was updated.
    Updated(LeadId),
}

impl UpsertOutcome {
    /// The lead's id either way.
    pub fn id(self) -> LeadId {
        match self {
            UpsertOutcome::Inserted(id) | UpsertOutcome::Updated(id) => id,
        }
    }
}

/// Which leads to select.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeadFilter {
    /// Only leads in this country (ISO code).
    pub country: Option<String>,
    /// Only leads in this industry (case-insensitive).
    pub industry: Option<String>,
    /// Only leads whose source starts with this prefix.
    pub source_prefix: Option<String>,
    /// Only leads with an email address.
    pub has_email: bool,
    /// Only leads that may be contacted (status active).
    pub active_only: bool,
    /// At most this many.
    pub limit: Option<usize>,
}

/// A stored campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignRecord {
    /// Id.
    pub id: CampaignId,
    /// Slug.
    pub slug: String,
    /// Human name.
    pub name: String,
    /// The TOML definition it was loaded from.
    pub definition: String,
}

/// Where an enrollment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollmentState {
    /// The current step is due at `next_due_at`.
    Active,
    /// A delivery of the current step is in the ledger.
    Waiting,
    /// Every step was handled.
    Completed,
    /// Stopped early (reply, unsubscribe, bounce, suppression, failure).
    Stopped,
}

impl EnrollmentState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            EnrollmentState::Active => "active",
            EnrollmentState::Waiting => "waiting",
            EnrollmentState::Completed => "completed",
            EnrollmentState::Stopped => "stopped",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(EnrollmentState::Active),
            "waiting" => Some(EnrollmentState::Waiting),
            "completed" => Some(EnrollmentState::Completed),
            "stopped" => Some(EnrollmentState::Stopped),
            _ => None,
        }
    }
}

/// A stored enrollment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentRecord {
    /// Id.
    pub id: EnrollmentId,
    /// The campaign.
    pub campaign_id: CampaignId,
    /// The lead.
    pub lead_id: LeadId,
    /// State.
    pub state: EnrollmentState,
    /// Index of the step to handle next.
    pub current_step: usize,
    /// When the current step is due (active enrollments only).
    pub next_due_at: Option<DateTime<Utc>>,
    /// Why it stopped.
    pub stop_reason: Option<String>,
}

/// Where a page of due enrollments ends: the next page starts after this (due time, id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DueCursor {
    /// The last row's due time.
    pub next_due_at: DateTime<Utc>,
    /// The last row's id.
    pub id: EnrollmentId,
}

impl DueEnrollment {
    /// The cursor that pages past this row.
    pub fn cursor(&self) -> DueCursor {
        DueCursor {
            next_due_at: self
                .enrollment
                .next_due_at
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
            id: self.enrollment.id,
        }
    }
}

/// An enrollment due for planning, with its lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueEnrollment {
    /// The enrollment.
    pub enrollment: EnrollmentRecord,
    /// The lead.
    pub lead: Lead,
}

/// A value on (or checked against) the suppression list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SuppressionKey {
    /// A normalized email address.
    Email(String),
    /// An E.164 phone number.
    Phone(String),
    /// A whole email domain.
    Domain(String),
}

impl SuppressionKey {
    /// The stored kind name.
    pub fn kind(&self) -> &'static str {
        match self {
            SuppressionKey::Email(_) => "email",
            SuppressionKey::Phone(_) => "phone",
            SuppressionKey::Domain(_) => "domain",
        }
    }

    /// The stored value.
    pub fn value(&self) -> &str {
        match self {
            SuppressionKey::Email(v) | SuppressionKey::Phone(v) | SuppressionKey::Domain(v) => v,
        }
    }

    /// Rebuilds a key from its stored kind and value.
    pub fn from_parts(kind: &str, value: String) -> Option<Self> {
        match kind {
            "email" => Some(SuppressionKey::Email(value)),
            "phone" => Some(SuppressionKey::Phone(value)),
            "domain" => Some(SuppressionKey::Domain(value)),
            _ => None,
        }
    }
}

/// A suppression-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuppressionRecord {
    /// What is suppressed.
    pub key: SuppressionKey,
    /// Why (`unsubscribed`, `hard_bounce`, `manual`, ...).
    pub reason: String,
    /// Where the opt-out came from.
    pub source: String,
    /// When it was added.
    pub created_at: DateTime<Utc>,
}

/// One gate's verdict as stored in a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateRow {
    /// Gate name.
    pub gate: String,
    /// Passed or not.
    pub passed: bool,
    /// Why.
    pub reason: String,
}

/// A stored decision trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceRecord {
    /// The enrollment evaluated.
    pub enrollment_id: EnrollmentId,
    /// The campaign.
    pub campaign_id: CampaignId,
    /// The lead.
    pub lead_id: LeadId,
    /// The step evaluated.
    pub step_index: usize,
    /// When.
    pub evaluated_at: DateTime<Utc>,
    /// planned, deferred, skipped or stopped.
    pub outcome: String,
    /// Machine-readable reason for skipped/stopped/deferred.
    pub code: Option<String>,
    /// The channel chosen, if any.
    pub channel: Option<Channel>,
    /// send_at (planned) or until (deferred).
    pub at: Option<DateTime<Utc>>,
    /// The gates in order.
    pub gates: Vec<GateRow>,
}

/// A delivery to plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// Channel.
    pub channel: Channel,
    /// Due time.
    pub send_at: DateTime<Utc>,
    /// The address it goes to (email, E.164 number or profile URL).
    pub to_address: String,
    /// Rendered subject (email).
    pub subject: Option<String>,
    /// Rendered text body.
    pub body_text: String,
    /// Rendered HTML body (email).
    pub body_html: Option<String>,
    /// The A/B variant the lead got, when the step runs an experiment.
    pub variant: Option<String>,
}

/// What the planner decided for one enrollment's current step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanDecision {
    /// Plan this delivery; the enrollment waits for it.
    Plan(NewDelivery),
    /// Hold this delivery for a person's review (`pending_review`, never claimed until
    /// approved); the enrollment waits for it.
    Review(NewDelivery),
    /// Evaluate again at `until`.
    Defer {
        /// When.
        until: DateTime<Utc>,
    },
    /// Skip this step; the next step (if any) is due at `next_due`.
    Skip {
        /// When the next step is due; `None` completes the enrollment.
        next_due: Option<DateTime<Utc>>,
    },
    /// End the enrollment.
    Stop {
        /// Why.
        reason: String,
    },
}

/// One planner evaluation to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// The trace (its ids say which enrollment and step).
    pub trace: TraceRecord,
    /// The decision.
    pub decision: PlanDecision,
}

/// A ledger row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// Id.
    pub id: DeliveryId,
    /// Enrollment.
    pub enrollment_id: EnrollmentId,
    /// Campaign.
    pub campaign_id: CampaignId,
    /// Lead.
    pub lead_id: LeadId,
    /// Step index.
    pub step_index: usize,
    /// Channel.
    pub channel: Channel,
    /// State.
    pub state: DeliveryState,
    /// Due time.
    pub send_at: DateTime<Utc>,
    /// Recipient address.
    pub to_address: String,
    /// Subject.
    pub subject: Option<String>,
    /// Text body.
    pub body_text: String,
    /// HTML body.
    pub body_html: Option<String>,
    /// Send attempts so far.
    pub attempts: u32,
    /// The fencing token of the latest claim.
    pub fencing_token: i64,
    /// Lease expiry of the latest claim.
    pub lease_until: Option<DateTime<Utc>>,
    /// Who holds the claim.
    pub claimed_by: Option<String>,
    /// When a retry is due.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The last error.
    pub last_error: Option<String>,
    /// The provider's message id (or ours, for the outbox).
    pub provider_ref: Option<String>,
    /// When it was sent.
    pub sent_at: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When it was planned (the retry budget's age counts from here).
    pub created_at: DateTime<Utc>,
    /// The sending account it went through (`channel:provider[:identity]`), once its send
    /// began; `None` before that and for rows older than migration 0010.
    pub account: Option<String>,
}

/// Sends of one sending account since an instant (`engager status`, daily caps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSentCount {
    /// Channel.
    pub channel: engager_domain::Channel,
    /// The account (`None`: sent before accounts were recorded).
    pub account: Option<String>,
    /// Sends.
    pub sent: u64,
}

/// What happened when the dispatcher sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Accepted by the provider.
    Sent {
        /// The provider's reference (message id, SID, file path).
        provider_ref: String,
    },
    /// Transient failure; try again at `at`.
    Retry {
        /// When.
        at: DateTime<Utc>,
        /// The error.
        error: String,
    },
    /// Permanent failure.
    Failed {
        /// The error.
        error: String,
    },
    /// The provider may or may not have accepted it.
    Unknown {
        /// The error.
        error: String,
    },
}

/// What the enrollment does after a successful send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowUp {
    /// The next step is due at this instant.
    NextStepAt(DateTime<Utc>),
    /// That was the last step.
    Complete,
}

/// What a person decided about a delivery whose outcome is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Queue it again (it was not sent).
    Retry,
    /// Do not send it; the lead's sequence stops.
    Drop,
}

/// A sending account's saved health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    /// `channel:provider`.
    pub account: String,
    /// Circuit state: closed, open or half-open.
    pub circuit: String,
    /// While open: until when.
    pub open_until: Option<DateTime<Utc>>,
    /// The error that changed the state.
    pub last_error: Option<String>,
    /// When it changed.
    pub updated_at: DateTime<Utc>,
}

/// One group of the ledger overview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    /// Channel.
    pub channel: engager_domain::Channel,
    /// State.
    pub state: engager_domain::DeliveryState,
    /// Rows.
    pub count: u64,
    /// The earliest due time (send_at, or next attempt) in the group.
    pub oldest_due: Option<DateTime<Utc>>,
}

/// What lease recovery did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Claimed rows put back to planned.
    pub requeued: u64,
    /// Sending rows marked unknown.
    pub unknown: u64,
}

/// Which deliveries to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    /// Only this state.
    pub state: Option<DeliveryState>,
    /// Only this channel.
    pub channel: Option<Channel>,
    /// Only this lead.
    pub lead: Option<LeadId>,
    /// Only this campaign.
    pub campaign: Option<CampaignId>,
    /// At most this many.
    pub limit: Option<usize>,
}

/// An event to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// The lead.
    pub lead_id: LeadId,
    /// The delivery it is about, if known.
    pub delivery_id: Option<DeliveryId>,
    /// What happened.
    pub kind: EventKind,
    /// When.
    pub occurred_at: DateTime<Utc>,
    /// Free-form detail (JSON text).
    pub detail: String,
    /// Where it came from (`sandbox`, `manual`, `webhook:twilio`, ...).
    pub source: String,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// Id.
    pub id: i64,
    /// The event.
    pub event: NewEvent,
}

/// What recording an event changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventEffects {
    /// Enrollments stopped.
    pub enrollments_stopped: u64,
    /// Pending deliveries cancelled.
    pub deliveries_cancelled: u64,
    /// Whether a suppression entry was added.
    pub suppressed: bool,
}

/// One row of the per-step summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryRow {
    /// Campaign slug.
    pub campaign: String,
    /// Step index.
    pub step_index: usize,
    /// Channel, or `-` for decisions taken before a channel was chosen.
    pub channel: String,
    /// What is counted: `delivery:<state>`, `skipped:<code>`, `stopped:<code>` or `event:<kind>`.
    pub metric: String,
    /// How many.
    pub count: u64,
}

/// A sent delivery to write back to its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writeback {
    /// The delivery.
    pub delivery_id: DeliveryId,
    /// The lead's record id in its source.
    pub source_ref: String,
    /// The lead's source.
    pub source: String,
    /// When it was sent.
    pub sent_at: DateTime<Utc>,
}

/// How far an inbound mailbox has been read (`source` names it: `imap:user@host/INBOX`,
/// `graph:mailbox/inbox`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundCursor {
    /// The mailbox.
    pub source: String,
    /// IMAP: the folder's UIDVALIDITY when `last_uid` was read.
    pub uid_validity: Option<u32>,
    /// IMAP: the highest UID whose events are recorded.
    pub last_uid: Option<u32>,
    /// Graph: the `receivedDateTime` of the newest message whose events are recorded.
    pub last_received_at: Option<DateTime<Utc>>,
    /// When it last moved.
    pub updated_at: DateTime<Utc>,
}

/// Where a task for a person stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Waiting for a person; its delivery is `sending`.
    Open,
    /// Done by a person; its delivery is `sent`.
    Done,
    /// Skipped (by a person, or at its deadline); its delivery is `cancelled`.
    Skipped,
    /// Not done by its deadline; its delivery is `cancelled` and the step was planned on
    /// another channel.
    FellBack,
    /// The lead's sequence stopped (reply, bounce, opt-out) while it was open.
    Cancelled,
}

impl TaskState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Open => "open",
            TaskState::Done => "done",
            TaskState::Skipped => "skipped",
            TaskState::FellBack => "fell_back",
            TaskState::Cancelled => "cancelled",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(TaskState::Open),
            "done" => Some(TaskState::Done),
            "skipped" => Some(TaskState::Skipped),
            "fell_back" => Some(TaskState::FellBack),
            "cancelled" => Some(TaskState::Cancelled),
            _ => None,
        }
    }
}

/// A task to open for a delivery a person must send by hand (a LinkedIn step).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    /// The delivery (claimed and `sending`).
    pub delivery_id: DeliveryId,
    /// `connection_note` or `message`.
    pub kind: String,
    /// The profile to open.
    pub profile_url: String,
    /// The personalized text to send.
    pub body: String,
    /// The deadline.
    pub due_at: DateTime<Utc>,
    /// What happens at the deadline: `skip` or `fallback`.
    pub on_deadline: String,
}

/// A stored task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    /// Id.
    pub id: i64,
    /// Its delivery.
    pub delivery_id: DeliveryId,
    /// The enrollment.
    pub enrollment_id: EnrollmentId,
    /// The campaign.
    pub campaign_id: CampaignId,
    /// The lead.
    pub lead_id: LeadId,
    /// Step index.
    pub step_index: usize,
    /// The channel (LinkedIn).
    pub channel: Channel,
    /// `connection_note` or `message`.
    pub kind: String,
    /// The profile to open.
    pub profile_url: String,
    /// The text to send.
    pub body: String,
    /// State.
    pub state: TaskState,
    /// The deadline.
    pub due_at: DateTime<Utc>,
    /// `skip` or `fallback`.
    pub on_deadline: String,
    /// Why it was skipped, or what it fell back to.
    pub note: Option<String>,
    /// When it was opened.
    pub created_at: DateTime<Utc>,
    /// When it was closed.
    pub closed_at: Option<DateTime<Utc>>,
}

/// Which tasks to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only this state.
    pub state: Option<TaskState>,
    /// Only tasks whose deadline is at or before this instant.
    pub due_before: Option<DateTime<Utc>>,
    /// Only this lead.
    pub lead: Option<LeadId>,
    /// At most this many.
    pub limit: Option<usize>,
}

/// How an open task ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskClose {
    /// A person sent it: the delivery is `sent` and the enrollment moves on.
    Done {
        /// What the enrollment does next.
        follow_up: FollowUp,
    },
    /// Not sent: the delivery is `cancelled` and the enrollment moves on to the next step.
    Skipped {
        /// Why.
        reason: String,
        /// What the enrollment does next.
        follow_up: FollowUp,
    },
    /// Not sent by the deadline: the task's row is `cancelled` and a new row for the same
    /// step is planned on another channel; the enrollment waits for it.
    Fallback {
        /// Why.
        reason: String,
        /// The delivery on the other channel.
        delivery: NewDelivery,
    },
}

/// A delivery of an enrollment's step that failed for good on its channel: that channel is
/// not tried again for the step (the planner's fallback excludes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedChannel {
    /// The enrollment.
    pub enrollment_id: EnrollmentId,
    /// The step.
    pub step_index: usize,
    /// The channel that failed.
    pub channel: Channel,
    /// The failure kept on the ledger row.
    pub error: String,
}

/// One rate of a sending account for the shared limiter: at most `count` sends per `per`,
/// as a GCRA (a burst of up to `count`, then evenly spaced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateQuota {
    /// The window.
    pub per: chrono::Duration,
    /// Sends allowed in the window.
    pub count: u32,
}

/// A request for one send permit from the database-backed limiter, shared by every process
/// on the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermitRequest {
    /// `channel:provider`.
    pub account: String,
    /// The account's channel (its sends today seed the daily count).
    pub channel: Channel,
    /// The account's rates; every one must allow the send.
    pub rates: Vec<RateQuota>,
    /// Today's cap of permits (UTC day), if any.
    pub daily_cap: Option<u32>,
    /// The instant of the request.
    pub now: DateTime<Utc>,
}

/// The shared limiter's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permit {
    /// Send now (the permit is taken).
    Granted,
    /// Not before `until`; nothing was taken.
    Wait {
        /// When a permit may be available.
        until: DateTime<Utc>,
        /// Why: `paused`, `rate` or `daily_cap`.
        reason: String,
    },
}
