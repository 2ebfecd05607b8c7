//! Engager's lead sources: CSV and JSONL files ([`import`]) and an Airtable table
//! ([`airtable`]), both turned into validated `engager_domain::NewLead`s.
//!
//! Architecture invariant: a source never stops on one bad row or record. Bad data comes
//! back as a report entry naming where it is (file and line, or record id), which field,
//! which value and why; only a source that cannot be read at all is an error.
//! Both sources share one column mapping ([`mapping`]) and one lead builder, so a value
//! means the same thing whichever way it arrives.

pub mod airtable;
mod draft;
pub mod import;
pub mod mapping;

pub use import::{
    read_leads, read_leads_from, FileFormat, ImportError, ImportOptions, ParsedFile, ParsedLead,
    RejectedRow,
};
pub use mapping::{ColumnMapping, LeadField, MappingError};
