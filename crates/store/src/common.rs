//! Helpers shared by both backends: time encoding and record decoding.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use engager_domain::{
    CountryCode, EmailAddress, Lead, LeadId, LeadStatus, LinkedinUrl, NewLead, PhoneE164, TimeZone,
};

use crate::{GateRow, StoreError, StoreResult};

/// Milliseconds since the epoch: the stored form of every instant.
pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Reads a stored instant.
pub(crate) fn from_ms(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(v).unwrap_or(DateTime::UNIX_EPOCH)
}

/// Reads an optional stored instant.
pub(crate) fn from_ms_opt(v: Option<i64>) -> Option<DateTime<Utc>> {
    v.map(from_ms)
}

fn corrupt(column: &'static str, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        table: "leads",
        column,
        reason: reason.to_string(),
    }
}

/// The raw columns of a lead row, in the order of `LEAD_COLUMNS`.
pub(crate) struct LeadRow {
    pub id: i64,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub phone_region: Option<String>,
    pub linkedin_url: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub company: Option<String>,
    pub title: Option<String>,
    pub industry: Option<String>,
    pub country: Option<String>,
    pub city: Option<String>,
    pub time_zone: Option<String>,
    pub website: Option<String>,
    pub custom_json: String,
    pub source: String,
    pub source_ref: Option<String>,
    pub status: String,
}

/// The lead columns every lead query selects, in `LeadRow` order.
pub(crate) const LEAD_COLUMNS: &str = "l.id, l.email, l.phone, l.phone_region, l.linkedin_url, \
    l.first_name, l.last_name, l.company, l.title, l.industry, l.country, l.city, l.time_zone, \
    l.website, l.custom_json, l.source, l.source_ref, l.status";

impl LeadRow {
    /// Rebuilds the domain lead.
    pub(crate) fn into_lead(self) -> StoreResult<Lead> {
        let email = self
            .email
            .map(|e| EmailAddress::parse(&e).map_err(|e| corrupt("email", e)))
            .transpose()?;
        let phone = self
            .phone
            .map(|p| {
                PhoneE164::from_stored(&p, self.phone_region.as_deref())
                    .map_err(|e| corrupt("phone", e))
            })
            .transpose()?;
        let linkedin = self
            .linkedin_url
            .map(|u| LinkedinUrl::parse(&u).map_err(|e| corrupt("linkedin_url", e)))
            .transpose()?;
        let country = self
            .country
            .map(|c| CountryCode::parse(&c).map_err(|e| corrupt("country", e)))
            .transpose()?;
        let time_zone = self
            .time_zone
            .map(|z| TimeZone::parse(&z).map_err(|e| corrupt("time_zone", e)))
            .transpose()?;
        let custom: BTreeMap<String, String> =
            serde_json::from_str(&self.custom_json).map_err(|e| corrupt("custom_json", e))?;
        let status: LeadStatus = self.status.parse().map_err(|e| corrupt("status", e))?;
        Ok(Lead {
            id: LeadId(self.id),
            status,
            profile: NewLead {
                email,
                phone,
                linkedin,
                first_name: self.first_name,
                last_name: self.last_name,
                company: self.company,
                title: self.title,
                industry: self.industry,
                country,
                city: self.city,
                time_zone,
                website: self.website,
                custom,
                source: self.source,
                source_ref: self.source_ref,
            },
        })
    }
}

/// The stored columns of a new lead, in insert order (without id, status and times).
pub(crate) struct LeadValues<'a> {
    pub email: Option<&'a str>,
    pub phone: Option<&'a str>,
    pub phone_region: Option<&'a str>,
    pub linkedin_url: Option<&'a str>,
    pub first_name: Option<&'a str>,
    pub last_name: Option<&'a str>,
    pub company: Option<&'a str>,
    pub title: Option<&'a str>,
    pub industry: Option<&'a str>,
    pub country: Option<&'a str>,
    pub city: Option<&'a str>,
    pub time_zone: Option<&'a str>,
    pub website: Option<&'a str>,
    pub custom_json: String,
    pub source: &'a str,
    pub source_ref: Option<&'a str>,
}

impl<'a> LeadValues<'a> {
    /// Flattens a domain lead into columns.
    pub(crate) fn of(lead: &'a NewLead) -> Self {
        Self {
            email: lead.email.as_ref().map(EmailAddress::as_str),
            phone: lead.phone.as_ref().map(PhoneE164::as_str),
            phone_region: lead.phone.as_ref().and_then(PhoneE164::region),
            linkedin_url: lead.linkedin.as_ref().map(LinkedinUrl::as_str),
            first_name: lead.first_name.as_deref(),
            last_name: lead.last_name.as_deref(),
            company: lead.company.as_deref(),
            title: lead.title.as_deref(),
            industry: lead.industry.as_deref(),
            country: lead.country.as_ref().map(CountryCode::as_str),
            city: lead.city.as_deref(),
            time_zone: lead.time_zone.as_ref().map(TimeZone::name),
            website: lead.website.as_deref(),
            custom_json: serde_json::to_string(&lead.custom).unwrap_or_else(|_| "{}".into()),
            source: &lead.source,
            source_ref: lead.source_ref.as_deref(),
        }
    }
}

/// Encodes a trace's gates as JSON for storage.
pub(crate) fn gates_json(gates: &[GateRow]) -> String {
    // Written for every evaluation: serialized straight from the rows, without a JSON tree.
    #[derive(serde::Serialize)]
    struct Stored<'a> {
        gate: &'a str,
        passed: bool,
        reason: &'a str,
    }
    let rows: Vec<Stored<'_>> = gates
        .iter()
        .map(|g| Stored {
            gate: &g.gate,
            passed: g.passed,
            reason: &g.reason,
        })
        .collect();
    serde_json::to_string(&rows).unwrap_or_else(|_| "[]".to_owned())
}

/// Decodes stored gates.
pub(crate) fn parse_gates(json: &str) -> StoreResult<Vec<GateRow>> {
    let bad = |reason: String| StoreError::Corrupt {
        table: "traces",
        column: "gates_json",
        reason,
    };
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    let rows = value.as_array().ok_or_else(|| bad("not an array".into()))?;
    rows.iter()
        .map(|r| {
            Ok(GateRow {
                gate: r["gate"].as_str().unwrap_or_default().to_owned(),
                passed: r["passed"].as_bool().unwrap_or(false),
                reason: r["reason"].as_str().unwrap_or_default().to_owned(),
            })
        })
        .collect()
}

/// A stored value that should parse into a domain enum but does not.
pub(crate) fn corrupt_in(
    table: &'static str,
    column: &'static str,
    reason: impl ToString,
) -> StoreError {
    StoreError::Corrupt {
        table,
        column,
        reason: reason.to_string(),
    }
}

// --- the shared limiter (both backends store the same rows and decide the same way) ---------

/// Microseconds since the epoch: the stored form of a rate bucket's theoretical arrival time
/// (finer than milliseconds, so that e.g. 30 per second spaces sends exactly).
pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// The `rate_buckets` rows one permit request reads and writes.
pub(crate) struct PermitKeys {
    /// `<account>|pause`.
    pub pause: String,
    /// `<account>|rate|<ms>|<count>`, one per rate.
    pub rates: Vec<String>,
    /// `<account>|day|<YYYY-MM-DD>` and the day's start (ms), when a cap applies.
    pub day: Option<(String, i64)>,
}

impl PermitKeys {
    pub(crate) fn new(request: &crate::PermitRequest) -> Self {
        let account = &request.account;
        let day = request.now.date_naive();
        Self {
            pause: pause_key(account),
            rates: request
                .rates
                .iter()
                .map(|q| format!("{account}|rate|{}|{}", q.per.num_milliseconds(), q.count))
                .collect(),
            day: request.daily_cap.map(|_| {
                let start = day.and_hms_opt(0, 0, 0).map_or(0, |t| ms(t.and_utc()));
                (format!("{account}|day|{}", day.format("%Y-%m-%d")), start)
            }),
        }
    }
}

/// The pause row of an account.
pub(crate) fn pause_key(account: &str) -> String {
    format!("{account}|pause")
}

/// Decides a permit from the stored rows: `paused_until` (µs), each rate's theoretical
/// arrival time (µs; `None` for a fresh bucket) and the permits taken today. On success,
/// the new arrival time of each rate; otherwise when to come back and why. A GCRA without
/// burst: with the emission interval T = per / count, a send at `now` is allowed when
/// tat ≤ now, and moves tat to now + T. Sends are spaced at least T apart, so no window of
/// length `per` ever holds more than `count` of them, whichever process sent them.
pub(crate) fn decide_permit(
    request: &crate::PermitRequest,
    paused_until: Option<i64>,
    rate_tats: &[Option<i64>],
    taken_today: i64,
) -> Result<Vec<i64>, (DateTime<Utc>, String)> {
    let now = micros(request.now);
    // Rounded up to the millisecond the ledger stores, so a row put back until then is
    // never a hair early.
    let at = |us: i64| {
        DateTime::from_timestamp_micros(us.saturating_add(999) / 1000 * 1000).unwrap_or(request.now)
    };
    if let Some(until) = paused_until.filter(|u| *u > now) {
        return Err((
            at(until),
            format!("{} was asked by its provider to pause", request.account),
        ));
    }
    if let Some(cap) = request.daily_cap {
        if taken_today >= i64::from(cap) {
            let tomorrow = (request.now.date_naive() + chrono::Duration::days(1))
                .and_hms_opt(0, 0, 0)
                .map_or(request.now + chrono::Duration::days(1), |t| t.and_utc());
            return Err((
                tomorrow,
                format!(
                    "daily cap of {cap} reached for {} (shared)",
                    request.account
                ),
            ));
        }
    }
    let mut tats = Vec::with_capacity(request.rates.len());
    let mut wait: Option<i64> = None;
    for (quota, tat) in request.rates.iter().zip(rate_tats) {
        let per = quota.per.num_microseconds().unwrap_or(i64::MAX / 4).max(1);
        let interval = (per / i64::from(quota.count.max(1))).max(1);
        let tat = tat.unwrap_or(now);
        if tat > now {
            wait = Some(wait.map_or(tat, |w| w.max(tat)));
        }
        tats.push(now + interval);
    }
    match wait {
        Some(until) => Err((
            at(until),
            format!("rate limit of {} (shared)", request.account),
        )),
        None => Ok(tats),
    }
}
