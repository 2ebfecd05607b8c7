//! Turning raw text values into a validated `NewLead`.
//!
//! Invariant: a draft becomes a lead only if every present value parses; the first problem
//! found rejects the whole row or record. Values are checked in a fixed order — email,
//! country, time zone, phone, LinkedIn URL, then the contact-point rule — so a row with
//! several bad values always reports the same one. The country comes before the phone
//! because national phone numbers are parsed with the row's country as their region.

use std::collections::BTreeMap;
use std::fmt;

use engager_domain::{CountryCode, EmailAddress, LinkedinUrl, NewLead, PhoneE164, TimeZone};

use crate::mapping::LeadField;

/// Why a row or record could not become a lead: which field, which value, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldProblem {
    /// The column or field name as it appears in the source; `None` for whole-row problems.
    pub(crate) field: Option<String>,
    /// The offending value as found; `None` for whole-row problems.
    pub(crate) value: Option<String>,
    /// What is wrong and what was expected.
    pub(crate) reason: String,
}

impl FieldProblem {
    /// A problem with the row or record as a whole (not one field).
    pub(crate) fn whole(reason: impl Into<String>) -> Self {
        Self {
            field: None,
            value: None,
            reason: reason.into(),
        }
    }

    /// A problem with one field's value.
    pub(crate) fn field(field: &str, value: &str, reason: impl Into<String>) -> Self {
        Self {
            field: Some(field.to_owned()),
            value: Some(value.to_owned()),
            reason: reason.into(),
        }
    }
}

/// The raw values of one row or record, before parsing.
#[derive(Debug, Default)]
pub(crate) struct LeadDraft<'c> {
    /// Per field: the source column it came from and its trimmed, non-empty value.
    values: BTreeMap<LeadField, (&'c str, String)>,
    /// Values for `NewLead::custom`.
    pub(crate) custom: BTreeMap<String, String>,
}

impl<'c> LeadDraft<'c> {
    /// Sets a field from `column` unless the value is blank; the first value for a field wins.
    pub(crate) fn set(&mut self, field: LeadField, column: &'c str, value: &str) {
        let value = value.trim();
        if !value.is_empty() {
            self.values
                .entry(field)
                .or_insert_with(|| (column, value.to_owned()));
        }
    }

    /// Whether the field already has a value.
    pub(crate) fn has(&self, field: LeadField) -> bool {
        self.values.contains_key(&field)
    }

    /// Adds a custom value unless it is blank.
    pub(crate) fn set_custom(&mut self, key: &str, value: &str) {
        let value = value.trim();
        if !value.is_empty() {
            self.custom.insert(key.to_owned(), value.to_owned());
        }
    }

    /// The trimmed raw value of a field, if present.
    pub(crate) fn raw(&self, field: LeadField) -> Option<&str> {
        self.values.get(&field).map(|(_, v)| v.as_str())
    }

    fn parse<T, E: fmt::Display>(
        &self,
        field: LeadField,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<Option<T>, FieldProblem> {
        match self.values.get(&field) {
            None => Ok(None),
            Some((column, value)) => parse(value)
                .map(Some)
                .map_err(|e| FieldProblem::field(column, value, e.to_string())),
        }
    }

    fn text(&mut self, field: LeadField) -> Option<String> {
        self.values.remove(&field).map(|(_, v)| v)
    }

    /// Parses every value into a lead from `source`, or names the first problem.
    pub(crate) fn build(
        mut self,
        source: &str,
        source_ref: Option<String>,
    ) -> Result<NewLead, FieldProblem> {
        let email = self.parse(LeadField::Email, EmailAddress::parse)?;
        let country = self.parse(LeadField::Country, CountryCode::parse)?;
        let time_zone = self.parse(LeadField::TimeZone, TimeZone::parse)?;
        let phone = self.parse(LeadField::Phone, |raw| {
            PhoneE164::parse(raw, country.as_ref())
        })?;
        let linkedin = self.parse(LeadField::Linkedin, LinkedinUrl::parse)?;

        let mut first_name = self.text(LeadField::FirstName);
        let mut last_name = self.text(LeadField::LastName);
        if let Some(full) = self.text(LeadField::FullName) {
            if first_name.is_none() && last_name.is_none() {
                let (first, last) = split_full_name(&full);
                first_name = first;
                last_name = last;
            }
        }
        let lead = NewLead {
            email,
            phone,
            linkedin,
            first_name,
            last_name,
            company: self.text(LeadField::Company),
            title: self.text(LeadField::Title),
            industry: self.text(LeadField::Industry),
            country,
            city: self.text(LeadField::City),
            time_zone,
            website: self.text(LeadField::Website),
            custom: self.custom,
            source: source.to_owned(),
            source_ref,
        };
        lead.validate()
            .map_err(|e| FieldProblem::whole(e.to_string()))?;
        Ok(lead)
    }
}

/// Splits a full name at its first space: `Mary Ann Smith` → (`Mary`, `Ann Smith`).
pub(crate) fn split_full_name(full: &str) -> (Option<String>, Option<String>) {
    let full = full.trim();
    let non_empty = |s: &str| {
        let s = s.trim();
        (!s.is_empty()).then(|| s.to_owned())
    };
    match full.split_once(char::is_whitespace) {
        Some((first, last)) => (non_empty(first), non_empty(last)),
        None => (non_empty(full), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_names_split_at_the_first_space() {
        assert_eq!(
            split_full_name(" Mary Ann  Smith "),
            (Some("Mary".into()), Some("Ann  Smith".into()))
        );
        assert_eq!(split_full_name("Cher"), (Some("Cher".into()), None));
        assert_eq!(split_full_name("  "), (None, None));
    }

    #[test]
    fn the_first_problem_in_check_order_is_reported() {
        let mut draft = LeadDraft::default();
        draft.set(LeadField::Phone, "Phone", "12ab");
        draft.set(LeadField::Country, "Country", "Germany123");
        let problem = draft.build("test", None).unwrap_err();
        assert_eq!(problem.field.as_deref(), Some("Country"));
        assert_eq!(problem.value.as_deref(), Some("Germany123"));
    }

    #[test]
    fn national_phone_numbers_use_the_country() {
        let mut draft = LeadDraft::default();
        draft.set(LeadField::Phone, "phone", "0151 23456789");
        draft.set(LeadField::Country, "country", "de");
        draft.set(LeadField::FullName, "name", "Jane Doe");
        let lead = draft.build("test", None).unwrap();
        assert_eq!(lead.phone.unwrap().as_str(), "+4915123456789");
        assert_eq!(lead.first_name.as_deref(), Some("Jane"));
        assert_eq!(lead.last_name.as_deref(), Some("Doe"));
    }

    #[test]
    fn a_lead_needs_a_contact_point() {
        let mut draft = LeadDraft::default();
        draft.set(LeadField::FirstName, "first_name", "Manon");
        let problem = draft.build("test", None).unwrap_err();
        assert_eq!(problem.field, None);
        assert!(problem.reason.contains("no contact point"));
    }
}
