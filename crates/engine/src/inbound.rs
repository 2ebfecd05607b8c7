//! What comes back from the mailboxes we send from: replies, automatic replies, bounces and
//! complaints, read from every configured source (an IMAP folder, a Microsoft Graph mailbox)
//! and turned into events through the store.
//!
//! Invariants:
//! - **Idempotent.** Each event carries the id of the message it came from (its Message-ID,
//!   or the source's own id when it has none) and the store records it once: reading a
//!   message again — after a crash before the cursor was saved, a UIDVALIDITY change, or the
//!   overlap of Graph's `receivedDateTime ge` filter — records nothing new.
//! - **Durable progress.** The cursor (IMAP: UIDVALIDITY + last UID; Graph: the newest
//!   `receivedDateTime`) is saved after the events of a batch are recorded, never before,
//!   so a restart neither skips nor re-applies mail. A new UIDVALIDITY restarts the folder
//!   from its first message, safely because of the above.
//! - **Never fatal.** A message we cannot match to one of our sends is counted as unmatched
//!   and logged; a mailbox that cannot be read is reported and tried again at the next poll.
//! - **What each kind does** (the store applies it): a reply stops the lead's sequences (and,
//!   with `stop_company_on_reply`, those of every lead at the same company domain); an
//!   automatic reply is recorded and changes nothing; a hard bounce ends the lead and
//!   suppresses the address; a soft bounce is recorded only; a complaint suppresses.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use engager_channels::graph::{InboundKind as GraphKind, InboundMessage};
use engager_channels::imap::{ImapMailbox, UidMark};
use engager_channels::inbound::{our_ids, BounceSeverity, Inbound, InboundKind, OurReference};
use engager_channels::GraphMailbox;
use engager_domain::{Channel, DeliveryId, EventKind, LeadId};
use engager_store::{InboundCursor, NewEvent, Store, StoreError};
use serde_json::json;
use tracing::{debug, info, warn};

/// Email domains shared by many unrelated people: a reply from one of them never stops the
/// "company".
const FREE_MAIL_DOMAINS: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "msn.com",
    "yahoo.com",
    "ymail.com",
    "icloud.com",
    "me.com",
    "mac.com",
    "aol.com",
    "proton.me",
    "protonmail.com",
    "gmx.de",
    "gmx.net",
    "web.de",
    "yandex.ru",
    "mail.ru",
    "qq.com",
    "163.com",
    "zoho.com",
];

/// How inbound mail is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundOptions {
    /// A reply stops the sequences of every lead at the replier's company domain too (never
    /// for free-mail domains).
    pub stop_company_on_reply: bool,
    /// How far back the first poll of a Graph mailbox reads.
    pub graph_first_lookback: Duration,
    /// Most IMAP batches (of `max_messages_per_poll` each) read in one poll.
    pub max_batches_per_poll: usize,
}

impl Default for InboundOptions {
    fn default() -> Self {
        Self {
            stop_company_on_reply: false,
            graph_first_lookback: Duration::days(7),
            max_batches_per_poll: 10,
        }
    }
}

/// One mailbox read for replies and bounces.
#[derive(Clone)]
pub enum MailSource {
    /// An IMAP folder.
    Imap {
        /// The cursor's key, e.g. `imap:maya@imap.example.com/INBOX`.
        name: String,
        /// The mailbox.
        mailbox: ImapMailbox,
    },
    /// A Microsoft Graph mailbox's reply folder.
    Graph {
        /// The cursor's key, e.g. `graph:maya@acme.example/inbox`.
        name: String,
        /// The mailbox.
        mailbox: Arc<GraphMailbox>,
    },
}

impl MailSource {
    /// An IMAP source named after its login, host and folder.
    pub fn imap(mailbox: ImapMailbox, username: &str, host: &str, folder: &str) -> Self {
        MailSource::Imap {
            name: format!("imap:{username}@{host}/{folder}"),
            mailbox,
        }
    }

    /// A Graph source named after its mailbox and reply folder.
    pub fn graph(mailbox: Arc<GraphMailbox>) -> Self {
        let config = mailbox.config();
        MailSource::Graph {
            name: format!("graph:{}/{}", config.mailbox, config.reply_folder),
            mailbox,
        }
    }

    /// The cursor's key.
    pub fn name(&self) -> &str {
        match self {
            MailSource::Imap { name, .. } | MailSource::Graph { name, .. } => name,
        }
    }
}

impl fmt::Debug for MailSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("MailSource").field(&self.name()).finish()
    }
}

/// What a message turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FoundKind {
    /// A person's reply to one of our sends.
    Reply,
    /// An automatic reply.
    AutoReply,
    /// A permanent bounce.
    HardBounce,
    /// A temporary bounce.
    SoftBounce,
    /// A spam complaint.
    Complaint,
    /// Nothing we can tie to one of our sends.
    Unmatched,
}

impl FoundKind {
    /// The name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            FoundKind::Reply => "reply",
            FoundKind::AutoReply => "auto_reply",
            FoundKind::HardBounce => "hard_bounce",
            FoundKind::SoftBounce => "soft_bounce",
            FoundKind::Complaint => "complaint",
            FoundKind::Unmatched => "unmatched",
        }
    }

    fn event(self) -> Option<EventKind> {
        match self {
            FoundKind::Reply => Some(EventKind::Replied),
            FoundKind::AutoReply => Some(EventKind::AutoReplied),
            FoundKind::HardBounce => Some(EventKind::HardBounce),
            FoundKind::SoftBounce => Some(EventKind::SoftBounce),
            FoundKind::Complaint => Some(EventKind::Complained),
            FoundKind::Unmatched => None,
        }
    }
}

/// One message read, and what it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The source it was read from.
    pub source: String,
    /// Its id (Message-ID, else the source's id).
    pub external_id: String,
    /// What it is.
    pub kind: FoundKind,
    /// Its sender.
    pub from: Option<String>,
    /// Its subject.
    pub subject: Option<String>,
    /// The lead it concerns, when matched.
    pub lead_id: Option<LeadId>,
    /// The delivery it answers, when known.
    pub delivery_id: Option<DeliveryId>,
    /// Why it is what it is (the auto-reply signal, the bounce status), or why unmatched.
    pub note: String,
    /// Whether an event was recorded now (false: already recorded by an earlier poll, or
    /// unmatched).
    pub recorded: bool,
    /// Sequences stopped (including the company's, when configured).
    pub enrollments_stopped: u64,
    /// Whether the address was suppressed.
    pub suppressed: bool,
}

/// What one poll of every source did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    /// Every message read, in source order.
    pub found: Vec<Found>,
    /// Sources that could not be read (source, error).
    pub errors: Vec<(String, String)>,
}

impl PollReport {
    /// How many messages of a kind were read.
    pub fn count(&self, kind: FoundKind) -> usize {
        self.found.iter().filter(|f| f.kind == kind).count()
    }

    /// How many events were recorded by this poll.
    pub fn recorded(&self) -> usize {
        self.found.iter().filter(|f| f.recorded).count()
    }
}

/// A message, reduced to what matching needs, from either source.
struct Candidate {
    external_id: String,
    from: Option<String>,
    subject: Option<String>,
    at: DateTime<Utc>,
    kind: FoundKind,
    note: String,
    /// Our Message-IDs it names (IMAP/SMTP sends).
    ours: Vec<OurReference>,
    /// Other Message-IDs it names (Graph sends are known by Graph's internetMessageId).
    referenced: Vec<String>,
    /// Our delivery id from an `X-Engager-Delivery` header.
    delivery_header: Option<DeliveryId>,
    /// The failed recipient of a bounce.
    recipient: Option<String>,
    /// The plain-text body (for classifying a reply).
    text: String,
}

/// Polls every configured mailbox and records what it finds.
#[derive(Debug, Clone)]
pub struct InboundPoller {
    sources: Vec<MailSource>,
    options: InboundOptions,
    classifier: crate::replies::ReplyClassifier,
}

impl InboundPoller {
    /// A poller over these sources.
    pub fn new(sources: Vec<MailSource>, options: InboundOptions) -> Self {
        Self {
            sources,
            options,
            classifier: crate::replies::ReplyClassifier::rules_only(),
        }
    }

    /// Classifies replies with this classifier (the model, when configured) instead of the
    /// keyword rules alone.
    pub fn with_classifier(mut self, classifier: crate::replies::ReplyClassifier) -> Self {
        self.classifier = classifier;
        self
    }

    /// Whether there is anything to poll.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The sources.
    pub fn sources(&self) -> &[MailSource] {
        &self.sources
    }

    /// Reads every source once and records the events. A source that fails is reported in
    /// [`PollReport::errors`]; only a store failure is returned as an error.
    pub async fn poll_once(
        &self,
        store: &dyn Store,
        now: DateTime<Utc>,
    ) -> Result<PollReport, StoreError> {
        let mut report = PollReport::default();
        for source in &self.sources {
            let result = match source {
                MailSource::Imap { name, mailbox } => {
                    self.poll_imap(store, name, mailbox, now, &mut report).await
                }
                MailSource::Graph { name, mailbox } => {
                    self.poll_graph(store, name, mailbox, now, &mut report)
                        .await
                }
            };
            match result {
                Ok(()) => {}
                Err(PollError::Store(e)) => return Err(e),
                Err(PollError::Source(e)) => {
                    warn!(source = source.name(), error = %e, "Could not read the mailbox; will try again at the next poll.");
                    report.errors.push((source.name().to_owned(), e));
                }
            }
        }
        let unmatched = report.count(FoundKind::Unmatched);
        if !report.found.is_empty() {
            info!(
                read = report.found.len(),
                recorded = report.recorded(),
                replies = report.count(FoundKind::Reply),
                auto_replies = report.count(FoundKind::AutoReply),
                hard_bounces = report.count(FoundKind::HardBounce),
                soft_bounces = report.count(FoundKind::SoftBounce),
                unmatched,
                "Inbound mail read."
            );
        }
        Ok(report)
    }

    async fn poll_imap(
        &self,
        store: &dyn Store,
        name: &str,
        mailbox: &ImapMailbox,
        now: DateTime<Utc>,
        report: &mut PollReport,
    ) -> Result<(), PollError> {
        let cursor = store.inbound_cursor(name).await?;
        let mut mark = cursor.as_ref().and_then(|c| {
            Some(UidMark {
                uid_validity: c.uid_validity?,
                last_uid: c.last_uid?,
            })
        });
        for _ in 0..self.options.max_batches_per_poll.max(1) {
            let polled = mailbox
                .poll(mark)
                .await
                .map_err(|e| PollError::Source(e.to_string()))?;
            if mark.is_some_and(|m| m.uid_validity != polled.mark.uid_validity) {
                warn!(
                    source = name,
                    "The folder's UIDVALIDITY changed: reading it again from the start (events already recorded are not repeated)."
                );
            }
            let mut uids = Vec::with_capacity(polled.messages.len());
            for message in &polled.messages {
                let candidate = imap_candidate(
                    name,
                    polled.mark.uid_validity,
                    message.uid,
                    message.received_at,
                    &message.inbound,
                    now,
                );
                let found = self.apply(store, name, candidate, now).await?;
                report.found.push(found);
                uids.push(message.uid);
            }
            store
                .save_inbound_cursor(&InboundCursor {
                    source: name.to_owned(),
                    uid_validity: Some(polled.mark.uid_validity),
                    last_uid: Some(polled.mark.last_uid),
                    last_received_at: None,
                    updated_at: now,
                })
                .await?;
            if let Err(e) = mailbox
                .mark_processed(polled.mark.uid_validity, &uids)
                .await
            {
                // The cursor already moved past them; only the mailbox's marker is missing.
                warn!(source = name, error = %e, "Could not mark the messages as processed in the mailbox.");
            }
            mark = Some(polled.mark);
            if !polled.more {
                break;
            }
        }
        Ok(())
    }

    async fn poll_graph(
        &self,
        store: &dyn Store,
        name: &str,
        mailbox: &GraphMailbox,
        now: DateTime<Utc>,
        report: &mut PollReport,
    ) -> Result<(), PollError> {
        let cursor = store.inbound_cursor(name).await?;
        let since = cursor
            .as_ref()
            .and_then(|c| c.last_received_at)
            .unwrap_or(now - self.options.graph_first_lookback);
        let messages = mailbox
            .poll_replies(since)
            .await
            .map_err(|e| PollError::Source(e.to_string()))?;
        let mut newest = cursor.as_ref().and_then(|c| c.last_received_at);
        for message in &messages {
            let mut candidate = graph_candidate(message);
            if candidate.kind != FoundKind::Unmatched
                && candidate.ours.is_empty()
                && candidate.delivery_header.is_none()
            {
                // A reply that lost its threading headers: its conversation still names our
                // sent message.
                if let Some(conversation) = message.conversation_id.as_deref() {
                    match mailbox.sent_in_conversation(conversation).await {
                        Ok(sent) => {
                            candidate.delivery_header =
                                sent.iter().rev().find_map(|s| s.delivery_id);
                        }
                        Err(e) => debug!(error = %e, "Could not look up the conversation."),
                    }
                }
            }
            let found = self.apply(store, name, candidate, now).await?;
            report.found.push(found);
            newest = Some(newest.map_or(message.received_at, |n| n.max(message.received_at)));
        }
        if let Some(newest) = newest {
            store
                .save_inbound_cursor(&InboundCursor {
                    source: name.to_owned(),
                    uid_validity: None,
                    last_uid: None,
                    last_received_at: Some(newest),
                    updated_at: now,
                })
                .await?;
        }
        Ok(())
    }

    /// Matches a message to our delivery (or lead) and records its event.
    async fn apply(
        &self,
        store: &dyn Store,
        source: &str,
        c: Candidate,
        now: DateTime<Utc>,
    ) -> Result<Found, StoreError> {
        let mut found = Found {
            source: source.to_owned(),
            external_id: c.external_id.clone(),
            kind: c.kind,
            from: c.from.clone(),
            subject: c.subject.clone(),
            lead_id: None,
            delivery_id: None,
            note: c.note.clone(),
            recorded: false,
            enrollments_stopped: 0,
            suppressed: false,
        };
        let Some(event_kind) = c.kind.event() else {
            debug!(source, id = %c.external_id, "Inbound message unrelated to our sends.");
            return Ok(found);
        };
        let matched = match_delivery(store, &c).await?;
        let (lead_id, delivery_id) = match matched {
            Some((lead, delivery)) => (lead, delivery),
            None => {
                // A bounce that does not quote our message still names the address.
                let by_recipient = match (&c.kind, &c.recipient) {
                    (FoundKind::HardBounce | FoundKind::SoftBounce, Some(recipient)) => store
                        .lead_by_email(&recipient.trim().to_ascii_lowercase())
                        .await?
                        .map(|l| l.id),
                    _ => None,
                };
                match by_recipient {
                    Some(lead) => (lead, None),
                    None => {
                        warn!(
                            source,
                            id = %c.external_id,
                            kind = c.kind.as_str(),
                            from = c.from.as_deref().unwrap_or("-"),
                            "Inbound message names none of our sends; counted as unmatched."
                        );
                        found.note = format!(
                            "{} not matched to one of our sends{}",
                            c.kind.as_str(),
                            if c.note.is_empty() {
                                String::new()
                            } else {
                                format!(" ({})", c.note)
                            }
                        );
                        found.kind = FoundKind::Unmatched;
                        return Ok(found);
                    }
                }
            }
        };
        found.lead_id = Some(lead_id);
        found.delivery_id = delivery_id;
        // A reply is classified (the model when configured, else keyword rules) before it is
        // recorded, so it is recorded as what it is; a message read again is not classified
        // again (no second model call).
        let classification = match c.kind {
            FoundKind::Reply
                if !already_recorded(store, lead_id, source, &c.external_id).await? =>
            {
                Some(
                    self.classifier
                        .classify(c.subject.as_deref().unwrap_or(""), &c.text)
                        .await,
                )
            }
            FoundKind::AutoReply => Some(crate::replies::Classification {
                class: engager_domain::reply::ReplyClass::OutOfOffice,
                source: "rules",
                reason: format!("automatic reply ({})", c.note),
            }),
            _ => None,
        };
        let event_kind = classification
            .as_ref()
            .map_or(event_kind, |k| k.class.event_kind());
        if let Some(k) = &classification {
            found.note = if found.note.is_empty() {
                format!("classified {} by {}: {}", k.class, k.source, k.reason)
            } else {
                format!(
                    "{}; classified {} by {}: {}",
                    found.note, k.class, k.source, k.reason
                )
            };
        }
        let detail = json!({
            "message_id": c.external_id,
            "from": c.from,
            "subject": c.subject,
            "note": c.note,
            "mailbox": source,
        })
        .to_string();
        let effects = store
            .record_external_event(
                &NewEvent {
                    lead_id,
                    delivery_id,
                    kind: event_kind,
                    occurred_at: c.at.min(now),
                    detail,
                    source: format!("inbound:{source}"),
                },
                &c.external_id,
            )
            .await?;
        let Some(effects) = effects else {
            debug!(source, id = %c.external_id, "Already recorded.");
            return Ok(found);
        };
        found.recorded = true;
        found.enrollments_stopped = effects.enrollments_stopped;
        found.suppressed = effects.suppressed;
        if let Some(k) = &classification {
            let stored = store
                .classify_reply(&engager_store::ReplyClassification {
                    reply: engager_store::ReplyRef::External(c.external_id.clone()),
                    class: k.class,
                    source: k.source.to_owned(),
                    reason: k.reason.clone(),
                    at: c.at.min(now),
                })
                .await?;
            found.enrollments_stopped += stored.effects.enrollments_stopped;
            found.suppressed |= stored.effects.suppressed;
        }
        if c.kind == FoundKind::Reply
            && event_kind.stops_sequences()
            && self.options.stop_company_on_reply
        {
            if let Some(domain) = company_domain(store, lead_id).await? {
                let company = store
                    .stop_domain_sequences(&domain, "company_replied", now)
                    .await?;
                found.enrollments_stopped += company.enrollments_stopped;
                if company.enrollments_stopped > 0 {
                    info!(domain = %domain, stopped = company.enrollments_stopped, "A reply stopped the company's other sequences.");
                }
            }
        }
        info!(
            source,
            lead_id = lead_id.0,
            delivery_id = delivery_id.map(|d| d.0),
            kind = c.kind.as_str(),
            "Inbound event recorded."
        );
        Ok(found)
    }
}

enum PollError {
    Store(StoreError),
    Source(String),
}

impl From<StoreError> for PollError {
    fn from(e: StoreError) -> Self {
        PollError::Store(e)
    }
}

/// Whether an inbound message was already recorded for the lead (its id is in the detail of
/// one of the lead's events from this mailbox).
async fn already_recorded(
    store: &dyn Store,
    lead: LeadId,
    source: &str,
    external_id: &str,
) -> Result<bool, StoreError> {
    let from = format!("inbound:{source}");
    Ok(store.events_for_lead(lead).await?.iter().any(|e| {
        e.event.source == from
            && serde_json::from_str::<serde_json::Value>(&e.event.detail)
                .is_ok_and(|d| d["message_id"] == external_id)
    }))
}

/// The lead's email domain, unless it is a free-mail domain.
async fn company_domain(store: &dyn Store, lead: LeadId) -> Result<Option<String>, StoreError> {
    let Some(lead) = store.lead(lead).await? else {
        return Ok(None);
    };
    let Some(email) = lead.profile.email.as_ref() else {
        return Ok(None);
    };
    let domain = email.domain().to_ascii_lowercase();
    Ok((!FREE_MAIL_DOMAINS.contains(&domain.as_str())).then_some(domain))
}

/// Finds the delivery a message is about: our Message-ID (checked against the ledger), our
/// delivery header, or a provider reference (Graph's internetMessageId) it names.
async fn match_delivery(
    store: &dyn Store,
    c: &Candidate,
) -> Result<Option<(LeadId, Option<DeliveryId>)>, StoreError> {
    for reference in &c.ours {
        if let Some(d) = store.find_delivery(reference.delivery_id).await? {
            // Our Message-ID is the provider reference of SMTP sends; the outbox keeps a file
            // path there, so only a different Message-ID is a mismatch.
            let consistent = reference.message_id.is_empty()
                || d.provider_ref.as_deref().is_none_or(|r| {
                    !r.starts_with('<') || r.eq_ignore_ascii_case(&reference.message_id)
                });
            if consistent && d.channel == Channel::Email {
                return Ok(Some((d.lead_id, Some(d.id))));
            }
        }
    }
    if let Some(id) = c.delivery_header {
        if let Some(d) = store.find_delivery(id).await? {
            return Ok(Some((d.lead_id, Some(d.id))));
        }
    }
    for id in &c.referenced {
        if let Some(d) = store.find_delivery_by_provider_ref(id).await? {
            return Ok(Some((d.lead_id, Some(d.id))));
        }
    }
    Ok(None)
}

fn imap_candidate(
    source: &str,
    uid_validity: u32,
    uid: u32,
    received_at: Option<DateTime<Utc>>,
    inbound: &Inbound,
    now: DateTime<Utc>,
) -> Candidate {
    let external_id = inbound
        .message_id
        .clone()
        .filter(|id| id.len() > 2)
        .unwrap_or_else(|| format!("{source}:{uid_validity}:{uid}"));
    let at = received_at.or(inbound.date).unwrap_or(now);
    let mut candidate = Candidate {
        external_id,
        from: inbound.from.clone(),
        subject: inbound.subject.clone(),
        at,
        kind: FoundKind::Unmatched,
        note: String::new(),
        ours: Vec::new(),
        referenced: Vec::new(),
        delivery_header: None,
        recipient: None,
        text: inbound.text.clone().unwrap_or_default(),
    };
    match &inbound.kind {
        InboundKind::Reply { reference } => {
            candidate.kind = FoundKind::Reply;
            candidate.ours.push(reference.clone());
        }
        InboundKind::AutoReply { reference, signal } => {
            candidate.kind = FoundKind::AutoReply;
            candidate.note = signal.clone();
            candidate.ours.extend(reference.iter().cloned());
        }
        InboundKind::Bounce(bounce) => {
            candidate.kind = match bounce.severity {
                BounceSeverity::Hard => FoundKind::HardBounce,
                BounceSeverity::Soft => FoundKind::SoftBounce,
            };
            candidate.note = [
                bounce.status.clone(),
                bounce.action.clone(),
                bounce.diagnostic.clone(),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; ");
            candidate.ours.extend(bounce.reference.iter().cloned());
            candidate.recipient = bounce.recipient.clone();
        }
        InboundKind::Complaint { reference } => {
            candidate.kind = FoundKind::Complaint;
            candidate.ours.extend(reference.iter().cloned());
        }
        InboundKind::Unrelated => {}
    }
    candidate
}

fn graph_candidate(message: &InboundMessage) -> Candidate {
    let external_id = message
        .internet_message_id
        .clone()
        .filter(|id| id.len() > 2)
        .unwrap_or_else(|| format!("graph:{}", message.id));
    let referenced: Vec<String> = message
        .referenced_message_ids()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let ours: Vec<OurReference> = referenced.iter().flat_map(|id| our_ids(id)).collect();
    let (kind, note, recipient) = match &message.kind {
        GraphKind::Reply => (FoundKind::Reply, String::new(), None),
        GraphKind::AutoReply => (
            FoundKind::AutoReply,
            message
                .header("Auto-Submitted")
                .map(|v| format!("Auto-Submitted: {v}"))
                .unwrap_or_else(|| format!("subject: {}", message.subject)),
            None,
        ),
        GraphKind::NonDelivery {
            status,
            hard,
            recipient,
        } => (
            if *hard {
                FoundKind::HardBounce
            } else {
                FoundKind::SoftBounce
            },
            status.clone().unwrap_or_default(),
            recipient.clone(),
        ),
    };
    Candidate {
        external_id,
        from: message.from.clone(),
        subject: Some(message.subject.clone()),
        at: message.received_at,
        text: message.body_text.chars().take(4_000).collect(),
        kind,
        note,
        ours,
        referenced,
        delivery_header: message.delivery_id(),
        recipient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_events() {
        assert_eq!(FoundKind::Reply.event(), Some(EventKind::Replied));
        assert_eq!(FoundKind::AutoReply.event(), Some(EventKind::AutoReplied));
        assert!(!EventKind::AutoReplied.stops_sequences());
        assert!(!EventKind::SoftBounce.stops_sequences());
        assert!(EventKind::HardBounce.suppresses());
        assert_eq!(FoundKind::Unmatched.event(), None);
    }

    #[test]
    fn messages_without_an_id_get_a_stable_one() {
        let inbound = Inbound {
            message_id: None,
            from: None,
            subject: None,
            date: None,
            kind: InboundKind::Unrelated,
            text: None,
        };
        let now = Utc::now();
        let a = imap_candidate("imap:x", 7, 42, None, &inbound, now);
        let b = imap_candidate("imap:x", 7, 42, None, &inbound, now);
        assert_eq!(a.external_id, "imap:x:7:42");
        assert_eq!(a.external_id, b.external_id);
        assert_eq!(a.kind, FoundKind::Unmatched);
    }
}
