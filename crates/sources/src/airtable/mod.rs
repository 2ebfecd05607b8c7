//! The Airtable source: reads leads from a table and writes their status back.
//!
//! [`AirtableClient::fetch_leads`] lists the table (following `offset` pages, through the
//! configured view and formula) and maps each record to a `NewLead` with
//! `source = "airtable:<base>/<table>"` and `source_ref = <record id>`.
//! [`AirtableClient::write_back`] sets `Engagement_Status` and `Date Messaged` with PATCH.
//! The wire format, limits and error shapes follow the Airtable Web API (see the project's
//! protocol notes, §4); `engager-testkit` has a fake that speaks the same protocol.

mod client;
mod config;
mod error;
mod records;

pub use client::{
    AirtableClient, Writeback, MAX_LIST_RESTARTS, MAX_RATE_LIMIT_RETRIES, MAX_RECORDS_PER_WRITE,
};
pub use config::{AirtableConfig, AirtableFieldMapping, DEFAULT_API_URL};
pub use error::{AirtableError, ApiError};
pub use records::{
    status_conversions, AirtableRecord, FetchReport, Ineligibility, IneligibleRecord,
    RejectedRecord, StatusConversion, CUSTOM_MESSAGE_KEY, DATE_MESSAGED_KEY, EMAIL_CONFIDENCE_KEY,
    ENGAGEMENT_STATUS_KEY,
};
