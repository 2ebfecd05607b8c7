//! Twilio webhooks, as pure functions: signature verification, status callbacks and
//! inbound messages. The HTTP endpoints that call these live in the server.
//!
//! Invariants:
//! - A request is trusted only when `X-Twilio-Signature` equals
//!   Base64(HMAC-SHA1(auth token, URL + every POST parameter sorted by name, name then
//!   value)), compared in constant time, with the URL exactly as Twilio called it (the
//!   https default port may or may not be written; both forms are tried, as Twilio's SDKs do).
//! - Statuses only move forward: queued < sending < sent < delivered/undelivered/failed; a
//!   terminal status is never replaced by a late earlier one (a late `sent` never
//!   overwrites `delivered`), and the first terminal status wins.
//! - Inbound keywords follow Twilio's defaults on the whole trimmed body, any case: STOP,
//!   STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT opt out; START, UNSTOP opt back in; HELP, INFO
//!   ask for help; anything else is a reply. Twilio's `OptOutType`, when present, wins.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The TwiML answer that sends no reply.
pub const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>";
/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Twilio-Signature";

/// Why a webhook was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The signature header is missing or does not match.
    #[error("the X-Twilio-Signature header is missing or does not match")]
    BadSignature,
    /// A required parameter is missing.
    #[error("the webhook has no {0} parameter")]
    Missing(&'static str),
    /// The status is not one Twilio documents.
    #[error("unknown message status {0:?}")]
    UnknownStatus(String),
}

/// Decodes an `application/x-www-form-urlencoded` body into parameters, in order.
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn mac(auth_token: &str) -> Hmac<Sha1> {
    // HMAC accepts keys of any length; this cannot fail.
    Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes keys of any length")
}

fn feed(mac: &mut Hmac<Sha1>, url: &str, params: &[(String, String)]) {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    // By name, then by value for repeated names, each distinct pair once, as Twilio's
    // reference validator (twilio-python's RequestValidator) does.
    sorted.sort();
    sorted.dedup();
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
}

/// The signature Twilio computes for a form POST to `url` with `params`.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut mac = mac(auth_token);
    feed(&mut mac, url, params);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The URL with and without its scheme's default port, the forms Twilio may have signed.
fn url_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_owned()];
    if let Ok(parsed) = url::Url::parse(url) {
        let default = match parsed.scheme() {
            "https" => 443,
            "http" => 80,
            _ => return variants,
        };
        let authority_end = url.find("://").map(|i| i + 3).and_then(|start| {
            url[start..]
                .find(['/', '?', '#'])
                .map(|i| start + i)
                .or(Some(url.len()))
        });
        if let (Some(end), Some(host)) = (authority_end, parsed.host_str()) {
            let (head, tail) = url.split_at(end);
            let with_port = format!(":{default}");
            if let Some(stripped) = head.strip_suffix(&with_port) {
                variants.push(format!("{stripped}{tail}"));
            } else if head.ends_with(host) {
                variants.push(format!("{head}{with_port}{tail}"));
            }
        }
    }
    variants
}

/// Checks `X-Twilio-Signature` for a form POST to `url` (exactly as configured at Twilio,
/// query included) with the decoded `params`.
pub fn verify_signature(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    header: Option<&str>,
) -> Result<(), WebhookError> {
    let expected = header
        .and_then(|h| {
            base64::engine::general_purpose::STANDARD
                .decode(h.trim())
                .ok()
        })
        .ok_or(WebhookError::BadSignature)?;
    for candidate in url_variants(url) {
        let mut mac = mac(auth_token);
        feed(&mut mac, &candidate, params);
        if mac.verify_slice(&expected).is_ok() {
            return Ok(());
        }
    }
    Err(WebhookError::BadSignature)
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The status of an outbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageStatus {
    /// Accepted by a Messaging Service, no sender picked yet.
    Accepted,
    /// Scheduled for later.
    Scheduled,
    /// Queued at Twilio.
    Queued,
    /// Being sent to the carrier.
    Sending,
    /// Handed to the carrier (not yet delivered).
    Sent,
    /// Some segments delivered.
    PartiallyDelivered,
    /// Delivered to the handset.
    Delivered,
    /// Read (WhatsApp/RCS).
    Read,
    /// The carrier could not deliver it.
    Undelivered,
    /// Twilio could not send it.
    Failed,
    /// Cancelled before sending.
    Canceled,
}

impl MessageStatus {
    /// Parses Twilio's status string.
    pub fn parse(value: &str) -> Result<Self, WebhookError> {
        Ok(match value {
            "accepted" => Self::Accepted,
            "scheduled" => Self::Scheduled,
            "queued" => Self::Queued,
            "sending" => Self::Sending,
            "sent" => Self::Sent,
            "partially_delivered" => Self::PartiallyDelivered,
            "delivered" => Self::Delivered,
            "read" => Self::Read,
            "undelivered" => Self::Undelivered,
            "failed" => Self::Failed,
            "canceled" => Self::Canceled,
            other => return Err(WebhookError::UnknownStatus(other.to_owned())),
        })
    }

    /// Twilio's name for the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Scheduled => "scheduled",
            Self::Queued => "queued",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::PartiallyDelivered => "partially_delivered",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Undelivered => "undelivered",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    /// Whether no later status is expected (except `read` after `delivered`).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Delivered | Self::Read | Self::Undelivered | Self::Failed | Self::Canceled
        )
    }

    /// Whether the message failed to reach the handset.
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Undelivered | Self::Failed | Self::Canceled)
    }

    fn rank(self) -> u8 {
        match self {
            Self::Accepted | Self::Scheduled => 0,
            Self::Queued => 1,
            Self::Sending => 2,
            Self::Sent => 3,
            Self::PartiallyDelivered => 4,
            Self::Delivered | Self::Undelivered | Self::Failed | Self::Canceled => 5,
            Self::Read => 6,
        }
    }

    /// Whether this status, arriving when the message is at `current`, should replace it.
    /// Callbacks arrive out of order; only progress is applied.
    pub fn advances(self, current: Option<MessageStatus>) -> bool {
        let Some(current) = current else {
            return true;
        };
        if current.is_terminal() {
            return current == Self::Delivered && self == Self::Read;
        }
        self.rank() > current.rank()
    }
}

/// A status callback for one of our messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCallback {
    /// The Message SID (our delivery's provider reference).
    pub message_sid: String,
    /// The new status.
    pub status: MessageStatus,
    /// Twilio's error code for failed/undelivered messages (30003, 30007, ...).
    pub error_code: Option<u32>,
    /// The account.
    pub account_sid: Option<String>,
    /// The recipient.
    pub to: Option<String>,
    /// The sender.
    pub from: Option<String>,
}

impl StatusCallback {
    /// Reads a status callback's parameters (lenient: unknown parameters are ignored).
    pub fn from_params(params: &[(String, String)]) -> Result<Self, WebhookError> {
        let message_sid = param(params, "MessageSid")
            .or_else(|| param(params, "SmsSid"))
            .ok_or(WebhookError::Missing("MessageSid"))?;
        let status = param(params, "MessageStatus")
            .or_else(|| param(params, "SmsStatus"))
            .ok_or(WebhookError::Missing("MessageStatus"))?;
        Ok(Self {
            message_sid: message_sid.to_owned(),
            status: MessageStatus::parse(status)?,
            error_code: param(params, "ErrorCode").and_then(|c| c.trim().parse().ok()),
            account_sid: param(params, "AccountSid").map(str::to_owned),
            to: param(params, "To").map(str::to_owned),
            from: param(params, "From").map(str::to_owned),
        })
    }

    /// The key that makes a replayed callback a duplicate.
    pub fn dedupe_key(&self) -> (String, MessageStatus) {
        (self.message_sid.clone(), self.status)
    }
}

/// What an inbound SMS asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundIntent {
    /// Stop messaging this number: suppress it at once.
    OptOut,
    /// Messages are welcome again: record the re-consent.
    OptIn,
    /// The sender asked for help: answer with who we are and how to stop.
    Help,
    /// Anything else: a reply, which stops the lead's sequence.
    Reply,
}

const OPT_OUT_WORDS: &[&str] = &["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"];
const OPT_IN_WORDS: &[&str] = &["START", "UNSTOP"];
const HELP_WORDS: &[&str] = &["HELP", "INFO"];

/// The intent of an inbound body (Twilio's `OptOutType` wins when present).
pub fn inbound_intent(body: &str, opt_out_type: Option<&str>) -> InboundIntent {
    match opt_out_type
        .map(|t| t.trim().to_ascii_uppercase())
        .as_deref()
    {
        Some("STOP") => return InboundIntent::OptOut,
        Some("START") => return InboundIntent::OptIn,
        Some("HELP") => return InboundIntent::Help,
        _ => {}
    }
    let word = body
        .trim()
        .trim_end_matches(['.', '!'])
        .trim()
        .to_uppercase();
    if OPT_OUT_WORDS.contains(&word.as_str()) {
        InboundIntent::OptOut
    } else if OPT_IN_WORDS.contains(&word.as_str()) {
        InboundIntent::OptIn
    } else if HELP_WORDS.contains(&word.as_str()) {
        InboundIntent::Help
    } else {
        InboundIntent::Reply
    }
}

/// An inbound SMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundSms {
    /// Its Message SID.
    pub message_sid: String,
    /// Who wrote (the lead's number).
    pub from: String,
    /// Our number it was sent to.
    pub to: String,
    /// The text.
    pub body: String,
    /// Attached media.
    pub num_media: u32,
    /// What it asks for.
    pub intent: InboundIntent,
}

impl InboundSms {
    /// Reads an inbound message webhook's parameters.
    pub fn from_params(params: &[(String, String)]) -> Result<Self, WebhookError> {
        let message_sid = param(params, "MessageSid")
            .or_else(|| param(params, "SmsMessageSid"))
            .ok_or(WebhookError::Missing("MessageSid"))?;
        let from = param(params, "From").ok_or(WebhookError::Missing("From"))?;
        let to = param(params, "To").ok_or(WebhookError::Missing("To"))?;
        let body = param(params, "Body").unwrap_or_default();
        Ok(Self {
            message_sid: message_sid.to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
            body: body.to_owned(),
            num_media: param(params, "NumMedia")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            intent: inbound_intent(body, param(params, "OptOutType")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Twilio's published example (webhooks security docs and SDK tests).
    const TOKEN: &str = "12345";
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const EXPECTED: &str = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";

    fn example() -> Vec<(String, String)> {
        // Deliberately unsorted: the signature sorts.
        p(&[
            ("To", "+18005551212"),
            ("CallSid", "CA1234567890ABCDE"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("Caller", "+12349013030"),
        ])
    }

    #[test]
    fn the_published_vector_signs_and_verifies() {
        assert_eq!(signature(TOKEN, URL, &example()), EXPECTED);
        assert_eq!(
            verify_signature(TOKEN, URL, &example(), Some(EXPECTED)),
            Ok(())
        );
        // Twilio may have signed the URL with the explicit default port.
        assert_eq!(
            verify_signature(
                TOKEN,
                "https://mycompany.com:443/myapp.php?foo=1&bar=2",
                &example(),
                Some(EXPECTED)
            ),
            Ok(())
        );
    }

    #[test]
    fn tampering_is_refused() {
        let mut tampered = example();
        tampered[2].1 = "1235".into();
        assert_eq!(
            verify_signature(TOKEN, URL, &tampered, Some(EXPECTED)),
            Err(WebhookError::BadSignature)
        );
        let mut extra = example();
        extra.push(("Body".into(), "STOP".into()));
        assert!(verify_signature(TOKEN, URL, &extra, Some(EXPECTED)).is_err());
        for url in [
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            "http://mycompany.com/myapp.php?foo=1&bar=2",
            "https://evil.example/myapp.php?foo=1&bar=2",
            "https://mycompany.com/myapp.php",
        ] {
            assert!(
                verify_signature(TOKEN, url, &example(), Some(EXPECTED)).is_err(),
                "{url}"
            );
        }
        assert!(verify_signature("54321", URL, &example(), Some(EXPECTED)).is_err());
        assert!(verify_signature(TOKEN, URL, &example(), None).is_err());
        assert!(verify_signature(TOKEN, URL, &example(), Some("not base64!")).is_err());
    }

    #[test]
    fn repeated_parameters_sign_each_value_in_order() {
        let params = p(&[("MediaUrl", "b"), ("MediaUrl", "a")]);
        let sig = signature("t", "https://x.example/hook", &params);
        let reordered = p(&[("MediaUrl", "a"), ("MediaUrl", "b")]);
        assert_eq!(
            verify_signature("t", "https://x.example/hook", &reordered, Some(&sig)),
            Ok(())
        );
    }

    #[test]
    fn form_bodies_decode() {
        assert_eq!(
            parse_form(b"Body=Hello+there%21&From=%2B14155550100"),
            p(&[("Body", "Hello there!"), ("From", "+14155550100")])
        );
    }

    #[test]
    fn statuses_only_move_forward() {
        use MessageStatus::*;
        let cases = [
            (None, Queued, true),
            (Some(Queued), Sent, true),
            (Some(Sent), Delivered, true),
            (Some(Delivered), Sent, false),
            (Some(Delivered), Queued, false),
            (Some(Sent), Queued, false),
            (Some(Sent), Sent, false),
            (Some(Sent), Undelivered, true),
            (Some(Queued), Failed, true),
            (Some(Failed), Delivered, false),
            (Some(Undelivered), Sent, false),
            (Some(Delivered), Undelivered, false),
            (Some(Delivered), Read, true),
            (Some(Accepted), Queued, true),
        ];
        for (current, incoming, expected) in cases {
            assert_eq!(
                incoming.advances(current),
                expected,
                "{current:?} then {incoming:?}"
            );
        }
        // Applying a shuffled stream keeps the most advanced status.
        let mut state = None;
        for s in [Sent, Queued, Delivered, Sent, Sending] {
            if s.advances(state) {
                state = Some(s);
            }
        }
        assert_eq!(state, Some(Delivered));
    }

    #[test]
    fn status_callbacks_parse_leniently() {
        let callback = StatusCallback::from_params(&p(&[
            ("MessageSid", "SM1"),
            ("MessageStatus", "undelivered"),
            ("ErrorCode", "30007"),
            ("RawDlrDoneDate", "2401010000"),
        ]))
        .unwrap();
        assert_eq!(callback.status, MessageStatus::Undelivered);
        assert_eq!(callback.error_code, Some(30007));
        let legacy =
            StatusCallback::from_params(&p(&[("SmsSid", "SM2"), ("SmsStatus", "sent")])).unwrap();
        assert_eq!(legacy.dedupe_key(), ("SM2".to_owned(), MessageStatus::Sent));
        assert_eq!(
            StatusCallback::from_params(&p(&[
                ("MessageSid", "SM3"),
                ("MessageStatus", "teleported")
            ])),
            Err(WebhookError::UnknownStatus("teleported".into()))
        );
        assert_eq!(
            StatusCallback::from_params(&p(&[("MessageStatus", "sent")])),
            Err(WebhookError::Missing("MessageSid"))
        );
    }

    #[test]
    fn keywords() {
        use InboundIntent::*;
        let cases = [
            ("STOP", OptOut),
            ("stop", OptOut),
            ("  Stop.  ", OptOut),
            ("STOPALL", OptOut),
            ("unsubscribe", OptOut),
            ("Cancel", OptOut),
            ("END", OptOut),
            ("quit!", OptOut),
            ("START", OptIn),
            ("unstop", OptIn),
            ("HELP", Help),
            ("info", Help),
            ("YES", Reply),
            ("stop please", Reply),
            ("Sounds good, call me tomorrow", Reply),
            ("", Reply),
        ];
        for (body, expected) in cases {
            assert_eq!(inbound_intent(body, None), expected, "{body:?}");
        }
        // Advanced Opt-Out custom keywords arrive with OptOutType.
        assert_eq!(inbound_intent("ARRET", Some("STOP")), OptOut);
        let inbound = InboundSms::from_params(&p(&[
            ("MessageSid", "SM9"),
            ("From", "+14155550100"),
            ("To", "+14155550123"),
            ("Body", "Stop"),
            ("NumMedia", "0"),
        ]))
        .unwrap();
        assert_eq!(inbound.intent, OptOut);
    }
}
