-- The report's engagement per delivery, by kind.
CREATE INDEX events_delivery_facts ON events (delivery_id, kind, occurred_at);
-- Conversions of a period, by kind and time.
CREATE INDEX events_kind_at ON events (kind, occurred_at);
