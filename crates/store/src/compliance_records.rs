//! Records of the compliance gate: consent evidence, what was checked for each send, and
//! campaigns halted for a compliance problem.

use chrono::{DateTime, Utc};
use engager_domain::compliance::ConsentRecord;
use engager_domain::{CampaignId, Channel, DeliveryId, LeadId};

/// What was checked for one send, and on what evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendEvidence {
    /// The delivery.
    pub delivery_id: DeliveryId,
    /// Its lead.
    pub lead_id: LeadId,
    /// When the dispatcher checked (just before calling the provider).
    pub checked_at: DateTime<Utc>,
    /// The sender that carried it (`outbox`, `smtp`, `graph`, `twilio`, an account name).
    pub provider: String,
    /// The regimes checked (`gdpr`, `can_spam`, `tcpa`, `casl`).
    pub regimes: Vec<String>,
    /// Each check as "REGIME: reason", the consent records named in them.
    pub checks: Vec<String>,
    /// The consent record relied on, if one was (0: the lead's own imported consent fields).
    pub consent_id: Option<i64>,
    /// The footer carries the postal address (emails).
    pub footer_postal: bool,
    /// The body carries the unsubscribe link (emails).
    pub footer_unsubscribe: bool,
    /// The message carried RFC 8058 one-click headers (not possible through Graph).
    pub one_click_header: bool,
    /// The text carries STOP wording (SMS).
    pub stop_wording: bool,
}

/// A send's evidence with what became of the delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceRow {
    /// The evidence.
    pub evidence: SendEvidence,
    /// The delivery's channel.
    pub channel: Channel,
    /// The delivery's campaign.
    pub campaign_id: CampaignId,
    /// The delivery's state now (`sent`, `failed`, …).
    pub state: String,
}

/// A compliance decision read back from the decision traces: a refused check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComplianceTrace {
    /// The lead.
    pub lead_id: LeadId,
    /// The campaign.
    pub campaign_id: CampaignId,
    /// When the planner (or dispatcher) decided.
    pub evaluated_at: DateTime<Utc>,
    /// The trace's code (`no_lawful_basis`, `objected`, …) or `None` when another channel was used.
    pub code: Option<String>,
    /// The gates' rows as stored (JSON).
    pub gates_json: String,
}

/// A campaign halted (or resumed) for compliance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignHalt {
    /// The campaign.
    pub campaign_id: CampaignId,
    /// Halted (true) or resumed (false).
    pub halted: bool,
    /// The problems found, or who resumed it and why.
    pub reason: String,
    /// `compliance` (the check) or the person who resumed it.
    pub changed_by: String,
    /// When.
    pub changed_at: DateTime<Utc>,
}

/// Helpers shared by both backends.
pub(crate) fn channel_str(c: Option<Channel>) -> Option<&'static str> {
    c.map(|c| c.as_str())
}

/// Parses a stored consent row's text parts.
pub(crate) fn consent_from_parts(
    table: &'static str,
    id: i64,
    lead_id: i64,
    channel: Option<String>,
    basis: String,
    source: String,
    reference: Option<String>,
    contact: Option<String>,
    obtained_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
) -> crate::StoreResult<ConsentRecord> {
    let channel = match channel {
        Some(c) => Some(
            c.parse::<Channel>()
                .map_err(|e| crate::StoreError::Corrupt {
                    table,
                    column: "channel",
                    reason: e.to_string(),
                })?,
        ),
        None => None,
    };
    let basis = basis
        .parse()
        .map_err(|e: String| crate::StoreError::Corrupt {
            table,
            column: "basis",
            reason: e,
        })?;
    Ok(ConsentRecord {
        id,
        lead_id: LeadId(lead_id),
        channel,
        basis,
        source,
        reference,
        contact,
        obtained_at,
        expires_at,
    })
}

/// The stored comma-separated regimes.
pub(crate) fn split_regimes(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}
