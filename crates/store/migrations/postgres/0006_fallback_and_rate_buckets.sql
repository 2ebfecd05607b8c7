-- Migration 0006 (delivery fallback and the shared limiter).
--
-- Fallback: a step may now have several ledger rows, one per channel, so that a channel that
-- failed for good keeps its `failed` row while the next channel gets a new one.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_enrollment_id_step_index_key;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_enrollment_step_channel_key
    UNIQUE (enrollment_id, step_index, channel);

-- The shared limiter: one row per account and purpose, updated under a per-account lock.
--   `<account>|pause`              tat = the instant the provider's pause ends
--   `<account>|rate|<ms>|<count>`  tat = the GCRA's theoretical arrival time
--   `<account>|day|<YYYY-MM-DD>`   count = permits taken that UTC day
CREATE TABLE rate_buckets (
    bucket      TEXT PRIMARY KEY,
    tat         BIGINT NOT NULL,
    count       BIGINT NOT NULL DEFAULT 0,
    updated_at  BIGINT NOT NULL
);
