//! Engager's imperative shell: it loads campaigns, runs the planner and the dispatcher
//! against a [`Store`](engager_store::Store) and the configured channels, applies inbound
//! events, and simulates whole campaigns on a virtual clock.
//!
//! Architecture invariant: decisions are made by `engager-domain`'s pure functions; this
//! crate gathers their inputs (from the store, the clock and the configuration), records
//! their outputs, and performs the I/O they call for.

pub mod accounts;
pub mod alerts;
pub mod analytics;
pub mod campaign_file;
pub mod catalog;
pub mod clock;
pub mod compliance;
pub mod dispatcher;
pub mod experiments;
pub mod guard;
pub mod inbound;
pub mod monitor;
pub mod narrative;
pub mod personalization;
pub mod planner;
pub mod replies;
pub mod report;
pub mod similar;
pub mod simulation;
pub mod tasks;
pub mod timing;
pub mod tracking;

use chrono::Duration;
use engager_channels::Sender;
use engager_domain::frequency::FrequencyPolicy;
use engager_domain::TimeZone;

pub use catalog::Catalog;
pub use clock::{Clock, SystemClock, VirtualClock};

/// Everything the planner and dispatcher need to know from the configuration, already
/// parsed into domain types.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Who sends.
    pub sender: Sender,
    /// The sender's company, for templates.
    pub sender_company: String,
    /// Base URL of the public server, for unsubscribe links (`https://…`).
    pub public_base_url: String,
    /// Mailbox that receives mailto: unsubscribe requests.
    pub unsubscribe_mailto: Option<String>,
    /// Key for signing lead tokens in links.
    pub link_secret: Vec<u8>,
    /// Time zone for leads whose zone cannot be determined.
    pub default_time_zone: TimeZone,
    /// The contact budget across campaigns.
    pub frequency: FrequencyPolicy,
    /// Per-channel limits, the cooldown after a reply, fatigue and negative signals, on top
    /// of `frequency`.
    pub budget: engager_domain::frequency::BudgetRules,
    /// Holidays, stricter SMS hours and the best-time model.
    pub timing: timing::TimingRules,
    /// The largest random delay added to a slot so sends do not all fire at once.
    pub max_jitter: Duration,
    /// SMS may only be sent in this local window (TCPA: 08:00–21:00).
    pub sms_quiet_start_hour: u32,
    /// End of the SMS window (exclusive hour).
    pub sms_quiet_end_hour: u32,
    /// Most SMS segments a message may use.
    pub max_sms_segments: usize,
    /// How many rows one planner or dispatcher batch handles.
    pub batch_size: usize,
    /// Lease of a claim before sending starts, and of a send in progress.
    pub lease: Duration,
    /// Attempts before a transient failure becomes final.
    pub max_attempts: u32,
    /// Age (from planning) after which a transient failure becomes final.
    pub max_age: Duration,
    /// First retry delay; doubled per attempt, capped by `retry_max_delay`.
    pub retry_base_delay: Duration,
    /// Longest retry delay.
    pub retry_max_delay: Duration,
    /// Which channels are enabled.
    pub enabled_channels: Vec<engager_domain::Channel>,
    /// This process's name in claims.
    pub worker_id: String,
    /// The compliance validators and the company-wide legal bases (the sender's identity is
    /// taken from `sender`, `sender_company` and `public_base_url`).
    pub compliance: engager_domain::compliance::ComplianceRules,
}
