-- Consent evidence per lead: consent (with source and time), legitimate-interest
-- assessments, CASL implied consent, withdrawals (STOP) and objections (GDPR Art. 21).
CREATE TABLE consents (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lead_id      BIGINT NOT NULL REFERENCES leads (id),
    channel      TEXT,
    basis        TEXT NOT NULL,
    source       TEXT NOT NULL,
    reference    TEXT,
    contact      TEXT,
    obtained_at  BIGINT NOT NULL,
    expires_at   BIGINT,
    recorded_at  BIGINT NOT NULL
);
CREATE INDEX consents_lead ON consents (lead_id);

-- What was checked for each send, and on what evidence.
CREATE TABLE compliance_evidence (
    delivery_id       BIGINT PRIMARY KEY REFERENCES deliveries (id),
    lead_id           BIGINT NOT NULL,
    checked_at        BIGINT NOT NULL,
    provider          TEXT NOT NULL,
    regimes           TEXT NOT NULL,
    checks_json       TEXT NOT NULL,
    consent_id        BIGINT,
    footer_postal     INTEGER NOT NULL,
    footer_unsubscribe INTEGER NOT NULL,
    one_click_header  INTEGER NOT NULL,
    stop_wording      INTEGER NOT NULL
);
CREATE INDEX compliance_evidence_checked ON compliance_evidence (checked_at);

-- Campaigns halted for a compliance problem: nothing of them is planned or sent until a
-- person resumes them (`engager compliance resume`), which is refused while it persists.
CREATE TABLE campaign_halts (
    campaign_id  BIGINT PRIMARY KEY,
    halted       INTEGER NOT NULL,
    reason       TEXT NOT NULL,
    changed_by   TEXT NOT NULL,
    changed_at   BIGINT NOT NULL
);

-- Opt-outs written back to the lead's source (Airtable's Engagement_Status), once per lead.
CREATE TABLE opt_out_writebacks (
    lead_id     BIGINT PRIMARY KEY REFERENCES leads (id),
    written_at  BIGINT NOT NULL
);
