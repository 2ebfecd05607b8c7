//! The AI personalization cache on both backends: a stored outcome is found by its key, a
//! second save of the same key keeps the first, unknown keys are absent.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use engager_store::Store;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-02T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

async fn cache_round_trip(store: Arc<dyn Store>) {
    let keys = vec!["k1".to_owned(), "k2".to_owned(), "missing".to_owned()];
    assert!(store.ai_cached(&keys).await.unwrap().is_empty());
    assert!(store.ai_cached(&[]).await.unwrap().is_empty());
    store
        .save_ai_cache("k1", None, "gpt-test", r#"{"outcome":"accepted"}"#, t0())
        .await
        .unwrap();
    store
        .save_ai_cache("k2", None, "gpt-test", r#"{"outcome":"fallback"}"#, t0())
        .await
        .unwrap();
    // The same key again (a concurrent planner): the first entry stays.
    store
        .save_ai_cache("k1", None, "gpt-test", r#"{"outcome":"other"}"#, t0())
        .await
        .unwrap();
    let found = store.ai_cached(&keys).await.unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found["k1"], r#"{"outcome":"accepted"}"#);
    assert_eq!(found["k2"], r#"{"outcome":"fallback"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_cache_round_trip() {
    let store = engager_store::open("sqlite::memory:").await.unwrap();
    cache_round_trip(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cache_round_trip() {
    let Some(url) = engager_testkit::postgres_url() else {
        return;
    };
    let schema = engager_testkit::unique_schema("ai_cache");
    let store = engager_store::postgres::PgStore::connect_isolated(&url, &schema)
        .await
        .unwrap();
    cache_round_trip(Arc::new(store)).await;
}
