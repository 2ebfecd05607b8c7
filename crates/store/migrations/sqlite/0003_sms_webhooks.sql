-- What Twilio's webhooks tell about SMS (the `engager serve` endpoints).
-- The most advanced delivery status applied per Message SID: callbacks arrive out of order
-- and may be replayed, so a status is only written over the one the caller read (see
-- Store::apply_sms_status), and a late `sent` never replaces `delivered`.
CREATE TABLE sms_statuses (
    message_sid  TEXT PRIMARY KEY,
    delivery_id  INTEGER NOT NULL REFERENCES deliveries (id),
    status       TEXT NOT NULL,
    error_code   INTEGER,
    updated_at   INTEGER NOT NULL
);
-- Every inbound SMS applied, once per Message SID (a replayed webhook is dropped): the audit
-- trail of opt-outs (STOP), re-consents (START), help requests and replies, by number.
CREATE TABLE sms_inbound (
    message_sid  TEXT PRIMARY KEY,
    from_number  TEXT NOT NULL,
    to_number    TEXT NOT NULL,
    action       TEXT NOT NULL,
    body         TEXT NOT NULL,
    received_at  INTEGER NOT NULL
);
CREATE INDEX sms_inbound_from ON sms_inbound (from_number);
-- Status callbacks find their delivery by its provider_ref (the Message SID), through the
-- index deliveries_provider_ref that migration 0004 creates.
