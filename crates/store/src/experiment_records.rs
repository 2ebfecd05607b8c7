//! Records for A/B experiments (variant results, assignments, promotions) and reply
//! classification.

use chrono::{DateTime, Utc};
use engager_domain::reply::ReplyClass;
use engager_domain::{CampaignId, DeliveryId, EventKind, LeadId};

use crate::EventEffects;

/// What one variant of one step's experiment achieved, over every sent delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantCountRow {
    /// The campaign.
    pub campaign_id: CampaignId,
    /// Step index (0-based).
    pub step_index: usize,
    /// The variant.
    pub variant: String,
    /// Sent deliveries.
    pub sent: u64,
    /// Those that drew a positive reply (a reply classified positive, or not classified, and
    /// no negative reply) — the same rule as the reports' positive replies.
    pub positive: u64,
    /// Those whose lead converted at or after the send.
    pub conversions: u64,
    /// Those followed by an unsubscribe (or a reply asking to unsubscribe).
    pub unsubscribes: u64,
    /// Those followed by a spam complaint.
    pub complaints: u64,
}

/// The variant a lead already got at a step (from its planned or sent delivery): a lead keeps
/// it whatever the experiment's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantAssignment {
    /// The lead.
    pub lead_id: LeadId,
    /// The campaign.
    pub campaign_id: CampaignId,
    /// Step index (0-based).
    pub step_index: usize,
    /// The variant.
    pub variant: String,
}

/// The state an experiment's decision puts it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionState {
    /// Every new lead gets the promoted variant.
    Promoted,
    /// A promotion was undone: variants are handed out by the step's mode again, and automatic
    /// promotion stays off until the next `engager ab promote`.
    Reset,
}

impl DecisionState {
    /// The name used in storage and output.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionState::Promoted => "promoted",
            DecisionState::Reset => "reset",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "promoted" => Some(DecisionState::Promoted),
            "reset" => Some(DecisionState::Reset),
            _ => None,
        }
    }
}

/// The latest decision on an experiment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExperimentDecision {
    /// The experiment (`campaign#step`).
    pub experiment: String,
    /// Promoted or reset.
    pub state: DecisionState,
    /// The promoted variant (None for a reset).
    pub variant: Option<String>,
    /// `auto` (the verdict) or `person`.
    pub source: String,
    /// Why: the verdict's figures, or the person's note.
    pub reason: String,
    /// When.
    pub decided_at: DateTime<Utc>,
}

/// Which reply event a classification is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyRef {
    /// By the event's id.
    Event(i64),
    /// By the id of the message it came from (inbound mail).
    External(String),
}

/// A classification to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyClassification {
    /// The reply event.
    pub reply: ReplyRef,
    /// Its class.
    pub class: ReplyClass,
    /// `person`, `llm` or `rules`.
    pub source: String,
    /// Why (the model's or the rule's reason, or the person's note).
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// What storing a classification did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifiedReply {
    /// The reply event.
    pub event_id: i64,
    /// Its lead.
    pub lead_id: LeadId,
    /// The delivery it answers.
    pub delivery_id: Option<DeliveryId>,
    /// The class before (None when it had none).
    pub previous: Option<ReplyClass>,
    /// The event's kind before; it is now `class.event_kind()`.
    pub previous_kind: EventKind,
    /// Sequences stopped, sends cancelled, suppression added.
    pub effects: EventEffects,
}

/// A reply event and its classification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyRecord {
    /// The event.
    pub event_id: i64,
    /// Its lead.
    pub lead_id: LeadId,
    /// The delivery it answers.
    pub delivery_id: Option<DeliveryId>,
    /// `replied`, `negative_reply` or `auto_replied`.
    pub kind: EventKind,
    /// When it arrived.
    pub occurred_at: DateTime<Utc>,
    /// Where it came from (`inbound:…`, `cli`, …).
    pub event_source: String,
    /// Its class, when classified.
    pub class: Option<ReplyClass>,
    /// Who classified it.
    pub classified_by: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// When it was classified.
    pub classified_at: Option<DateTime<Utc>>,
}

/// The event kinds a reply can be recorded as.
pub const REPLY_KINDS: [EventKind; 3] = [
    EventKind::Replied,
    EventKind::NegativeReply,
    EventKind::AutoReplied,
];
