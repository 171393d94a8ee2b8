-- Personal digests: a recipient may take non-urgent messages once a day at a local time. Such a
-- delivery waits as 'held'; at the digest time the held rows of one recipient and channel become
-- 'digested' (digest_id names the digest delivery that carried them) in the same transaction that
-- adds that one digest delivery.
ALTER TABLE notify_recipients ADD COLUMN digest_at text;
ALTER TABLE notify_deliveries ADD COLUMN digest_id uuid;
ALTER TABLE notify_deliveries DROP CONSTRAINT notify_deliveries_status_check;
ALTER TABLE notify_deliveries ADD CONSTRAINT notify_deliveries_status_check
    CHECK (status IN ('pending', 'claimed', 'sent', 'failed', 'dead', 'unconfirmed', 'held', 'digested'));
CREATE INDEX notify_deliveries_held ON notify_deliveries (next_attempt_at) WHERE status = 'held';
CREATE INDEX notify_deliveries_digest ON notify_deliveries (digest_id) WHERE digest_id IS NOT NULL;
