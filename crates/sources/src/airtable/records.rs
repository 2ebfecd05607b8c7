//! Airtable records into leads, and the original engager's eligibility gates.
//!
//! Invariants:
//! - Airtable omits empty fields, so an absent field and an empty one mean the same: no value.
//! - A record becomes exactly one of: a lead, a rejected record (a value does not parse;
//!   the first bad value in the fixed check order is named), or — in compat mode only — an
//!   ineligible record (a gate failed; the first failing gate is named, in the order valid
//!   email, confidence, custom message, status).
//! - Mapped fields feed lead fields; `Custom_Message`, `Email_Confidence_Level`,
//!   `Engagement_Status` and `Date Messaged` go to `custom` under fixed keys; every other
//!   field with a text, number, boolean or list-of-those value goes to `custom` under its
//!   snake_case name. Attachments, collaborators and other object values are skipped.

use std::fmt;

use engager_domain::{EmailAddress, NewLead};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::config::AirtableConfig;
use crate::draft::{FieldProblem, LeadDraft};
use crate::mapping::{snake_case, LeadField};

/// `custom` key of the personalized opener.
pub const CUSTOM_MESSAGE_KEY: &str = "custom_message";
/// `custom` key of the email confidence level.
pub const EMAIL_CONFIDENCE_KEY: &str = "email_confidence_level";
/// `custom` key of the engagement status.
pub const ENGAGEMENT_STATUS_KEY: &str = "engagement_status";
/// `custom` key of the date last messaged.
pub const DATE_MESSAGED_KEY: &str = "date_messaged";

/// One Airtable record as listed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AirtableRecord {
    /// The record id (`rec...`).
    pub id: String,
    /// When the record was created, as Airtable sends it (ISO 8601).
    #[serde(rename = "createdTime", default)]
    pub created_time: String,
    /// The non-empty fields, by name.
    #[serde(default)]
    pub fields: Map<String, Value>,
}

/// A record that could not become a lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRecord {
    /// The record id.
    pub record_id: String,
    /// The Airtable field name; `None` when the record as a whole is bad.
    pub field: Option<String>,
    /// The offending value; `None` when the record as a whole is bad.
    pub value: Option<String>,
    /// What is wrong and what was expected.
    pub reason: String,
}

impl fmt::Display for RejectedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(
                f,
                "record {}: field {}: {}",
                self.record_id, field, self.reason
            ),
            None => write!(f, "record {}: {}", self.record_id, self.reason),
        }
    }
}

/// Which compat-mode gate a record failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ineligibility {
    /// The email field is empty.
    NoEmail,
    /// The email does not parse; `reason` is the parser's message.
    InvalidEmail {
        /// Why the address is invalid.
        reason: String,
    },
    /// The email confidence level is neither `Real` nor `Pattern`.
    ConfidenceNotAccepted {
        /// The level found, if any.
        found: Option<String>,
    },
    /// The custom message is empty.
    NoCustomMessage,
    /// The engagement status is not `Auto-Send`.
    NotAutoSend {
        /// The status found, if any.
        found: Option<String>,
    },
}

impl fmt::Display for Ineligibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ineligibility::NoEmail => f.write_str("the email is empty"),
            Ineligibility::InvalidEmail { reason } => write!(f, "the email is unusable: {reason}"),
            Ineligibility::ConfidenceNotAccepted { found: Some(level) } => write!(
                f,
                "the email confidence level is {level:?}, not Real or Pattern"
            ),
            Ineligibility::ConfidenceNotAccepted { found: None } => {
                f.write_str("the email confidence level is empty, not Real or Pattern")
            }
            Ineligibility::NoCustomMessage => f.write_str("the custom message is empty"),
            Ineligibility::NotAutoSend {
                found: Some(status),
            } => {
                write!(f, "the engagement status is {status:?}, not Auto-Send")
            }
            Ineligibility::NotAutoSend { found: None } => {
                f.write_str("the engagement status is empty, not Auto-Send")
            }
        }
    }
}

/// A record that compat mode would not contact, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IneligibleRecord {
    /// The record id.
    pub record_id: String,
    /// The first gate it failed.
    pub reason: Ineligibility,
}

/// What one fetch produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchReport {
    /// How many records Airtable returned.
    pub records: usize,
    /// The leads, in Airtable's order, with `source_ref` = record id.
    pub leads: Vec<NewLead>,
    /// Records whose values do not parse.
    pub rejected: Vec<RejectedRecord>,
    /// Records that failed a compat-mode gate (always empty outside compat mode).
    pub ineligible: Vec<IneligibleRecord>,
    /// Records whose status is one of `conversion_statuses` (whether or not they became a
    /// lead in this fetch: a converted lead is often no longer eligible).
    pub conversions: Vec<StatusConversion>,
}

/// A record whose `Engagement_Status` marks its lead as converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusConversion {
    /// The record id (the lead's `source_ref`).
    pub record_id: String,
    /// The status value, as in the base.
    pub status: String,
    /// The kind of conversion it means (`meeting`, `opportunity`, …).
    pub kind: String,
}

/// The records whose status maps to a conversion (status values compared after trimming,
/// case-sensitively as Airtable's single-select options are).
pub fn status_conversions(
    config: &AirtableConfig,
    records: &[AirtableRecord],
) -> Vec<StatusConversion> {
    if config.conversion_statuses.is_empty() {
        return Vec::new();
    }
    records
        .iter()
        .filter_map(|r| {
            let status = r
                .fields
                .get(&config.fields.engagement_status)?
                .as_str()?
                .trim();
            let kind = config.conversion_statuses.get(status)?;
            Some(StatusConversion {
                record_id: r.id.clone(),
                status: status.to_owned(),
                kind: kind.clone(),
            })
        })
        .collect()
}

/// Why one record did not become a lead.
pub(crate) enum Unmapped {
    Rejected(RejectedRecord),
    Ineligible(IneligibleRecord),
}

/// Maps records to leads per the configuration, collecting the outcome of each.
pub(crate) fn map_records(config: &AirtableConfig, records: &[AirtableRecord]) -> FetchReport {
    let source = config.source_name();
    let mut report = FetchReport {
        records: records.len(),
        conversions: status_conversions(config, records),
        ..FetchReport::default()
    };
    for record in records {
        match map_record(config, &source, record) {
            Ok(lead) => report.leads.push(lead),
            Err(Unmapped::Rejected(rejected)) => report.rejected.push(rejected),
            Err(Unmapped::Ineligible(ineligible)) => report.ineligible.push(ineligible),
        }
    }
    report
}

/// Maps one record.
pub(crate) fn map_record(
    config: &AirtableConfig,
    source: &str,
    record: &AirtableRecord,
) -> Result<NewLead, Unmapped> {
    let names = &config.fields;
    let mut lead_fields: Vec<(LeadField, &str)> = vec![
        (LeadField::Email, &names.email),
        (LeadField::FullName, &names.name),
        (LeadField::Company, &names.company),
        (LeadField::Title, &names.title),
        (LeadField::Phone, &names.phone),
        (LeadField::Linkedin, &names.linkedin),
        (LeadField::Country, &names.country),
        (LeadField::City, &names.city),
        (LeadField::TimeZone, &names.time_zone),
        (LeadField::Industry, &names.industry),
        (LeadField::Website, &names.website),
    ];
    if let Some(first) = &names.first_name {
        lead_fields.push((LeadField::FirstName, first));
    }
    if let Some(last) = &names.last_name {
        lead_fields.push((LeadField::LastName, last));
    }
    let fixed_custom: [(&str, &str); 4] = [
        (&names.custom_message, CUSTOM_MESSAGE_KEY),
        (&names.email_confidence, EMAIL_CONFIDENCE_KEY),
        (&names.engagement_status, ENGAGEMENT_STATUS_KEY),
        (&names.date_messaged, DATE_MESSAGED_KEY),
    ];

    let rejected = |problem: FieldProblem| {
        Unmapped::Rejected(RejectedRecord {
            record_id: record.id.clone(),
            field: problem.field,
            value: problem.value,
            reason: problem.reason,
        })
    };

    let mut draft = LeadDraft::default();
    for (field, name) in &lead_fields {
        let Some(value) = record.fields.get(*name) else {
            continue;
        };
        match field_text(value) {
            Some(text) => draft.set(*field, name, &text),
            None => {
                return Err(rejected(FieldProblem::field(
                    name,
                    &value.to_string(),
                    "expected text, a number or a list of those",
                )))
            }
        }
    }
    for (name, key) in fixed_custom {
        if let Some(text) = record.fields.get(name).and_then(field_text) {
            draft.set_custom(key, &text);
        }
    }
    for (name, value) in &record.fields {
        let is_mapped = lead_fields.iter().any(|(_, n)| n == name)
            || fixed_custom.iter().any(|(n, _)| n == name);
        if is_mapped {
            continue;
        }
        if let Some(text) = field_text(value) {
            let mut key = snake_case(name);
            if key.is_empty() {
                continue;
            }
            if draft.custom.contains_key(&key) {
                key.push_str("_2");
            }
            draft.set_custom(&key, &text);
        }
    }

    if config.compat_mode {
        if let Err(reason) = compat_gates(&draft) {
            return Err(Unmapped::Ineligible(IneligibleRecord {
                record_id: record.id.clone(),
                reason,
            }));
        }
    }
    draft
        .build(source, Some(record.id.clone()))
        .map_err(rejected)
}

/// The original engager's gates, in its order; the first failure is the reason.
fn compat_gates(draft: &LeadDraft<'_>) -> Result<(), Ineligibility> {
    let email = draft.raw(LeadField::Email).ok_or(Ineligibility::NoEmail)?;
    EmailAddress::parse(email).map_err(|e| Ineligibility::InvalidEmail {
        reason: e.to_string(),
    })?;
    let confidence = draft.custom.get(EMAIL_CONFIDENCE_KEY);
    let accepted = confidence
        .is_some_and(|c| c.eq_ignore_ascii_case("real") || c.eq_ignore_ascii_case("pattern"));
    if !accepted {
        return Err(Ineligibility::ConfidenceNotAccepted {
            found: confidence.cloned(),
        });
    }
    if !draft.custom.contains_key(CUSTOM_MESSAGE_KEY) {
        return Err(Ineligibility::NoCustomMessage);
    }
    let status = draft.custom.get(ENGAGEMENT_STATUS_KEY);
    if !status.is_some_and(|s| s.eq_ignore_ascii_case("auto-send")) {
        return Err(Ineligibility::NotAutoSend {
            found: status.cloned(),
        });
    }
    Ok(())
}

/// The text of a field value: text, numbers and booleans as text, lists of those joined
/// with ", " (lookups, multiple selects); `None` for objects and lists holding them.
fn field_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => Some(String::new()),
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(items) => {
            let parts: Option<Vec<String>> = items
                .iter()
                .map(|item| match item {
                    Value::Array(_) | Value::Object(_) => None,
                    scalar => field_text(scalar),
                })
                .collect();
            Some(parts?.join(", "))
        }
        Value::Object(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(fields: Value) -> AirtableRecord {
        AirtableRecord {
            id: "recTEST".into(),
            created_time: "2024-01-01T00:00:00.000Z".into(),
            fields: fields.as_object().cloned().unwrap_or_default(),
        }
    }

    fn config(compat: bool) -> AirtableConfig {
        AirtableConfig {
            compat_mode: compat,
            ..AirtableConfig::new("appTEST", "Leads", "pat".into())
        }
    }

    #[test]
    fn a_4runr_record_maps_to_a_lead() {
        let r = record(json!({
            "Name": "Jane van Dyke",
            "Email": " Jane@Acme.example ",
            "Company": "Acme",
            "Email_Confidence_Level": "Real",
            "Custom_Message": "Loved your talk.",
            "Engagement_Status": "Auto-Send",
            "Lead Score": 87,
            "Tags": ["vip", "fintech"],
            "Photo": [{"url": "https://x", "filename": "a.png"}],
        }));
        let Ok(lead) = map_record(&config(true), "airtable:appTEST/Leads", &r) else {
            panic!("expected a lead");
        };
        assert_eq!(lead.email.unwrap().as_str(), "jane@acme.example");
        assert_eq!(lead.first_name.as_deref(), Some("Jane"));
        assert_eq!(lead.last_name.as_deref(), Some("van Dyke"));
        assert_eq!(lead.company.as_deref(), Some("Acme"));
        assert_eq!(lead.custom[CUSTOM_MESSAGE_KEY], "Loved your talk.");
        assert_eq!(lead.custom[EMAIL_CONFIDENCE_KEY], "Real");
        assert_eq!(lead.custom[ENGAGEMENT_STATUS_KEY], "Auto-Send");
        assert_eq!(lead.custom["lead_score"], "87");
        assert_eq!(lead.custom["tags"], "vip, fintech");
        assert!(!lead.custom.contains_key("photo"));
        assert_eq!(lead.source, "airtable:appTEST/Leads");
        assert_eq!(lead.source_ref.as_deref(), Some("recTEST"));
    }

    #[test]
    fn an_object_in_a_lead_field_rejects_the_record() {
        let r = record(json!({"Email": {"oops": 1}}));
        let Err(Unmapped::Rejected(rejected)) = map_record(&config(false), "s", &r) else {
            panic!("expected a rejection");
        };
        assert_eq!(rejected.field.as_deref(), Some("Email"));
    }
}
