//! Graph error responses, classified for the dispatcher.
//!
//! Graph's body is `{"error":{"code","message","innerError":{...}}}`; clients branch on
//! `code` (the message is not stable). The classes:
//! - throttling and quota (429, 503, `ApplicationThrottled`/`MailboxConcurrency`,
//!   `ErrorQuotaExceeded`, ...) → transient, with the `Retry-After` Graph sent;
//! - refused credentials or permissions (401 after one token refresh, 403 access denied),
//!   an unknown mailbox → configuration;
//! - a recipient or message Graph will never accept (`ErrorInvalidRecipients`, other 4xx)
//!   → permanent;
//! - a server error (500, 502, 504) answering the `/send` request → ambiguous, because the
//!   message may be on its way; the same answering any other request → transient.

use reqwest::StatusCode;
use serde::Deserialize;

use crate::http;
use crate::DeliveryError;

/// The request a response answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Creating the draft: nothing is sent yet.
    CreateDraft,
    /// `/send`: the request that makes Exchange send.
    SendDraft,
    /// Reading the mailbox.
    Read,
}

impl Stage {
    fn describe(self) -> &'static str {
        match self {
            Stage::CreateDraft => "creating the draft",
            Stage::SendDraft => "sending the draft",
            Stage::Read => "reading the mailbox",
        }
    }
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    error: ErrorDetail,
}

#[derive(Deserialize, Default)]
struct ErrorDetail {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// Throttling, concurrency and quota codes: the request was not carried out; try later.
const RETRY_CODES: &[&str] = &[
    "TooManyRequests",
    "ApplicationThrottled",
    "MailboxConcurrency",
    "ErrorQuotaExceeded",
    "ErrorSubmissionQuotaExceeded",
    "ErrorServerBusy",
    "ErrorMailboxStoreUnavailable",
    "ErrorMailboxMoveInProgress",
    "serviceNotAvailable",
    "activityLimitReached",
];

/// Codes meaning this recipient or message will never be accepted.
const PERMANENT_CODES: &[&str] = &[
    "ErrorInvalidRecipients",
    "ErrorInvalidRecipientSubfilter",
    "ErrorRecipientNotFound",
    "ErrorInvalidEmailAddress",
    "ErrorMessageSizeExceeded",
    "ErrorSendAsDenied",
    "InvalidInternetMessageHeader",
    "InvalidInternetMessageHeaderCollection",
    "ErrorMimeContentInvalidBase64String",
];

/// Codes meaning the mailbox itself cannot be used.
const MAILBOX_CODES: &[&str] = &[
    "ErrorInvalidUser",
    "MailboxNotEnabledForRESTAPI",
    "MailboxNotSupportedForRESTAPI",
    "ErrorNonExistentMailbox",
    "ResourceNotFound",
];

/// Classifies a non-success response.
pub(crate) fn classify(
    stage: Stage,
    mailbox: &str,
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
) -> DeliveryError {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let code = parsed.error.code.as_str();
    let message = if parsed.error.message.is_empty() && parsed.error.code.is_empty() {
        http::snippet(body, 200)
    } else {
        parsed.error.message.clone()
    };
    let what = stage.describe();
    let summary = format!(
        "Graph answered {} {code} while {what}: {message}",
        status.as_u16()
    );
    let retry_after = http::retry_after(headers);

    if status == StatusCode::UNAUTHORIZED {
        return DeliveryError::Config {
            reason: format!(
                "{summary} (the access token was refused even after fetching a new one; check \
                 that the app registration belongs to tenant `channels.graph.tenant_id`)"
            ),
        };
    }
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::SERVICE_UNAVAILABLE
        || RETRY_CODES.contains(&code)
    {
        return DeliveryError::Transient {
            reason: summary,
            retry_after,
        };
    }
    if PERMANENT_CODES.contains(&code) {
        return DeliveryError::Permanent { reason: summary };
    }
    if status == StatusCode::FORBIDDEN {
        return DeliveryError::Config {
            reason: format!(
                "{summary} (access to mailbox {mailbox} was denied: the app registration needs the \
                 Mail.Send and Mail.ReadWrite application permissions with admin consent, and no \
                 application access policy may exclude this mailbox)"
            ),
        };
    }
    if MAILBOX_CODES.contains(&code) {
        return DeliveryError::Config {
            reason: format!(
                "{summary} (mailbox {mailbox} was not found or has no Exchange Online mailbox; \
                 check `channels.graph.mailbox`)"
            ),
        };
    }
    if status == StatusCode::NOT_FOUND && stage == Stage::SendDraft {
        // The draft vanished between the two requests (deleted by a person or a rule): it was
        // not sent, and a new attempt creates a new draft.
        return DeliveryError::Transient {
            reason: summary,
            retry_after: None,
        };
    }
    if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
        return match stage {
            Stage::SendDraft => DeliveryError::Ambiguous {
                reason: format!("{summary} (the message may have been sent)"),
            },
            Stage::CreateDraft | Stage::Read => DeliveryError::Transient {
                reason: summary,
                retry_after,
            },
        };
    }
    match stage {
        Stage::Read => DeliveryError::Transient {
            reason: summary,
            retry_after,
        },
        Stage::CreateDraft | Stage::SendDraft => DeliveryError::Permanent { reason: summary },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
    use std::time::Duration;

    fn check(stage: Stage, status: u16, code: &str, retry_after: Option<&str>) -> DeliveryError {
        let mut headers = HeaderMap::new();
        if let Some(value) = retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        }
        let body = serde_json::json!({"error": {"code": code, "message": "m"}}).to_string();
        classify(
            stage,
            "maya@acme.example",
            StatusCode::from_u16(status).unwrap(),
            &headers,
            body.as_bytes(),
        )
    }

    #[test]
    fn the_classification_table() {
        use Stage::*;
        let throttled = check(SendDraft, 429, "TooManyRequests", Some("2.128"));
        assert_eq!(throttled.retry_after(), Some(Duration::from_millis(2128)));
        assert!(check(CreateDraft, 429, "ApplicationThrottled", Some("1")).is_transient());
        assert!(check(SendDraft, 503, "serviceNotAvailable", None).is_transient());
        assert!(check(SendDraft, 403, "ErrorQuotaExceeded", None).is_transient());
        assert!(check(SendDraft, 400, "ErrorInvalidRecipients", None).is_permanent());
        assert!(check(CreateDraft, 400, "InvalidInternetMessageHeader", None).is_permanent());
        assert!(matches!(
            check(SendDraft, 403, "ErrorAccessDenied", None),
            DeliveryError::Config { .. }
        ));
        assert!(matches!(
            check(CreateDraft, 404, "ErrorInvalidUser", None),
            DeliveryError::Config { .. }
        ));
        assert!(matches!(
            check(SendDraft, 401, "InvalidAuthenticationToken", None),
            DeliveryError::Config { .. }
        ));
        assert!(check(SendDraft, 404, "ErrorItemNotFound", None).is_transient());
        assert!(check(SendDraft, 504, "GatewayTimeout", None).is_ambiguous());
        assert!(check(SendDraft, 500, "generalException", None).is_ambiguous());
        assert!(check(CreateDraft, 500, "generalException", None).is_transient());
        assert!(check(CreateDraft, 504, "", None).is_transient());
        assert!(check(Read, 400, "BadRequest", None).is_transient());
    }
}
