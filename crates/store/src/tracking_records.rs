//! Records of open and click tracking.

use chrono::{DateTime, Utc};
use engager_domain::{DeliveryId, LeadId};

/// What the tracking writer needs to know of a delivery to record and flag its opens and
/// clicks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackingTarget {
    /// The delivery.
    pub delivery_id: DeliveryId,
    /// Its lead.
    pub lead_id: LeadId,
    /// When it was sent (`None` while the send is in flight).
    pub sent_at: Option<DateTime<Utc>>,
    /// How many of its links are tracked.
    pub links: u32,
}

/// The tracked version of a claimed delivery's message: what is actually sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedMessage {
    /// Plain-text body.
    pub body_text: String,
    /// HTML body.
    pub body_html: Option<String>,
    /// (index, destination) of every rewritten link.
    pub links: Vec<(u32, String)>,
}
