//! Airtable errors, classified by what the caller must do about them.
//!
//! Invariant: no error's `Display` or `Debug` contains the access token. The token only ever
//! travels in a sensitive `Authorization` header; URLs and bodies never carry it.

use std::fmt;

use serde::Deserialize;
use thiserror::Error;

/// The `error` part of an Airtable error response, as far as it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// Airtable's error type (`INVALID_FILTER_BY_FORMULA`, `NOT_FOUND`, ...), if given.
    pub error_type: Option<String>,
    /// Airtable's human-readable message, if given.
    pub message: Option<String>,
}

impl ApiError {
    /// Reads an error body in either shape Airtable uses — `{"error":{"type":..,"message":..}}`
    /// or `{"error":"NOT_FOUND"}` — and copes with anything else (a proxy's HTML page).
    pub fn from_body(status: u16, body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Envelope {
            error: Body,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Body {
            Bare(String),
            Full {
                #[serde(rename = "type")]
                error_type: Option<String>,
                message: Option<String>,
            },
        }
        match serde_json::from_slice::<Envelope>(body) {
            Ok(Envelope {
                error: Body::Bare(error_type),
            }) => Self {
                status,
                error_type: Some(error_type),
                message: None,
            },
            Ok(Envelope {
                error:
                    Body::Full {
                        error_type,
                        message,
                    },
            }) => Self {
                status,
                error_type,
                message,
            },
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                let snippet: String = text.chars().take(200).collect();
                Self {
                    status,
                    error_type: None,
                    message: (!snippet.is_empty()).then_some(snippet),
                }
            }
        }
    }

    /// Whether Airtable named this error type.
    pub fn is_type(&self, error_type: &str) -> bool {
        self.error_type.as_deref() == Some(error_type)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if let Some(error_type) = &self.error_type {
            write!(f, " {error_type}")?;
        }
        if let Some(message) = &self.message {
            write!(f, ": {message}")?;
        }
        Ok(())
    }
}

/// Why an Airtable operation failed.
#[derive(Debug, Error)]
pub enum AirtableError {
    /// A configuration value is unusable.
    #[error("invalid Airtable configuration: {key}: {message}")]
    Config {
        /// The configuration key, e.g. `page_size`.
        key: &'static str,
        /// What is wrong and what was expected.
        message: String,
    },
    /// The token is missing, wrong, or lacks access to the base (401, 403).
    #[error(
        "Airtable refused the access token ({0}); check that it is valid and has access to \
         the base with the needed scopes"
    )]
    Auth(ApiError),
    /// The base, table or route does not exist (404).
    #[error("Airtable could not find the base or table ({0})")]
    NotFound(ApiError),
    /// Airtable rejected the request (other 4xx: bad formula, unknown field, bad value...).
    #[error("Airtable rejected the request ({0})")]
    InvalidRequest(ApiError),
    /// Still rate-limited (429) after waiting and retrying.
    #[error("Airtable kept answering 429 Too Many Requests after {attempts} attempts")]
    RateLimited {
        /// How many times the request was sent.
        attempts: u32,
    },
    /// Airtable failed (5xx).
    #[error("Airtable had a server error ({0})")]
    Server(ApiError),
    /// The request could not be sent or the response not received (connect, timeout, TLS).
    #[error("the HTTP request to Airtable failed")]
    Http(#[source] reqwest::Error),
    /// The response was not in the documented shape.
    #[error("Airtable sent an unexpected response: {0}")]
    UnexpectedResponse(String),
}

impl AirtableError {
    /// Classifies an unsuccessful response.
    pub(crate) fn from_response(status: u16, body: &[u8]) -> Self {
        let api = ApiError::from_body(status, body);
        match status {
            401 | 403 => AirtableError::Auth(api),
            404 => AirtableError::NotFound(api),
            429 => AirtableError::RateLimited { attempts: 1 },
            500..=599 => AirtableError::Server(api),
            _ => AirtableError::InvalidRequest(api),
        }
    }

    /// The details Airtable sent, for errors that came from a response.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            AirtableError::Auth(api)
            | AirtableError::NotFound(api)
            | AirtableError::InvalidRequest(api)
            | AirtableError::Server(api) => Some(api),
            _ => None,
        }
    }

    /// Whether trying again later may succeed (rate limits, server errors, network trouble).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            AirtableError::RateLimited { .. } | AirtableError::Server(_) | AirtableError::Http(_)
        )
    }

    /// Whether this is Airtable's "list iterator expired" answer (422), which means: restart.
    pub fn is_iterator_expired(&self) -> bool {
        matches!(self, AirtableError::InvalidRequest(api)
            if api.is_type("LIST_RECORDS_ITERATOR_NOT_AVAILABLE"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_error_shapes_and_garbage_are_read() {
        let full = ApiError::from_body(
            422,
            br#"{"error":{"type":"INVALID_FILTER_BY_FORMULA","message":"bad formula"}}"#,
        );
        assert_eq!(
            full.error_type.as_deref(),
            Some("INVALID_FILTER_BY_FORMULA")
        );
        assert_eq!(full.message.as_deref(), Some("bad formula"));
        assert_eq!(
            full.to_string(),
            "HTTP 422 INVALID_FILTER_BY_FORMULA: bad formula"
        );

        let bare = ApiError::from_body(404, br#"{"error":"NOT_FOUND"}"#);
        assert_eq!(bare.error_type.as_deref(), Some("NOT_FOUND"));
        assert_eq!(bare.message, None);

        let partial = ApiError::from_body(500, br#"{"error":{}}"#);
        assert_eq!(partial.error_type, None);

        let html = ApiError::from_body(502, b"<html>Bad Gateway</html>");
        assert_eq!(html.message.as_deref(), Some("<html>Bad Gateway</html>"));
        assert_eq!(ApiError::from_body(503, b"").to_string(), "HTTP 503");
    }

    #[test]
    fn statuses_are_classified() {
        assert!(matches!(
            AirtableError::from_response(401, b"{}"),
            AirtableError::Auth(_)
        ));
        assert!(matches!(
            AirtableError::from_response(403, b"{}"),
            AirtableError::Auth(_)
        ));
        assert!(matches!(
            AirtableError::from_response(404, br#"{"error":"NOT_FOUND"}"#),
            AirtableError::NotFound(_)
        ));
        assert!(AirtableError::from_response(503, b"").is_transient());
        assert!(!AirtableError::from_response(422, b"").is_transient());
        assert!(AirtableError::from_response(
            422,
            br#"{"error":{"type":"LIST_RECORDS_ITERATOR_NOT_AVAILABLE"}}"#
        )
        .is_iterator_expired());
    }
}
