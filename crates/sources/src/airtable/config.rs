//! Configuration of the Airtable source (`[sources.airtable]`).
//!
//! The token is a `SecretString`: it is never printed, and `Debug` shows it redacted.
//! Values are checked once, when the client is built ([`AirtableConfig::check`]), and a bad
//! value is reported with its key.

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::error::AirtableError;

/// The Airtable REST API root.
pub const DEFAULT_API_URL: &str = "https://api.airtable.com/v0";

/// Where to find leads in Airtable and how to talk to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AirtableConfig {
    /// The base id, `app` followed by letters and digits (from the base's API page or URL).
    pub base_id: String,
    /// The table's name (e.g. `Leads`) or id (`tbl...`).
    pub table: String,
    /// A personal access token (`pat...`) with `data.records:read` (and `:write` for
    /// write-back) on the base. Never printed.
    pub token: SecretString,
    /// The API root; tests point it at a local fake.
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// A view whose filter and order apply to the listing.
    #[serde(default)]
    pub view: Option<String>,
    /// An Airtable formula that records must satisfy, e.g. `{Engagement_Status}='Auto-Send'`.
    #[serde(default)]
    pub filter_formula: Option<String>,
    /// Records per list request, 1 to 100.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Requests per second this client sends at most; Airtable allows 5 per base.
    #[serde(default = "default_requests_per_second")]
    pub requests_per_second: u32,
    /// Seconds to wait after a 429 before retrying; Airtable refuses every request to the
    /// base for 30 seconds after its limit is exceeded.
    #[serde(default = "default_rate_limit_pause_secs")]
    pub rate_limit_pause_secs: f64,
    /// Applies the original 4Runr engager's eligibility gates (valid email, confidence
    /// `Real` or `Pattern`, a custom message, status `Auto-Send`).
    #[serde(default)]
    pub compat_mode: bool,
    /// The `Engagement_Status` value written back after a lead was messaged.
    #[serde(default = "default_sent_status")]
    pub sent_status: String,
    /// The `Engagement_Status` value written back when a lead opts out on any channel (an
    /// unsubscribe link, STOP, a reply asking to stop, a complaint).
    #[serde(default = "default_opt_out_status")]
    pub opt_out_status: String,
    /// The names of the table's fields.
    #[serde(default)]
    pub fields: AirtableFieldMapping,
    /// `Engagement_Status` values that mark a lead as converted, each with the kind of
    /// conversion recorded, e.g. `{ "Meeting Booked" = "meeting", "Qualified" = "opportunity" }`.
    /// Applied on every sync; a lead is converted once, however often it is synced.
    #[serde(default)]
    pub conversion_statuses: std::collections::BTreeMap<String, String>,
}

/// The names of the Airtable fields that feed a lead; defaults are the 4Runr base's names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AirtableFieldMapping {
    /// Full name, split into first and last name at the first space.
    pub name: String,
    /// Given name, for tables that keep it separately (takes precedence over `name`).
    pub first_name: Option<String>,
    /// Family name, for tables that keep it separately (takes precedence over `name`).
    pub last_name: Option<String>,
    /// Email address.
    pub email: String,
    /// Company name.
    pub company: String,
    /// How sure the email is (`Real`, `Pattern`, ...); goes to `custom.email_confidence_level`.
    pub email_confidence: String,
    /// The personalized opener; goes to `custom.custom_message`.
    pub custom_message: String,
    /// The outreach status (`Auto-Send`, `Sent`, ...); goes to `custom.engagement_status`.
    pub engagement_status: String,
    /// The date a lead was last messaged; written back as `YYYY-MM-DD`.
    pub date_messaged: String,
    /// Job title.
    pub title: String,
    /// Phone number, international or national for the record's country.
    pub phone: String,
    /// LinkedIn profile URL.
    pub linkedin: String,
    /// ISO 3166-1 alpha-2 country code.
    pub country: String,
    /// City.
    pub city: String,
    /// IANA time zone name.
    pub time_zone: String,
    /// Industry.
    pub industry: String,
    /// Company website.
    pub website: String,
}

impl Default for AirtableFieldMapping {
    fn default() -> Self {
        Self {
            name: "Name".into(),
            first_name: None,
            last_name: None,
            email: "Email".into(),
            company: "Company".into(),
            email_confidence: "Email_Confidence_Level".into(),
            custom_message: "Custom_Message".into(),
            engagement_status: "Engagement_Status".into(),
            date_messaged: "Date Messaged".into(),
            title: "Title".into(),
            phone: "Phone".into(),
            linkedin: "LinkedIn URL".into(),
            country: "Country".into(),
            city: "City".into(),
            time_zone: "Time Zone".into(),
            industry: "Industry".into(),
            website: "Website".into(),
        }
    }
}

fn default_api_url() -> String {
    DEFAULT_API_URL.to_owned()
}

fn default_page_size() -> u32 {
    100
}

fn default_requests_per_second() -> u32 {
    5
}

fn default_rate_limit_pause_secs() -> f64 {
    30.0
}

fn default_sent_status() -> String {
    "Sent".to_owned()
}

fn default_opt_out_status() -> String {
    "Unsubscribed".to_owned()
}

impl AirtableConfig {
    /// A configuration with every optional key at its default.
    pub fn new(base_id: impl Into<String>, table: impl Into<String>, token: SecretString) -> Self {
        Self {
            base_id: base_id.into(),
            table: table.into(),
            token,
            api_url: default_api_url(),
            view: None,
            filter_formula: None,
            page_size: default_page_size(),
            requests_per_second: default_requests_per_second(),
            rate_limit_pause_secs: default_rate_limit_pause_secs(),
            compat_mode: false,
            sent_status: default_sent_status(),
            opt_out_status: default_opt_out_status(),
            fields: AirtableFieldMapping::default(),
            conversion_statuses: std::collections::BTreeMap::new(),
        }
    }

    /// Checks every value, naming the key of the first bad one.
    pub fn check(&self) -> Result<(), AirtableError> {
        let bad = |key: &'static str, message: String| Err(AirtableError::Config { key, message });
        for (status, kind) in &self.conversion_statuses {
            if status.trim().is_empty() || kind.trim().is_empty() {
                return bad(
                    "conversion_statuses",
                    format!(
                        "{status:?} = {kind:?}: expected a status value and the kind of conversion it means, e.g. \"Meeting Booked\" = \"meeting\""
                    ),
                );
            }
        }
        let base_ok = self.base_id.len() > 3
            && self.base_id.starts_with("app")
            && self.base_id.chars().all(|c| c.is_ascii_alphanumeric());
        if !base_ok {
            return bad(
                "base_id",
                format!(
                    "{:?} is not a base id: expected \"app\" followed by letters and digits",
                    self.base_id
                ),
            );
        }
        if self.table.trim().is_empty() {
            return bad("table", "the table name or id is empty".into());
        }
        if !(1..=100).contains(&self.page_size) {
            return bad(
                "page_size",
                format!("{} is out of range: expected 1 to 100", self.page_size),
            );
        }
        if self.requests_per_second == 0 {
            return bad(
                "requests_per_second",
                "0 would never send: expected at least 1 (Airtable allows 5 per base)".into(),
            );
        }
        if self.rate_limit_pause().is_none() {
            return bad(
                "rate_limit_pause_secs",
                format!(
                    "{} is not a usable pause: expected a number of seconds, 0 or more",
                    self.rate_limit_pause_secs
                ),
            );
        }
        if self.sent_status.trim().is_empty() {
            return bad("sent_status", "the status is empty".into());
        }
        if self.opt_out_status.trim().is_empty() {
            return bad("opt_out_status", "the status is empty".into());
        }
        match url::Url::parse(&self.api_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && !url.cannot_be_a_base() => {}
            _ => {
                return bad(
                    "api_url",
                    format!(
                        "{:?} is not an http(s) URL such as {DEFAULT_API_URL}",
                        self.api_url
                    ),
                )
            }
        }
        Ok(())
    }

    /// How long to wait after a 429, if the configured value is usable.
    pub fn rate_limit_pause(&self) -> Option<Duration> {
        Duration::try_from_secs_f64(self.rate_limit_pause_secs).ok()
    }

    /// The `source` given to leads from this table: `airtable:<base>/<table>`.
    pub fn source_name(&self) -> String {
        format!("airtable:{}/{}", self.base_id, self.table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_keys() {
        let config: AirtableConfig = serde_json::from_value(serde_json::json!({
            "base_id": "appABC123",
            "table": "Leads",
            "token": "patSECRET.value",
        }))
        .unwrap();
        assert_eq!(config.api_url, DEFAULT_API_URL);
        assert_eq!(config.page_size, 100);
        assert_eq!(config.requests_per_second, 5);
        assert_eq!(config.rate_limit_pause(), Some(Duration::from_secs(30)));
        assert!(!config.compat_mode);
        assert_eq!(config.sent_status, "Sent");
        assert_eq!(config.fields.date_messaged, "Date Messaged");
        assert!(config.check().is_ok());
        assert!(!format!("{config:?}").contains("patSECRET"));

        let unknown = serde_json::from_value::<AirtableConfig>(serde_json::json!({
            "base_id": "appABC123", "table": "Leads", "token": "pat", "pagesize": 10,
        }));
        assert!(unknown.is_err());
        let unknown_field = serde_json::from_value::<AirtableConfig>(serde_json::json!({
            "base_id": "appABC123", "table": "Leads", "token": "pat",
            "fields": { "emial": "E-mail" },
        }));
        assert!(unknown_field.is_err());
    }

    #[test]
    fn bad_values_name_their_key() {
        let base = AirtableConfig::new("appABC123", "Leads", "pat".into());
        let cases: Vec<(&str, AirtableConfig)> = vec![
            (
                "base_id",
                AirtableConfig {
                    base_id: "base1".into(),
                    ..base.clone()
                },
            ),
            (
                "page_size",
                AirtableConfig {
                    page_size: 101,
                    ..base.clone()
                },
            ),
            (
                "requests_per_second",
                AirtableConfig {
                    requests_per_second: 0,
                    ..base.clone()
                },
            ),
            (
                "rate_limit_pause_secs",
                AirtableConfig {
                    rate_limit_pause_secs: -1.0,
                    ..base.clone()
                },
            ),
            (
                "api_url",
                AirtableConfig {
                    api_url: "not a url".into(),
                    ..base.clone()
                },
            ),
        ];
        for (key, config) in cases {
            match config.check() {
                Err(AirtableError::Config { key: got, .. }) => assert_eq!(got, key),
                other => panic!("{key}: expected a config error, got {other:?}"),
            }
        }
    }
}
