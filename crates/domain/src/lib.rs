//! The pure core of Engager: types and decisions.
//!
//! Architecture invariant: nothing in this crate performs I/O, reads a clock or draws random
//! numbers. Time, jitter and everything else a decision needs are passed in, and decisions
//! come back as data carrying their reasons. This is what makes simulation, `engager explain`
//! and property tests possible.

pub mod best_time;
pub mod campaign;
pub mod channel_choice;
pub mod circuit;
pub mod compliance;
pub mod contact;
pub mod deliverability;
pub mod delivery;
pub mod event;
pub mod frequency;
pub mod history;
pub mod holidays;
pub mod ids;
pub mod lead;
pub mod links;
pub mod reply;
pub mod schedule;
pub mod sms;
pub mod stats;
pub mod timing;
pub mod trace;
pub mod tracking;
pub mod zone;

pub use campaign::{Campaign, Channel, Step};
pub use contact::{CountryCode, EmailAddress, LinkedinUrl, PhoneE164, TimeZone};
pub use delivery::{DeliveryState, TransitionError};
pub use event::EventKind;
pub use history::{Engagement, LeadHistory, Touch};
pub use ids::{CampaignId, DeliveryId, EnrollmentId, LeadId};
pub use lead::{Lead, LeadStatus, NewLead};
pub use trace::{Gate, GateResult, Outcome, Trace};

/// A stable 64-bit hash of the given parts (SHA-256 truncated), for deterministic choices
/// such as jitter or variant assignment that must agree across processes and runs.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(bytes)
}

/// Maps a stable hash onto the unit interval `[0, 1)`.
pub fn unit_fraction(hash: u64) -> f64 {
    (hash >> 11) as f64 / (1u64 << 53) as f64
}
