-- How far each inbound mailbox has been read, so a restart neither re-reads nor misses mail.
-- IMAP keeps (UIDVALIDITY, last UID); Graph keeps the receivedDateTime of the newest message read.
CREATE TABLE inbound_cursors (
    source            TEXT PRIMARY KEY,
    uid_validity      INTEGER,
    last_uid          INTEGER,
    last_received_at  INTEGER,
    updated_at        INTEGER NOT NULL
);

-- An event read from outside (a reply, a bounce) carries the id of the message it came from,
-- once: reading the same message again records nothing.
ALTER TABLE events ADD COLUMN external_id TEXT;
CREATE UNIQUE INDEX events_external_id ON events (external_id) WHERE external_id IS NOT NULL;
-- Replies to Graph mail name our message by its internetMessageId, the delivery's provider_ref.
CREATE INDEX deliveries_provider_ref ON deliveries (provider_ref);

-- LinkedIn steps are tasks for a person. The task's delivery stays `sending` (claimed by the
-- task, without a lease) until the task is done (the delivery becomes `sent`), skipped or
-- cancelled (`cancelled`), or falls back to another channel (the same row is planned again).
CREATE TABLE tasks (
    id             INTEGER PRIMARY KEY,
    delivery_id    INTEGER NOT NULL UNIQUE REFERENCES deliveries (id),
    enrollment_id  INTEGER NOT NULL REFERENCES enrollments (id),
    campaign_id    INTEGER NOT NULL,
    lead_id        INTEGER NOT NULL REFERENCES leads (id),
    step_index     INTEGER NOT NULL,
    channel        TEXT NOT NULL,
    kind           TEXT NOT NULL,
    profile_url    TEXT NOT NULL,
    body           TEXT NOT NULL,
    state          TEXT NOT NULL,
    due_at         INTEGER NOT NULL,
    on_deadline    TEXT NOT NULL,
    fencing_token  INTEGER NOT NULL,
    note           TEXT,
    created_at     INTEGER NOT NULL,
    closed_at      INTEGER
);
CREATE INDEX tasks_open ON tasks (state, due_at);
CREATE INDEX tasks_lead ON tasks (lead_id);
