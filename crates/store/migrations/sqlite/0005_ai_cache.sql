-- AI personalization outcomes by cache key (a hash of the model, the prompt version and every
-- input), so re-planning or re-running a simulation reuses them and costs nothing.
CREATE TABLE ai_cache (
    key         TEXT PRIMARY KEY,
    model       TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
