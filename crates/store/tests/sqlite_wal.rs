//! The SQLite store's write-ahead log: copied back into the database file by a background
//! checkpointer (so that commits only append), and bounded in size during a long burst of
//! writes, with nothing lost.

use chrono::{DateTime, Utc};
use engager_domain::{Channel, EmailAddress, NewLead};
use engager_store::*;
use std::path::Path;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-02T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Enrolls `leads` leads in one campaign and returns the store.
async fn enrolled(url: &str, leads: usize) -> std::sync::Arc<dyn Store> {
    let store = engager_store::open(url).await.unwrap();
    let new: Vec<NewLead> = (0..leads)
        .map(|i| NewLead {
            email: Some(EmailAddress::parse(&format!("lead{i}@example.com")).unwrap()),
            source: "test".into(),
            ..NewLead::default()
        })
        .collect();
    let ids: Vec<_> = store
        .upsert_leads(&new, t0())
        .await
        .unwrap()
        .iter()
        .map(|o| o.id())
        .collect();
    let campaign = store.save_campaign("c", "C", "[x]", t0()).await.unwrap();
    store.enroll(campaign, &ids, t0()).await.unwrap();
    store
}

/// Plans every due enrollment with a body of `body_len` bytes, a page at a time, calling
/// `each_page` after every commit.
async fn plan_all(store: &dyn Store, body_len: usize, mut each_page: impl FnMut()) -> usize {
    let body = "x".repeat(body_len);
    let mut after = None;
    let mut planned = 0;
    loop {
        let due = store.due_enrollments(t0(), after, 250).await.unwrap();
        if due.is_empty() {
            return planned;
        }
        after = due.last().map(DueEnrollment::cursor);
        let evaluations: Vec<Evaluation> = due
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
                    gates: Vec::new(),
                },
                decision: PlanDecision::Plan(NewDelivery {
                    channel: Channel::Email,
                    send_at: t0(),
                    to_address: "lead@example.com".into(),
                    subject: Some("Hi".into()),
                    body_text: body.clone(),
                    body_html: None,
                    variant: None,
                }),
            })
            .collect();
        store.record_evaluations(&evaluations, t0()).await.unwrap();
        planned += evaluations.len();
        each_page();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_pages_reach_the_database_file_without_a_checkpoint_by_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("engager.db");
    let store = enrolled(&format!("sqlite:{}", path.display()), 500).await;
    // Let the checkpointer copy the enrollments, then write about 4 MB: well under the
    // writer's own automatic checkpoint (about 16 MB of log).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let before = size(&path);
    assert_eq!(plan_all(store.as_ref(), 8 * 1024, || {}).await, 500);
    let mut copied = 0;
    for _ in 0..100 {
        copied = size(&path).saturating_sub(before);
        if copied >= 3 * 1024 * 1024 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        copied >= 3 * 1024 * 1024,
        "the database file grew by {copied} bytes after 4 MB of committed writes: \
         the background checkpointer did not copy the log back"
    );
    // Everything written is there for another connection.
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let rows: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM deliveries WHERE length(body_text) = 8192",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_stays_bounded_through_a_long_burst_of_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("engager.db");
    let wal = dir.path().join("engager.db-wal");
    let store = enrolled(&format!("sqlite:{}", path.display()), 3_000).await;
    // About 36 MB of message bodies, committed 250 at a time (3 MB a commit) as fast as the
    // store takes them. The writer's safety checkpoint (4000 pages, 16 MB) bounds the log
    // even if the background copy falls behind.
    let mut largest = 0;
    let planned = plan_all(store.as_ref(), 12 * 1024, || {
        largest = largest.max(size(&wal))
    })
    .await;
    assert_eq!(planned, 3_000);
    assert!(
        largest < 24 * 1024 * 1024,
        "the write-ahead log reached {largest} bytes during a 36 MB burst"
    );
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM deliveries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 3_000);
}
