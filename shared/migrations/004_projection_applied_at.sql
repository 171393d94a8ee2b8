-- When each event id was applied, so the dedupe set can forget ids older than its window
-- (WENMING_PROJECTION_DEDUPE_DAYS) instead of growing with every event for ever.
-- No index on it: a BRIN index cost the scoring replay 27% (10,748 -> 7,836 events/s). The
-- idle runner's prune scans instead; the oldest rows lie first in the heap, so it finds them early.
ALTER TABLE projection_applied ADD COLUMN applied_at timestamptz NOT NULL DEFAULT now();
