-- The report's engagement pass reads events by delivery and kind from this index alone
-- (with the detail, for the machine-activity flag of opens and clicks).
CREATE INDEX events_delivery_facts ON events (delivery_id, kind, occurred_at, detail);
-- Conversions of a period, by kind and time.
CREATE INDEX events_kind_at ON events (kind, occurred_at);
