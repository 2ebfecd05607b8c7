-- The deliverability monitor's halts, per channel: set by the monitor when a rate breaches
-- its halt level, lifted only by a person (`engager deliverability resume`).
CREATE TABLE sending_halts (
    channel     TEXT PRIMARY KEY,
    halted      INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    changed_by  TEXT NOT NULL,
    changed_at  BIGINT NOT NULL
);
