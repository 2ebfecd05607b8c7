//! Engager's delivery channels: the [`ChannelSender`] trait, the classified
//! [`DeliveryError`], and the outbox channels that write real files.
//!
//! Architecture invariant: only this crate knows providers and wire formats. The dispatcher
//! hands a channel an [`OutgoingMessage`] and gets back [`Accepted`] or a [`DeliveryError`]
//! whose class (transient, permanent, ambiguous, configuration) decides what happens next.

pub mod dkim;
pub mod email;
pub mod graph;
mod http;
pub mod imap;
pub mod inbound;
mod mail_tls;
pub mod outbox;
pub mod smtp;
pub mod twilio;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use engager_domain::{Channel, DeliveryId, LeadId};

pub use graph::{GraphChannel, GraphConfig, GraphMailbox};
pub use imap::{ImapConfig, ImapMailbox};
pub use inbound::Inbound;
pub use mail_tls::Security;
pub use outbox::{OutboxChannel, OutboxConfig};
pub use smtp::{SmtpChannel, SmtpConfig};
pub use twilio::{TwilioChannel, TwilioConfig};

/// Who sends: the identity shown to the recipient and the postal address the law requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// Display name.
    pub name: String,
    /// From address.
    pub email: engager_domain::EmailAddress,
    /// The sender's postal address (CAN-SPAM).
    pub postal_address: String,
    /// SMS sender number or name.
    pub sms_from: Option<String>,
}

/// Opt-out links for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// The HTTPS one-click URL (RFC 8058).
    pub url: String,
    /// A mailto: alternative.
    pub mailto: Option<String>,
}

/// One message, fully rendered, ready for a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// The ledger row.
    pub delivery_id: DeliveryId,
    /// The lead.
    pub lead_id: LeadId,
    /// Campaign slug.
    pub campaign: String,
    /// Step index.
    pub step_index: usize,
    /// Channel.
    pub channel: Channel,
    /// Recipient address (email, E.164 number or LinkedIn profile URL).
    pub to: String,
    /// Recipient's display name.
    pub to_name: Option<String>,
    /// Subject (email).
    pub subject: Option<String>,
    /// Text body.
    pub body_text: String,
    /// HTML body (email).
    pub body_html: Option<String>,
    /// The moment of sending (the Date header; virtual in simulations).
    pub date: DateTime<Utc>,
    /// Our Message-ID, stable per delivery.
    pub message_id: String,
    /// Who sends.
    pub sender: Sender,
    /// Opt-out links.
    pub unsubscribe: Option<Unsubscribe>,
    /// For tasks done by a person: when it should be done by.
    pub due_by: Option<DateTime<Utc>>,
}

/// The provider took the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The provider's reference (message id, SID, file path).
    pub provider_ref: String,
}

/// A failed send, classified for the dispatcher.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Not sent; safe to try again (after `retry_after` when the provider said so).
    #[error("transient failure: {reason}")]
    Transient {
        /// What happened.
        reason: String,
        /// The provider's requested wait.
        retry_after: Option<Duration>,
    },
    /// Will never succeed for this recipient or content.
    #[error("permanent failure: {reason}")]
    Permanent {
        /// What happened.
        reason: String,
    },
    /// The recipient opted out at the provider (e.g. replied STOP to an SMS): final, and the
    /// caller should suppress the address so that no other campaign tries it again.
    #[error("recipient opted out: {reason}")]
    OptedOut {
        /// What happened.
        reason: String,
    },
    /// The provider may have accepted the message (timeout after the request was written).
    #[error("ambiguous outcome: {reason}")]
    Ambiguous {
        /// What happened.
        reason: String,
    },
    /// The channel is misconfigured or its credentials are refused; stop using it.
    #[error("configuration error: {reason}")]
    Config {
        /// What happened.
        reason: String,
    },
}

impl DeliveryError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, DeliveryError::Transient { .. })
    }

    /// Whether the failure is final for this message (an opt-out is final too).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            DeliveryError::Permanent { .. } | DeliveryError::OptedOut { .. }
        )
    }

    /// Whether the recipient opted out at the provider, so the address must be suppressed.
    pub fn is_opt_out(&self) -> bool {
        matches!(self, DeliveryError::OptedOut { .. })
    }

    /// Whether the provider may have accepted the message (do not blindly retry).
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, DeliveryError::Ambiguous { .. })
    }

    /// The provider's requested wait, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DeliveryError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// What a provider knows about a delivery whose outcome is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconciled {
    /// The provider has it: it was sent, with this reference.
    Sent {
        /// The provider's reference.
        provider_ref: String,
    },
    /// The provider can be asked and does not have it.
    NotFound,
    /// The provider cannot be asked (a person must decide).
    CannotTell,
}

/// A way to deliver messages on one channel.
#[async_trait]
pub trait ChannelSender: Send + Sync {
    /// The channel this sender serves.
    fn channel(&self) -> Channel;
    /// A short name for logs and tables (`outbox`, `smtp`, `graph`, `twilio`).
    fn name(&self) -> &str;
    /// Checks that the channel can send (credentials, directories, connections).
    async fn health_check(&self) -> Result<(), DeliveryError>;
    /// Sends one message.
    async fn send(&self, message: &OutgoingMessage) -> Result<Accepted, DeliveryError>;
    /// Looks for a delivery whose outcome is unknown at the provider (e.g. Graph's Sent
    /// Items, by our `X-Engager-Delivery` header), sent at or after `since`.
    async fn reconcile(
        &self,
        delivery: DeliveryId,
        since: DateTime<Utc>,
    ) -> Result<Reconciled, DeliveryError> {
        let _ = (delivery, since);
        Ok(Reconciled::CannotTell)
    }
}
