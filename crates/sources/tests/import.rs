//! File import, end to end: the example file, JSONL, mappings, errors, scale and robustness.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use engager_sources::import::{read_leads, read_leads_from, ImportError, ImportOptions};
use engager_sources::{ColumnMapping, FileFormat, LeadField, ParsedFile};
use proptest::prelude::*;

fn example_leads() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/leads.csv")
}

fn write_file(dir: &tempfile::TempDir, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    let mut file = std::fs::File::create(&path).expect("create temp file");
    file.write_all(contents).expect("write temp file");
    path
}

/// Every row is accounted for exactly once: a lead, a rejection or a dropped duplicate.
fn assert_accounted(parsed: &ParsedFile) {
    assert_eq!(
        parsed.leads.len() as u64 + parsed.rejected.len() as u64 + parsed.duplicates,
        parsed.rows,
        "leads + rejected + duplicates must equal rows"
    );
}

#[test]
fn the_example_file_gives_221_leads_6_rejections_and_3_duplicates() {
    let parsed = read_leads(&example_leads(), &ImportOptions::default()).expect("readable");
    assert_eq!(parsed.format, FileFormat::Csv);
    assert_eq!(parsed.rows, 230);
    assert_eq!(parsed.duplicates, 3);
    assert_eq!(parsed.leads.len(), 221);
    assert_accounted(&parsed);

    let rejected: Vec<(u64, Option<&str>, Option<&str>)> = parsed
        .rejected
        .iter()
        .map(|r| (r.line, r.field.as_deref(), r.value.as_deref()))
        .collect();
    assert_eq!(
        rejected,
        vec![
            (37, Some("email"), Some("hannah.kochcobalt-health.example")),
            (
                79,
                Some("email"),
                Some("alfie.jones@sales@bramble-sentinel.example")
            ),
            (116, None, None),
            (157, Some("timezone"), Some("Mars/Olympus_Mons")),
            (172, Some("phone"), Some("12ab")),
            (223, Some("country"), Some("Germany123")),
        ]
    );
    let first = &parsed.rejected[0];
    assert!(first.reason.ends_with("it has no @"), "{}", first.reason);
    assert_eq!(
        first.to_string(),
        format!(
            "{}:37: field email: invalid email address \"hannah.kochcobalt-health.example\": it has no @",
            first.file
        )
    );
    assert!(parsed.rejected[1].reason.contains("more than one @"));
    assert!(parsed.rejected[2].reason.contains("no contact point"));
    assert!(parsed.rejected[2]
        .to_string()
        .contains(":116: the lead has no contact point"));

    // Duplicates keep the later row (its line and its promoted title).
    let by_email = |email: &str| {
        parsed
            .leads
            .iter()
            .find(|l| l.lead.email.as_ref().is_some_and(|e| e.as_str() == email))
            .unwrap_or_else(|| panic!("{email} should be imported"))
    };
    let carlos = by_email("carlos.lewis@crescent-industries.example");
    assert_eq!(
        (carlos.line, carlos.lead.title.as_deref()),
        (125, Some("COO"))
    );
    assert_eq!(by_email("iker.lopez@solace-studio.example").line, 147);
    let thomas = by_email("thomas.morgan@halcyon-clinics.example");
    assert_eq!(thomas.line, 193);
    assert_eq!(thomas.lead.title.as_deref(), Some("Co-Founder & CTO"));

    // Leads stay in file order, and every field lands where it belongs.
    assert!(parsed.leads.windows(2).all(|w| w[0].line < w[1].line));
    let jack = &parsed.leads[0];
    assert_eq!(jack.line, 2);
    let lead = &jack.lead;
    assert_eq!(lead.source, "csv:leads.csv");
    assert_eq!(lead.source_ref, None);
    assert_eq!(lead.first_name.as_deref(), Some("Jack"));
    assert_eq!(lead.last_name.as_deref(), Some("Kelly"));
    assert_eq!(lead.company.as_deref(), Some("Northwind Industries"));
    assert_eq!(lead.title.as_deref(), Some("Head of Sales"));
    assert_eq!(lead.industry.as_deref(), Some("Manufacturing"));
    assert_eq!(lead.country.as_ref().map(|c| c.as_str()), Some("AU"));
    assert_eq!(lead.city.as_deref(), Some("Perth"));
    assert_eq!(lead.time_zone.map(|z| z.name()), Some("Australia/Perth"));
    assert_eq!(lead.phone, None, "an empty cell is an absent value");
    assert_eq!(
        lead.linkedin.as_ref().map(|l| l.as_str()),
        Some("https://www.linkedin.com/in/jack-kelly-3ceddf")
    );
    assert_eq!(
        lead.website.as_deref(),
        Some("https://northwind-industries.example")
    );
    assert_eq!(
        lead.custom.get("custom_message").map(String::as_str),
        Some("Saw Northwind Industries launched a partner program, curious how it's going.")
    );
    // A national US number is parsed with the row's country.
    assert_eq!(
        carlos.lead.phone.as_ref().map(|p| p.as_str()),
        Some("+16785201632")
    );
    // An empty custom cell is absent, not an empty string.
    assert!(!carlos.lead.custom.contains_key("custom_message"));
}

#[test]
fn jsonl_rejects_bad_json_and_non_objects_by_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = b"{\"email\":\"ann@x.example\",\"First Name\":\"Ann\",\"Custom Message\":\"Hi\"}\n\
                 {\"email\": \"bob@x.example\", oops}\n\
                 \n\
                 [\"not\", \"an\", \"object\"]\n\
                 \"just a string\"\n\
                 {\"phone\":\"+44 20 7946 0123\",\"tz\":\"Europe/London\"}\r\n\
                 \xFF\xFE{}\n\
                 {\"Email\":\"ANN@x.example\",\"company\":\"Later Inc\"}";
    let path = write_file(&dir, "leads.ndjson", text);
    let parsed = read_leads(&path, &ImportOptions::default()).expect("readable");
    assert_eq!(parsed.format, FileFormat::Jsonl);
    assert_eq!(parsed.rows, 7, "the blank line is not a row");
    assert_accounted(&parsed);
    let rejected: Vec<u64> = parsed.rejected.iter().map(|r| r.line).collect();
    assert_eq!(rejected, vec![2, 4, 5, 7]);
    assert!(parsed.rejected[0]
        .reason
        .starts_with("the line is not valid JSON"));
    assert_eq!(
        parsed.rejected[1].reason,
        "expected a JSON object, found an array"
    );
    assert_eq!(
        parsed.rejected[2].reason,
        "expected a JSON object, found a string"
    );
    assert!(parsed.rejected[3].reason.contains("UTF-8"));

    assert_eq!(parsed.duplicates, 1);
    let lines: Vec<u64> = parsed.leads.iter().map(|l| l.line).collect();
    assert_eq!(lines, vec![6, 8]);
    let phone_only = &parsed.leads[0].lead;
    assert_eq!(phone_only.source, "jsonl:leads.ndjson");
    assert_eq!(
        phone_only.time_zone.map(|z| z.name()),
        Some("Europe/London")
    );
    // The last occurrence wins whole: the first row's name and message are not merged in.
    let ann = &parsed.leads[1].lead;
    assert_eq!(ann.company.as_deref(), Some("Later Inc"));
    assert_eq!(ann.first_name, None);
}

#[test]
fn explicit_mapping_and_aliases_feed_the_right_fields() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = "E-Mail Address,Vorname,Last Name,Firma,Job Title,Zone,Mobile,LinkedIn,Land,Email,Custom Message,Lead Score\n\
                jane@acme.example,Jane,Doe,Acme,CTO,Europe/Berlin,0151 23456789,linkedin.com/in/jane-doe,de,other@acme.example,Hello there,87\n";
    let path = write_file(&dir, "export.csv", text.as_bytes());
    let mapping = ColumnMapping::from_entries([
        "email=E-Mail Address",
        "first_name=Vorname",
        "company=firma",
        "timezone=Zone",
        "country=Land",
    ])
    .expect("valid mapping");
    let options = ImportOptions {
        format: None,
        mapping,
    };
    let parsed = read_leads(&path, &options).expect("readable");
    assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
    let lead = &parsed.leads[0].lead;
    assert_eq!(
        lead.email.as_ref().map(|e| e.as_str()),
        Some("jane@acme.example")
    );
    assert_eq!(lead.first_name.as_deref(), Some("Jane"));
    assert_eq!(lead.last_name.as_deref(), Some("Doe"));
    assert_eq!(lead.company.as_deref(), Some("Acme"));
    assert_eq!(lead.title.as_deref(), Some("CTO"));
    assert_eq!(lead.time_zone.map(|z| z.name()), Some("Europe/Berlin"));
    assert_eq!(lead.country.as_ref().map(|c| c.as_str()), Some("DE"));
    assert_eq!(
        lead.phone.as_ref().map(|p| p.as_str()),
        Some("+4915123456789")
    );
    assert_eq!(
        lead.linkedin.as_ref().map(|l| l.as_str()),
        Some("https://www.linkedin.com/in/jane-doe")
    );
    // `Email` is an alias, but email is mapped explicitly, so it becomes a custom column.
    assert_eq!(
        lead.custom.get("email").map(String::as_str),
        Some("other@acme.example")
    );
    assert_eq!(
        lead.custom.get("custom_message").map(String::as_str),
        Some("Hello there")
    );
    assert_eq!(
        lead.custom.get("lead_score").map(String::as_str),
        Some("87")
    );
    assert_eq!(lead.custom.len(), 3);
}

#[test]
fn a_mapped_column_missing_from_the_header_is_a_file_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_file(&dir, "a.csv", b"email,name\na@x.example,A\n");
    let options = ImportOptions {
        format: None,
        mapping: ColumnMapping::new().with(LeadField::Phone, "Handy"),
    };
    let err = read_leads(&path, &options).expect_err("the column is missing");
    assert!(
        matches!(err, ImportError::MappedColumnMissing { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("\"Handy\""), "{err}");
    assert!(err.to_string().contains("a.csv"), "{err}");
}

#[test]
fn missing_files_and_unknown_formats_name_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nope.csv");
    let err = read_leads(&missing, &ImportOptions::default()).expect_err("missing");
    assert!(matches!(err, ImportError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains("nope.csv"), "{err}");

    let txt = write_file(&dir, "leads.txt", b"email\na@x.example\n");
    let err = read_leads(&txt, &ImportOptions::default()).expect_err("unknown format");
    assert!(matches!(err, ImportError::UnknownFormat { .. }), "{err:?}");
    assert!(err.to_string().contains("leads.txt"), "{err}");

    let forced = ImportOptions {
        format: Some("csv".parse().expect("known format")),
        mapping: ColumnMapping::new(),
    };
    let parsed = read_leads(&txt, &forced).expect("readable as CSV");
    assert_eq!(parsed.leads.len(), 1);
    assert_eq!(parsed.leads[0].lead.source, "csv:leads.txt");
}

#[test]
fn a_hundred_thousand_rows_import_in_linear_time() {
    let mut text = String::from("email,first_name,company,country,phone,custom_message\n");
    for i in 0..100_000u32 {
        // Every tenth row has a phone; every thousandth repeats an earlier email.
        let n = if i % 1000 == 999 { i - 500 } else { i };
        let phone = if i % 10 == 0 { "+44 20 7946 0123" } else { "" };
        text.push_str(&format!(
            "Person.{n}@Company{}.example,Person{n},Company {},GB,{phone},\"Hello, {n}\"\n",
            n % 977,
            n % 977
        ));
    }
    let started = Instant::now();
    let parsed = read_leads_from(
        text.as_bytes(),
        "big.csv",
        "csv:big.csv",
        FileFormat::Csv,
        &ColumnMapping::new(),
    )
    .expect("readable");
    let elapsed = started.elapsed();
    assert_eq!(parsed.rows, 100_000);
    assert_eq!(parsed.duplicates, 100);
    assert_eq!(parsed.leads.len(), 99_900);
    assert!(parsed.rejected.is_empty());
    assert_eq!(parsed.leads.last().map(|l| l.line), Some(100_001));
    // A generous bound for unoptimized builds; quadratic work would take minutes.
    assert!(elapsed.as_secs() < 60, "took {elapsed:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        for format in [FileFormat::Csv, FileFormat::Jsonl] {
            match read_leads_from(&bytes[..], "fuzz", "fuzz", format, &ColumnMapping::new()) {
                Ok(parsed) => assert_accounted(&parsed),
                Err(ImportError::Header { .. }) => {}
                Err(other) => panic!("unexpected error {other:?}"),
            }
        }
    }

    #[test]
    fn csv_like_noise_never_panics(
        body in proptest::collection::vec(
            prop_oneof![
                Just(","), Just("\""), Just("\n"), Just("\r\n"), Just("@"), Just("."),
                Just("a"), Just("x.example"), Just("+44 20 7946 0123"), Just("DE"),
                Just("Europe/Berlin"), Just(" "), Just("\u{feff}"), Just("é"),
            ],
            0..200,
        )
    ) {
        let text = format!("email,phone,country,timezone,notes\n{}", body.concat());
        let parsed = read_leads_from(
            text.as_bytes(), "fuzz.csv", "csv:fuzz.csv", FileFormat::Csv, &ColumnMapping::new(),
        ).expect("a CSV with a header is readable");
        assert_accounted(&parsed);
        prop_assert!(parsed.leads.windows(2).all(|w| w[0].line < w[1].line));
        for lead in &parsed.leads {
            prop_assert!(lead.line >= 2);
            prop_assert!(lead.lead.validate().is_ok());
        }
    }
}
