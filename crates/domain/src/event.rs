//! Engagement events: what happened after (or instead of) a send.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// The kind of an engagement event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// The provider accepted the message.
    Sent,
    /// The provider reported delivery.
    Delivered,
    /// The message was opened.
    Opened,
    /// A link was clicked.
    Clicked,
    /// The lead replied.
    Replied,
    /// The address bounced permanently.
    HardBounce,
    /// The address bounced temporarily.
    SoftBounce,
    /// The lead opted out.
    Unsubscribed,
    /// The lead marked the message as spam.
    Complained,
    /// The lead became an opportunity or booked a meeting.
    Converted,
    /// The lead replied, and the reply was negative ("stop writing", "wrong person").
    NegativeReply,
    /// A person marked the lead as not interested.
    NotInterested,
    /// An automatic answer (out of office, auto-responder): recorded, the sequence goes on.
    AutoReplied,
}

impl EventKind {
    /// All kinds, in funnel order.
    pub const ALL: [EventKind; 13] = [
        EventKind::Sent,
        EventKind::Delivered,
        EventKind::Opened,
        EventKind::Clicked,
        EventKind::Replied,
        EventKind::HardBounce,
        EventKind::SoftBounce,
        EventKind::Unsubscribed,
        EventKind::Complained,
        EventKind::Converted,
        EventKind::NegativeReply,
        EventKind::NotInterested,
        EventKind::AutoReplied,
    ];

    /// The lower-case name used in storage and output.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Sent => "sent",
            EventKind::Delivered => "delivered",
            EventKind::Opened => "opened",
            EventKind::Clicked => "clicked",
            EventKind::Replied => "replied",
            EventKind::HardBounce => "hard_bounce",
            EventKind::SoftBounce => "soft_bounce",
            EventKind::Unsubscribed => "unsubscribed",
            EventKind::Complained => "complained",
            EventKind::Converted => "converted",
            EventKind::NegativeReply => "negative_reply",
            EventKind::NotInterested => "not_interested",
            EventKind::AutoReplied => "auto_replied",
        }
    }

    /// Whether this event ends every active sequence of the lead.
    pub fn stops_sequences(self) -> bool {
        matches!(
            self,
            EventKind::Replied
                | EventKind::HardBounce
                | EventKind::Unsubscribed
                | EventKind::Complained
                | EventKind::Converted
                | EventKind::NegativeReply
                | EventKind::NotInterested
        )
    }

    /// Whether this event shows the lead paid attention (an open, click, reply or
    /// conversion): it resets fatigue and feeds the best-time model.
    pub fn is_engagement(self) -> bool {
        matches!(
            self,
            EventKind::Opened | EventKind::Clicked | EventKind::Replied | EventKind::Converted
        )
    }

    /// Whether this event is a negative signal that pauses or ends outreach to the lead.
    pub fn is_negative_signal(self) -> bool {
        matches!(
            self,
            EventKind::HardBounce
                | EventKind::Unsubscribed
                | EventKind::Complained
                | EventKind::NegativeReply
                | EventKind::NotInterested
        )
    }

    /// Whether this event puts the contact point on the suppression list.
    pub fn suppresses(self) -> bool {
        matches!(
            self,
            EventKind::HardBounce | EventKind::Unsubscribed | EventKind::Complained
        )
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unrecognized event name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown event kind {0:?}")]
pub struct UnknownEventKind(pub String);

impl FromStr for EventKind {
    type Err = UnknownEventKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownEventKind(s.to_owned()))
    }
}
