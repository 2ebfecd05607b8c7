//! Records of what Twilio's webhooks report about SMS: delivery statuses of our messages and
//! inbound messages (opt-outs, re-consents, help requests, replies).

use chrono::{DateTime, Utc};
use engager_domain::{DeliveryId, LeadId};

use crate::{NewEvent, SuppressionKey};

/// An SMS delivery found by its Message SID, with the provider status applied so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsMessage {
    /// The ledger row.
    pub delivery_id: DeliveryId,
    /// Its lead.
    pub lead_id: LeadId,
    /// The number it was sent to.
    pub to_address: String,
    /// The most advanced provider status applied (`sent`, `delivered`, ...); `None` before
    /// the first callback.
    pub status: Option<String>,
    /// The provider's error code with that status.
    pub error_code: Option<u32>,
}

/// A provider status to apply to an SMS delivery, with its consequences, all or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsStatusChange {
    /// The ledger row.
    pub delivery_id: DeliveryId,
    /// The Message SID.
    pub message_sid: String,
    /// The status the caller read ([`SmsMessage::status`]): the change applies only while it
    /// is still the current one, so two callbacks racing cannot both win.
    pub expected: Option<String>,
    /// The new status.
    pub status: String,
    /// The provider's error code.
    pub error_code: Option<u32>,
    /// An event to record with it (and whose effects to apply, as
    /// [`Store::record_event`](crate::Store::record_event) does).
    pub event: Option<NewEvent>,
    /// A contact point to suppress, with the reason (e.g. a landline number).
    pub suppress: Option<(SuppressionKey, String)>,
    /// Written to the delivery's `last_error` (e.g. `twilio undelivered, error 30006`).
    pub delivery_note: Option<String>,
    /// Where it came from (`webhook:twilio`).
    pub source: String,
    /// When.
    pub now: DateTime<Utc>,
}

/// What an inbound SMS asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SmsAction {
    /// STOP and its synonyms: suppress the number at once and stop the lead's sequences.
    OptOut,
    /// START/UNSTOP: the number may be texted again (its suppression is lifted).
    OptIn,
    /// HELP/INFO: answered by the server; only logged here.
    Help,
    /// Anything else: a reply, which stops the lead's sequences.
    Reply,
}

impl SmsAction {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            SmsAction::OptOut => "opt_out",
            SmsAction::OptIn => "opt_in",
            SmsAction::Help => "help",
            SmsAction::Reply => "reply",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "opt_out" => Some(SmsAction::OptOut),
            "opt_in" => Some(SmsAction::OptIn),
            "help" => Some(SmsAction::Help),
            "reply" => Some(SmsAction::Reply),
            _ => None,
        }
    }
}

/// An inbound SMS to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsInbound {
    /// Its Message SID: a second message with the same SID is a replay and changes nothing.
    pub message_sid: String,
    /// Who wrote (E.164).
    pub from: String,
    /// Our number.
    pub to: String,
    /// The text.
    pub body: String,
    /// What it asks for.
    pub action: SmsAction,
    /// Where it came from (`webhook:twilio`).
    pub source: String,
    /// When.
    pub now: DateTime<Utc>,
}

/// What applying an inbound SMS changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmsInboundOutcome {
    /// The Message SID was seen before: nothing was written.
    pub duplicate: bool,
    /// The leads with this number (by their phone, or by an SMS sent to it).
    pub leads: Vec<LeadId>,
    /// The number was newly put on the suppression list.
    pub suppressed: bool,
    /// The number's suppression was lifted (re-consent).
    pub lifted: bool,
    /// Enrollments stopped.
    pub enrollments_stopped: u64,
    /// Pending deliveries cancelled.
    pub deliveries_cancelled: u64,
}

/// A logged inbound SMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsInboundRecord {
    /// Its Message SID.
    pub message_sid: String,
    /// Who wrote.
    pub from: String,
    /// Our number.
    pub to: String,
    /// What it asked for.
    pub action: SmsAction,
    /// The text.
    pub body: String,
    /// When it was applied.
    pub received_at: DateTime<Utc>,
}
