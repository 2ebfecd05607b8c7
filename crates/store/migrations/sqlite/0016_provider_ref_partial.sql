-- Only sent messages carry a provider reference (a Message SID, an internetMessageId), and
-- lookups are always by value: the index leaves out the unsent rows, so planning a delivery
-- no longer adds an entry to it.
DROP INDEX deliveries_provider_ref;
CREATE INDEX deliveries_provider_ref ON deliveries (provider_ref) WHERE provider_ref IS NOT NULL;
