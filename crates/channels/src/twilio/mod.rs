//! SMS through Twilio Programmable Messaging.
//!
//! Invariants:
//! - One send is one `POST /2010-04-01/Accounts/{sid}/Messages.json` (form-encoded, HTTP
//!   Basic auth). Twilio has no idempotency key for it, so a timeout or dropped connection
//!   after the request was written, or a 500/502/504 answer, is ambiguous; only a failure to
//!   connect, a 429/20429 ("never processed", per Twilio) or a 503 is transient.
//! - The segment count (GSM-7 or UCS-2) is computed before sending; a body over Twilio's
//!   1,600-character limit is refused here instead of by error 21617.
//! - 21610 (the recipient replied STOP to this sender) is [`DeliveryError::OptedOut`]: the
//!   caller suppresses the number and never retries.
//! - The provider reference of a delivery is the Message SID (`SM...`), which the status
//!   callbacks (see [`webhook`]) carry.

mod config;
pub mod webhook;

use async_trait::async_trait;
use engager_domain::sms::{sms_segments, SmsSegments};
use engager_domain::Channel;
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde::Deserialize;
use tracing::{debug, info};
use url::Url;

pub use config::{TwilioConfig, DEFAULT_API_URL};

use crate::http::{self, Effect};
use crate::{Accepted, ChannelSender, DeliveryError, OutgoingMessage};

/// Twilio's limit on `Body`, in characters.
pub const MAX_BODY_CHARS: usize = 1600;

/// Twilio error codes the channel acts on.
pub mod codes {
    /// Authentication failed.
    pub const AUTHENTICATION_FAILED: u32 = 20003;
    /// The account is not active.
    pub const ACCOUNT_NOT_ACTIVE: u32 = 20005;
    /// The resource (account) was not found.
    pub const NOT_FOUND: u32 = 20404;
    /// Too many concurrent requests: never processed, safe to retry.
    pub const TOO_MANY_REQUESTS: u32 = 20429;
    /// The `To` number is not valid.
    pub const INVALID_TO: u32 = 21211;
    /// The `From` number is not valid.
    pub const INVALID_FROM: u32 = 21212;
    /// Permission to send to this region is not enabled.
    pub const REGION_NOT_ENABLED: u32 = 21408;
    /// The `From` number is not an SMS-capable number of this account.
    pub const FROM_NOT_SMS_CAPABLE: u32 = 21606;
    /// A trial account may only send to verified numbers.
    pub const UNVERIFIED_TO: u32 = 21608;
    /// The recipient replied STOP: unsubscribed.
    pub const UNSUBSCRIBED: u32 = 21610;
    /// Twilio cannot route between these numbers.
    pub const CANNOT_ROUTE: u32 = 21612;
    /// The `To` number is not a mobile number.
    pub const NOT_MOBILE: u32 = 21614;
    /// The body exceeds 1,600 characters.
    pub const BODY_TOO_LONG: u32 = 21617;
}

/// The recipient or content will never be accepted.
const PERMANENT_CODES: &[u32] = &[
    codes::INVALID_TO,
    codes::REGION_NOT_ENABLED,
    codes::UNVERIFIED_TO,
    codes::CANNOT_ROUTE,
    codes::NOT_MOBILE,
    codes::BODY_TOO_LONG,
    21602, // Body required
    21604, // To required
];

/// Our sender or account is wrong: stop using the channel until it is fixed.
const CONFIG_CODES: &[u32] = &[
    codes::AUTHENTICATION_FAILED,
    codes::ACCOUNT_NOT_ACTIVE,
    codes::NOT_FOUND,
    codes::INVALID_FROM,
    codes::FROM_NOT_SMS_CAPABLE,
    21603, // From required
    21660, // From does not belong to the account
    21701, // Messaging Service not found
    21703, // Messaging Service has no phone numbers
];

#[derive(Deserialize)]
struct MessageResource {
    sid: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    num_segments: Option<String>,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    code: Option<u32>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct AccountResource {
    #[serde(default)]
    status: Option<String>,
}

/// Twilio SMS for one account.
pub struct TwilioChannel {
    config: TwilioConfig,
    http: reqwest::Client,
    messages_url: Url,
    account_url: Url,
}

impl std::fmt::Debug for TwilioChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioChannel")
            .field("account_sid", &self.config.account_sid)
            .field("messages_url", &self.messages_url.as_str())
            .finish_non_exhaustive()
    }
}

impl TwilioChannel {
    /// Checks the configuration and builds the channel; no request is sent yet.
    pub fn new(config: TwilioConfig) -> Result<Self, DeliveryError> {
        config.check()?;
        let base = Url::parse(&config.api_url).map_err(|e| DeliveryError::Config {
            reason: format!("invalid configuration at key `channels.twilio.api_url`: {e}"),
        })?;
        let at = |segments: &[&str]| -> Result<Url, DeliveryError> {
            let mut url = base.clone();
            url.path_segments_mut()
                .map_err(|()| DeliveryError::Config {
                    reason:
                        "invalid configuration at key `channels.twilio.api_url`: not a base URL"
                            .into(),
                })?
                .pop_if_empty()
                .extend(segments);
            Ok(url)
        };
        let account_json = format!("{}.json", config.account_sid);
        Ok(Self {
            messages_url: at(&[
                "2010-04-01",
                "Accounts",
                &config.account_sid,
                "Messages.json",
            ])?,
            account_url: at(&["2010-04-01", "Accounts", &account_json])?,
            http: http::client(config.request_timeout(), config.connect_timeout())?,
            config,
        })
    }

    /// The configuration the channel was built from.
    pub fn config(&self) -> &TwilioConfig {
        &self.config
    }

    /// How a body splits into billed segments (what previews show).
    pub fn segments(body: &str) -> SmsSegments {
        sms_segments(body)
    }

    fn form(
        &self,
        message: &OutgoingMessage,
    ) -> Result<Vec<(&'static str, String)>, DeliveryError> {
        let mut form = vec![("To", message.to.clone())];
        match (
            &self.config.messaging_service_sid,
            &self.config.from,
            &message.sender.sms_from,
        ) {
            (Some(service), _, _) => form.push(("MessagingServiceSid", service.clone())),
            (None, Some(from), _) | (None, None, Some(from)) => form.push(("From", from.clone())),
            (None, None, None) => {
                return Err(DeliveryError::Config {
                    reason: "Twilio: no sender: set `channels.twilio.from`, \
                             `channels.twilio.messaging_service_sid` or `sender.sms_from`"
                        .into(),
                })
            }
        }
        form.push(("Body", message.body_text.clone()));
        if let Some(callback) = &self.config.status_callback {
            form.push(("StatusCallback", callback.clone()));
        }
        if let Some(period) = self.config.validity_period_secs {
            form.push(("ValidityPeriod", period.to_string()));
        }
        Ok(form)
    }
}

/// Classifies a non-success answer to `Messages.json` (or the account fetch).
fn classify(
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
) -> DeliveryError {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let code = parsed.code.unwrap_or_default();
    let message = parsed.message.unwrap_or_else(|| http::snippet(body, 200));
    let summary = format!(
        "Twilio answered {} (error {code}): {message}",
        status.as_u16()
    );
    if code == codes::UNSUBSCRIBED {
        return DeliveryError::OptedOut { reason: summary };
    }
    if code == codes::TOO_MANY_REQUESTS
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::SERVICE_UNAVAILABLE
    {
        return DeliveryError::Transient {
            reason: summary,
            retry_after: http::retry_after(headers),
        };
    }
    if PERMANENT_CODES.contains(&code) {
        return DeliveryError::Permanent { reason: summary };
    }
    if CONFIG_CODES.contains(&code)
        || matches!(
            status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
        )
    {
        let hint = if status == StatusCode::UNAUTHORIZED || code == codes::AUTHENTICATION_FAILED {
            " (check `channels.twilio.account_sid` and `channels.twilio.auth_token`)"
        } else {
            ""
        };
        return DeliveryError::Config {
            reason: format!("{summary}{hint}"),
        };
    }
    if status.is_server_error() {
        return DeliveryError::Ambiguous {
            reason: format!("{summary} (Twilio may have accepted the message)"),
        };
    }
    DeliveryError::Permanent { reason: summary }
}

#[async_trait]
impl ChannelSender for TwilioChannel {
    fn channel(&self) -> Channel {
        Channel::Sms
    }

    fn name(&self) -> &str {
        "twilio"
    }

    /// Fetches the account: checks the credentials and that the account is active.
    async fn health_check(&self) -> Result<(), DeliveryError> {
        let response = self
            .http
            .get(self.account_url.clone())
            .basic_auth(
                &self.config.account_sid,
                Some(self.config.auth_token.expose_secret()),
            )
            .send()
            .await
            .map_err(|e| http::transport_error("Twilio", "the account", &e, Effect::NoSend))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| http::transport_error("Twilio", "the account", &e, Effect::NoSend))?;
        if !status.is_success() {
            return Err(match classify(status, &headers, &body) {
                DeliveryError::Ambiguous { reason } | DeliveryError::Permanent { reason } => {
                    DeliveryError::Transient {
                        reason,
                        retry_after: None,
                    }
                }
                other => other,
            });
        }
        let account: AccountResource =
            serde_json::from_slice(&body).map_err(|e| DeliveryError::Transient {
                reason: format!("Twilio: unexpected account resource: {e}"),
                retry_after: None,
            })?;
        match account.status.as_deref() {
            Some("active") | None => Ok(()),
            Some(other) => Err(DeliveryError::Config {
                reason: format!("Twilio: the account is {other}, not active"),
            }),
        }
    }

    async fn send(&self, message: &OutgoingMessage) -> Result<Accepted, DeliveryError> {
        if message.channel != Channel::Sms {
            return Err(DeliveryError::Config {
                reason: format!(
                    "a {} message was routed to the Twilio SMS channel",
                    message.channel
                ),
            });
        }
        let characters = message.body_text.chars().count();
        if message.body_text.trim().is_empty() {
            return Err(DeliveryError::Permanent {
                reason: "an SMS needs a body".into(),
            });
        }
        if characters > MAX_BODY_CHARS {
            return Err(DeliveryError::Permanent {
                reason: format!(
                    "the SMS body has {characters} characters; Twilio accepts at most {MAX_BODY_CHARS}"
                ),
            });
        }
        let segments = sms_segments(&message.body_text);
        let form = self.form(message)?;
        let response = self
            .http
            .post(self.messages_url.clone())
            .basic_auth(
                &self.config.account_sid,
                Some(self.config.auth_token.expose_secret()),
            )
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                http::transport_error("Twilio", "creating the message", &e, Effect::Send)
            })?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(e) if status.is_success() => {
                return Err(DeliveryError::Ambiguous {
                    reason: format!(
                        "Twilio accepted the message ({status}) but its answer was lost ({}); \
                         the Message SID is unknown",
                        http::chain(&e)
                    ),
                })
            }
            Err(_) => Default::default(),
        };
        if !status.is_success() {
            return Err(classify(status, &headers, &body));
        }
        let created: MessageResource =
            serde_json::from_slice(&body).map_err(|e| DeliveryError::Ambiguous {
                reason: format!(
                    "Twilio accepted the message ({status}) but its answer has no usable SID: {e}"
                ),
            })?;
        let reported = created
            .num_segments
            .as_deref()
            .and_then(|n| n.parse::<usize>().ok());
        if reported.is_some_and(|n| n != 0 && n != segments.segments) {
            debug!(
                expected = segments.segments,
                reported, "Twilio counted the segments differently."
            );
        }
        info!(
            segments = segments.segments,
            status = created.status.as_deref().unwrap_or_default(),
            "Sent through Twilio."
        );
        Ok(Accepted {
            provider_ref: created.sid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;

    fn check(status: u16, code: u32) -> DeliveryError {
        let body =
            serde_json::json!({"code": code, "message": "m", "more_info": "x", "status": status});
        classify(
            StatusCode::from_u16(status).unwrap(),
            &HeaderMap::new(),
            body.to_string().as_bytes(),
        )
    }

    #[test]
    fn the_error_code_table() {
        assert!(check(400, codes::UNSUBSCRIBED).is_opt_out());
        assert!(check(400, codes::UNSUBSCRIBED).is_permanent());
        assert!(check(400, codes::INVALID_TO).is_permanent());
        assert!(check(400, codes::NOT_MOBILE).is_permanent());
        assert!(check(400, codes::BODY_TOO_LONG).is_permanent());
        assert!(check(429, codes::TOO_MANY_REQUESTS).is_transient());
        assert!(check(503, 0).is_transient());
        assert!(check(500, 0).is_ambiguous());
        assert!(check(502, 0).is_ambiguous());
        assert!(matches!(
            check(401, codes::AUTHENTICATION_FAILED),
            DeliveryError::Config { .. }
        ));
        assert!(matches!(
            check(400, codes::FROM_NOT_SMS_CAPABLE),
            DeliveryError::Config { .. }
        ));
        assert!(matches!(
            check(404, codes::NOT_FOUND),
            DeliveryError::Config { .. }
        ));
        assert!(check(400, 21999).is_permanent());
    }
}
