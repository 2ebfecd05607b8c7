//! The PostgreSQL backend (being written).

use crate::{StoreError, StoreResult};

/// A store on a PostgreSQL database.
pub struct PgStore;

impl PgStore {
    /// Connects and runs migrations.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Err(StoreError::Open { url: url.to_owned(), reason: "not yet implemented".into() })
    }
}

impl PgStore {
    /// Connects with every table inside `schema` (created if missing), so that tests can
    /// share one database without seeing each other's rows.
    pub async fn connect_isolated(url: &str, schema: &str) -> StoreResult<Self> {
        let _ = schema;
        Self::connect(url).await
    }
}
