-- A/B experiments: a winner promoted (automatically or by a person) or the promotion undone.
-- One row per experiment (`campaign#step`), the latest decision.
CREATE TABLE experiment_decisions (
    experiment  TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    variant     TEXT,
    source      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    decided_at  INTEGER NOT NULL
);

-- Reply classification: what a reply event means (positive, neutral, negative,
-- out_of_office, unsubscribe), who decided it (person, llm, rules) and why.
CREATE TABLE reply_classifications (
    event_id       INTEGER PRIMARY KEY REFERENCES events (id),
    lead_id        INTEGER NOT NULL REFERENCES leads (id),
    class          TEXT NOT NULL,
    source         TEXT NOT NULL,
    reason         TEXT NOT NULL,
    classified_at  INTEGER NOT NULL
);
CREATE INDEX reply_classifications_lead ON reply_classifications (lead_id);

-- Variant assignments are read per page of leads and experiment.
CREATE INDEX deliveries_lead_variant ON deliveries (lead_id, campaign_id, step_index) WHERE variant IS NOT NULL;
