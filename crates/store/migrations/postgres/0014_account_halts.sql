-- The deliverability monitor's halts per sending account and per sending domain (keys
-- `account:<channel>:<provider>:<identity>` and `domain:<domain>`): set by the monitor when
-- a rate breaches its halt level, lifted only by a person
-- (`engager deliverability resume --account/--domain`).
CREATE TABLE account_halts (
    key         TEXT PRIMARY KEY,
    halted      INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    changed_by  TEXT NOT NULL,
    changed_at  BIGINT NOT NULL
);
