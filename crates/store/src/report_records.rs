//! Records for analytics reports: one fact per sent delivery, with what followed it.

use chrono::{DateTime, Utc};
use engager_domain::{Channel, DeliveryId, LeadId};

/// Which sent deliveries a report covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportQuery {
    /// Only this campaign (its slug), or every campaign.
    pub campaign: Option<String>,
    /// Sent at or after this instant.
    pub since: DateTime<Utc>,
    /// Sent before this instant.
    pub until: DateTime<Utc>,
}

/// One sent delivery and the engagement that followed it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryFact {
    /// The delivery.
    pub delivery_id: DeliveryId,
    /// Its lead.
    pub lead_id: LeadId,
    /// Campaign slug.
    pub campaign: String,
    /// Step index (0-based).
    pub step_index: usize,
    /// Channel.
    pub channel: Channel,
    /// The lead's country (ISO code) or empty.
    pub country: String,
    /// The lead's industry or empty.
    pub industry: String,
    /// When it was sent.
    pub sent_at: DateTime<Utc>,
    /// The provider reported delivery.
    pub delivered: bool,
    /// Opened by a person (opens flagged `"automated": true`, from prefetchers and scanners,
    /// are left out).
    pub opened: bool,
    /// A link clicked by a person (automated clicks left out).
    pub clicked: bool,
    /// A reply of any kind.
    pub replied: bool,
    /// The reply was negative.
    pub negative_reply: bool,
    /// The lead replied, and every reply was classified neutral (not positive): such a reply
    /// counts as a reply, not as a positive reply.
    pub neutral_reply: bool,
    /// Hard bounce.
    pub bounced: bool,
    /// Spam complaint.
    pub complained: bool,
    /// Unsubscribe.
    pub unsubscribed: bool,
    /// The first reply's time.
    pub first_reply_at: Option<DateTime<Utc>>,
    /// The A/B variant, when the step ran an experiment.
    pub variant: Option<String>,
}

/// A conversion of a lead (an opportunity or a meeting).
#[derive(Debug, Clone, PartialEq)]
pub struct ConversionFact {
    /// The lead.
    pub lead_id: LeadId,
    /// When.
    pub at: DateTime<Utc>,
    /// Its value, when recorded (`{"value": …}` in the event's detail).
    pub value: Option<f64>,
}

/// What a report is built from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportFacts {
    /// Sent deliveries in the period, oldest first.
    pub deliveries: Vec<DeliveryFact>,
    /// Conversions of the leads of those deliveries at or after the period's start.
    pub conversions: Vec<ConversionFact>,
}

/// Whether sending on a channel is halted by the deliverability monitor (or resumed by a
/// person).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendingHalt {
    /// The channel.
    pub channel: Channel,
    /// True while halted; false once a person resumed it.
    pub halted: bool,
    /// Why it was halted (the findings), or the note given on resume.
    pub reason: String,
    /// Who changed it (`monitor`, or the person's note).
    pub changed_by: String,
    /// When.
    pub changed_at: DateTime<Utc>,
}

/// What a person decided about a message held for review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReviewResolution {
    /// Send it (with this text, which the caller has checked), at its planned time or now.
    Approve {
        /// Subject.
        subject: Option<String>,
        /// Plain-text body.
        body_text: String,
        /// HTML body.
        body_html: Option<String>,
    },
    /// Do not send it: the delivery is cancelled and the sequence moves on to its next step,
    /// due at `next_due` (`None` completes the enrollment).
    Drop {
        /// Why (kept as the delivery's last error).
        reason: String,
        /// When the next step is due.
        next_due: Option<DateTime<Utc>>,
    },
}

/// What was sent on a channel to leads of one industry and country, and the positive replies
/// it drew (what channel choice learns from similar leads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelEvidenceRow {
    /// The leads' industry (empty when unknown).
    pub industry: String,
    /// The leads' country (empty when unknown).
    pub country: String,
    /// The channel.
    pub channel: Channel,
    /// Messages sent.
    pub sent: u64,
    /// Positive replies.
    pub positive: u64,
}
