//! Leads: the people Engager reaches out to.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::campaign::Channel;
use crate::contact::{CountryCode, EmailAddress, LinkedinUrl, PhoneE164, TimeZone};
use crate::ids::LeadId;
use crate::zone::{resolve_zone, ZoneResolution};

/// Whether a lead may be contacted at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeadStatus {
    /// May be contacted.
    Active,
    /// Opted out; never contacted again.
    Unsubscribed,
    /// Their address bounced permanently.
    Bounced,
    /// Their personal data was erased on request (GDPR Art. 17); never contacted again.
    Erased,
}

impl LeadStatus {
    /// The lower-case name used in storage and output.
    pub fn as_str(self) -> &'static str {
        match self {
            LeadStatus::Active => "active",
            LeadStatus::Unsubscribed => "unsubscribed",
            LeadStatus::Bounced => "bounced",
            LeadStatus::Erased => "erased",
        }
    }
}

impl fmt::Display for LeadStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unrecognized stored lead status.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown lead status {0:?}")]
pub struct UnknownLeadStatus(pub String);

impl FromStr for LeadStatus {
    type Err = UnknownLeadStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(LeadStatus::Active),
            "unsubscribed" => Ok(LeadStatus::Unsubscribed),
            "bounced" => Ok(LeadStatus::Bounced),
            "erased" => Ok(LeadStatus::Erased),
            other => Err(UnknownLeadStatus(other.to_owned())),
        }
    }
}

/// A lead as parsed from a source, before it is stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewLead {
    /// Email address.
    pub email: Option<EmailAddress>,
    /// Mobile or landline number.
    pub phone: Option<PhoneE164>,
    /// LinkedIn member profile.
    pub linkedin: Option<LinkedinUrl>,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// Company name.
    pub company: Option<String>,
    /// Job title.
    pub title: Option<String>,
    /// Industry.
    pub industry: Option<String>,
    /// Country.
    pub country: Option<CountryCode>,
    /// City.
    pub city: Option<String>,
    /// Explicit time zone.
    pub time_zone: Option<TimeZone>,
    /// Company website.
    pub website: Option<String>,
    /// Any other fields, available to templates as `custom.<name>`.
    pub custom: BTreeMap<String, String>,
    /// Where the lead came from (`csv:leads.csv`, `airtable:appX/Leads`).
    pub source: String,
    /// The record's id in its source (e.g. an Airtable record id), for write-back.
    pub source_ref: Option<String>,
}

/// Why a lead could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LeadError {
    /// Neither email, phone nor LinkedIn is present.
    #[error("the lead has no contact point: give at least an email, a phone or a LinkedIn URL")]
    NoContactPoint,
}

impl NewLead {
    /// Checks that the lead can be reached at all.
    pub fn validate(&self) -> Result<(), LeadError> {
        if self.email.is_none() && self.phone.is_none() && self.linkedin.is_none() {
            Err(LeadError::NoContactPoint)
        } else {
            Ok(())
        }
    }
}

/// Where a lead's time zone came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneSource {
    /// The lead's own time-zone field.
    Explicit,
    /// Derived from the lead's city (built-in city table).
    City,
    /// Derived from the lead's country.
    Country,
    /// Derived from the phone number's region.
    PhoneRegion,
    /// The configured default zone.
    Default,
}

impl ZoneSource {
    /// A short name for traces.
    pub fn as_str(self) -> &'static str {
        match self {
            ZoneSource::Explicit => "explicit",
            ZoneSource::City => "city",
            ZoneSource::Country => "country",
            ZoneSource::PhoneRegion => "phone region",
            ZoneSource::Default => "default",
        }
    }
}

/// A stored lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lead {
    /// Stored id.
    pub id: LeadId,
    /// Whether the lead may be contacted.
    pub status: LeadStatus,
    /// Everything known about the lead.
    pub profile: NewLead,
}

impl Lead {
    /// The lead's time zone and where it came from: explicit → city → country → phone
    /// region → `default`.
    pub fn time_zone(&self, default: TimeZone) -> (TimeZone, ZoneSource) {
        let r = self.zone(default);
        (r.zone, r.source)
    }

    /// The lead's full zone resolution (with subdivision and, for guesses, the spread of
    /// zones the lead may be in).
    pub fn zone(&self, default: TimeZone) -> ZoneResolution {
        resolve_zone(&self.profile, default)
    }

    /// The country whose holidays apply to the lead: its country, else its phone's region.
    pub fn home_country(&self) -> Option<&str> {
        self.profile
            .country
            .as_ref()
            .map(CountryCode::as_str)
            .or_else(|| self.profile.phone.as_ref().and_then(|p| p.region()))
    }

    /// Whether the lead has a contact point for the channel.
    pub fn reachable_on(&self, channel: Channel) -> bool {
        match channel {
            Channel::Email => self.profile.email.is_some(),
            Channel::Sms => self.profile.phone.is_some(),
            Channel::Linkedin => self.profile.linkedin.is_some(),
        }
    }

    /// A display name: full name, else the email, else the id.
    pub fn display_name(&self) -> String {
        let p = &self.profile;
        let name = [p.first_name.as_deref(), p.last_name.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        if !name.is_empty() {
            name
        } else if let Some(email) = &p.email {
            email.to_string()
        } else {
            format!("lead {}", self.id)
        }
    }
}
