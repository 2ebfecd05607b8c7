//! HTTP plumbing shared by the provider channels: building clients, reading `Retry-After`,
//! and classifying transport failures by whether the provider may already have acted.
//!
//! Invariant: a failure is only called transient when the provider cannot have accepted
//! the message (the connection was never made, or the request was one that sends nothing).
//! A timeout or a dropped connection after a sending request was written is ambiguous.

use std::error::Error as _;
use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::DeliveryError;

/// The longest `Retry-After` we honour; anything longer is clamped (a broken header must
/// not park a delivery for a year).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Builds a client with the given timeouts and our user agent.
pub(crate) fn client(
    request_timeout: Duration,
    connect_timeout: Duration,
) -> Result<reqwest::Client, DeliveryError> {
    reqwest::Client::builder()
        .timeout(request_timeout)
        .connect_timeout(connect_timeout)
        .user_agent(concat!("engager/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| DeliveryError::Config {
            reason: format!("cannot build an HTTP client: {}", chain(&e)),
        })
}

/// `Retry-After` in seconds, decimals allowed (Graph sends e.g. `2.128`). The HTTP-date
/// form is not used by the providers we talk to and is ignored.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let seconds: f64 = value.parse().ok()?;
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(seconds).min(MAX_RETRY_AFTER))
}

/// Whether the request that failed could have made the provider send something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Reading, creating a draft, fetching a token: repeating it sends nothing.
    NoSend,
    /// The request that makes the provider send.
    Send,
}

/// Classifies a transport failure (no HTTP response was read).
pub(crate) fn transport_error(
    provider: &str,
    what: &str,
    error: &reqwest::Error,
    effect: Effect,
) -> DeliveryError {
    let detail = chain(error);
    if error.is_builder() {
        return DeliveryError::Config {
            reason: format!("{provider}: cannot build the request to {what}: {detail}"),
        };
    }
    if error.is_connect() {
        // No connection means no request: nothing can have been accepted.
        return DeliveryError::Transient {
            reason: format!("{provider}: cannot connect to {what}: {detail}"),
            retry_after: None,
        };
    }
    match effect {
        Effect::NoSend => DeliveryError::Transient {
            reason: format!("{provider}: {what} failed: {detail}"),
            retry_after: None,
        },
        Effect::Send => DeliveryError::Ambiguous {
            reason: format!(
                "{provider}: {what} failed after the request was sent ({detail}); the provider \
                 may have accepted the message"
            ),
        },
    }
}

/// An error and its causes on one line, without the request URL's query.
pub(crate) fn chain(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else {
        error.to_string()
    };
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The first `max` characters of a response body, for error messages.
pub(crate) fn snippet(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    match trimmed.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &trimmed[..cut]),
        None => trimmed.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_accepts_fractions_and_clamps() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("2.128"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(2128)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static(" 7 "));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("99999999"));
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
        for bad in ["-1", "NaN", "Wed, 21 Oct 2015 07:28:00 GMT", ""] {
            headers.insert(RETRY_AFTER, HeaderValue::from_str(bad).unwrap());
            assert_eq!(retry_after(&headers), None, "{bad:?}");
        }
    }

    #[test]
    fn snippets_are_cut_on_character_boundaries() {
        assert_eq!(snippet(b"  short ", 10), "short");
        assert_eq!(snippet("ééééé".as_bytes(), 3), "ééé…");
    }
}
