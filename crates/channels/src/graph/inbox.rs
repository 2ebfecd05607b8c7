//! What comes back to the mailbox: replies, auto-replies and non-delivery reports, read from
//! Graph message resources, plus our own sent messages found again in Sent Items.
//!
//! Classification is by headers first (`X-MS-Exchange-Message-Is-Ndr`, `Auto-Submitted`,
//! `Content-Type: multipart/report; report-type=delivery-status`), then by sender and
//! subject patterns, because Graph exposes no item class for NDRs. Automatic answers and
//! enhanced status codes are recognised by the same rules as mail read over IMAP
//! ([`crate::inbound::auto_reply_signal_of`]); only the NDR test is Graph's own, because Graph
//! returns an NDR's text rather than its MIME parts.

use chrono::{DateTime, Utc};
use engager_domain::DeliveryId;
use serde::Deserialize;

/// The header that carries our delivery id on every message we send.
pub const DELIVERY_HEADER: &str = "X-Engager-Delivery";

/// A message that arrived in the polled folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    /// Graph's id of the message (immutable id).
    pub id: String,
    /// Its RFC 5322 Message-ID.
    pub internet_message_id: Option<String>,
    /// Exchange's conversation (thread) id; a reply shares it with our sent message.
    pub conversation_id: Option<String>,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// The sender's address.
    pub from: Option<String>,
    /// Subject.
    pub subject: String,
    /// The body as text (Graph converts HTML when asked to).
    pub body_text: String,
    /// The `In-Reply-To` header: the Message-ID it answers.
    pub in_reply_to: Option<String>,
    /// The Message-IDs in `References`.
    pub references: Vec<String>,
    /// Every internet header Graph returned, in order.
    pub headers: Vec<(String, String)>,
    /// What kind of message it is.
    pub kind: InboundKind,
}

impl InboundMessage {
    /// The first value of a header (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// Every Message-ID this message points back to (`In-Reply-To` first, then `References`),
    /// for matching against the internetMessageId of our sends.
    pub fn referenced_message_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.in_reply_to.iter().map(String::as_str).collect();
        for id in &self.references {
            if !ids.contains(&id.as_str()) {
                ids.push(id);
            }
        }
        ids
    }

    /// Our delivery id, when the message carries our header (NDRs often quote it).
    pub fn delivery_id(&self) -> Option<DeliveryId> {
        delivery_id(&self.headers).or_else(|| match &self.kind {
            InboundKind::NonDelivery { .. } => quoted_delivery_id(&self.body_text),
            _ => None,
        })
    }
}

/// What an inbound message means for the sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundKind {
    /// A person answered: the sequence stops.
    Reply,
    /// An out-of-office or other automatic answer: recorded, the sequence goes on.
    AutoReply,
    /// A non-delivery report (bounce).
    NonDelivery {
        /// The enhanced status code found (`5.1.1`), if any.
        status: Option<String>,
        /// Whether it is permanent (5.x.x, or no code at all); 4.x.x is a delay.
        hard: bool,
        /// The recipient that failed, when the report names one.
        recipient: Option<String>,
    },
}

/// One of our messages in Sent Items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    /// Graph's id.
    pub id: String,
    /// Its Message-ID (the provider reference of the delivery).
    pub internet_message_id: Option<String>,
    /// Exchange's conversation id.
    pub conversation_id: Option<String>,
    /// When it was sent.
    pub sent_at: Option<DateTime<Utc>>,
    /// Our delivery id, from the `X-Engager-Delivery` header.
    pub delivery_id: Option<DeliveryId>,
}

/// The subset of Graph's message resource we read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GraphMessage {
    pub id: String,
    #[serde(default)]
    pub internet_message_id: Option<String>,
    #[serde(default)]
    pub conversation_id: Option<String>,
    #[serde(default)]
    pub received_date_time: Option<String>,
    #[serde(default)]
    pub sent_date_time: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub from: Option<Recipient>,
    #[serde(default)]
    pub sender: Option<Recipient>,
    #[serde(default)]
    pub body: Option<Body>,
    #[serde(default)]
    pub internet_message_headers: Option<Vec<Header>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Recipient {
    #[serde(default)]
    pub email_address: Option<Address>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Address {
    #[serde(default)]
    pub address: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Body {
    #[serde(default)]
    pub content: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Header {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// A page of a message listing.
#[derive(Debug, Deserialize)]
pub(crate) struct MessagePage {
    #[serde(default)]
    pub value: Vec<GraphMessage>,
    #[serde(rename = "@odata.nextLink", default)]
    pub next_link: Option<String>,
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn delivery_id(headers: &[(String, String)]) -> Option<DeliveryId> {
    header(headers, DELIVERY_HEADER)?
        .trim()
        .parse()
        .ok()
        .map(DeliveryId)
}

/// NDRs quote the original headers in their body; find our header there.
fn quoted_delivery_id(body: &str) -> Option<DeliveryId> {
    let at = body
        .to_ascii_lowercase()
        .find(&DELIVERY_HEADER.to_ascii_lowercase())?;
    let rest = body[at + DELIVERY_HEADER.len()..].trim_start_matches([':', ' ']);
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().map(DeliveryId)
}

/// The Message-IDs (`<...>`) in a header value.
fn message_ids(value: &str) -> Vec<String> {
    value
        .split('<')
        .skip(1)
        .filter_map(|part| {
            part.split_once('>')
                .map(|(id, _)| format!("<{}>", id.trim()))
        })
        .collect()
}

fn timestamp(value: Option<&str>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn address(recipient: Option<&Recipient>) -> Option<String> {
    recipient?.email_address.as_ref()?.address.clone()
}

impl GraphMessage {
    fn headers(&self) -> Vec<(String, String)> {
        self.internet_message_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect()
    }

    pub(crate) fn into_inbound(self) -> InboundMessage {
        let headers = self.headers();
        let from = address(self.from.as_ref()).or_else(|| address(self.sender.as_ref()));
        let subject = self.subject.clone().unwrap_or_default();
        let body_text = self
            .body
            .as_ref()
            .and_then(|b| b.content.clone())
            .unwrap_or_default();
        let kind = classify(&headers, from.as_deref(), &subject, &body_text);
        InboundMessage {
            id: self.id,
            internet_message_id: self.internet_message_id,
            conversation_id: self.conversation_id,
            received_at: timestamp(self.received_date_time.as_deref())
                .or_else(|| timestamp(self.sent_date_time.as_deref()))
                .unwrap_or(DateTime::UNIX_EPOCH),
            from,
            subject,
            in_reply_to: header(&headers, "In-Reply-To")
                .and_then(|v| message_ids(v).into_iter().next()),
            references: header(&headers, "References")
                .map(message_ids)
                .unwrap_or_default(),
            body_text,
            headers,
            kind,
        }
    }

    pub(crate) fn into_sent(self) -> SentMessage {
        let headers = self.headers();
        SentMessage {
            id: self.id,
            internet_message_id: self.internet_message_id,
            conversation_id: self.conversation_id,
            sent_at: timestamp(self.sent_date_time.as_deref()),
            delivery_id: delivery_id(&headers),
        }
    }
}

const NDR_SENDERS: &[&str] = &["postmaster@", "mailer-daemon@", "microsoftexchange"];
const NDR_SUBJECTS: &[&str] = &[
    "undeliverable:",
    "undelivered mail returned to sender",
    "delivery status notification (failure)",
    "delivery status notification (delay)",
    "mail delivery failed",
    "returned mail:",
    "failure notice",
    "delivery has failed",
];
/// Tells a bounce and an automatic answer from a person's reply.
pub fn classify(
    headers: &[(String, String)],
    from: Option<&str>,
    subject: &str,
    body: &str,
) -> InboundKind {
    let subject_lower = subject.trim().to_lowercase();
    let from_lower = from.unwrap_or_default().to_lowercase();
    let content_type = header(headers, "Content-Type")
        .unwrap_or_default()
        .to_lowercase();
    let is_ndr = header(headers, "X-MS-Exchange-Message-Is-Ndr").is_some()
        || (content_type.contains("multipart/report") && content_type.contains("delivery-status"))
        || (NDR_SENDERS
            .iter()
            .any(|s| from_lower.starts_with(s) || from_lower.contains(s))
            && NDR_SUBJECTS.iter().any(|s| subject_lower.starts_with(s)))
        || NDR_SUBJECTS[..1]
            .iter()
            .any(|s| subject_lower.starts_with(s));
    if is_ndr {
        let status = enhanced_status(body);
        let hard = status.as_deref().is_none_or(|s| s.starts_with('5'));
        let recipient = header(headers, "X-Failed-Recipients")
            .map(|v| v.trim().to_owned())
            .or_else(|| final_recipient(body));
        return InboundKind::NonDelivery {
            status,
            hard,
            recipient,
        };
    }
    // Automatic answers: the same rules as for mail read over IMAP.
    if crate::inbound::auto_reply_signal_of(
        |name| header(headers, name).map(str::to_owned),
        Some(subject),
    )
    .is_some()
    {
        return InboundKind::AutoReply;
    }
    InboundKind::Reply
}

/// The first RFC 3463 enhanced status code (`5.1.1`) in a text (shared with IMAP).
fn enhanced_status(text: &str) -> Option<String> {
    crate::inbound::enhanced_status(text)
}

/// `Final-Recipient: rfc822; jane@example.com` in a DSN-style body.
fn final_recipient(body: &str) -> Option<String> {
    body.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if !name.trim().eq_ignore_ascii_case("Final-Recipient")
            && !name.trim().eq_ignore_ascii_case("Original-Recipient")
        {
            return None;
        }
        let address = value.rsplit(';').next()?.trim();
        address.contains('@').then(|| address.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn replies_auto_replies_and_bounces() {
        assert_eq!(
            classify(
                &h(&[("In-Reply-To", "<a@b>")]),
                Some("jane@example.com"),
                "RE: Quick question",
                "Sure, call me."
            ),
            InboundKind::Reply
        );
        for (headers, subject) in [
            (h(&[("Auto-Submitted", "auto-replied")]), "Re: hi"),
            (h(&[("X-Autoreply", "yes")]), "Re: hi"),
            (h(&[]), "Automatic reply: Quick question"),
            (h(&[]), "Out of Office: back Monday"),
        ] {
            assert_eq!(
                classify(&headers, Some("jane@example.com"), subject, ""),
                InboundKind::AutoReply,
                "{subject}"
            );
        }
        assert_eq!(
            classify(
                &h(&[("Auto-Submitted", "no")]),
                Some("jane@example.com"),
                "Re: hi",
                ""
            ),
            InboundKind::Reply
        );
        let ndr = classify(
            &h(&[("X-MS-Exchange-Message-Is-Ndr", "")]),
            Some("postmaster@outlook.com"),
            "Undeliverable: Quick question",
            "Remote server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found'\n\
             Final-Recipient: rfc822; gone@example.com",
        );
        assert_eq!(
            ndr,
            InboundKind::NonDelivery {
                status: Some("5.1.10".into()),
                hard: true,
                recipient: Some("gone@example.com".into())
            }
        );
        let delayed = classify(
            &h(&[(
                "Content-Type",
                "multipart/report; report-type=delivery-status; boundary=x",
            )]),
            Some("MAILER-DAEMON@mx.example.com"),
            "Delivery Status Notification (Delay)",
            "Status: 4.4.7 (delivery temporarily suspended) v1.2.3",
        );
        assert!(
            matches!(delayed, InboundKind::NonDelivery { hard: false, ref status, .. } if status.as_deref() == Some("4.4.7"))
        );
    }

    #[test]
    fn graph_and_imap_share_the_auto_reply_rules() {
        // Subjects and headers only the IMAP classifier knew before it was shared.
        for (headers, subject) in [
            (h(&[]), "Risposta automatica: Quick question"),
            (h(&[]), "Automatisch antwoord: Quick question"),
            (h(&[("X-Autorespond-Tag", "ooo")]), "Re: hi"),
            (h(&[("Precedence", "auto_reply")]), "Re: hi"),
        ] {
            assert_eq!(
                classify(&headers, Some("jane@example.com"), subject, ""),
                InboundKind::AutoReply,
                "{subject} {headers:?}"
            );
            let raw = format!(
                "From: jane@example.com\r\nSubject: {subject}\r\n{}In-Reply-To: <engager.1.abcdef@acme.example>\r\n\r\nHi\r\n",
                headers
                    .iter()
                    .map(|(n, v)| format!("{n}: {v}\r\n"))
                    .collect::<String>()
            );
            assert!(
                matches!(
                    crate::inbound::classify(raw.as_bytes()).kind,
                    crate::inbound::InboundKind::AutoReply { .. }
                ),
                "{subject}"
            );
        }
    }

    #[test]
    fn enhanced_status_codes_are_not_versions_or_ips() {
        assert_eq!(enhanced_status("version 1.4.5.1 at 10.5.1.1"), None);
        assert_eq!(enhanced_status("550 5.7.1 rejected"), Some("5.7.1".into()));
        assert_eq!(enhanced_status("(4.2.2)"), Some("4.2.2".into()));
    }

    #[test]
    fn references_and_delivery_ids() {
        let message = GraphMessage {
            id: "AAMk1".into(),
            internet_message_id: Some("<r@example.com>".into()),
            conversation_id: Some("conv-1".into()),
            received_date_time: None,
            sent_date_time: None,
            subject: Some("RE: hi".into()),
            from: None,
            sender: None,
            body: None,
            internet_message_headers: Some(vec![
                Header {
                    name: "In-Reply-To".into(),
                    value: "<ours@acme.example>".into(),
                },
                Header {
                    name: "References".into(),
                    value: "<first@acme.example>\r\n <ours@acme.example>".into(),
                },
            ]),
        }
        .into_inbound();
        assert_eq!(message.in_reply_to.as_deref(), Some("<ours@acme.example>"));
        assert_eq!(
            message.referenced_message_ids(),
            vec!["<ours@acme.example>", "<first@acme.example>"]
        );
        assert_eq!(
            quoted_delivery_id("...\nX-Engager-Delivery: 42\nSubject"),
            Some(DeliveryId(42))
        );
    }
}
