-- The PostgreSQL twin of migrations/sqlite/0001_initial.sql: same tables, columns and
-- constraints. Times are BIGINT milliseconds since the Unix epoch (UTC) on both backends;
-- JSON (custom_json, gates_json, detail) is stored as TEXT on both.
CREATE TABLE leads (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email         TEXT UNIQUE,
    phone         TEXT,
    phone_region  TEXT,
    linkedin_url  TEXT,
    first_name    TEXT,
    last_name     TEXT,
    company       TEXT,
    title         TEXT,
    industry      TEXT,
    country       TEXT,
    city          TEXT,
    time_zone     TEXT,
    website       TEXT,
    custom_json   TEXT NOT NULL DEFAULT '{}',
    source        TEXT NOT NULL,
    source_ref    TEXT,
    status        TEXT NOT NULL DEFAULT 'active',
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX leads_source_ref ON leads (source, source_ref);
CREATE INDEX leads_phone ON leads (phone);

CREATE TABLE campaigns (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    definition  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE enrollments (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign_id   BIGINT NOT NULL REFERENCES campaigns (id),
    lead_id       BIGINT NOT NULL REFERENCES leads (id),
    state         TEXT NOT NULL,
    current_step  BIGINT NOT NULL DEFAULT 0,
    next_due_at   BIGINT,
    stop_reason   TEXT,
    enrolled_at   BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    UNIQUE (campaign_id, lead_id)
);
CREATE INDEX enrollments_due ON enrollments (state, next_due_at, id);
CREATE INDEX enrollments_lead ON enrollments (lead_id);

CREATE TABLE deliveries (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    enrollment_id    BIGINT NOT NULL REFERENCES enrollments (id),
    campaign_id      BIGINT NOT NULL REFERENCES campaigns (id),
    lead_id          BIGINT NOT NULL REFERENCES leads (id),
    step_index       BIGINT NOT NULL,
    channel          TEXT NOT NULL,
    state            TEXT NOT NULL,
    send_at          BIGINT NOT NULL,
    to_address       TEXT NOT NULL,
    subject          TEXT,
    body_text        TEXT NOT NULL,
    body_html        TEXT,
    attempts         BIGINT NOT NULL DEFAULT 0,
    fencing_token    BIGINT NOT NULL DEFAULT 0,
    lease_until      BIGINT,
    claimed_by       TEXT,
    next_attempt_at  BIGINT,
    last_error       TEXT,
    provider_ref     TEXT,
    sent_at          BIGINT,
    written_back_at  BIGINT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    UNIQUE (enrollment_id, step_index)
);
CREATE INDEX deliveries_due ON deliveries (state, send_at);
CREATE INDEX deliveries_lead ON deliveries (lead_id);

CREATE TABLE traces (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    enrollment_id  BIGINT NOT NULL REFERENCES enrollments (id),
    campaign_id    BIGINT NOT NULL,
    lead_id        BIGINT NOT NULL,
    step_index     BIGINT NOT NULL,
    evaluated_at   BIGINT NOT NULL,
    outcome        TEXT NOT NULL,
    code           TEXT,
    channel        TEXT,
    at             BIGINT,
    gates_json     TEXT NOT NULL
);
CREATE INDEX traces_lead ON traces (lead_id);

CREATE TABLE events (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lead_id      BIGINT NOT NULL REFERENCES leads (id),
    delivery_id  BIGINT REFERENCES deliveries (id),
    kind         TEXT NOT NULL,
    occurred_at  BIGINT NOT NULL,
    detail       TEXT NOT NULL DEFAULT '{}',
    source       TEXT NOT NULL
);
CREATE INDEX events_lead ON events (lead_id);
CREATE INDEX events_delivery ON events (delivery_id);

CREATE TABLE suppressions (
    kind        TEXT NOT NULL,
    value       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    source      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (kind, value)
);

-- Fencing tokens (SQLite uses a counters row). CACHE 1 (the default) keeps the values
-- increasing in the order nextval is called across all sessions, which is what makes a
-- newer claim's token larger than every older claim's token of the same row.
CREATE SEQUENCE fencing_token_seq AS BIGINT START WITH 1 CACHE 1;
