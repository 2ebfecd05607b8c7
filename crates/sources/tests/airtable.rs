//! The Airtable client against the fake Airtable of `engager-testkit`: no internet.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use engager_sources::airtable::{
    AirtableClient, AirtableConfig, AirtableError, Ineligibility, Writeback,
};
use engager_testkit::airtable::{FakeAirtable, FakeAirtableSetup, FakeRecord, FakeView};
use serde_json::{json, Value};

const BASE: &str = "appENGAGERTEST01";
const TABLE: &str = "Lead List";
const PAT: &str = "patFAKE.0123456789abcdef-secret";

fn record_id(i: usize) -> String {
    format!("rec{i:014}")
}

/// A record shaped like the original 4Runr base, eligible in compat mode.
fn lead_record(i: usize) -> FakeRecord {
    FakeRecord::new(
        record_id(i),
        json!({
            "Name": format!("Person {i}"),
            "Email": format!("person{i}@company{i}.example"),
            "Company": format!("Company {i}"),
            "Email_Confidence_Level": "Real",
            "Custom_Message": format!("Hello {i}"),
            "Engagement_Status": "Auto-Send",
        }),
    )
}

async fn start_fake(
    records: Vec<FakeRecord>,
    tweak: impl FnOnce(&mut FakeAirtableSetup),
) -> FakeAirtable {
    let mut setup = FakeAirtableSetup::new(BASE, TABLE, PAT);
    setup.records = records;
    setup.extra_fields = vec!["Date Messaged".into()];
    tweak(&mut setup);
    FakeAirtable::start(setup).await.expect("the fake starts")
}

fn client_for(fake: &FakeAirtable, tweak: impl FnOnce(&mut AirtableConfig)) -> AirtableClient {
    let mut config = AirtableConfig::new(BASE, TABLE, PAT.into());
    config.api_url = fake.base_url().to_owned();
    tweak(&mut config);
    AirtableClient::new(config).expect("a valid configuration")
}

fn ids(leads: &[engager_domain::NewLead]) -> Vec<String> {
    leads
        .iter()
        .map(|l| l.source_ref.clone().unwrap_or_default())
        .collect()
}

fn all_ids(n: usize) -> Vec<String> {
    (0..n).map(record_id).collect()
}

#[tokio::test]
async fn pagination_reads_250_records_in_3_requests() {
    let fake = start_fake((0..250).map(lead_record).collect(), |_| {}).await;
    let client = client_for(&fake, |_| {});
    let report = client.fetch_leads().await.expect("fetch");
    assert_eq!(report.records, 250);
    assert_eq!(ids(&report.leads), all_ids(250));
    assert!(report.rejected.is_empty() && report.ineligible.is_empty());

    let lead = &report.leads[7];
    assert_eq!(lead.source, format!("airtable:{BASE}/{TABLE}"));
    assert_eq!(lead.first_name.as_deref(), Some("Person"));
    assert_eq!(lead.last_name.as_deref(), Some("7"));
    assert_eq!(lead.company.as_deref(), Some("Company 7"));
    assert_eq!(lead.custom["custom_message"], "Hello 7");
    assert_eq!(lead.custom["email_confidence_level"], "Real");
    assert_eq!(lead.custom["engagement_status"], "Auto-Send");

    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    for (i, request) in requests.iter().enumerate() {
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, format!("/v0/{BASE}/{TABLE}"));
        assert_eq!(request.status, 200);
        assert_eq!(request.query_value("pageSize"), Some("100"));
        assert_eq!(request.query_value("offset").is_some(), i > 0);
    }
}

#[tokio::test]
async fn the_filter_formula_and_view_are_passed_through() {
    let mut records: Vec<FakeRecord> = (0..12).map(lead_record).collect();
    for record in records.iter_mut().skip(8) {
        record
            .fields
            .insert("Engagement_Status".into(), json!("Sent"));
    }
    records[0].fields.insert("Company".into(), json!("Skip Me"));
    let fake = start_fake(records, |setup| {
        setup.views.push(FakeView {
            name: "Not skipped".into(),
            formula: Some("NOT({Company}='Skip Me')".into()),
        });
    })
    .await;
    let formula = "AND({Engagement_Status}='Auto-Send', NOT({Email}=''))";
    let client = client_for(&fake, |config| {
        config.filter_formula = Some(formula.into());
        config.view = Some("Not skipped".into());
    });
    let report = client.fetch_leads().await.expect("fetch");
    assert_eq!(
        ids(&report.leads),
        (1..8).map(record_id).collect::<Vec<_>>()
    );
    let request = &fake.requests()[0];
    assert_eq!(request.query_value("filterByFormula"), Some(formula));
    assert_eq!(request.query_value("view"), Some("Not skipped"));

    // A formula Airtable would refuse is a typed error naming Airtable's error type.
    let bad = client_for(&fake, |config| {
        config.filter_formula = Some("LEN({Email})>3".into())
    });
    let err = bad.fetch_leads().await.expect_err("bad formula");
    match &err {
        AirtableError::InvalidRequest(api) => {
            assert_eq!(api.status, 422);
            assert!(api.is_type("INVALID_FILTER_BY_FORMULA"), "{api}");
        }
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
    assert!(!err.is_transient());
}

#[tokio::test]
async fn compat_mode_applies_each_gate_with_its_reason() {
    let mut records = vec![lead_record(0)];
    let mut variant = |i: usize, change: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut record = lead_record(i);
        change(&mut record.fields);
        records.push(record);
    };
    variant(1, &|f| {
        f.remove("Email");
    });
    variant(2, &|f| {
        f.insert("Email".into(), json!("not-an-email"));
    });
    variant(3, &|f| {
        f.insert("Email_Confidence_Level".into(), json!("Guess"));
    });
    variant(4, &|f| {
        f.remove("Email_Confidence_Level");
    });
    variant(5, &|f| {
        f.insert("Custom_Message".into(), json!(""));
    });
    variant(6, &|f| {
        f.insert("Engagement_Status".into(), json!("Sent"));
    });
    variant(7, &|f| {
        f.remove("Engagement_Status");
    });
    variant(8, &|f| {
        f.insert("Email_Confidence_Level".into(), json!("Pattern"));
    });
    variant(9, &|f| {
        f.insert("Phone".into(), json!("12ab"));
    });
    let fake = start_fake(records, |_| {}).await;

    let compat = client_for(&fake, |config| config.compat_mode = true);
    let report = compat.fetch_leads().await.expect("fetch");
    assert_eq!(ids(&report.leads), vec![record_id(0), record_id(8)]);
    let reasons: Vec<(String, Ineligibility)> = report
        .ineligible
        .iter()
        .map(|i| (i.record_id.clone(), i.reason.clone()))
        .collect();
    let invalid_email = match &reasons[1].1 {
        Ineligibility::InvalidEmail { reason } => reason.clone(),
        other => panic!("expected InvalidEmail, got {other:?}"),
    };
    assert!(invalid_email.contains("it has no @"), "{invalid_email}");
    assert_eq!(
        reasons,
        vec![
            (record_id(1), Ineligibility::NoEmail),
            (
                record_id(2),
                Ineligibility::InvalidEmail {
                    reason: invalid_email
                }
            ),
            (
                record_id(3),
                Ineligibility::ConfidenceNotAccepted {
                    found: Some("Guess".into())
                }
            ),
            (
                record_id(4),
                Ineligibility::ConfidenceNotAccepted { found: None }
            ),
            (record_id(5), Ineligibility::NoCustomMessage),
            (
                record_id(6),
                Ineligibility::NotAutoSend {
                    found: Some("Sent".into())
                }
            ),
            (record_id(7), Ineligibility::NotAutoSend { found: None }),
        ]
    );
    assert_eq!(
        report.ineligible[5].reason.to_string(),
        "the engagement status is \"Sent\", not Auto-Send"
    );
    // Passing every gate but holding a bad phone is a rejection, not an ineligibility.
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].record_id, record_id(9));
    assert_eq!(report.rejected[0].field.as_deref(), Some("Phone"));
    assert_eq!(report.rejected[0].value.as_deref(), Some("12ab"));

    // Without compat mode no gate applies; only unparseable records are rejected.
    let plain = client_for(&fake, |_| {});
    let report = plain.fetch_leads().await.expect("fetch");
    assert!(report.ineligible.is_empty());
    let rejected: Vec<&str> = report
        .rejected
        .iter()
        .map(|r| r.record_id.as_str())
        .collect();
    assert_eq!(rejected, vec![record_id(1), record_id(2), record_id(9)]);
    assert_eq!(report.leads.len(), 7);
}

#[tokio::test]
async fn a_wrong_token_is_an_auth_error_that_never_shows_a_token() {
    let fake = start_fake(vec![lead_record(0)], |_| {}).await;
    let wrong = "patWRONG.fedcba9876543210-secret";
    let mut config = AirtableConfig::new(BASE, TABLE, wrong.into());
    config.api_url = fake.base_url().to_owned();
    let client = AirtableClient::new(config).expect("valid configuration");
    let err = client.fetch_leads().await.expect_err("wrong token");
    match &err {
        AirtableError::Auth(api) => {
            assert_eq!(api.status, 401);
            assert!(api.is_type("AUTHENTICATION_REQUIRED"));
        }
        other => panic!("expected Auth, got {other:?}"),
    }
    for text in [err.to_string(), format!("{err:?}"), format!("{client:?}")] {
        assert!(!text.contains(wrong) && !text.contains("secret"), "{text}");
    }
    let right = client_for(&fake, |_| {});
    assert!(!format!("{right:?} {:?}", right.config()).contains(PAT));
}

#[tokio::test]
async fn after_a_429_the_client_pauses_and_resumes_losing_and_repeating_nothing() {
    let fake = start_fake((0..100).map(lead_record).collect(), |setup| {
        setup.penalty = Duration::from_millis(300);
    })
    .await;
    // The client is allowed far more than Airtable's 5/s, so the fake's bucket runs dry.
    let client = client_for(&fake, |config| {
        config.requests_per_second = 50;
        config.rate_limit_pause_secs = 0.3;
        config.page_size = 10;
    });
    let report = client.fetch_leads().await.expect("fetch despite 429s");
    assert_eq!(
        ids(&report.leads),
        all_ids(100),
        "nothing lost, nothing twice"
    );

    let requests = fake.requests();
    let limited: Vec<_> = requests.iter().filter(|r| r.status == 429).collect();
    assert!(!limited.is_empty(), "the test must actually hit the limit");
    let ok = requests.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, 10, "every page is read exactly once");
    // After each 429 the next request waits out the pause.
    for pair in requests.windows(2) {
        if pair[0].status == 429 {
            let gap = pair[1].at.duration_since(pair[0].at);
            assert!(
                gap >= Duration::from_millis(290),
                "resent after only {gap:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_429_that_does_not_end_is_reported_as_rate_limited() {
    let fake = start_fake(vec![lead_record(0)], |_| {}).await;
    let body = json!({"error": {"type": "TOO_MANY_REQUESTS", "message": "slow down"}});
    fake.fail_next(100, 429, body);
    let client = client_for(&fake, |config| config.rate_limit_pause_secs = 0.01);
    let err = client.fetch_leads().await.expect_err("always 429");
    assert!(
        matches!(err, AirtableError::RateLimited { attempts: 6 }),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert_eq!(fake.requests().len(), 6);
}

#[tokio::test]
async fn the_limiter_keeps_a_burst_of_20_requests_at_5_per_second() {
    let fake = start_fake((0..100).map(lead_record).collect(), |_| {}).await;
    let client = client_for(&fake, |config| config.page_size = 5);
    let started = Instant::now();
    let report = client.fetch_leads().await.expect("fetch");
    assert_eq!(report.leads.len(), 100);
    let requests = fake.requests();
    assert_eq!(requests.len(), 20);
    assert!(
        requests.iter().all(|r| r.status == 200),
        "the fake never had to refuse"
    );
    for (i, first) in requests.iter().enumerate() {
        let in_window = requests[i..]
            .iter()
            .take_while(|r| r.at.duration_since(first.at) < Duration::from_secs(1))
            .count();
        assert!(
            in_window <= 5,
            "{in_window} requests within one second from request {i}"
        );
    }
    assert!(started.elapsed() >= Duration::from_millis(3800));
}

#[tokio::test]
async fn an_expired_iterator_restarts_the_listing() {
    let fake = start_fake((0..250).map(lead_record).collect(), |_| {}).await;
    fake.expire_iterators();
    let client = client_for(&fake, |_| {});
    let report = client.fetch_leads().await.expect("fetch");
    assert_eq!(
        ids(&report.leads),
        all_ids(250),
        "nothing lost, nothing twice"
    );
    let trail: Vec<(bool, u16)> = fake
        .requests()
        .iter()
        .map(|r| (r.query_value("offset").is_some(), r.status))
        .collect();
    assert_eq!(
        trail,
        vec![
            (false, 200),
            (true, 422),
            (false, 200),
            (true, 200),
            (true, 200)
        ]
    );
}

#[tokio::test]
async fn write_back_patches_23_records_in_3_requests_and_keeps_other_fields() {
    let fake = start_fake((0..30).map(lead_record).collect(), |_| {}).await;
    let client = client_for(&fake, |_| {});
    let date = NaiveDate::from_ymd_opt(2024, 5, 6).expect("valid date");
    let updates: Vec<Writeback> = (0..23)
        .map(|i| client.sent_writeback(record_id(i), date))
        .collect();
    let updated = client.write_back(&updates).await.expect("write back");
    assert_eq!(updated, 23);

    let requests = fake.requests();
    let sizes: Vec<usize> = requests
        .iter()
        .map(|r| {
            assert_eq!(r.method, "PATCH");
            assert_eq!(r.status, 200);
            r.body
                .as_ref()
                .and_then(|b| b["records"].as_array())
                .map_or(0, Vec::len)
        })
        .collect();
    assert_eq!(sizes, vec![10, 10, 3]);
    assert_eq!(
        requests[0].body.as_ref().map(|b| b["records"][0].clone()),
        Some(json!({
            "id": record_id(0),
            "fields": {"Engagement_Status": "Sent", "Date Messaged": "2024-05-06"},
        }))
    );

    for i in 0..30 {
        let record = fake.record(&record_id(i)).expect("record still exists");
        let original = lead_record(i);
        for name in [
            "Name",
            "Email",
            "Company",
            "Email_Confidence_Level",
            "Custom_Message",
        ] {
            assert_eq!(
                record.fields.get(name),
                original.fields.get(name),
                "{name} of {i}"
            );
        }
        let (status, date) = if i < 23 {
            (json!("Sent"), Some(json!("2024-05-06")))
        } else {
            (json!("Auto-Send"), None)
        };
        assert_eq!(record.fields.get("Engagement_Status"), Some(&status));
        assert_eq!(record.fields.get("Date Messaged").cloned(), date);
    }
}

#[tokio::test]
async fn write_back_of_an_unknown_record_is_an_invalid_request() {
    let fake = start_fake(vec![lead_record(0)], |_| {}).await;
    let client = client_for(&fake, |_| {});
    let date = NaiveDate::from_ymd_opt(2024, 5, 6).expect("valid date");
    let updates = vec![
        client.sent_writeback(record_id(0), date),
        client.sent_writeback("recDOESNOTEXIST1", date),
    ];
    let err = client
        .write_back(&updates)
        .await
        .expect_err("unknown record");
    match &err {
        AirtableError::InvalidRequest(api) => assert!(api.is_type("ROW_DOES_NOT_EXIST")),
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
    let untouched = fake.record(&record_id(0)).expect("exists");
    assert_eq!(
        untouched.fields.get("Engagement_Status"),
        Some(&json!("Auto-Send"))
    );
}

#[tokio::test]
async fn both_error_body_shapes_are_parsed() {
    let fake = start_fake(vec![lead_record(0)], |_| {}).await;
    let client = client_for(&fake, |_| {});

    fake.fail_next(1, 404, json!({"error": "NOT_FOUND"}));
    match client.fetch_leads().await.expect_err("scripted 404") {
        AirtableError::NotFound(api) => {
            assert_eq!(api.error_type.as_deref(), Some("NOT_FOUND"));
            assert_eq!(api.message, None);
        }
        other => panic!("expected NotFound, got {other:?}"),
    }

    let unknown_table = client_for(&fake, |config| config.table = "Nope".into());
    match unknown_table
        .fetch_leads()
        .await
        .expect_err("unknown table")
    {
        AirtableError::NotFound(api) => {
            assert!(api.is_type("NOT_FOUND"));
            assert!(api.message.as_deref().is_some_and(|m| m.contains("Nope")));
        }
        other => panic!("expected NotFound, got {other:?}"),
    }

    fake.fail_next(
        1,
        503,
        json!({"error": {"type": "SERVICE_UNAVAILABLE", "message": "try later"}}),
    );
    let err = client.fetch_leads().await.expect_err("scripted 503");
    assert!(
        matches!(&err, AirtableError::Server(api) if api.status == 503),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert_eq!(
        err.to_string(),
        "Airtable had a server error (HTTP 503 SERVICE_UNAVAILABLE: try later)"
    );

    // Fine again once the scripted failures are used up.
    assert_eq!(client.fetch_leads().await.expect("fetch").leads.len(), 1);
}

#[tokio::test]
async fn the_table_can_be_named_by_id_and_mapped_fields_are_configurable() {
    let record = FakeRecord::new(
        "recCUSTOMNAMES01",
        json!({
            "Full Name": "Ada Lovelace",
            "Work Email": "ada@engines.example",
            "Mobile": "+44 20 7946 0123",
            "Where": "GB",
            "Notes": "met at a conference",
        }),
    );
    let fake = start_fake(vec![record], |_| {}).await;
    let client = client_for(&fake, |config| {
        config.table = "tblFAKE00000000001".into();
        config.fields.name = "Full Name".into();
        config.fields.email = "Work Email".into();
        config.fields.phone = "Mobile".into();
        config.fields.country = "Where".into();
    });
    let report = client.fetch_leads().await.expect("fetch");
    let lead = &report.leads[0];
    assert_eq!(
        lead.email.as_ref().map(|e| e.as_str()),
        Some("ada@engines.example")
    );
    assert_eq!(lead.first_name.as_deref(), Some("Ada"));
    assert_eq!(
        lead.phone.as_ref().map(|p| p.as_str()),
        Some("+442079460123")
    );
    assert_eq!(lead.country.as_ref().map(|c| c.as_str()), Some("GB"));
    assert_eq!(
        lead.custom.get("notes").map(String::as_str),
        Some("met at a conference")
    );
    assert_eq!(lead.source, "airtable:appENGAGERTEST01/tblFAKE00000000001");
    let keys: BTreeSet<&str> = lead.custom.keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["notes"]));
}
