//! The app-only access token (OAuth2 client credentials), cached and renewed early.
//!
//! Invariants: at most one token request is in flight per mailbox client (the cache lock is
//! held while fetching, so concurrent senders wait for the same token); a token is renewed
//! `token_renew_margin_secs` (at most half its lifetime) before it expires; when renewal
//! fails transiently and the old token is still valid, the old token is used; the secret and
//! the token travel only in the request body and in sensitive headers, never in errors.

use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::HeaderValue;
use secrecy::ExposeSecret;
use serde::Deserialize;
use tokio::sync::Mutex;
use tracing::{debug, warn};

use super::config::GraphConfig;
use crate::http::{self, Effect};
use crate::DeliveryError;

/// The only scope that makes sense with client credentials.
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

/// A token and what we know about it.
#[derive(Clone)]
pub(crate) struct Token {
    /// `Bearer <token>`, marked sensitive.
    pub header: HeaderValue,
    /// The application permissions granted to the app (`roles` claim), when readable.
    pub roles: Option<Vec<String>>,
    renew_at: Instant,
    expires_at: Instant,
}

/// Fetches and caches tokens for one app registration.
pub(crate) struct TokenSource {
    token_url: String,
    cache: Mutex<Option<Token>>,
    fetched: std::sync::atomic::AtomicU64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct TokenError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

impl TokenSource {
    pub(crate) fn new(config: &GraphConfig) -> Self {
        let authority = config.authority_url.trim_end_matches('/');
        Self {
            token_url: format!("{authority}/{}/oauth2/v2.0/token", config.tenant_id),
            cache: Mutex::new(None),
            fetched: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How many tokens were fetched so far.
    pub(crate) fn fetched(&self) -> u64 {
        self.fetched.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A valid token: the cached one, or a new one when it is due for renewal.
    pub(crate) async fn token(
        &self,
        http: &reqwest::Client,
        config: &GraphConfig,
    ) -> Result<Token, DeliveryError> {
        let mut cache = self.cache.lock().await;
        let now = Instant::now();
        if let Some(token) = cache.as_ref() {
            if now < token.renew_at {
                return Ok(token.clone());
            }
        }
        match self.fetch(http, config).await {
            Ok(token) => {
                *cache = Some(token.clone());
                Ok(token)
            }
            Err(error) => match cache.as_ref() {
                Some(old) if error.is_transient() && now < old.expires_at => {
                    warn!(%error, "Renewing the Graph token failed; using the current one until it expires.");
                    Ok(old.clone())
                }
                _ => Err(error),
            },
        }
    }

    /// Forgets `used` if it is still the cached token, so the next call fetches a new one.
    pub(crate) async fn invalidate(&self, used: &HeaderValue) {
        let mut cache = self.cache.lock().await;
        if cache.as_ref().is_some_and(|t| t.header == *used) {
            *cache = None;
        }
    }

    async fn fetch(
        &self,
        http: &reqwest::Client,
        config: &GraphConfig,
    ) -> Result<Token, DeliveryError> {
        self.fetched
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let form = [
            ("client_id", config.client_id.as_str()),
            ("scope", GRAPH_SCOPE),
            ("client_secret", config.client_secret.expose_secret()),
            ("grant_type", "client_credentials"),
        ];
        let requested_at = Instant::now();
        let response = http
            .post(&self.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                http::transport_error("Graph", "the token endpoint", &e, Effect::NoSend)
            })?;
        let status = response.status();
        let retry_after = http::retry_after(response.headers());
        let body = response.bytes().await.map_err(|e| {
            http::transport_error("Graph", "the token endpoint", &e, Effect::NoSend)
        })?;
        if status.is_success() {
            let parsed: TokenResponse =
                serde_json::from_slice(&body).map_err(|e| DeliveryError::Transient {
                    reason: format!("Graph: unexpected token response: {e}"),
                    retry_after: None,
                })?;
            let lifetime = parsed
                .expires_in
                .as_ref()
                .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
                .map_or(Duration::from_secs(3599), Duration::from_secs);
            let margin = Duration::from_secs(config.token_renew_margin_secs).min(lifetime / 2);
            let mut header = HeaderValue::from_str(&format!("Bearer {}", parsed.access_token))
                .map_err(|_| DeliveryError::Transient {
                    reason: "Graph: the token endpoint returned a token that is not a valid header value".into(),
                    retry_after: None,
                })?;
            header.set_sensitive(true);
            debug!(
                lifetime_secs = lifetime.as_secs(),
                "Fetched a Graph access token."
            );
            return Ok(Token {
                header,
                roles: token_roles(&parsed.access_token),
                renew_at: requested_at + lifetime - margin,
                expires_at: requested_at + lifetime,
            });
        }
        let error: TokenError = serde_json::from_slice(&body).unwrap_or(TokenError {
            error: String::new(),
            error_description: http::snippet(&body, 200),
        });
        // The first line of the description carries the AADSTS code and the reason; the rest is
        // trace and correlation ids.
        let description = error.error_description.lines().next().unwrap_or_default();
        if status.as_u16() == 429
            || status.is_server_error()
            || error.error == "temporarily_unavailable"
        {
            return Err(DeliveryError::Transient {
                reason: format!("Graph token endpoint answered {status}: {description}"),
                retry_after,
            });
        }
        let hint = match error.error.as_str() {
            "invalid_client" if description.contains("AADSTS7000222") => {
                "the client secret has expired; create a new one and set `channels.graph.client_secret`"
            }
            "invalid_client" => {
                "the client secret was refused; check `channels.graph.client_secret` (the secret's \
                 Value, not its ID) and `channels.graph.client_id`"
            }
            "unauthorized_client" => {
                "the application is unknown in this tenant or not allowed to use client \
                 credentials; check `channels.graph.client_id` and `channels.graph.tenant_id`"
            }
            "invalid_scope" => "the token scope was refused",
            "invalid_request" if description.contains("AADSTS90002") => {
                "the tenant was not found; check `channels.graph.tenant_id`"
            }
            _ => "the token request was refused; check `channels.graph.tenant_id`, `client_id` and `client_secret`",
        };
        Err(DeliveryError::Config {
            reason: format!(
                "Graph: {hint} (token endpoint: {status} {}: {description})",
                error.error
            ),
        })
    }
}

/// The `roles` claim of a JWT access token. Microsoft asks clients to treat tokens as opaque,
/// so this is only used for a clearer health check, never to decide whether to send.
fn token_roles(token: &str) -> Option<Vec<String>> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let roles = claims.get("roles")?.as_array()?;
    Some(
        roles
            .iter()
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_read_from_jwt_payloads_only() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
            br#"{"aud":"https://graph.microsoft.com","roles":["Mail.Send","Mail.ReadWrite"]}"#,
        );
        assert_eq!(
            token_roles(&format!("eyJhbGciOiJub25lIn0.{payload}.sig")),
            Some(vec!["Mail.Send".to_owned(), "Mail.ReadWrite".to_owned()])
        );
        assert_eq!(token_roles("opaque-token"), None);
        assert_eq!(token_roles("a.!!!.c"), None);
    }
}
