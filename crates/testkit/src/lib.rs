//! Dev-only helpers shared by Engager's tests: database URLs for the PostgreSQL half of the
//! conformance story, and faithful fakes of provider APIs
//! (Graph, Twilio, Airtable, OpenAI-compatible chat completions).

pub mod airtable;
pub mod dovecot;
pub mod faults;
pub mod graph;
pub mod local_server;
pub mod openai;
pub mod smtp_sink;
pub mod twilio;

use std::sync::atomic::{AtomicU64, Ordering};

/// The PostgreSQL URL for tests, from `ENGAGER_TEST_DATABASE_URL`.
///
/// When unset, prints a loud notice (once per test) and returns `None` so that the
/// PostgreSQL half of a test is skipped locally. CI sets the variable, and then a server
/// that cannot be reached fails the test instead of skipping it.
pub fn postgres_url() -> Option<String> {
    match std::env::var("ENGAGER_TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!(
                "\n!!! ENGAGER_TEST_DATABASE_URL is not set: SKIPPING the PostgreSQL half of this test.\n\
                 !!! Set it (e.g. postgres://postgres@127.0.0.1:5432/test) to run it; CI always does.\n"
            );
            None
        }
    }
}

/// A schema name unique to this process and call, for isolating a test's tables.
pub fn unique_schema(test: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let clean: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(30)
        .collect();
    format!("t_{}_{}_{}", clean, std::process::id(), n)
}
