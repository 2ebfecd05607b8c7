-- The sending account a delivery went through (`channel:provider` for a channel's single
-- account, `channel:provider:identity` for one of several rotated accounts), set when its
-- send begins. NULL for rows that never reached a provider and for rows older than 0010.
ALTER TABLE deliveries ADD COLUMN account TEXT;
-- A lead's sequence stays on the account that first sent to it: looked up by enrollment.
CREATE INDEX IF NOT EXISTS deliveries_enrollment_account ON deliveries (enrollment_id, channel, id) WHERE account IS NOT NULL;
