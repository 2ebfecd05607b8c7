-- The A/B variant a delivery carries, when its step runs an experiment.
ALTER TABLE deliveries ADD COLUMN variant TEXT;
