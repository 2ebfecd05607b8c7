//! File import: CSV and JSONL files into `NewLead`s.
//!
//! Invariants:
//! - Bad data never fails the whole file and never panics. A row whose structure is broken
//!   (wrong number of CSV fields, invalid UTF-8, a JSONL line that is not a JSON object) or
//!   whose values do not parse is returned as a [`RejectedRow`] naming the file, the
//!   physical line (header = line 1; a CSV row spanning several lines is reported at its
//!   first line), the column, the offending value and the reason. Only a missing or
//!   unreadable file, an unreadable CSV header or a mapped column absent from the header is
//!   an [`ImportError`].
//! - A row with several bad values reports exactly one: the first in the fixed check order
//!   email, country, time zone, phone, LinkedIn URL, then "no contact point".
//! - Rows with the same normalized email collapse to the **last** occurrence; the earlier
//!   ones are counted in [`ParsedFile::duplicates`], not reported as errors. Leads without an
//!   email are never merged.
//! - Work is linear in the size of the file: one pass, one hash lookup per row.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::str::FromStr;

use engager_domain::NewLead;
use serde_json::Value;
use thiserror::Error;

use crate::draft::{FieldProblem, LeadDraft};
use crate::mapping::{resolve_header, snake_case, ColumnMapping, LeadField, Resolver, Target};

/// The format of a lead file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Comma-separated values with a header line.
    Csv,
    /// One JSON object per line (JSON Lines, NDJSON).
    Jsonl,
}

impl FileFormat {
    /// The format implied by a file's extension (`.csv`, `.jsonl`, `.ndjson`; any case).
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(FileFormat::Csv),
            "jsonl" | "ndjson" => Some(FileFormat::Jsonl),
            _ => None,
        }
    }

    /// The short name used in `NewLead::source` (`csv`, `jsonl`).
    pub fn as_str(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::Jsonl => "jsonl",
        }
    }
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A format name that is not `csv`, `jsonl` or `ndjson`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown file format {0:?}: expected csv, jsonl or ndjson")]
pub struct UnknownFormat(pub String);

impl FromStr for FileFormat {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "csv" => Ok(FileFormat::Csv),
            "jsonl" | "ndjson" => Ok(FileFormat::Jsonl),
            _ => Err(UnknownFormat(s.to_owned())),
        }
    }
}

/// How to read a lead file.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The file's format; `None` infers it from the extension.
    pub format: Option<FileFormat>,
    /// Explicit column names for lead fields; other fields are found by their aliases.
    ///
    /// In CSV a mapped column missing from the header is an error; in JSONL, where keys
    /// vary from line to line, a mapped key that never appears simply feeds nothing.
    pub mapping: ColumnMapping,
}

/// A lead read from a file, with the line it started on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedLead {
    /// The 1-based physical line of the row (header = line 1 in CSV).
    pub line: u64,
    /// The lead, with `source` set to `csv:<file name>` or `jsonl:<file name>`.
    pub lead: NewLead,
}

/// A row that could not become a lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRow {
    /// The file as given by the caller.
    pub file: String,
    /// The 1-based physical line the row starts on (header = line 1 in CSV).
    pub line: u64,
    /// The column name as it appears in the file; `None` when the row as a whole is bad.
    pub field: Option<String>,
    /// The offending value; `None` when the row as a whole is bad.
    pub value: Option<String>,
    /// What is wrong and what was expected.
    pub reason: String,
}

impl fmt::Display for RejectedRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(
                f,
                "{}:{}: field {}: {}",
                self.file, self.line, field, self.reason
            ),
            None => write!(f, "{}:{}: {}", self.file, self.line, self.reason),
        }
    }
}

/// Everything read from one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedFile {
    /// The file as given by the caller.
    pub file: String,
    /// The format it was read as.
    pub format: FileFormat,
    /// The valid leads, in file order, one per normalized email (the last occurrence wins).
    pub leads: Vec<ParsedLead>,
    /// The rows that could not become leads, in file order.
    pub rejected: Vec<RejectedRow>,
    /// Valid rows dropped because a later row has the same normalized email.
    pub duplicates: u64,
    /// Data rows read (blank lines and the CSV header not counted).
    pub rows: u64,
}

/// Why a file could not be read at all.
#[derive(Debug, Error)]
pub enum ImportError {
    /// The file could not be opened.
    #[error("cannot open {file}")]
    Open {
        /// The file as given.
        file: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Reading failed part-way (an I/O error, not bad data).
    #[error("cannot read {file}")]
    Read {
        /// The file as given.
        file: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The format is neither given nor implied by the extension.
    #[error(
        "{file}: cannot tell the format from the file name: expected a .csv, .jsonl or \
         .ndjson extension, or give the format explicitly"
    )]
    UnknownFormat {
        /// The file as given.
        file: String,
    },
    /// The CSV header line is missing or unreadable.
    #[error("{file}: unreadable header: {reason}")]
    Header {
        /// The file as given.
        file: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A column named in the mapping is not in the CSV header.
    #[error("{file}: the column {column:?} mapped to {field} is not in the header")]
    MappedColumnMissing {
        /// The file as given.
        file: String,
        /// The lead field it was mapped to.
        field: LeadField,
        /// The missing column.
        column: String,
    },
}

/// Reads a CSV or JSONL lead file.
pub fn read_leads(path: &Path, options: &ImportOptions) -> Result<ParsedFile, ImportError> {
    let file = path.display().to_string();
    let format = match options.format.or_else(|| FileFormat::from_path(path)) {
        Some(format) => format,
        None => return Err(ImportError::UnknownFormat { file }),
    };
    let handle = File::open(path).map_err(|source| ImportError::Open {
        file: file.clone(),
        source,
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.clone());
    let source = format!("{}:{}", format.as_str(), name);
    read_leads_from(handle, &file, &source, format, &options.mapping)
}

/// Reads leads from any reader; `file` names it in reports, `source` goes into each lead.
///
/// CSV input is read into memory whole (to number lines exactly); JSONL is streamed.
pub fn read_leads_from(
    reader: impl Read,
    file: &str,
    source: &str,
    format: FileFormat,
    mapping: &ColumnMapping,
) -> Result<ParsedFile, ImportError> {
    let mut collector = Collector::new(file, source);
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    match format {
        FileFormat::Csv => {
            // The whole file is held in memory so that each row's first physical line can be
            // found exactly (see `LineCounter`); lead files are megabytes, not gigabytes.
            let mut data = Vec::new();
            reader
                .read_to_end(&mut data)
                .map_err(|e| collector.read_error(e))?;
            read_csv(&data, &mut collector, mapping)?;
        }
        FileFormat::Jsonl => read_jsonl(reader, &mut collector, mapping)?,
    }
    Ok(collector.finish(format))
}

/// Accumulates leads and rejections, collapsing duplicates by normalized email.
struct Collector {
    file: String,
    source: String,
    leads: Vec<Option<ParsedLead>>,
    by_email: HashMap<String, usize>,
    rejected: Vec<RejectedRow>,
    duplicates: u64,
    rows: u64,
}

impl Collector {
    fn new(file: &str, source: &str) -> Self {
        Self {
            file: file.to_owned(),
            source: source.to_owned(),
            leads: Vec::new(),
            by_email: HashMap::new(),
            rejected: Vec::new(),
            duplicates: 0,
            rows: 0,
        }
    }

    fn accept(&mut self, line: u64, draft: LeadDraft<'_>) {
        match draft.build(&self.source, None) {
            Ok(lead) => self.push(line, lead),
            Err(problem) => self.reject(line, problem),
        }
    }

    fn push(&mut self, line: u64, lead: NewLead) {
        let index = self.leads.len();
        if let Some(email) = &lead.email {
            match self.by_email.entry(email.as_str().to_owned()) {
                Entry::Occupied(mut earlier) => {
                    self.leads[*earlier.get()] = None;
                    earlier.insert(index);
                    self.duplicates += 1;
                }
                Entry::Vacant(slot) => {
                    slot.insert(index);
                }
            }
        }
        self.leads.push(Some(ParsedLead { line, lead }));
    }

    fn reject(&mut self, line: u64, problem: FieldProblem) {
        self.rejected.push(RejectedRow {
            file: self.file.clone(),
            line,
            field: problem.field,
            value: problem.value,
            reason: problem.reason,
        });
    }

    fn read_error(&self, source: io::Error) -> ImportError {
        ImportError::Read {
            file: self.file.clone(),
            source,
        }
    }

    fn finish(self, format: FileFormat) -> ParsedFile {
        ParsedFile {
            file: self.file,
            format,
            leads: self.leads.into_iter().flatten().collect(),
            rejected: self.rejected,
            duplicates: self.duplicates,
            rows: self.rows,
        }
    }
}

/// Finds the physical line each CSV row starts on, counting `\n`, `\r\n` and a lone `\r`
/// (classic Mac exports) as line ends, including those inside quoted fields.
///
/// The csv crate's own line numbers count only `\n`, and its record position lies *before*
/// the previous row's terminator when that is `\r\n` and before blank lines, so it can be
/// too small. Rows are met in file order, so one forward scan over the data is enough.
struct LineCounter {
    scanned: usize,
    line: u64,
}

impl LineCounter {
    fn new() -> Self {
        Self {
            scanned: 0,
            line: 1,
        }
    }

    /// The line of the row whose read began at `position`.
    fn line_of(&mut self, data: &[u8], position: &csv::Position) -> u64 {
        let from = usize::try_from(position.byte()).unwrap_or(usize::MAX);
        // Line terminators right at the position belong before the row: a row never starts
        // with one (a blank line is not a row).
        let skipped = data
            .get(from..)
            .unwrap_or_default()
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
        let start = from.saturating_add(skipped).min(data.len());
        if start < self.scanned {
            return position.line();
        }
        let gap = &data[self.scanned..start];
        for (i, byte) in gap.iter().enumerate() {
            let ends_line = match byte {
                b'\n' => true,
                b'\r' => data.get(self.scanned + i + 1) != Some(&b'\n'),
                _ => false,
            };
            if ends_line {
                self.line += 1;
            }
        }
        self.scanned = start;
        self.line
    }
}

fn read_csv(
    data: &[u8],
    collector: &mut Collector,
    mapping: &ColumnMapping,
) -> Result<(), ImportError> {
    let header_error = |reason: String| ImportError::Header {
        file: collector.file.clone(),
        reason,
    };
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(data);
    let raw_headers = match csv.byte_headers() {
        Ok(headers) => headers.clone(),
        Err(e) => {
            return Err(match e.into_kind() {
                csv::ErrorKind::Io(source) => collector.read_error(source),
                other => header_error(format!("{other:?}")),
            })
        }
    };
    if raw_headers.is_empty() {
        return Err(header_error(
            "the file is empty; expected a header line naming the columns".into(),
        ));
    }
    let mut headers = Vec::with_capacity(raw_headers.len());
    for (index, raw) in raw_headers.iter().enumerate() {
        let raw = if index == 0 {
            raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw)
        } else {
            raw
        };
        let text = std::str::from_utf8(raw)
            .map_err(|_| header_error(format!("column {} is not valid UTF-8", index + 1)))?;
        headers.push(text.trim().to_owned());
    }
    for (field, column) in mapping.entries() {
        let present = headers
            .iter()
            .any(|h| h == column || h.eq_ignore_ascii_case(column));
        if !present {
            return Err(ImportError::MappedColumnMissing {
                file: collector.file.clone(),
                field,
                column: column.to_owned(),
            });
        }
    }
    let targets = resolve_header(mapping, &headers);

    let mut lines = LineCounter::new();
    let mut record = csv::ByteRecord::new();
    let mut last_error_at: Option<u64> = None;
    loop {
        match csv.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(error) => {
                let position = error.position().cloned();
                match error.into_kind() {
                    csv::ErrorKind::Io(source) => return Err(collector.read_error(source)),
                    other => {
                        // The csv crate moves past a bad record; this guard only protects
                        // against a reader that would report the same spot forever.
                        let at = position.as_ref().map(|p| p.byte());
                        if at.is_some() && at == last_error_at {
                            return Err(collector.read_error(io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("the CSV reader is stuck: {other:?}"),
                            )));
                        }
                        last_error_at = at;
                        collector.rows += 1;
                        let line = position.map_or(0, |p| lines.line_of(data, &p));
                        collector.reject(
                            line,
                            FieldProblem::whole(format!("malformed CSV row: {other:?}")),
                        );
                        continue;
                    }
                }
            }
        }
        let line = record.position().map_or(0, |p| lines.line_of(data, p));
        let blank_line = record.len() == 1 && record[0].trim_ascii().is_empty();
        if blank_line && headers.len() > 1 {
            continue;
        }
        collector.rows += 1;
        if record.len() != headers.len() {
            collector.reject(
                line,
                FieldProblem::whole(format!(
                    "malformed CSV row: it has {} fields but the header has {} \
                     (check for a missing or extra comma, or an unbalanced quote)",
                    record.len(),
                    headers.len()
                )),
            );
            continue;
        }
        let mut draft = LeadDraft::default();
        let mut problem = None;
        for ((bytes, target), header) in record.iter().zip(&targets).zip(&headers) {
            let Ok(value) = std::str::from_utf8(bytes) else {
                problem = Some(FieldProblem::field(
                    header,
                    &String::from_utf8_lossy(bytes),
                    "the value is not valid UTF-8",
                ));
                break;
            };
            match target {
                Target::Field(field) => draft.set(*field, header, value),
                Target::Custom(key) => draft.set_custom(key, value),
            }
        }
        match problem {
            Some(problem) => collector.reject(line, problem),
            None => collector.accept(line, draft),
        }
    }
    Ok(())
}

fn read_jsonl(
    mut reader: impl BufRead,
    collector: &mut Collector,
    mapping: &ColumnMapping,
) -> Result<(), ImportError> {
    let mut resolver = Resolver::new(mapping);
    let mut targets: HashMap<String, Target> = HashMap::new();
    let mut buffer = Vec::new();
    let mut line = 0u64;
    loop {
        buffer.clear();
        let read = reader
            .read_until(b'\n', &mut buffer)
            .map_err(|e| collector.read_error(e))?;
        if read == 0 {
            break;
        }
        line += 1;
        let bytes = buffer.trim_ascii();
        if bytes.is_empty() {
            continue;
        }
        collector.rows += 1;
        let Ok(text) = std::str::from_utf8(bytes) else {
            collector.reject(line, FieldProblem::whole("the line is not valid UTF-8"));
            continue;
        };
        let object = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(object)) => object,
            Ok(other) => {
                let reason = format!("expected a JSON object, found {}", json_kind(&other));
                collector.reject(line, FieldProblem::whole(reason));
                continue;
            }
            Err(e) => {
                let reason = format!("the line is not valid JSON: {e}");
                collector.reject(line, FieldProblem::whole(reason));
                continue;
            }
        };
        let mut draft = LeadDraft::default();
        let mut problem = None;
        for (index, (key, value)) in object.iter().enumerate() {
            if !targets.contains_key(key) {
                let target = resolver.resolve(key, index, |_| false);
                targets.insert(key.clone(), target);
            }
            let Some(target) = targets.get(key) else {
                continue;
            };
            match (target, value) {
                (_, Value::Null) => {}
                (Target::Field(_), Value::Array(_) | Value::Object(_)) => {
                    problem = Some(FieldProblem::field(
                        key,
                        &value.to_string(),
                        format!(
                            "expected text, a number or true/false, found {}",
                            json_kind(value)
                        ),
                    ));
                    break;
                }
                (Target::Field(field), scalar) => {
                    let text = scalar_text(scalar);
                    if draft.has(*field) {
                        // Two keys name the same field (`email` and `Email`): keep the
                        // second one's value rather than drop it.
                        draft.set_custom(&snake_case(key), &text);
                    } else {
                        draft.set(*field, key, &text);
                    }
                }
                (Target::Custom(custom), other) => draft.set_custom(custom, &scalar_text(other)),
            }
        }
        match problem {
            Some(problem) => collector.reject(line, problem),
            None => collector.accept(line, draft),
        }
    }
    Ok(())
}

/// The text of a JSON value: strings as they are, everything else as compact JSON.
fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A JSON value's kind, for messages.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(format: FileFormat, text: &str, mapping: &ColumnMapping) -> ParsedFile {
        read_leads_from(
            text.as_bytes(),
            "t",
            &format!("{format}:t"),
            format,
            mapping,
        )
        .unwrap()
    }

    #[test]
    fn csv_lines_count_the_header_as_line_one_and_follow_quoted_newlines() {
        let text = "email,custom_message\n\
                    a@x.com,\"two\nlines\"\n\
                    \n\
                    b@x.com,plain\n\
                    bad,x\n";
        let parsed = parse(FileFormat::Csv, text, &ColumnMapping::new());
        let lines: Vec<u64> = parsed.leads.iter().map(|l| l.line).collect();
        assert_eq!(lines, vec![2, 5]);
        assert_eq!(parsed.rows, 3);
        assert_eq!(parsed.rejected.len(), 1);
        assert_eq!(parsed.rejected[0].line, 6);
        assert_eq!(parsed.leads[0].lead.custom["custom_message"], "two\nlines");
    }

    #[test]
    fn csv_structure_errors_are_rejected_rows() {
        let text = b"email,first_name\r\na@x.com,Ann\r\nb@x.com\r\nc@x.com,Bo,extra\r\nd@x.com,\xFF\xFE\r\n";
        let parsed = read_leads_from(
            &text[..],
            "t.csv",
            "csv:t.csv",
            FileFormat::Csv,
            &ColumnMapping::new(),
        )
        .unwrap();
        assert_eq!(parsed.leads.len(), 1);
        let got: Vec<(u64, Option<&str>)> = parsed
            .rejected
            .iter()
            .map(|r| (r.line, r.field.as_deref()))
            .collect();
        assert_eq!(got, vec![(3, None), (4, None), (5, Some("first_name"))]);
        assert!(parsed.rejected[0]
            .reason
            .contains("1 fields but the header has 2"));
        assert!(parsed.rejected[2].reason.contains("not valid UTF-8"));
    }

    #[test]
    fn classic_mac_line_ends_count_as_lines() {
        let text = "email,notes\ra@x.com,\"one\rtwo\"\r\rbad,x\r\nb@x.com,y";
        let parsed = parse(FileFormat::Csv, text, &ColumnMapping::new());
        let lines: Vec<u64> = parsed.leads.iter().map(|l| l.line).collect();
        assert_eq!(lines, vec![2, 6]);
        assert_eq!(parsed.rejected[0].line, 5);
    }

    #[test]
    fn a_bom_before_the_header_is_ignored() {
        let text = "\u{feff}Email,Name\nann@x.com,Ann Lee\n";
        let parsed = parse(FileFormat::Csv, text, &ColumnMapping::new());
        let lead = &parsed.leads[0].lead;
        assert_eq!(lead.email.as_ref().unwrap().as_str(), "ann@x.com");
        assert_eq!(lead.first_name.as_deref(), Some("Ann"));
        assert_eq!(lead.last_name.as_deref(), Some("Lee"));
    }

    #[test]
    fn an_empty_csv_file_is_a_header_error() {
        let err = read_leads_from(
            &b""[..],
            "empty.csv",
            "csv:empty.csv",
            FileFormat::Csv,
            &ColumnMapping::new(),
        )
        .unwrap_err();
        assert!(matches!(err, ImportError::Header { .. }), "{err:?}");
        assert!(err.to_string().contains("empty.csv"));
    }

    #[test]
    fn jsonl_values_of_every_kind() {
        let text = r#"{"Email":"a@x.com","Phone":"+44 20 7946 0123","score":7,"vip":true,"tags":["a","b"],"note":null}
{"email":"b@x.com","Email":"B2@x.com"}
{"email":["c@x.com"]}
"#;
        let parsed = parse(FileFormat::Jsonl, text, &ColumnMapping::new());
        assert_eq!(parsed.leads.len(), 2, "{:?}", parsed.rejected);
        let first = &parsed.leads[0].lead;
        assert_eq!(first.phone.as_ref().unwrap().as_str(), "+442079460123");
        assert_eq!(first.custom["score"], "7");
        assert_eq!(first.custom["vip"], "true");
        assert_eq!(first.custom["tags"], r#"["a","b"]"#);
        assert!(!first.custom.contains_key("note"));
        // serde_json orders keys, so "Email" is seen before "email".
        let second = &parsed.leads[1].lead;
        assert_eq!(second.email.as_ref().unwrap().as_str(), "b2@x.com");
        assert_eq!(second.custom["email"], "b@x.com");
        assert_eq!(parsed.rejected[0].line, 3);
        assert_eq!(parsed.rejected[0].field.as_deref(), Some("email"));
    }
}
