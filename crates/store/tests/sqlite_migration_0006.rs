//! Migration 0006 on a SQLite file that already holds data: `deliveries` is rebuilt with
//! UNIQUE (enrollment_id, step_index, channel), keeping its rows, its indexes and the
//! foreign keys of the tables that point at it.

use chrono::{DateTime, Utc};
use engager_domain::{Channel, EmailAddress, EventKind, NewLead};
use engager_store::*;
use rusqlite::Connection;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-02T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn schema_sql(conn: &Connection, name: &str) -> String {
    conn.query_row(
        "SELECT sql FROM sqlite_schema WHERE name = ?1",
        [name],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_6_rebuilds_deliveries_with_their_rows_indexes_and_references() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let url = format!("sqlite:{}", path.display());
    {
        let store = engager_store::open(&url).await.unwrap();
        let lead = NewLead {
            email: Some(EmailAddress::parse("ada@example.com").unwrap()),
            source: "test".into(),
            ..NewLead::default()
        };
        let id = store.upsert_leads(&[lead], t0()).await.unwrap()[0].id();
        let campaign = store.save_campaign("c", "C", "[x]", t0()).await.unwrap();
        store.enroll(campaign, &[id], t0()).await.unwrap();
        let due = store.due_enrollments(t0(), None, 10).await.unwrap();
        let e = &due[0];
        let evaluation = Evaluation {
            trace: TraceRecord {
                enrollment_id: e.enrollment.id,
                campaign_id: campaign,
                lead_id: id,
                step_index: 0,
                evaluated_at: t0(),
                outcome: "planned".into(),
                code: None,
                channel: Some(Channel::Email),
                at: Some(t0()),
                gates: Vec::new(),
            },
            decision: PlanDecision::Plan(NewDelivery {
                channel: Channel::Email,
                send_at: t0(),
                to_address: "ada@example.com".into(),
                subject: Some("Hi".into()),
                body_text: "Hello".into(),
                body_html: None,
                variant: None,
            }),
        };
        store.record_evaluations(&[evaluation], t0()).await.unwrap();
        let delivery = store.deliveries(&DeliveryFilter::default()).await.unwrap()[0].id;
        store
            .record_event(&NewEvent {
                lead_id: id,
                delivery_id: Some(delivery),
                kind: EventKind::Opened,
                occurred_at: t0(),
                detail: "{}".into(),
                source: "test".into(),
            })
            .await
            .unwrap();
    }
    // Put the file back in its pre-0006 shape: the old constraint, no rate_buckets, and
    // version 6 not applied.
    {
        let conn = Connection::open(&path).unwrap();
        let current = schema_sql(&conn, "deliveries");
        let old = current
            .replace(
                "UNIQUE (enrollment_id, step_index, channel)",
                "UNIQUE (enrollment_id, step_index)",
            )
            .replacen("CREATE TABLE \"deliveries\"", "CREATE TABLE deliveries", 1)
            .replacen("CREATE TABLE deliveries", "CREATE TABLE deliveries_old", 1);
        conn.execute_batch(&format!(
            "PRAGMA foreign_keys = OFF; BEGIN; {old}; \
             INSERT INTO deliveries_old SELECT * FROM deliveries; DROP TABLE deliveries; \
             ALTER TABLE deliveries_old RENAME TO deliveries; \
             CREATE INDEX deliveries_due ON deliveries (state, send_at); \
             CREATE INDEX deliveries_lead ON deliveries (lead_id); \
             DROP TABLE rate_buckets; DELETE FROM schema_migrations WHERE version = 6; COMMIT;"
        ))
        .unwrap();
        assert!(schema_sql(&conn, "deliveries").contains("UNIQUE (enrollment_id, step_index)"));
    }
    let store = engager_store::open(&url).await.unwrap();
    let rows = store.deliveries(&DeliveryFilter::default()).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].to_address, "ada@example.com");
    let events = store.events_for_lead(rows[0].lead_id).await.unwrap();
    assert_eq!(events[0].event.delivery_id, Some(rows[0].id));
    drop(store);
    let conn = Connection::open(&path).unwrap();
    assert!(schema_sql(&conn, "deliveries").contains("UNIQUE (enrollment_id, step_index, channel)"));
    for index in ["deliveries_due", "deliveries_lead"] {
        assert!(
            schema_sql(&conn, index).contains("ON deliveries"),
            "{index}"
        );
    }
    let dangling: Option<String> = conn
        .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
        .ok();
    assert_eq!(dangling, None);
    // Foreign keys still hold: an event cannot point at a delivery that does not exist.
    conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
    let bad = conn.execute(
        "INSERT INTO events (lead_id, delivery_id, kind, occurred_at, detail, source) \
         VALUES (?1, 999999, 'opened', 0, '{}', 'test')",
        [rows[0].lead_id.0],
    );
    assert!(
        bad.is_err(),
        "the events → deliveries reference survived the rebuild"
    );
    let version: i64 = conn
        .query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(version >= 6);
}
