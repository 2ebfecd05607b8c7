//! Data-subject rights on both backends: every column is classified, an export holds all of
//! a person's data, an erasure removes it everywhere but keeps the person suppressed, the
//! audit log cannot be changed, and on SQLite the erased values are gone from the files.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use engager_domain::{Channel, EmailAddress, EventKind, LeadId, LeadStatus, NewLead, PhoneE164};
use engager_store::gdpr::TABLES;
use engager_store::*;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-02T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

const CANARY_EMAIL: &str = "zelda.canary7731@canary-corp.example";
const CANARY_NAME: &str = "Zeldacanary";
const CANARY_PHONE: &str = "+14155550199";

fn canary() -> NewLead {
    NewLead {
        email: Some(EmailAddress::parse(CANARY_EMAIL).unwrap()),
        phone: Some(PhoneE164::parse(CANARY_PHONE, None).unwrap()),
        first_name: Some(CANARY_NAME.into()),
        company: Some("Canarycorp Unlimited".into()),
        country: Some(engager_domain::CountryCode::parse("DE").unwrap()),
        source: "csv:test.csv".into(),
        ..NewLead::default()
    }
}

fn other() -> NewLead {
    NewLead {
        email: Some(EmailAddress::parse("someone.else@example.com").unwrap()),
        first_name: Some("Other".into()),
        source: "csv:test.csv".into(),
        ..NewLead::default()
    }
}

/// Two leads, the canary with a sent email (mentioning its name), a reply and an
/// unsubscribe that suppressed its address, and one more queued step.
async fn seed(store: &dyn Store) -> (LeadId, LeadId) {
    let ids: Vec<LeadId> = store
        .upsert_leads(&[canary(), other()], t0())
        .await
        .unwrap()
        .into_iter()
        .map(UpsertOutcome::id)
        .collect();
    let campaign = store
        .save_campaign("intro", "Intro", "[campaign]", t0())
        .await
        .unwrap();
    store.enroll(campaign, &ids, t0()).await.unwrap();
    let due = store.due_enrollments(t0(), None, 10).await.unwrap();
    let evals: Vec<Evaluation> = due
        .iter()
        .map(|d| Evaluation {
            trace: TraceRecord {
                enrollment_id: d.enrollment.id,
                campaign_id: d.enrollment.campaign_id,
                lead_id: d.lead.id,
                step_index: 0,
                evaluated_at: t0(),
                outcome: "planned".into(),
                code: None,
                channel: Some(Channel::Email),
                at: Some(t0()),
                gates: vec![GateRow {
                    gate: "compliance".into(),
                    passed: true,
                    reason: format!(
                        "{} is not suppressed",
                        d.lead.profile.email.as_ref().unwrap()
                    ),
                }],
            },
            decision: PlanDecision::Plan(NewDelivery {
                channel: Channel::Email,
                send_at: t0(),
                to_address: d.lead.profile.email.as_ref().unwrap().to_string(),
                subject: Some(format!(
                    "Hello {}",
                    d.lead.profile.first_name.clone().unwrap()
                )),
                body_text: format!(
                    "Hi {}, a question.",
                    d.lead.profile.first_name.clone().unwrap()
                ),
                body_html: None,
                variant: None,
            }),
        })
        .collect();
    store.record_evaluations(&evals, t0()).await.unwrap();
    let claimed = store
        .claim_due_deliveries(t0(), 10, "w", Duration::minutes(5))
        .await
        .unwrap();
    let mine = claimed.iter().find(|d| d.lead_id == ids[0]).unwrap();
    assert!(store
        .begin_send(mine.id, mine.fencing_token, t0(), Duration::minutes(5))
        .await
        .unwrap());
    assert!(store
        .record_outcome(
            mine.id,
            mine.fencing_token,
            &SendOutcome::Sent {
                provider_ref: "<1@acme.example>".into()
            },
            &FollowUp::Complete,
            t0(),
        )
        .await
        .unwrap());
    store
        .record_event(&NewEvent {
            lead_id: ids[0],
            delivery_id: Some(mine.id),
            kind: EventKind::Unsubscribed,
            occurred_at: t0() + Duration::hours(1),
            detail: format!(r#"{{"from":"{CANARY_EMAIL}"}}"#),
            source: "test".into(),
        })
        .await
        .unwrap();
    store
        .add_suppression(
            &SuppressionKey::Phone(CANARY_PHONE.into()),
            "STOP by SMS",
            "test",
            t0(),
        )
        .await
        .unwrap();
    (ids[0], ids[1])
}

fn audit(action: &str) -> AuditEntry {
    AuditEntry {
        at: t0() + Duration::days(1),
        action: action.into(),
        subject: "lead:1".into(),
        detail: "on request".into(),
        actor: "test".into(),
    }
}

async fn export_then_erase(store: Arc<dyn Store>) {
    let (canary_id, other_id) = seed(store.as_ref()).await;
    let export = store.export_subject(canary_id).await.unwrap();
    let text = export.to_string();
    for needle in [CANARY_EMAIL, CANARY_NAME, CANARY_PHONE, "Canarycorp"] {
        assert!(text.contains(needle), "the export lacks {needle}: {text}");
    }
    assert_eq!(export["leads"].as_array().unwrap().len(), 1);
    assert_eq!(export["deliveries"].as_array().unwrap().len(), 1);
    assert!(
        export["events"].as_array().unwrap().len() >= 2,
        "sent and unsubscribed"
    );
    assert_eq!(
        export["suppressions"].as_array().unwrap().len(),
        2,
        "email and phone"
    );
    assert!(
        !text.contains("someone.else"),
        "another person's data leaked into the export"
    );
    assert!(
        export["events"][0]["detail"].is_object(),
        "stored JSON exports as JSON"
    );

    let report = store
        .erase_subject(canary_id, &audit("erasure"))
        .await
        .unwrap();
    assert_eq!(report.suppressions_hashed, 2);
    let after = store.export_subject(canary_id).await.unwrap().to_string();
    for needle in [CANARY_EMAIL, CANARY_NAME, CANARY_PHONE, "Canarycorp"] {
        assert!(
            !after.contains(needle),
            "{needle} survived the erasure: {after}"
        );
    }
    let lead = store.lead(canary_id).await.unwrap().unwrap();
    assert_eq!(lead.status, LeadStatus::Erased);
    assert!(lead.profile.email.is_none());
    // Erased, and still suppressed: the address and the number match their hashes.
    let hits = store
        .suppressed(&[
            SuppressionKey::Email(CANARY_EMAIL.into()),
            SuppressionKey::Phone(CANARY_PHONE.into()),
            SuppressionKey::Email("someone.else@example.com".into()),
        ])
        .await
        .unwrap();
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert_eq!(hits[0].key, SuppressionKey::Email(CANARY_EMAIL.into()));
    // Re-importing the person later finds them suppressed, not a clean slate.
    let again = store
        .upsert_leads(&[canary()], t0() + Duration::days(2))
        .await
        .unwrap();
    assert_ne!(
        again[0].id(),
        canary_id,
        "a new lead row; the erased one stays blank"
    );
    // Nothing queued remains for the erased lead; the other lead is untouched.
    let queued = store
        .claim_due_deliveries(t0() + Duration::days(3), 10, "w2", Duration::minutes(5))
        .await
        .unwrap();
    assert!(queued.iter().all(|d| d.lead_id != canary_id), "{queued:?}");
    let other = store.lead(other_id).await.unwrap().unwrap();
    assert_eq!(other.profile.first_name.as_deref(), Some("Other"));
    // The audit log has the erasure and refuses changes.
    let log = store.audit_log(t0()).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].action, "erasure");
    store.append_audit(&audit("export")).await.unwrap();
    assert_eq!(store.audit_log(t0()).await.unwrap().len(), 2);
}

/// Every column of every table is classified as personal or not.
async fn every_column_is_classified(columns: Vec<(String, String)>) {
    let mut missing = Vec::new();
    for (table, column) in &columns {
        let known = TABLES.iter().find(|t| t.table == table).is_some_and(|t| {
            t.personal.contains(&column.as_str()) || t.other.contains(&column.as_str())
        });
        if !known {
            missing.push(format!("{table}.{column}"));
        }
    }
    assert!(
        missing.is_empty(),
        "columns not classified in engager_store::gdpr::TABLES (personal data or not?): {missing:?}"
    );
    assert!(columns.len() > 50, "the schema was read: {columns:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_export_then_erase() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("t.db").display());
    export_then_erase(engager_store::open(&url).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_export_then_erase() {
    let Some(url) = engager_testkit::postgres_url() else {
        return;
    };
    let schema = engager_testkit::unique_schema("gdpr_erase");
    let store = engager_store::postgres::PgStore::connect_isolated(&url, &schema)
        .await
        .unwrap();
    export_then_erase(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_columns_are_classified() {
    let dir = tempfile::tempdir().unwrap();
    let store = engager_store::sqlite::SqliteStore::open(dir.path().join("t.db").to_str().unwrap())
        .await
        .unwrap();
    let columns = store
        .with_connection(|c| {
            let mut out = Vec::new();
            let tables: Vec<String> = c
                .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for t in tables {
                let cols: Vec<String> = c
                    .prepare(&format!("SELECT name FROM pragma_table_info('{t}')"))?
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                out.extend(cols.into_iter().map(|col| (t.clone(), col)));
            }
            Ok(out)
        })
        .await
        .unwrap();
    every_column_is_classified(columns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_columns_are_classified() {
    let Some(url) = engager_testkit::postgres_url() else {
        return;
    };
    let schema = engager_testkit::unique_schema("gdpr_columns");
    let store = engager_store::postgres::PgStore::connect_isolated(&url, &schema)
        .await
        .unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns WHERE table_schema = $1",
    )
    .bind(&schema)
    .fetch_all(store.pool())
    .await
    .unwrap();
    every_column_is_classified(rows).await;
}

/// After an erasure the canary values are in neither the SQLite file nor its WAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_erasure_leaves_no_bytes_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let store = engager_store::open(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    let (canary_id, _) = seed(store.as_ref()).await;
    let files = || {
        let mut bytes = Vec::new();
        for suffix in ["", "-wal", "-journal"] {
            let p = format!("{}{suffix}", path.display());
            if let Ok(b) = std::fs::read(&p) {
                bytes.extend(b);
            }
        }
        bytes
    };
    let contains =
        |hay: &[u8], needle: &str| hay.windows(needle.len()).any(|w| w == needle.as_bytes());
    let before = files();
    assert!(
        contains(&before, CANARY_EMAIL) || contains(&before, CANARY_NAME),
        "the canary is on disk before the erasure"
    );
    store
        .erase_subject(canary_id, &audit("erasure"))
        .await
        .unwrap();
    let after = files();
    for needle in [CANARY_EMAIL, CANARY_NAME, CANARY_PHONE, "Canarycorp"] {
        assert!(
            !contains(&after, needle),
            "{needle} is still in the database files"
        );
    }
}

async fn retention_blanks_old_texts_only(store: Arc<dyn Store>) {
    let (canary_id, other_id) = seed(store.as_ref()).await;
    let cutoffs = engager_store::gdpr::RetentionCutoffs {
        bodies_before: t0() + Duration::minutes(30),
        details_before: t0() + Duration::minutes(30),
    };
    let dry = store.apply_retention(&cutoffs, true).await.unwrap();
    let count = |r: &engager_store::gdpr::RetentionReport, table: &str| {
        r.rows
            .iter()
            .find(|(t, _)| t == table)
            .map_or(0, |(_, n)| *n)
    };
    assert_eq!(
        count(&dry, "deliveries"),
        1,
        "only the finished delivery: {dry:?}"
    );
    assert_eq!(
        count(&dry, "events"),
        0,
        "the sent event's detail is already empty, the unsubscribe is younger"
    );
    assert_eq!(count(&dry, "traces"), 2);
    let untouched = store.export_subject(canary_id).await.unwrap();
    assert_eq!(
        untouched["deliveries"][0]["body_text"], "Hi Zeldacanary, a question.",
        "a dry run changes nothing"
    );

    let done = store.apply_retention(&cutoffs, false).await.unwrap();
    assert_eq!(done, dry);
    let after = store.export_subject(canary_id).await.unwrap();
    assert_eq!(after["deliveries"][0]["body_text"], "");
    assert!(after["deliveries"][0]["subject"].is_null());
    assert_eq!(
        after["deliveries"][0]["state"], "sent",
        "the ledger keeps its history"
    );
    assert_eq!(after["traces"][0]["gates_json"], serde_json::json!([]));
    // The queued delivery of the other lead keeps its text; suppressions are untouched.
    let other = store.export_subject(other_id).await.unwrap();
    assert_eq!(other["deliveries"][0]["body_text"], "Hi Other, a question.");
    assert_eq!(
        store
            .suppressed(&[SuppressionKey::Phone(CANARY_PHONE.into())])
            .await
            .unwrap()
            .len(),
        1
    );
    // A second pass finds nothing more.
    let again = store.apply_retention(&cutoffs, false).await.unwrap();
    assert!(again.rows.iter().all(|(_, n)| *n == 0), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_retention() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("t.db").display());
    retention_blanks_old_texts_only(engager_store::open(&url).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_retention() {
    let Some(url) = engager_testkit::postgres_url() else {
        return;
    };
    let schema = engager_testkit::unique_schema("gdpr_retention");
    let store = engager_store::postgres::PgStore::connect_isolated(&url, &schema)
        .await
        .unwrap();
    retention_blanks_old_texts_only(Arc::new(store)).await;
}
