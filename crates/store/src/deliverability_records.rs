//! Records of the deliverability monitor per sending account and per sending domain.

use chrono::{DateTime, Utc};
use engager_domain::deliverability::SendingCounts;
use engager_domain::Channel;

/// What one sending account sent since an instant and what those sends drew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSendingCounts {
    /// The channel.
    pub channel: Channel,
    /// The account (`deliveries.account`, e.g. `email:graph:maya@acme.example`); `None` for
    /// sends recorded before accounts were (migration 0010): they count for the channel as a
    /// whole only.
    pub account: Option<String>,
    /// Sent, hard bounces, complaints, unsubscribes and replies.
    pub counts: SendingCounts,
}

/// The monitor's halt (or a person's resumption) of one sending account or domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountHalt {
    /// `account:<channel>:<provider>:<identity>` or `domain:<domain>`.
    pub key: String,
    /// True while halted; false once a person resumed it.
    pub halted: bool,
    /// Why it was halted (the findings), or the note given on resume.
    pub reason: String,
    /// Who changed it (`monitor` or `person`).
    pub changed_by: String,
    /// When.
    pub changed_at: DateTime<Utc>,
}
