//! Column mapping: which column of a file (or field of a record) feeds which lead field.
//!
//! A column is matched to a lead field in this order: an explicit mapping entry
//! (`email=E-Mail Address`) names the column; otherwise the column's header is looked up
//! among the field's known aliases, compared case-insensitively and ignoring spaces,
//! underscores and dashes (`First Name`, `first_name`, `firstname`). A field that is mapped
//! explicitly is fed only by its mapped column. Every other column goes into
//! `NewLead::custom` under a snake_case key (`Custom Message` → `custom_message`); when two
//! columns would share a key, the later one gets a numeric suffix (`custom_message_2`) so
//! that no value is lost.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// A lead field that a source column can feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeadField {
    /// Email address.
    Email,
    /// Given name.
    FirstName,
    /// Family name.
    LastName,
    /// Full name, split into given and family name at the first space when those are absent.
    FullName,
    /// Company name.
    Company,
    /// Job title.
    Title,
    /// Industry.
    Industry,
    /// ISO 3166-1 alpha-2 country code.
    Country,
    /// City.
    City,
    /// IANA time zone name.
    TimeZone,
    /// Phone number, international or national (for the row's country).
    Phone,
    /// LinkedIn member profile URL.
    Linkedin,
    /// Company website.
    Website,
}

impl LeadField {
    /// Every lead field, in the order of the default column list.
    pub const ALL: [LeadField; 13] = [
        LeadField::Email,
        LeadField::FirstName,
        LeadField::LastName,
        LeadField::FullName,
        LeadField::Company,
        LeadField::Title,
        LeadField::Industry,
        LeadField::Country,
        LeadField::City,
        LeadField::TimeZone,
        LeadField::Phone,
        LeadField::Linkedin,
        LeadField::Website,
    ];

    /// The default column name for the field (`email`, `first_name`, `timezone`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            LeadField::Email => "email",
            LeadField::FirstName => "first_name",
            LeadField::LastName => "last_name",
            LeadField::FullName => "name",
            LeadField::Company => "company",
            LeadField::Title => "title",
            LeadField::Industry => "industry",
            LeadField::Country => "country",
            LeadField::City => "city",
            LeadField::TimeZone => "timezone",
            LeadField::Phone => "phone",
            LeadField::Linkedin => "linkedin_url",
            LeadField::Website => "website",
        }
    }

    /// Known header spellings, already normalized by [`normalize_header`].
    fn aliases(self) -> &'static [&'static str] {
        match self {
            LeadField::Email => &["email", "emailaddress", "mail", "workemail"],
            LeadField::FirstName => &["firstname", "givenname", "first"],
            LeadField::LastName => &["lastname", "surname", "familyname", "last"],
            LeadField::FullName => &["name", "fullname", "contactname"],
            LeadField::Company => &["company", "companyname", "organization", "organisation"],
            LeadField::Title => &["title", "jobtitle", "position", "role"],
            LeadField::Industry => &["industry", "sector"],
            LeadField::Country => &["country", "countrycode"],
            LeadField::City => &["city", "town"],
            LeadField::TimeZone => &["timezone", "tz"],
            LeadField::Phone => &[
                "phone",
                "phonenumber",
                "mobile",
                "mobilephone",
                "mobilenumber",
                "cell",
                "telephone",
            ],
            LeadField::Linkedin => &[
                "linkedinurl",
                "linkedin",
                "linkedinprofile",
                "linkedinprofileurl",
            ],
            LeadField::Website => &["website", "companywebsite", "web", "homepage"],
        }
    }

    /// The field a column header names, if any (case-insensitive; spaces, `_` and `-` ignored).
    pub fn from_header(header: &str) -> Option<LeadField> {
        let normalized = normalize_header(header);
        LeadField::ALL
            .into_iter()
            .find(|field| field.aliases().contains(&normalized.as_str()))
    }
}

impl fmt::Display for LeadField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the lead fields.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "unknown lead field {0:?}: expected one of email, first_name, last_name, name, company, \
     title, industry, country, city, timezone, phone, linkedin_url, website"
)]
pub struct UnknownLeadField(pub String);

impl FromStr for LeadField {
    type Err = UnknownLeadField;

    /// Accepts the default column names and every alias (`time_zone`, `Job Title`, ...).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LeadField::from_header(s).ok_or_else(|| UnknownLeadField(s.to_owned()))
    }
}

/// Why a mapping entry such as `email=E-Mail Address` was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MappingError {
    /// The entry has no `=`.
    #[error("invalid column mapping {0:?}: expected FIELD=COLUMN, e.g. email=E-Mail Address")]
    MissingEquals(String),
    /// The part before `=` is not a lead field.
    #[error("invalid column mapping {entry:?}: {source}")]
    UnknownField {
        /// The whole entry.
        entry: String,
        /// The unknown field.
        #[source]
        source: UnknownLeadField,
    },
    /// The part after `=` is empty.
    #[error("invalid column mapping {0:?}: the column name after = is empty")]
    EmptyColumn(String),
    /// The same lead field is mapped twice.
    #[error("the lead field {field} is mapped twice (to {first:?} and to {second:?})")]
    Duplicate {
        /// The field mapped twice.
        field: LeadField,
        /// The first column given.
        first: String,
        /// The second column given.
        second: String,
    },
}

/// Explicit column names for lead fields; fields not listed are found by their aliases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnMapping {
    explicit: BTreeMap<LeadField, String>,
}

impl ColumnMapping {
    /// A mapping that relies on default names and aliases only.
    pub fn new() -> Self {
        Self::default()
    }

    /// This mapping with `field` read from `column`, replacing any earlier column for it.
    pub fn with(mut self, field: LeadField, column: impl Into<String>) -> Self {
        self.explicit.insert(field, column.into());
        self
    }

    /// Parses entries of the form `FIELD=COLUMN` (as given to `--map`).
    pub fn from_entries<'a>(
        entries: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, MappingError> {
        let mut explicit = BTreeMap::new();
        for entry in entries {
            let (field, column) = entry
                .split_once('=')
                .ok_or_else(|| MappingError::MissingEquals(entry.to_owned()))?;
            let field: LeadField =
                field
                    .trim()
                    .parse()
                    .map_err(|source| MappingError::UnknownField {
                        entry: entry.to_owned(),
                        source,
                    })?;
            let column = column.trim();
            if column.is_empty() {
                return Err(MappingError::EmptyColumn(entry.to_owned()));
            }
            if let Some(first) = explicit.insert(field, column.to_owned()) {
                return Err(MappingError::Duplicate {
                    field,
                    first,
                    second: column.to_owned(),
                });
            }
        }
        Ok(Self { explicit })
    }

    /// The column explicitly mapped to `field`, if any.
    pub fn column_for(&self, field: LeadField) -> Option<&str> {
        self.explicit.get(&field).map(String::as_str)
    }

    /// The explicit entries, by field.
    pub fn entries(&self) -> impl Iterator<Item = (LeadField, &str)> {
        self.explicit.iter().map(|(f, c)| (*f, c.as_str()))
    }
}

/// Where one source column's values go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A lead field.
    Field(LeadField),
    /// `NewLead::custom` under this key.
    Custom(String),
}

/// Resolves column names to targets, one column at a time, with stable custom keys.
#[derive(Debug)]
pub(crate) struct Resolver<'m> {
    mapping: &'m ColumnMapping,
    used_custom: HashSet<String>,
}

impl<'m> Resolver<'m> {
    pub(crate) fn new(mapping: &'m ColumnMapping) -> Self {
        Self {
            mapping,
            used_custom: HashSet::new(),
        }
    }

    /// The field explicitly mapped to `column` (exact match first, then case-insensitive).
    pub(crate) fn explicit_field(&self, column: &str) -> Option<LeadField> {
        let trimmed = column.trim();
        self.mapping
            .entries()
            .find(|(_, c)| *c == trimmed)
            .or_else(|| {
                self.mapping
                    .entries()
                    .find(|(_, c)| c.eq_ignore_ascii_case(trimmed))
            })
            .map(|(f, _)| f)
    }

    /// The target of `column`; `index` (0-based) names columns whose header has no letters.
    ///
    /// `taken` says whether a field already has a column; an alias for a taken field, or
    /// for an explicitly mapped one, becomes a custom column instead.
    pub(crate) fn resolve(
        &mut self,
        column: &str,
        index: usize,
        taken: impl Fn(LeadField) -> bool,
    ) -> Target {
        if let Some(field) = self.explicit_field(column) {
            if !taken(field) {
                return Target::Field(field);
            }
        }
        if let Some(field) = LeadField::from_header(column) {
            if self.mapping.column_for(field).is_none() && !taken(field) {
                return Target::Field(field);
            }
        }
        Target::Custom(self.custom_key(column, index))
    }

    /// A snake_case key for `column` not used by an earlier column.
    pub(crate) fn custom_key(&mut self, column: &str, index: usize) -> String {
        let mut base = snake_case(column);
        if base.is_empty() {
            base = format!("column_{}", index + 1);
        }
        let mut key = base.clone();
        let mut n = 2;
        while self.used_custom.contains(&key) {
            key = format!("{base}_{n}");
            n += 1;
        }
        self.used_custom.insert(key.clone());
        key
    }
}

/// Resolves a whole header row: each column's target, at most one column per field.
pub(crate) fn resolve_header(mapping: &ColumnMapping, headers: &[String]) -> Vec<Target> {
    let mut resolver = Resolver::new(mapping);
    let mut taken: HashSet<LeadField> = HashSet::new();
    // Explicitly mapped columns are claimed first so that an alias column appearing earlier
    // in the header cannot take their field.
    let mut targets: Vec<Option<Target>> = headers
        .iter()
        .map(|h| {
            let field = resolver.explicit_field(h)?;
            taken.insert(field).then_some(Target::Field(field))
        })
        .collect();
    for (index, header) in headers.iter().enumerate() {
        if targets[index].is_none() {
            let target = resolver.resolve(header, index, |f| taken.contains(&f));
            if let Target::Field(field) = target {
                taken.insert(field);
            }
            targets[index] = Some(target);
        }
    }
    targets
        .into_iter()
        .enumerate()
        .map(|(index, t)| t.unwrap_or_else(|| Target::Custom(format!("column_{}", index + 1))))
        .collect()
}

/// Lower-case alphanumerics only: `E-mail` → `email`, `First Name` → `firstname`.
pub(crate) fn normalize_header(header: &str) -> String {
    header
        .trim()
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// A snake_case key: `Custom Message` → `custom_message`, `customMessage` → `custom_message`.
pub fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending_separator = false;
    let mut previous_lower_or_digit = false;
    for c in name.trim().chars() {
        if c.is_alphanumeric() {
            let boundary = c.is_uppercase() && previous_lower_or_digit;
            if (pending_separator || boundary) && !out.is_empty() {
                out.push('_');
            }
            pending_separator = false;
            out.extend(c.to_lowercase());
            previous_lower_or_digit = c.is_lowercase() || c.is_numeric();
        } else {
            pending_separator = true;
            previous_lower_or_digit = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_match_aliases_case_insensitively() {
        let cases = [
            ("email", Some(LeadField::Email)),
            ("E-mail", Some(LeadField::Email)),
            ("Email", Some(LeadField::Email)),
            ("First Name", Some(LeadField::FirstName)),
            ("firstname", Some(LeadField::FirstName)),
            ("Last Name", Some(LeadField::LastName)),
            ("Company", Some(LeadField::Company)),
            ("Job Title", Some(LeadField::Title)),
            ("Time Zone", Some(LeadField::TimeZone)),
            ("tz", Some(LeadField::TimeZone)),
            ("timezone", Some(LeadField::TimeZone)),
            ("Phone", Some(LeadField::Phone)),
            ("Mobile", Some(LeadField::Phone)),
            ("LinkedIn", Some(LeadField::Linkedin)),
            ("linkedin_url", Some(LeadField::Linkedin)),
            ("Website", Some(LeadField::Website)),
            ("Country", Some(LeadField::Country)),
            ("City", Some(LeadField::City)),
            ("custom_message", None),
        ];
        for (header, expected) in cases {
            assert_eq!(LeadField::from_header(header), expected, "{header}");
        }
    }

    #[test]
    fn snake_case_keys() {
        let cases = [
            ("custom_message", "custom_message"),
            ("Custom Message", "custom_message"),
            ("customMessage", "custom_message"),
            ("Email_Confidence_Level", "email_confidence_level"),
            ("Date Messaged", "date_messaged"),
            ("  Lead Score (0-100) ", "lead_score_0_100"),
            ("HTTP", "http"),
            ("!!!", ""),
        ];
        for (input, expected) in cases {
            assert_eq!(snake_case(input), expected, "{input}");
        }
    }

    #[test]
    fn mapping_entries_parse() {
        let mapping =
            ColumnMapping::from_entries(["email=E-Mail Address", "time_zone = Zone"]).unwrap();
        assert_eq!(mapping.column_for(LeadField::Email), Some("E-Mail Address"));
        assert_eq!(mapping.column_for(LeadField::TimeZone), Some("Zone"));
        assert!(matches!(
            ColumnMapping::from_entries(["email"]),
            Err(MappingError::MissingEquals(_))
        ));
        assert!(matches!(
            ColumnMapping::from_entries(["shoe_size=Size"]),
            Err(MappingError::UnknownField { .. })
        ));
        assert!(matches!(
            ColumnMapping::from_entries(["email= "]),
            Err(MappingError::EmptyColumn(_))
        ));
        assert!(matches!(
            ColumnMapping::from_entries(["email=A", "email=B"]),
            Err(MappingError::Duplicate { .. })
        ));
    }

    #[test]
    fn header_resolution_prefers_explicit_mapping_and_keeps_every_column() {
        let mapping = ColumnMapping::new().with(LeadField::Email, "Work Mail");
        let headers: Vec<String> = ["email", "Work Mail", "Notes", "notes", "Email", "???"]
            .into_iter()
            .map(String::from)
            .collect();
        let targets = resolve_header(&mapping, &headers);
        assert_eq!(
            targets,
            vec![
                Target::Custom("email".into()),
                Target::Field(LeadField::Email),
                Target::Custom("notes".into()),
                Target::Custom("notes_2".into()),
                Target::Custom("email_2".into()),
                Target::Custom("column_6".into()),
            ]
        );
    }
}
