//! Configuration of the Twilio SMS channel (`[channels.twilio]`).

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::DeliveryError;

/// Twilio's REST API root.
pub const DEFAULT_API_URL: &str = "https://api.twilio.com";

/// How to send SMS through one Twilio account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioConfig {
    /// The account SID, `AC` followed by 32 hex digits.
    pub account_sid: String,
    /// The account's auth token (also the key that signs webhooks). Never printed.
    pub auth_token: SecretString,
    /// The sending number (E.164) or alphanumeric sender id. When neither this nor
    /// `messaging_service_sid` is set, `[sender].sms_from` is used.
    #[serde(default)]
    pub from: Option<String>,
    /// A Messaging Service (`MG...`) that picks the sender from its pool.
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
    /// The public URL Twilio posts delivery statuses to (`engager serve`'s status webhook).
    #[serde(default)]
    pub status_callback: Option<String>,
    /// Seconds Twilio may keep a message queued before giving up (1 to 36000); keeps a
    /// message queued in the evening from arriving during the recipient's quiet hours.
    #[serde(default)]
    pub validity_period_secs: Option<u32>,
    /// The API root; tests point it at a local fake.
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// Seconds a whole request may take, response included.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: f64,
    /// Seconds to establish a connection.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: f64,
}

fn default_api_url() -> String {
    DEFAULT_API_URL.to_owned()
}
fn default_request_timeout_secs() -> f64 {
    15.0
}
fn default_connect_timeout_secs() -> f64 {
    10.0
}

fn is_sid(value: &str, prefix: &str) -> bool {
    value.len() == 34
        && value.starts_with(prefix)
        && value[2..].chars().all(|c| c.is_ascii_hexdigit())
}

impl TwilioConfig {
    /// A configuration sending from `from`, every optional key at its default.
    pub fn new(
        account_sid: impl Into<String>,
        auth_token: SecretString,
        from: impl Into<String>,
    ) -> Self {
        Self {
            account_sid: account_sid.into(),
            auth_token,
            from: Some(from.into()),
            messaging_service_sid: None,
            status_callback: None,
            validity_period_secs: None,
            api_url: default_api_url(),
            request_timeout_secs: default_request_timeout_secs(),
            connect_timeout_secs: default_connect_timeout_secs(),
        }
    }

    /// Checks every value, naming the key (`channels.twilio.<key>`) of the first bad one.
    pub fn check(&self) -> Result<(), DeliveryError> {
        let bad = |key: &str, message: String| {
            Err(DeliveryError::Config {
                reason: format!("invalid configuration at key `channels.twilio.{key}`: {message}"),
            })
        };
        if !is_sid(&self.account_sid, "AC") {
            return bad(
                "account_sid",
                format!(
                    "{:?} is not an account SID: expected AC followed by 32 hex digits",
                    self.account_sid
                ),
            );
        }
        if self.from.is_some() && self.messaging_service_sid.is_some() {
            return bad(
                "from",
                "set either `from` or `messaging_service_sid`, not both (Twilio accepts exactly one)".into(),
            );
        }
        if let Some(from) = &self.from {
            if from.trim().is_empty() {
                return bad("from", "the sender is empty".into());
            }
        }
        if let Some(sid) = &self.messaging_service_sid {
            if !is_sid(sid, "MG") {
                return bad(
                    "messaging_service_sid",
                    format!("{sid:?} is not a Messaging Service SID: expected MG followed by 32 hex digits"),
                );
            }
        }
        if let Some(period) = self.validity_period_secs {
            if !(1..=36_000).contains(&period) {
                return bad(
                    "validity_period_secs",
                    format!("{period} is out of range: 1 to 36000"),
                );
            }
        }
        for (key, value) in [
            ("api_url", Some(&self.api_url)),
            ("status_callback", self.status_callback.as_ref()),
        ] {
            let Some(value) = value else { continue };
            match url::Url::parse(value) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base() => {}
                _ => return bad(key, format!("{value:?} is not an http(s) URL")),
            }
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
        Duration::try_from_secs_f64(self.request_timeout_secs).unwrap_or(Duration::from_secs(15))
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::try_from_secs_f64(self.connect_timeout_secs).unwrap_or(Duration::from_secs(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "AC0123456789abcdef0123456789abcdef";

    #[test]
    fn parsing_and_checks() {
        let config: TwilioConfig = serde_json::from_value(serde_json::json!({
            "account_sid": SID, "auth_token": "tok3n", "from": "+14155550123",
        }))
        .unwrap();
        assert!(config.check().is_ok());
        assert_eq!(config.api_url, DEFAULT_API_URL);
        assert!(!format!("{config:?}").contains("tok3n"));
        assert!(serde_json::from_value::<TwilioConfig>(serde_json::json!({
            "account_sid": SID, "auth_token": "t", "form": "+1",
        }))
        .is_err());
        let base = TwilioConfig::new(SID, "t".into(), "+14155550123");
        let cases = [
            (
                "account_sid",
                TwilioConfig {
                    account_sid: "AC123".into(),
                    ..base.clone()
                },
            ),
            (
                "from",
                TwilioConfig {
                    messaging_service_sid: Some(format!("MG{}", &SID[2..])),
                    ..base.clone()
                },
            ),
            (
                "messaging_service_sid",
                TwilioConfig {
                    from: None,
                    messaging_service_sid: Some("MGx".into()),
                    ..base.clone()
                },
            ),
            (
                "status_callback",
                TwilioConfig {
                    status_callback: Some("nope".into()),
                    ..base.clone()
                },
            ),
            (
                "validity_period_secs",
                TwilioConfig {
                    validity_period_secs: Some(0),
                    ..base.clone()
                },
            ),
        ];
        for (key, config) in cases {
            let err = config.check().unwrap_err().to_string();
            assert!(
                err.contains(&format!("channels.twilio.{key}")),
                "{key}: {err}"
            );
        }
    }
}
