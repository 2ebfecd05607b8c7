//! Configuration of the Microsoft Graph email channel (`[channels.graph]`).

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::DeliveryError;

/// The Microsoft identity platform's authority.
pub const DEFAULT_AUTHORITY_URL: &str = "https://login.microsoftonline.com";
/// The Graph v1.0 API root.
pub const DEFAULT_GRAPH_URL: &str = "https://graph.microsoft.com/v1.0";
/// Exchange Online allows at most this many concurrent requests per app and mailbox.
pub const MAX_MAILBOX_CONCURRENCY: usize = 4;

/// How to reach one Exchange Online mailbox through Microsoft Graph with an app-only token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphConfig {
    /// The Entra ID tenant: its GUID or a verified domain name.
    pub tenant_id: String,
    /// The app registration's application (client) id.
    pub client_id: String,
    /// The app registration's client secret. Never printed.
    pub client_secret: SecretString,
    /// The sending mailbox: its user principal name (`maya@acme.example`) or object id.
    pub mailbox: String,
    /// The identity platform's authority; tests point it at a local fake.
    #[serde(default = "default_authority_url")]
    pub authority_url: String,
    /// The Graph API root including the version; tests point it at a local fake.
    #[serde(default = "default_graph_url")]
    pub graph_url: String,
    /// Seconds a whole request may take, response included.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: f64,
    /// Seconds to establish a connection.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: f64,
    /// Concurrent requests to the mailbox, 1 to 4 (Exchange Online's per-mailbox limit).
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// Renew the token this many seconds before it expires (at most half its lifetime).
    #[serde(default = "default_token_renew_margin_secs")]
    pub token_renew_margin_secs: u64,
    /// The folder polled for replies and bounces (a well-known name or a folder id).
    #[serde(default = "default_reply_folder")]
    pub reply_folder: String,
}

fn default_authority_url() -> String {
    DEFAULT_AUTHORITY_URL.to_owned()
}
fn default_graph_url() -> String {
    DEFAULT_GRAPH_URL.to_owned()
}
fn default_request_timeout_secs() -> f64 {
    30.0
}
fn default_connect_timeout_secs() -> f64 {
    10.0
}
fn default_max_concurrent_requests() -> usize {
    MAX_MAILBOX_CONCURRENCY
}
fn default_token_renew_margin_secs() -> u64 {
    300
}
fn default_reply_folder() -> String {
    "inbox".to_owned()
}

impl GraphConfig {
    /// A configuration with every optional key at its default.
    pub fn new(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: SecretString,
        mailbox: impl Into<String>,
    ) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            client_secret,
            mailbox: mailbox.into(),
            authority_url: default_authority_url(),
            graph_url: default_graph_url(),
            request_timeout_secs: default_request_timeout_secs(),
            connect_timeout_secs: default_connect_timeout_secs(),
            max_concurrent_requests: default_max_concurrent_requests(),
            token_renew_margin_secs: default_token_renew_margin_secs(),
            reply_folder: default_reply_folder(),
        }
    }

    /// Checks every value, naming the key (`channels.graph.<key>`) of the first bad one.
    pub fn check(&self) -> Result<(), DeliveryError> {
        let bad = |key: &str, message: String| {
            Err(DeliveryError::Config {
                reason: format!("invalid configuration at key `channels.graph.{key}`: {message}"),
            })
        };
        for (key, value) in [
            ("tenant_id", &self.tenant_id),
            ("client_id", &self.client_id),
            ("mailbox", &self.mailbox),
            ("reply_folder", &self.reply_folder),
        ] {
            if value.trim().is_empty() || value.contains(['/', '?', '#']) {
                return bad(
                    key,
                    format!("{value:?} is empty or contains '/', '?' or '#'"),
                );
            }
        }
        for (key, value) in [
            ("authority_url", &self.authority_url),
            ("graph_url", &self.graph_url),
        ] {
            match url::Url::parse(value) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base() => {}
                _ => return bad(key, format!("{value:?} is not an http(s) URL")),
            }
        }
        if !(1..=MAX_MAILBOX_CONCURRENCY).contains(&self.max_concurrent_requests) {
            return bad(
                "max_concurrent_requests",
                format!(
                    "{} is out of range: Exchange Online allows 1 to {MAX_MAILBOX_CONCURRENCY} \
                     concurrent requests per mailbox",
                    self.max_concurrent_requests
                ),
            );
        }
        for (key, value) in [
            ("request_timeout_secs", self.request_timeout_secs),
            ("connect_timeout_secs", self.connect_timeout_secs),
        ] {
            if !Duration::try_from_secs_f64(value).is_ok_and(|d| !d.is_zero()) {
                return bad(key, format!("{value} is not a positive number of seconds"));
            }
        }
        Ok(())
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::try_from_secs_f64(self.request_timeout_secs).unwrap_or(Duration::from_secs(30))
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::try_from_secs_f64(self.connect_timeout_secs).unwrap_or(Duration::from_secs(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn defaults_unknown_keys_and_redaction() {
        let config: GraphConfig = serde_json::from_value(serde_json::json!({
            "tenant_id": "contoso.onmicrosoft.com",
            "client_id": "11111111-2222-3333-4444-555555555555",
            "client_secret": "s3cr3t~value",
            "mailbox": "maya@acme.example",
        }))
        .unwrap();
        assert_eq!(config.graph_url, DEFAULT_GRAPH_URL);
        assert_eq!(config.max_concurrent_requests, 4);
        assert_eq!(config.client_secret.expose_secret(), "s3cr3t~value");
        assert!(config.check().is_ok());
        assert!(!format!("{config:?}").contains("s3cr3t"));
        let unknown = serde_json::from_value::<GraphConfig>(serde_json::json!({
            "tenant_id": "t", "client_id": "c", "client_secret": "s", "mailbox": "m",
            "mailbx": "typo",
        }));
        assert!(unknown.is_err());
    }

    #[test]
    fn bad_values_name_their_key() {
        let base = GraphConfig::new("t", "c", "s".into(), "maya@acme.example");
        let cases = [
            (
                "max_concurrent_requests",
                GraphConfig {
                    max_concurrent_requests: 5,
                    ..base.clone()
                },
            ),
            (
                "graph_url",
                GraphConfig {
                    graph_url: "graph".into(),
                    ..base.clone()
                },
            ),
            (
                "mailbox",
                GraphConfig {
                    mailbox: "a/b".into(),
                    ..base.clone()
                },
            ),
            (
                "request_timeout_secs",
                GraphConfig {
                    request_timeout_secs: 0.0,
                    ..base.clone()
                },
            ),
        ];
        for (key, config) in cases {
            let err = config.check().unwrap_err().to_string();
            assert!(
                err.contains(&format!("channels.graph.{key}")),
                "{key}: {err}"
            );
        }
    }
}
