//! PostgreSQL-only behaviour that the conformance story cannot express: connecting (errors,
//! redaction, schemas) and migrating from several processes at once.
//!
//! Tests that need a server skip (with a loud notice) when `ENGAGER_TEST_DATABASE_URL` is
//! unset, like the conformance story.

use engager_store::postgres::PgStore;
use engager_store::{Store, StoreError};

fn open_error(result: Result<PgStore, StoreError>) -> String {
    match result {
        Ok(_) => panic!("expected a connection error"),
        Err(e @ StoreError::Open { .. }) => e.to_string(),
        Err(e) => panic!("expected StoreError::Open, got {e}"),
    }
}

#[tokio::test]
async fn connection_errors_name_the_cause_but_never_the_password() {
    // Nothing listens on port 1: refused at once, not after the pool's acquire timeout.
    let started = std::time::Instant::now();
    let text =
        open_error(PgStore::connect("postgres://engager:hunter2-secret@127.0.0.1:1/nowhere").await);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(!text.contains("hunter2-secret"), "{text}");
    assert!(
        text.contains("postgres://engager:***@127.0.0.1:1/nowhere"),
        "{text}"
    );
    assert!(
        text.to_lowercase().contains("refused"),
        "the cause is kept: {text}"
    );
    let via_open =
        engager_store::open("postgres://engager:hunter2-secret@127.0.0.1:1/nowhere").await;
    let text = via_open.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        text.contains("engager:***@") && !text.contains("hunter2-secret"),
        "{text}"
    );
}

#[tokio::test]
async fn schema_names_are_checked_before_connecting() {
    let text = open_error(
        PgStore::connect_isolated(
            "postgres://u:pw-123456@127.0.0.1:1/x",
            "t; DROP TABLE leads",
        )
        .await,
    );
    assert!(text.contains("invalid schema name"), "{text}");
    assert!(!text.contains("pw-123456"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_connecting_together_migrate_once() {
    let Some(url) = engager_testkit::postgres_url() else {
        return;
    };
    let schema = engager_testkit::unique_schema("concurrent_migrations");
    let connects: Vec<_> = (0..4)
        .map(|_| {
            let (url, schema) = (url.clone(), schema.clone());
            tokio::spawn(async move { PgStore::connect_isolated(&url, &schema).await.map(|_| ()) })
        })
        .collect();
    for handle in connects {
        handle.await.unwrap().unwrap();
    }
    let store = PgStore::connect_isolated(&url, &schema).await.unwrap();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
            .fetch_all(store.pool())
            .await
            .unwrap();
    // Every embedded migration (1..=N, whatever N is now), each applied exactly once.
    let expected: Vec<i64> = (1..=versions.len() as i64).collect();
    assert!(versions.len() >= 4, "migrations missing: {versions:?}");
    assert_eq!(versions, expected, "each migration applied exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pooled_connection_stays_in_its_schema() {
    let Some(url) = engager_testkit::postgres_url() else {
        return;
    };
    let schema = engager_testkit::unique_schema("pooled_search_path");
    let store = PgStore::connect_isolated(&url, &schema).await.unwrap();
    // Hold several connections at once so that the pool must open new ones.
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(store.pool().acquire().await.unwrap());
    }
    for conn in &mut held {
        let current: Option<String> = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        assert_eq!(current.as_deref(), Some(schema.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_reaches_a_schema_named_in_the_url() {
    let Some(url) = engager_testkit::postgres_url() else {
        return;
    };
    let schema = engager_testkit::unique_schema("open_by_url");
    let isolated = PgStore::connect_isolated(&url, &schema).await.unwrap();
    isolated
        .save_campaign("intro", "Intro", "[campaign]", chrono::Utc::now())
        .await
        .unwrap();
    // The same tables through `open` (whose migrations find nothing left to do).
    let sep = if url.contains('?') { '&' } else { '?' };
    let store = engager_store::open(&format!("{url}{sep}options=-csearch_path%3D{schema}"))
        .await
        .unwrap();
    assert_eq!(store.backend(), "postgres");
    let slugs: Vec<String> = store
        .campaigns()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.slug)
        .collect();
    assert_eq!(slugs, vec!["intro".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_server_ended_while_idle_are_replaced_before_use() {
    use sqlx::Connection;
    let Some(url) = engager_testkit::postgres_url() else {
        return;
    };
    let schema = engager_testkit::unique_schema("idle_ended");
    // The application name marks this store's connections, and only them.
    let sep = if url.contains('?') { '&' } else { '?' };
    let marked = format!("{url}{sep}application_name={schema}");
    let store = PgStore::connect_isolated(&marked, &schema).await.unwrap();
    let filter = engager_store::DeliveryFilter::default();
    store.deliveries(&filter).await.unwrap();
    // The server ends them, as a restart or an idle-session timeout would.
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = $1) AS t",
    )
    .bind(&schema)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(ended >= 1, "the store held no connection to end");
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    // The idle connection is pinged, found dead and replaced: the calls succeed.
    for _ in 0..3 {
        store.deliveries(&filter).await.unwrap();
    }
}
