-- Times are integer milliseconds since the Unix epoch (UTC) on both backends.
CREATE TABLE leads (
    id            INTEGER PRIMARY KEY,
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
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX leads_source_ref ON leads (source, source_ref);
CREATE INDEX leads_phone ON leads (phone);

CREATE TABLE campaigns (
    id          INTEGER PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    definition  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE enrollments (
    id            INTEGER PRIMARY KEY,
    campaign_id   INTEGER NOT NULL REFERENCES campaigns (id),
    lead_id       INTEGER NOT NULL REFERENCES leads (id),
    state         TEXT NOT NULL,
    current_step  INTEGER NOT NULL DEFAULT 0,
    next_due_at   INTEGER,
    stop_reason   TEXT,
    enrolled_at   INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    UNIQUE (campaign_id, lead_id)
);
CREATE INDEX enrollments_due ON enrollments (state, next_due_at);
CREATE INDEX enrollments_lead ON enrollments (lead_id);

CREATE TABLE deliveries (
    id               INTEGER PRIMARY KEY,
    enrollment_id    INTEGER NOT NULL REFERENCES enrollments (id),
    campaign_id      INTEGER NOT NULL REFERENCES campaigns (id),
    lead_id          INTEGER NOT NULL REFERENCES leads (id),
    step_index       INTEGER NOT NULL,
    channel          TEXT NOT NULL,
    state            TEXT NOT NULL,
    send_at          INTEGER NOT NULL,
    to_address       TEXT NOT NULL,
    subject          TEXT,
    body_text        TEXT NOT NULL,
    body_html        TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    fencing_token    INTEGER NOT NULL DEFAULT 0,
    lease_until      INTEGER,
    claimed_by       TEXT,
    next_attempt_at  INTEGER,
    last_error       TEXT,
    provider_ref     TEXT,
    sent_at          INTEGER,
    written_back_at  INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    UNIQUE (enrollment_id, step_index)
);
CREATE INDEX deliveries_due ON deliveries (state, send_at);
CREATE INDEX deliveries_lead ON deliveries (lead_id);

CREATE TABLE traces (
    id             INTEGER PRIMARY KEY,
    enrollment_id  INTEGER NOT NULL REFERENCES enrollments (id),
    campaign_id    INTEGER NOT NULL,
    lead_id        INTEGER NOT NULL,
    step_index     INTEGER NOT NULL,
    evaluated_at   INTEGER NOT NULL,
    outcome        TEXT NOT NULL,
    code           TEXT,
    channel        TEXT,
    at             INTEGER,
    gates_json     TEXT NOT NULL
);
CREATE INDEX traces_lead ON traces (lead_id);

CREATE TABLE events (
    id           INTEGER PRIMARY KEY,
    lead_id      INTEGER NOT NULL REFERENCES leads (id),
    delivery_id  INTEGER REFERENCES deliveries (id),
    kind         TEXT NOT NULL,
    occurred_at  INTEGER NOT NULL,
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
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (kind, value)
);

-- A single-row counter for fencing tokens (PostgreSQL uses a sequence).
CREATE TABLE counters (
    name   TEXT PRIMARY KEY,
    value  INTEGER NOT NULL
);
INSERT INTO counters (name, value) VALUES ('fencing_token', 0);
