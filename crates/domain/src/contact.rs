//! Contact points and places: parsed once, valid forever after.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// Why a contact value was rejected; the message names what was expected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ContactError {
    /// The email address is malformed.
    #[error("invalid email address {value:?}: {reason}")]
    Email { value: String, reason: &'static str },
    /// The phone number could not be parsed or is not a valid number.
    #[error("invalid phone number {value:?}: {reason}")]
    Phone { value: String, reason: String },
    /// The LinkedIn URL is not a linkedin.com profile URL.
    #[error("invalid LinkedIn profile URL {value:?}: {reason}")]
    Linkedin { value: String, reason: &'static str },
    /// The country is not an ISO 3166-1 alpha-2 code.
    #[error("invalid country {value:?}: expected an ISO 3166-1 alpha-2 code such as US or DE")]
    Country { value: String },
    /// The time zone is not an IANA zone name.
    #[error("invalid time zone {value:?}: expected an IANA name such as Europe/Berlin")]
    TimeZone { value: String },
}

/// A syntactically valid email address, normalized to lower case.
///
/// Normalizing the local part too is deliberate: the same person imported as `Jane@X.com`
/// and `jane@x.com` must be one lead and one suppression entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Parses and normalizes an address (trimmed, lower-cased).
    pub fn parse(raw: &str) -> Result<Self, ContactError> {
        let value = raw.trim();
        let fail = |reason| ContactError::Email {
            value: raw.to_owned(),
            reason,
        };
        if value.is_empty() {
            return Err(fail("it is empty"));
        }
        if value.len() > 254 {
            return Err(fail("it is longer than 254 characters"));
        }
        let (local, domain) = value.split_once('@').ok_or_else(|| fail("it has no @"))?;
        if domain.contains('@') {
            return Err(fail("it has more than one @"));
        }
        if local.is_empty() || local.len() > 64 {
            return Err(fail("the part before @ must be 1 to 64 characters"));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(fail("the part before @ has a misplaced dot"));
        }
        let local_ok = local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
        if !local_ok {
            return Err(fail("the part before @ has a character not allowed there"));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 {
            return Err(fail("the domain has no dot"));
        }
        for label in &labels {
            let ok = !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !ok {
                return Err(fail("the domain is not a valid host name"));
            }
        }
        Ok(Self(value.to_ascii_lowercase()))
    }

    /// The normalized address.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The domain part, e.g. `example.com`.
    pub fn domain(&self) -> &str {
        self.0.split_once('@').map(|(_, d)| d).unwrap_or("")
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A phone number valid for its region, in E.164 form (`+14155550100`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PhoneE164 {
    e164: String,
    region: Option<String>,
}

impl PhoneE164 {
    /// Parses a number in international form, or in national form for `default_region`.
    pub fn parse(raw: &str, default_region: Option<&CountryCode>) -> Result<Self, ContactError> {
        let fail = |reason: String| ContactError::Phone {
            value: raw.to_owned(),
            reason,
        };
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(fail("it is empty".into()));
        }
        let region = match default_region {
            Some(country) => phonenumber::country::Id::from_str(country.as_str()).ok(),
            None => None,
        };
        let number = phonenumber::parse(region, trimmed).map_err(|e| fail(e.to_string()))?;
        if !phonenumber::is_valid(&number) {
            return Err(fail("it is not a valid number for its region".into()));
        }
        let e164 = number.format().mode(phonenumber::Mode::E164).to_string();
        let region = number.country().id().map(|id| format!("{id:?}"));
        Ok(Self { e164, region })
    }

    /// Rebuilds a number that was parsed before and stored with its region.
    ///
    /// Full validation ran when the number was first parsed; re-running libphonenumber on
    /// every load would dominate the planner's cost, so only the E.164 shape is checked here.
    pub fn from_stored(e164: &str, region: Option<&str>) -> Result<Self, ContactError> {
        let digits = e164.strip_prefix('+').unwrap_or("");
        if digits.len() < 6 || digits.len() > 15 || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(ContactError::Phone {
                value: e164.to_owned(),
                reason: "a stored number must be in E.164 form".into(),
            });
        }
        Ok(Self {
            e164: e164.to_owned(),
            region: region.map(str::to_owned),
        })
    }

    /// The E.164 form.
    pub fn as_str(&self) -> &str {
        &self.e164
    }

    /// The number's region (ISO alpha-2) when it can be determined.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }
}

impl fmt::Display for PhoneE164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.e164)
    }
}

/// A LinkedIn member profile URL (`https://www.linkedin.com/in/<slug>`), normalized.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LinkedinUrl(String);

impl LinkedinUrl {
    /// Parses and normalizes a profile URL (https, `www.linkedin.com`, no query, no trailing slash).
    pub fn parse(raw: &str) -> Result<Self, ContactError> {
        let fail = |reason| ContactError::Linkedin {
            value: raw.to_owned(),
            reason,
        };
        let trimmed = raw.trim();
        let with_scheme = if trimmed.starts_with("http://") || trimmed.starts_with("https://") {
            trimmed.to_owned()
        } else {
            format!("https://{trimmed}")
        };
        let url = url::Url::parse(&with_scheme).map_err(|_| fail("it is not a URL"))?;
        let host = url.host_str().unwrap_or("").to_ascii_lowercase();
        if !(host == "linkedin.com" || host.ends_with(".linkedin.com")) {
            return Err(fail("the host is not linkedin.com"));
        }
        let mut segments = url.path_segments().ok_or(fail("it has no path"))?;
        let kind = segments.next().unwrap_or("");
        let slug = segments.next().unwrap_or("");
        if kind != "in" || slug.is_empty() {
            return Err(fail("expected a member profile path /in/<name>"));
        }
        Ok(Self(format!("https://www.linkedin.com/in/{slug}")))
    }

    /// The normalized URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LinkedinUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An ISO 3166-1 alpha-2 country code, upper case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode(String);

impl CountryCode {
    /// Parses a two-letter code that phonenumber's metadata knows as a region.
    pub fn parse(raw: &str) -> Result<Self, ContactError> {
        let code = raw.trim().to_ascii_uppercase();
        let known = code.len() == 2
            && code.chars().all(|c| c.is_ascii_uppercase())
            && (phonenumber::country::Id::from_str(&code).is_ok() || code == "XK");
        if known {
            Ok(Self(code))
        } else {
            Err(ContactError::Country {
                value: raw.to_owned(),
            })
        }
    }

    /// The upper-case code.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the country is in the EU, the EEA or is the UK (GDPR territory).
    pub fn is_gdpr_territory(&self) -> bool {
        const GDPR: [&str; 31] = [
            "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
            "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE", "IS",
            "LI", "NO", "GB",
        ];
        GDPR.contains(&self.0.as_str())
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An IANA time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeZone(chrono_tz::Tz);

impl TimeZone {
    /// Parses an IANA zone name such as `Europe/Berlin`.
    pub fn parse(raw: &str) -> Result<Self, ContactError> {
        raw.trim()
            .parse::<chrono_tz::Tz>()
            .map(Self)
            .map_err(|_| ContactError::TimeZone {
                value: raw.to_owned(),
            })
    }

    /// Wraps a chrono-tz zone.
    pub fn from_tz(tz: chrono_tz::Tz) -> Self {
        Self(tz)
    }

    /// The chrono-tz zone, for local-time arithmetic.
    pub fn tz(&self) -> chrono_tz::Tz {
        self.0
    }

    /// The IANA name.
    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// A representative zone for a country, used when a lead has no explicit zone.
    ///
    /// For countries spanning several zones this is the most populous business zone; the
    /// source of the guess is recorded in the trace so that a person can correct it.
    pub fn for_country(country: &CountryCode) -> Option<Self> {
        let name = match country.as_str() {
            "US" => "America/New_York",
            "CA" => "America/Toronto",
            "MX" => "America/Mexico_City",
            "BR" => "America/Sao_Paulo",
            "AR" => "America/Argentina/Buenos_Aires",
            "GB" => "Europe/London",
            "IE" => "Europe/Dublin",
            "DE" => "Europe/Berlin",
            "FR" => "Europe/Paris",
            "NL" => "Europe/Amsterdam",
            "BE" => "Europe/Brussels",
            "ES" => "Europe/Madrid",
            "PT" => "Europe/Lisbon",
            "IT" => "Europe/Rome",
            "CH" => "Europe/Zurich",
            "AT" => "Europe/Vienna",
            "SE" => "Europe/Stockholm",
            "NO" => "Europe/Oslo",
            "DK" => "Europe/Copenhagen",
            "FI" => "Europe/Helsinki",
            "PL" => "Europe/Warsaw",
            "IN" => "Asia/Kolkata",
            "JP" => "Asia/Tokyo",
            "SG" => "Asia/Singapore",
            "CN" => "Asia/Shanghai",
            "KR" => "Asia/Seoul",
            "AE" => "Asia/Dubai",
            "IL" => "Asia/Jerusalem",
            "AU" => "Australia/Sydney",
            "NZ" => "Pacific/Auckland",
            "ZA" => "Africa/Johannesburg",
            _ => return None,
        };
        Self::parse(name).ok()
    }
}

impl fmt::Display for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(
            EmailAddress::parse("  Jane.Doe@Example.COM ")
                .unwrap()
                .as_str(),
            "jane.doe@example.com"
        );
        for bad in [
            "",
            "jane",
            "jane@",
            "@x.com",
            "a@b@c.com",
            "jane doe@x.com",
            "jane@localhost",
            "jane..d@x.com",
            "jane@-x.com",
        ] {
            assert!(
                EmailAddress::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn phones_parse_in_national_and_international_form() {
        let de = CountryCode::parse("de").unwrap();
        let national = PhoneE164::parse("0151 23456789", Some(&de)).unwrap();
        assert_eq!(national.as_str(), "+4915123456789");
        assert_eq!(national.region(), Some("DE"));
        let intl = PhoneE164::parse("+44 20 7946 0123", None).unwrap();
        assert_eq!(intl.as_str(), "+442079460123");
        assert!(PhoneE164::parse("12ab", Some(&de)).is_err());
        assert!(PhoneE164::parse("+1 000 000 0000", None).is_err());
    }

    #[test]
    fn linkedin_urls_are_normalized() {
        let url = LinkedinUrl::parse("linkedin.com/in/jane-doe-123/?trk=x").unwrap();
        assert_eq!(url.as_str(), "https://www.linkedin.com/in/jane-doe-123");
        assert!(LinkedinUrl::parse("https://example.com/in/jane").is_err());
        assert!(LinkedinUrl::parse("https://www.linkedin.com/company/acme").is_err());
    }

    #[test]
    fn countries_and_zones() {
        assert_eq!(CountryCode::parse("gb").unwrap().as_str(), "GB");
        assert!(CountryCode::parse("Germany123").is_err());
        assert!(CountryCode::parse("ZZ").is_err());
        assert!(TimeZone::parse("Mars/Olympus_Mons").is_err());
        let de = CountryCode::parse("DE").unwrap();
        assert_eq!(TimeZone::for_country(&de).unwrap().name(), "Europe/Berlin");
        assert!(de.is_gdpr_territory());
    }
}
