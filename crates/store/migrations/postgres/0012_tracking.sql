-- Open and click tracking: the destination of every link rewritten in a sent message, kept
-- server-side so that a click token carries no URL and a tampered one has nowhere to go.
CREATE TABLE tracked_links (
    delivery_id  BIGINT NOT NULL REFERENCES deliveries (id),
    link_index   INTEGER NOT NULL,
    lead_id      BIGINT NOT NULL REFERENCES leads (id),
    url          TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, link_index)
);
CREATE INDEX tracked_links_lead ON tracked_links (lead_id);
