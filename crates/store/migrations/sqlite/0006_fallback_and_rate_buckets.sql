-- Migration 0006 (delivery fallback and the shared limiter).
--
-- Fallback: a step may now have several ledger rows, one per channel, so that a channel that
-- failed for good keeps its `failed` row while the next channel gets a new one. SQLite cannot
-- drop a table constraint: the store rebuilds `deliveries` with UNIQUE (enrollment_id,
-- step_index, channel) before running this file (see `rebuild_deliveries_unique` in
-- src/sqlite/mod.rs), keeping its columns, indexes and triggers.
--
-- The shared limiter: one row per account and purpose, updated under the write lock.
--   `<account>|pause`              tat = the instant the provider's pause ends
--   `<account>|rate|<ms>|<count>`  tat = the GCRA's theoretical arrival time
--   `<account>|day|<YYYY-MM-DD>`   count = permits taken that UTC day
CREATE TABLE rate_buckets (
    bucket      TEXT PRIMARY KEY,
    tat         INTEGER NOT NULL,
    count       INTEGER NOT NULL DEFAULT 0,
    updated_at  INTEGER NOT NULL
);
