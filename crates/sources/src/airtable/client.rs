//! The Airtable HTTP client: listing with pagination, write-back, rate limiting and retries.
//!
//! Invariants:
//! - Every request, retries included, first takes a permit from the client's limiter. The
//!   limiter spaces requests evenly — no bursts — at slightly under `requests_per_second`,
//!   so that no one-second window at Airtable sees more than that many requests from this
//!   client even with network jitter. The limiter is per client: two clients (or two
//!   processes) on the same base share Airtable's 5 requests/second between them.
//! - A 429 is answered by waiting `rate_limit_pause_secs` (Airtable refuses the base for
//!   30 s after a violation) and resending the same request, at most
//!   [`MAX_RATE_LIMIT_RETRIES`] times; then the call fails with `RateLimited`.
//! - An expired list iterator (422 `LIST_RECORDS_ITERATOR_NOT_AVAILABLE`) restarts the
//!   listing from the first page and discards the pages read so far, so that no record is
//!   lost or listed twice.
//! - Updates use PATCH, which merges the given fields, never PUT, which clears the others;
//!   at most 10 records per request, as Airtable requires.
//! - The token only travels in a sensitive `Authorization` header; it is in no URL, log
//!   line, error or `Debug` output.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use chrono::NaiveDate;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::Method;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Map, Value};
use tracing::{debug, info, warn};
use url::Url;

use super::config::AirtableConfig;
use super::error::AirtableError;
use super::records::{map_records, AirtableRecord, FetchReport};

/// How many times a request answered with 429 is resent before giving up.
pub const MAX_RATE_LIMIT_RETRIES: u32 = 5;
/// How many times a listing restarts after its iterator expired before giving up.
pub const MAX_LIST_RESTARTS: u32 = 3;
/// Airtable's cap on records per create or update request.
pub const MAX_RECORDS_PER_WRITE: usize = 10;
/// Spacing between requests relative to `1 / requests_per_second`; the 2 % margin absorbs
/// network jitter so that the server never counts one request too many in a second.
const SPACING_MARGIN: f64 = 1.02;
/// Timeout for a whole request, response body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout for establishing a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A status update for one record, written back after a lead was messaged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writeback {
    /// The record id (`rec...`), i.e. the lead's `source_ref`.
    pub record_id: String,
    /// The new `Engagement_Status`, e.g. the configured `sent_status`.
    pub status: String,
    /// The day the lead was messaged, written as `YYYY-MM-DD` to `Date Messaged`; `None`
    /// leaves that field as it is (an opt-out).
    pub date_messaged: Option<NaiveDate>,
}

/// A client for one Airtable table.
pub struct AirtableClient {
    http: reqwest::Client,
    config: AirtableConfig,
    table_url: Url,
    auth: HeaderValue,
    limiter: DefaultDirectRateLimiter,
    pause: Duration,
}

impl fmt::Debug for AirtableClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AirtableClient")
            .field("table_url", &self.table_url.as_str())
            .field("requests_per_second", &self.config.requests_per_second)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct ListPage {
    records: Vec<AirtableRecord>,
    #[serde(default)]
    offset: Option<String>,
}

impl AirtableClient {
    /// Checks the configuration and builds the client; no request is sent yet.
    pub fn new(config: AirtableConfig) -> Result<Self, AirtableError> {
        config.check()?;
        let pause = config
            .rate_limit_pause()
            .ok_or_else(|| AirtableError::Config {
                key: "rate_limit_pause_secs",
                message: "not a usable number of seconds".into(),
            })?;
        let mut table_url = Url::parse(&config.api_url).map_err(|e| AirtableError::Config {
            key: "api_url",
            message: e.to_string(),
        })?;
        table_url
            .path_segments_mut()
            .map_err(|()| AirtableError::Config {
                key: "api_url",
                message: "the URL cannot have a path".into(),
            })?
            .pop_if_empty()
            .push(&config.base_id)
            .push(&config.table);

        let mut auth = HeaderValue::from_str(&format!("Bearer {}", config.token.expose_secret()))
            .map_err(|_| AirtableError::Config {
            key: "token",
            message: "it contains characters that cannot be sent in an HTTP header".into(),
        })?;
        auth.set_sensitive(true);

        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("engager/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(AirtableError::Http)?;

        let rps = config.requests_per_second.max(1);
        let spacing = Duration::from_secs_f64(SPACING_MARGIN / f64::from(rps));
        let quota = Quota::with_period(spacing)
            .ok_or_else(|| AirtableError::Config {
                key: "requests_per_second",
                message: "too high to space requests".into(),
            })?
            .allow_burst(NonZeroU32::MIN);
        Ok(Self {
            http,
            config,
            table_url,
            auth,
            limiter: RateLimiter::direct(quota),
            pause,
        })
    }

    /// The configuration the client was built from.
    pub fn config(&self) -> &AirtableConfig {
        &self.config
    }

    /// A write-back that marks a record as sent (the configured `sent_status`) on `date`.
    pub fn sent_writeback(&self, record_id: impl Into<String>, date: NaiveDate) -> Writeback {
        Writeback {
            record_id: record_id.into(),
            status: self.config.sent_status.clone(),
            date_messaged: Some(date),
        }
    }

    /// A write-back that marks a record's lead as opted out (the configured `opt_out_status`),
    /// so the base's own automations and people stop contacting it too.
    pub fn opt_out_writeback(&self, record_id: impl Into<String>) -> Writeback {
        Writeback {
            record_id: record_id.into(),
            status: self.config.opt_out_status.clone(),
            date_messaged: None,
        }
    }

    /// Lists every record of the table (through the view and formula, if configured).
    pub async fn list_records(&self) -> Result<Vec<AirtableRecord>, AirtableError> {
        let mut restarts = 0;
        'listing: loop {
            let mut records = Vec::new();
            let mut offset: Option<String> = None;
            loop {
                let url = self.list_url(offset.as_deref());
                let page = match self.send(Method::GET, &url, None).await {
                    Ok(body) => serde_json::from_value::<ListPage>(body).map_err(|e| {
                        AirtableError::UnexpectedResponse(format!("a list page: {e}"))
                    })?,
                    Err(error) if offset.is_some() && error.is_iterator_expired() => {
                        restarts += 1;
                        if restarts > MAX_LIST_RESTARTS {
                            return Err(error);
                        }
                        warn!(
                            restarts,
                            discarded = records.len(),
                            "Airtable list iterator expired; restarting the listing from the first page."
                        );
                        continue 'listing;
                    }
                    Err(error) => return Err(error),
                };
                records.extend(page.records);
                debug!(records = records.len(), "Read an Airtable page.");
                match page.offset {
                    Some(next) => offset = Some(next),
                    None => return Ok(records),
                }
            }
        }
    }

    /// Lists the table and maps its records to leads (applying compat-mode gates if set).
    pub async fn fetch_leads(&self) -> Result<FetchReport, AirtableError> {
        let records = self.list_records().await?;
        let report = map_records(&self.config, &records);
        info!(
            records = report.records,
            leads = report.leads.len(),
            rejected = report.rejected.len(),
            ineligible = report.ineligible.len(),
            "Fetched leads from Airtable."
        );
        Ok(report)
    }

    /// Sets status and date messaged on records, 10 per PATCH; returns how many were updated.
    ///
    /// Requests go out in order; if one fails, the earlier ones stay applied. Resending the
    /// same updates is harmless, since PATCH only sets the given values.
    pub async fn write_back(&self, updates: &[Writeback]) -> Result<usize, AirtableError> {
        let names = &self.config.fields;
        let mut updated = 0;
        for chunk in updates.chunks(MAX_RECORDS_PER_WRITE) {
            let records: Vec<Value> = chunk
                .iter()
                .map(|update| {
                    let mut fields = Map::new();
                    fields.insert(
                        names.engagement_status.clone(),
                        Value::String(update.status.clone()),
                    );
                    if let Some(date) = update.date_messaged {
                        fields.insert(
                            names.date_messaged.clone(),
                            Value::String(date.format("%Y-%m-%d").to_string()),
                        );
                    }
                    let mut record = Map::new();
                    record.insert("id".into(), Value::String(update.record_id.clone()));
                    record.insert("fields".into(), Value::Object(fields));
                    Value::Object(record)
                })
                .collect();
            let mut body = Map::new();
            body.insert("records".into(), Value::Array(records));
            let response = self
                .send(Method::PATCH, &self.table_url, Some(&Value::Object(body)))
                .await?;
            let count = response
                .get("records")
                .and_then(Value::as_array)
                .map(Vec::len)
                .ok_or_else(|| {
                    AirtableError::UnexpectedResponse("an update without `records`".into())
                })?;
            updated += count;
        }
        info!(updated, "Wrote statuses back to Airtable.");
        Ok(updated)
    }

    fn list_url(&self, offset: Option<&str>) -> Url {
        let mut url = self.table_url.clone();
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("pageSize", &self.config.page_size.to_string());
            if let Some(view) = &self.config.view {
                query.append_pair("view", view);
            }
            if let Some(formula) = &self.config.filter_formula {
                query.append_pair("filterByFormula", formula);
            }
            if let Some(offset) = offset {
                query.append_pair("offset", offset);
            }
        }
        url
    }

    /// Sends one request through the limiter, resending it after a 429 pause.
    async fn send(
        &self,
        method: Method,
        url: &Url,
        body: Option<&Value>,
    ) -> Result<Value, AirtableError> {
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            self.limiter.until_ready().await;
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .header(AUTHORIZATION, self.auth.clone());
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.map_err(AirtableError::Http)?;
            let status = response.status();
            let bytes = response.bytes().await.map_err(AirtableError::Http)?;
            if status.is_success() {
                return serde_json::from_slice(&bytes).map_err(|e| {
                    AirtableError::UnexpectedResponse(format!("the body is not JSON: {e}"))
                });
            }
            if status.as_u16() == 429 {
                if attempts > MAX_RATE_LIMIT_RETRIES {
                    return Err(AirtableError::RateLimited { attempts });
                }
                warn!(
                    %method,
                    attempt = attempts,
                    pause_secs = self.pause.as_secs_f64(),
                    "Airtable answered 429 Too Many Requests; pausing, then resending the same request."
                );
                tokio::time::sleep(self.pause).await;
                continue;
            }
            return Err(AirtableError::from_response(status.as_u16(), &bytes));
        }
    }
}
