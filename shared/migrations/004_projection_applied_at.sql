-- When each event id was applied, so the dedupe set can forget ids older than its window
-- (WENMING_PROJECTION_DEDUPE_DAYS) instead of growing with every event for ever. BRIN: the
-- column only grows, and the index stays a few pages.
ALTER TABLE projection_applied ADD COLUMN applied_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX projection_applied_at ON projection_applied USING brin (applied_at);
