//! What comes back to a mailbox, classified from the raw RFC 5322 message: a reply to one of
//! our sends, an automatic reply, a bounce (delivery status notification) or a complaint —
//! or something unrelated. Pure: bytes in, an [`Inbound`] out; the engine turns it into events.
//!
//! Order matters and is deliberate: a DSN is checked first (DSNs often carry
//! `Auto-Submitted: auto-replied` too), then an ARF complaint, then auto-reply signals, and
//! only then a plain reply, so an out-of-office that quotes our Message-ID never stops a
//! sequence and a bounce is never mistaken for a reply.
//!
//! Our Message-IDs look like `<engager.{delivery_id}.{hash}@{domain}>` (see
//! [`crate::email::message_id`]); a referenced id of that shape is an [`OurReference`]. The
//! caller confirms it against the ledger before acting on it.

use chrono::{DateTime, TimeZone, Utc};
use engager_domain::DeliveryId;
use mail_parser::{Message, MessageParser, MimeHeaders, PartType};

/// One of our Message-IDs found in an inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OurReference {
    /// The Message-ID with angle brackets, as we sent it.
    pub message_id: String,
    /// The delivery it names.
    pub delivery_id: DeliveryId,
}

/// How bad a bounce is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BounceSeverity {
    /// Permanent (5.x.x, or `Action: failed` without a status): end the lead, suppress the
    /// address.
    Hard,
    /// Temporary (4.x.x, `Action: delayed`, or a report we cannot read with certainty).
    Soft,
}

/// A delivery status notification about one of our messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounce {
    /// Hard or soft.
    pub severity: BounceSeverity,
    /// Our message it is about, when the returned headers name it.
    pub reference: Option<OurReference>,
    /// The recipient that failed (`Final-Recipient`).
    pub recipient: Option<String>,
    /// The enhanced status code (`5.1.1`).
    pub status: Option<String>,
    /// The DSN action (`failed`, `delayed`).
    pub action: Option<String>,
    /// The remote server's words (`Diagnostic-Code`).
    pub diagnostic: Option<String>,
}

/// What an inbound message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundKind {
    /// A person answered one of our messages: the sequence stops.
    Reply {
        /// The message it answers.
        reference: OurReference,
    },
    /// An out-of-office or other automatic answer: recorded, the sequence goes on.
    AutoReply {
        /// The message it answers, when it says.
        reference: Option<OurReference>,
        /// What gave it away (`Auto-Submitted: auto-replied`, `subject: Out of office`).
        signal: String,
    },
    /// A bounce.
    Bounce(Bounce),
    /// A spam complaint (ARF feedback report, RFC 5965).
    Complaint {
        /// Our message it is about.
        reference: Option<OurReference>,
    },
    /// Nothing to do with our sends.
    Unrelated,
}

/// A classified inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// Its own Message-ID (with angle brackets), for de-duplication.
    pub message_id: Option<String>,
    /// The sender's address.
    pub from: Option<String>,
    /// Subject.
    pub subject: Option<String>,
    /// Its Date header.
    pub date: Option<DateTime<Utc>>,
    /// What it is.
    pub kind: InboundKind,
    /// Its plain-text body (the first 4,000 characters), for classifying a reply.
    pub text: Option<String>,
}

/// Subject prefixes and phrases of automatic replies, lower-case, in the languages our
/// senders meet most.
const AUTO_REPLY_SUBJECTS: &[&str] = &[
    "out of office",
    "out of the office",
    "automatic reply",
    "auto reply",
    "auto-reply",
    "autoreply",
    "auto response",
    "auto-response",
    "abwesenheitsnotiz",
    "automatische antwort",
    "abwesend",
    "réponse automatique",
    "reponse automatique",
    "absence du bureau",
    "respuesta automática",
    "respuesta automatica",
    "fuera de la oficina",
    "risposta automatica",
    "fuori sede",
    "automatisch antwoord",
    "afwezigheidsbericht",
    "resposta automática",
    "autosvar",
];

/// Subjects of bounces that do not come as RFC 3464 reports.
const BOUNCE_SUBJECTS: &[&str] = &[
    "undeliverable",
    "undelivered mail",
    "delivery status notification",
    "mail delivery failed",
    "delivery failure",
    "returned mail",
    "failure notice",
    "mail delivery subsystem",
    "unzustellbar",
    "non remis",
];

/// Classifies a raw message.
pub fn classify(raw: &[u8]) -> Inbound {
    let Some(message) = MessageParser::default().parse(raw) else {
        return Inbound {
            message_id: None,
            from: None,
            subject: None,
            date: None,
            kind: InboundKind::Unrelated,
            text: None,
        };
    };
    let kind = kind_of(&message, raw);
    Inbound {
        message_id: message.message_id().map(|id| format!("<{id}>")),
        from: message
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .map(str::to_owned),
        subject: message.subject().map(str::to_owned),
        date: message
            .date()
            .and_then(|d| Utc.timestamp_opt(d.to_timestamp(), 0).single()),
        kind,
        text: message
            .body_text(0)
            .map(|t| t.chars().take(4_000).collect()),
    }
}

fn kind_of(message: &Message<'_>, raw: &[u8]) -> InboundKind {
    let report_type = message
        .content_type()
        .filter(|ct| {
            ct.ctype().eq_ignore_ascii_case("multipart")
                && ct
                    .subtype()
                    .is_some_and(|s| s.eq_ignore_ascii_case("report"))
        })
        .and_then(|ct| ct.attribute("report-type"))
        .map(str::to_ascii_lowercase);
    match report_type.as_deref() {
        Some("delivery-status") | Some("global-delivery-status") => {
            if let Some(bounce) = dsn_bounce(message) {
                return InboundKind::Bounce(bounce);
            }
            // A success notice (Action: delivered/relayed/expanded) is not a bounce.
            return InboundKind::Unrelated;
        }
        Some("feedback-report") => {
            return InboundKind::Complaint {
                reference: returned_reference(message).or_else(|| scan_reference(raw)),
            };
        }
        _ => {}
    }
    if let Some(bounce) = legacy_bounce(message, raw) {
        return InboundKind::Bounce(bounce);
    }
    let reference = replied_reference(message);
    if let Some(signal) = auto_reply_signal(message) {
        return InboundKind::AutoReply { reference, signal };
    }
    match reference {
        Some(reference) => InboundKind::Reply { reference },
        None => InboundKind::Unrelated,
    }
}

fn header<'a>(message: &'a Message<'_>, name: &'static str) -> Option<&'a str> {
    message.header_raw(name).map(str::trim)
}

/// The first of our Message-IDs in `In-Reply-To`, else the last one in `References`.
fn replied_reference(message: &Message<'_>) -> Option<OurReference> {
    if let Some(found) = header(message, "In-Reply-To").and_then(|v| our_ids(v).into_iter().next())
    {
        return Some(found);
    }
    header(message, "References").and_then(|v| our_ids(v).into_iter().next_back())
}

fn auto_reply_signal(message: &Message<'_>) -> Option<String> {
    auto_reply_signal_of(
        |name| header(message, name).map(str::to_owned),
        message.subject(),
    )
}

/// What gives a message away as an automatic answer (out of office, auto-responder, list
/// traffic), from its headers (looked up by name) and subject: the one rule set for raw
/// messages read over IMAP and for Graph's header lists.
pub fn auto_reply_signal_of(
    header: impl Fn(&'static str) -> Option<String>,
    subject: Option<&str>,
) -> Option<String> {
    if let Some(value) = header("Auto-Submitted") {
        let value = value.trim();
        let token = value.split(';').next().unwrap_or("").trim();
        if !token.eq_ignore_ascii_case("no") && !token.is_empty() {
            return Some(format!("Auto-Submitted: {token}"));
        }
    }
    for name in ["X-Autoreply", "X-Autorespond", "X-Autorespond-Tag"] {
        if let Some(value) = header(name) {
            let value = value.trim();
            if !value.eq_ignore_ascii_case("no") {
                return Some(format!("{name}: {value}"));
            }
        }
    }
    if let Some(value) = header("Precedence") {
        let value = value.trim().to_ascii_lowercase();
        // Bulk and junk traffic is never a person's answer either.
        if matches!(value.as_str(), "auto_reply" | "bulk" | "junk") {
            return Some(format!("Precedence: {value}"));
        }
    }
    if header("X-Autogenerated").is_some_and(|v| v.trim().eq_ignore_ascii_case("reply")) {
        return Some("X-Autogenerated: Reply".into());
    }
    let subject = subject?.to_lowercase();
    AUTO_REPLY_SUBJECTS
        .iter()
        .find(|p| subject.contains(*p))
        .map(|p| format!("subject: {p}"))
}

/// Every one of our Message-IDs in a header value, in order.
pub fn our_ids(value: &str) -> Vec<OurReference> {
    value
        .split('<')
        .skip(1)
        .filter_map(|part| part.split_once('>').map(|(id, _)| id.trim()))
        .filter_map(parse_our_id)
        .collect()
}

/// `engager.{delivery}.{hex}@{domain}` → the delivery id.
fn parse_our_id(id: &str) -> Option<OurReference> {
    let (local, domain) = id.split_once('@')?;
    let rest = local.strip_prefix("engager.")?;
    let (delivery, hash) = rest.split_once('.')?;
    if domain.is_empty()
        || hash.is_empty()
        || !hash.chars().all(|c| c.is_ascii_hexdigit())
        || !delivery.chars().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    Some(OurReference {
        message_id: format!("<{id}>"),
        delivery_id: DeliveryId(delivery.parse().ok()?),
    })
}

/// The first of our Message-IDs anywhere in the raw message (last resort for bounces that
/// quote the original in free text).
fn scan_reference(raw: &[u8]) -> Option<OurReference> {
    let text = String::from_utf8_lossy(raw);
    let mut rest: &str = &text;
    while let Some(at) = rest.find("<engager.") {
        rest = &rest[at..];
        if let Some(found) = our_ids(rest).into_iter().next() {
            if rest.starts_with(found.message_id.as_str()) {
                return Some(found);
            }
        }
        rest = &rest[1..];
    }
    None
}

fn is_type(part: &mail_parser::MessagePart<'_>, ctype: &str, subtypes: &[&str]) -> bool {
    part.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case(ctype)
            && ct
                .subtype()
                .is_some_and(|s| subtypes.iter().any(|x| s.eq_ignore_ascii_case(x)))
    })
}

/// Our reference from the returned original: a `message/rfc822` part, or
/// `text/rfc822-headers`.
fn returned_reference(message: &Message<'_>) -> Option<OurReference> {
    for part in &message.parts {
        if let PartType::Message(original) = &part.body {
            if let Some(found) = original_reference(original) {
                return Some(found);
            }
        }
        if is_type(part, "text", &["rfc822-headers"])
            || is_type(part, "message", &["global-headers", "rfc822-headers"])
        {
            if let Some(found) = MessageParser::default()
                .parse(part.contents())
                .and_then(|h| original_reference(&h))
            {
                return Some(found);
            }
        }
    }
    None
}

fn original_reference(original: &Message<'_>) -> Option<OurReference> {
    header(original, "Message-ID")
        .and_then(|v| our_ids(v).into_iter().next())
        .or_else(|| {
            // Our delivery header, when a relay rewrote the Message-ID.
            let id: i64 = header(original, "X-Engager-Delivery")?.parse().ok()?;
            Some(OurReference {
                message_id: String::new(),
                delivery_id: DeliveryId(id),
            })
        })
}

/// Fields of a `message/delivery-status` body: blocks separated by blank lines, each a list of
/// (lower-case name, value) with folded lines joined.
fn dsn_blocks(body: &str) -> Vec<Vec<(String, String)>> {
    let mut blocks = Vec::new();
    let mut current: Vec<(String, String)> = Vec::new();
    for line in body.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                blocks.push(std::mem::take(&mut current));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = current.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            current.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    if !current.is_empty() {
        blocks.push(current);
    }
    blocks
}

fn field<'a>(block: &'a [(String, String)], name: &str) -> Option<&'a str> {
    block
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// `rfc822; jane@example.com` → `jane@example.com`.
fn typed_value(value: &str) -> String {
    value
        .split_once(';')
        .map_or(value, |(_, v)| v)
        .trim()
        .to_owned()
}

fn severity_of(status: Option<&str>, action: Option<&str>) -> Option<BounceSeverity> {
    match status.and_then(|s| s.trim().chars().next()) {
        Some('5') => return Some(BounceSeverity::Hard),
        Some('4') => return Some(BounceSeverity::Soft),
        _ => {}
    }
    match action.map(str::to_ascii_lowercase).as_deref() {
        Some("failed") => Some(BounceSeverity::Hard),
        Some("delayed") => Some(BounceSeverity::Soft),
        _ => None,
    }
}

/// An RFC 3464 report: the worst per-recipient outcome, with the original's reference.
fn dsn_bounce(message: &Message<'_>) -> Option<Bounce> {
    let status_part = message
        .parts
        .iter()
        .find(|p| is_type(p, "message", &["delivery-status", "global-delivery-status"]))?;
    let body = String::from_utf8_lossy(status_part.contents()).into_owned();
    let mut found: Option<Bounce> = None;
    // The first block describes the report; the others describe one recipient each.
    for block in dsn_blocks(&body).iter().skip(1) {
        let action = field(block, "action");
        if action.is_some_and(|a| {
            matches!(
                a.to_ascii_lowercase().as_str(),
                "delivered" | "relayed" | "expanded"
            )
        }) {
            continue;
        }
        let status = field(block, "status")
            .map(|s| s.split_whitespace().next().unwrap_or_default().to_owned());
        let Some(severity) = severity_of(status.as_deref(), action) else {
            continue;
        };
        let candidate = Bounce {
            severity,
            reference: None,
            recipient: field(block, "final-recipient")
                .or_else(|| field(block, "original-recipient"))
                .map(typed_value),
            status,
            action: action.map(str::to_ascii_lowercase),
            diagnostic: field(block, "diagnostic-code").map(typed_value),
        };
        let worse = match &found {
            None => true,
            Some(b) => b.severity == BounceSeverity::Soft && severity == BounceSeverity::Hard,
        };
        if worse {
            found = Some(candidate);
        }
    }
    let mut bounce = found?;
    bounce.reference = returned_reference(message);
    Some(bounce)
}

/// A bounce that is not an RFC 3464 report (old qmail, some gateways): recognised by the
/// sender and subject; hard only when a 5.x.x status says so.
fn legacy_bounce(message: &Message<'_>, raw: &[u8]) -> Option<Bounce> {
    let from = message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let local = from.split('@').next().unwrap_or_default();
    let daemon = matches!(local, "mailer-daemon" | "postmaster" | "mail-daemon");
    let subject = message.subject().unwrap_or_default().to_lowercase();
    if !daemon || !BOUNCE_SUBJECTS.iter().any(|p| subject.contains(p)) {
        return None;
    }
    let text = message
        .body_text(0)
        .map(|t| t.into_owned())
        .unwrap_or_default();
    let status = enhanced_status(&text);
    let severity = severity_of(status.as_deref(), None).unwrap_or(BounceSeverity::Soft);
    Some(Bounce {
        severity,
        reference: returned_reference(message).or_else(|| scan_reference(raw)),
        recipient: None,
        status,
        action: None,
        diagnostic: None,
    })
}

/// The first `4.x.x` / `5.x.x` enhanced status code in a text.
pub(crate) fn enhanced_status(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|token| {
            let parts: Vec<&str> = token.split('.').collect();
            parts.len() == 3
                && matches!(parts[0], "4" | "5")
                && (1..=3).contains(&parts[1].len())
                && (1..=3).contains(&parts[2].len())
                && parts[1..]
                    .iter()
                    .all(|p| p.chars().all(|c| c.is_ascii_digit()))
        })
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "<engager.42.a1b2c3d4e5f6@acme.example>";

    fn crlf(text: &str) -> Vec<u8> {
        text.replace("\r\n", "\n")
            .replace('\n', "\r\n")
            .into_bytes()
    }

    fn reply(extra_headers: &str, subject: &str) -> Vec<u8> {
        crlf(&format!(
            "From: Jane Doe <jane@example.com>\n\
             To: maya@acme.example\n\
             Subject: {subject}\n\
             Date: Tue, 03 Mar 2026 10:00:00 +0000\n\
             Message-ID: <CAF123@mail.example.com>\n\
             In-Reply-To: {OURS}\n\
             References: <older@example.com> {OURS}\n\
             {extra_headers}\
             Content-Type: text/plain; charset=utf-8\n\
             \n\
             Sounds interesting, let's talk.\n"
        ))
    }

    fn dsn(action: &str, status: &str, returned: &str) -> Vec<u8> {
        crlf(&format!(
            "From: Mail Delivery System <MAILER-DAEMON@mx.acme.example>\n\
             To: bounces@acme.example\n\
             Subject: Undelivered Mail Returned to Sender\n\
             Date: Tue, 03 Mar 2026 10:00:00 +0000\n\
             Message-ID: <dsn.1@mx.acme.example>\n\
             Auto-Submitted: auto-replied\n\
             MIME-Version: 1.0\n\
             Content-Type: multipart/report; report-type=delivery-status;\n\
             \tboundary=\"BOUNDARY\"\n\
             \n\
             --BOUNDARY\n\
             Content-Type: text/plain\n\
             \n\
             I'm sorry to have to inform you that your message could not be delivered.\n\
             \n\
             --BOUNDARY\n\
             Content-Type: message/delivery-status\n\
             \n\
             Reporting-MTA: dns; mx.acme.example\n\
             Arrival-Date: Tue, 03 Mar 2026 09:59:58 +0000\n\
             \n\
             Final-Recipient: rfc822; jane@example.com\n\
             Original-Recipient: rfc822;jane@example.com\n\
             Action: {action}\n\
             Status: {status}\n\
             Diagnostic-Code: smtp; 550 5.1.1 <jane@example.com>: Recipient address\n\
             \x20rejected: User unknown\n\
             \n\
             --BOUNDARY\n\
             {returned}\n\
             --BOUNDARY--\n"
        ))
    }

    fn returned_headers() -> String {
        format!(
            "Content-Type: text/rfc822-headers\n\
             \n\
             From: Maya Chen <maya@acme.example>\n\
             To: jane@example.com\n\
             Subject: Quick question\n\
             Message-ID: {OURS}\n\
             X-Engager-Delivery: 42\n"
        )
    }

    fn returned_message() -> String {
        format!(
            "Content-Type: message/rfc822\n\
             \n\
             From: Maya Chen <maya@acme.example>\n\
             To: jane@example.com\n\
             Subject: Quick question\n\
             Message-ID: {OURS}\n\
             \n\
             Hi Jane\n"
        )
    }

    fn our_ref() -> OurReference {
        OurReference {
            message_id: OURS.into(),
            delivery_id: DeliveryId(42),
        }
    }

    #[test]
    fn a_reply_is_matched_to_our_message_id() {
        let inbound = classify(&reply("", "Re: Quick question"));
        assert_eq!(
            inbound.kind,
            InboundKind::Reply {
                reference: our_ref()
            }
        );
        assert_eq!(inbound.from.as_deref(), Some("jane@example.com"));
        assert_eq!(
            inbound.message_id.as_deref(),
            Some("<CAF123@mail.example.com>")
        );
        assert_eq!(
            inbound.date.unwrap().to_rfc3339(),
            "2026-03-03T10:00:00+00:00"
        );
    }

    #[test]
    fn references_alone_are_enough_and_foreign_ids_are_not() {
        let raw = crlf(&format!(
            "From: jane@example.com\nSubject: Re: hi\nReferences: <a@x> {OURS} <b@y>\n\nok\n"
        ));
        assert_eq!(
            classify(&raw).kind,
            InboundKind::Reply {
                reference: our_ref()
            }
        );
        let raw =
            crlf("From: jane@example.com\nSubject: hello\nIn-Reply-To: <engager.x.zz@a>\n\nhi\n");
        assert_eq!(classify(&raw).kind, InboundKind::Unrelated);
        let raw = crlf("From: jane@example.com\nSubject: hello\n\nA new thread.\n");
        assert_eq!(classify(&raw).kind, InboundKind::Unrelated);
    }

    #[test]
    fn auto_replies_are_recognised_by_header_and_by_subject() {
        let cases = [
            (
                "Auto-Submitted: auto-replied\n",
                "Re: Quick question",
                "Auto-Submitted: auto-replied",
            ),
            (
                "X-Autoreply: yes\n",
                "Re: Quick question",
                "X-Autoreply: yes",
            ),
            (
                "X-Autorespond: Out\n",
                "Re: Quick question",
                "X-Autorespond: Out",
            ),
            (
                "Precedence: auto_reply\n",
                "Re: Quick question",
                "Precedence: auto_reply",
            ),
            (
                "",
                "Out of Office: Quick question",
                "subject: out of office",
            ),
            (
                "",
                "Automatic reply: Quick question",
                "subject: automatic reply",
            ),
            (
                "",
                "Abwesenheitsnotiz: Quick question",
                "subject: abwesenheitsnotiz",
            ),
            (
                "",
                "Réponse automatique : Quick question",
                "subject: réponse automatique",
            ),
        ];
        for (headers, subject, signal) in cases {
            let inbound = classify(&reply(headers, subject));
            assert_eq!(
                inbound.kind,
                InboundKind::AutoReply {
                    reference: Some(our_ref()),
                    signal: signal.into()
                },
                "{headers:?} {subject:?}"
            );
        }
        // `Auto-Submitted: no` is a person.
        assert!(matches!(
            classify(&reply("Auto-Submitted: no\n", "Re: Quick question")).kind,
            InboundKind::Reply { .. }
        ));
    }

    #[test]
    fn dsns_are_hard_or_soft_and_name_our_message() {
        let hard = classify(&dsn("failed", "5.1.1", &returned_headers()));
        assert_eq!(
            hard.kind,
            InboundKind::Bounce(Bounce {
                severity: BounceSeverity::Hard,
                reference: Some(our_ref()),
                recipient: Some("jane@example.com".into()),
                status: Some("5.1.1".into()),
                action: Some("failed".into()),
                diagnostic: Some(
                    "550 5.1.1 <jane@example.com>: Recipient address rejected: User unknown".into()
                ),
            })
        );
        let InboundKind::Bounce(soft) =
            classify(&dsn("delayed", "4.4.1", &returned_message())).kind
        else {
            panic!("not a bounce")
        };
        assert_eq!(soft.severity, BounceSeverity::Soft);
        assert_eq!(soft.reference, Some(our_ref()));
        // A 4.x.x status after the MTA gave up is still a soft bounce: the address may work.
        let InboundKind::Bounce(gave_up) =
            classify(&dsn("failed", "4.4.7", &returned_headers())).kind
        else {
            panic!("not a bounce")
        };
        assert_eq!(gave_up.severity, BounceSeverity::Soft);
        // Success notices are not bounces.
        assert_eq!(
            classify(&dsn("delivered", "2.0.0", &returned_headers())).kind,
            InboundKind::Unrelated
        );
    }

    #[test]
    fn bounces_without_a_report_fall_back_to_sender_subject_and_status() {
        let raw = crlf(&format!(
            "From: MAILER-DAEMON@mail.example.net\nSubject: failure notice\n\n\
             Hi. This is the qmail-send program.\n<jane@example.com>:\n\
             Sorry, no mailbox here by that name. (#5.1.1)\n\n--- Below this line is a copy of the message.\n\n\
             Message-ID: {OURS}\nSubject: Quick question\n"
        ));
        let InboundKind::Bounce(bounce) = classify(&raw).kind else {
            panic!("not a bounce")
        };
        assert_eq!(bounce.severity, BounceSeverity::Hard);
        assert_eq!(bounce.status.as_deref(), Some("5.1.1"));
        assert_eq!(bounce.reference, Some(our_ref()));
    }

    #[test]
    fn arf_reports_are_complaints() {
        let raw = crlf(&format!(
            "From: feedback@mail.example.com\nSubject: complaint\nMIME-Version: 1.0\n\
             Content-Type: multipart/report; report-type=feedback-report; boundary=\"B\"\n\n\
             --B\nContent-Type: text/plain\n\nA complaint.\n\
             --B\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\nUser-Agent: x/1.0\nVersion: 1\n\n\
             --B\n{}\n--B--\n",
            returned_message()
        ));
        assert_eq!(
            classify(&raw).kind,
            InboundKind::Complaint {
                reference: Some(our_ref())
            }
        );
    }

    #[test]
    fn our_message_ids_parse_and_others_do_not() {
        let refs = our_ids("<engager.7.0a1b@acme.example> <x@y> <engager.8.ff@a.b>");
        assert_eq!(
            refs.iter().map(|r| r.delivery_id).collect::<Vec<_>>(),
            vec![DeliveryId(7), DeliveryId(8)]
        );
        assert!(our_ids("<engager.7.zz@acme.example>").is_empty());
        assert!(our_ids("<engager..ab@acme.example>").is_empty());
        assert!(our_ids("engager.7.ab@acme.example").is_empty());
        // The sender's own function produces ids we recognise.
        let id = crate::email::message_id(DeliveryId(9), "intro", "acme.example");
        assert_eq!(our_ids(&id)[0].delivery_id, DeliveryId(9));
    }
}
