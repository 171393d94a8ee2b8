-- An e-mail whose SMTP acceptance was not confirmed in the ledger (the worker stopped in between)
-- is 'unconfirmed': never sent again automatically, re-driven by an operator if it did not arrive.
ALTER TABLE notify_deliveries DROP CONSTRAINT notify_deliveries_status_check;
ALTER TABLE notify_deliveries ADD CONSTRAINT notify_deliveries_status_check
    CHECK (status IN ('pending', 'claimed', 'sent', 'failed', 'dead', 'unconfirmed'));
CREATE INDEX notify_deliveries_unconfirmed ON notify_deliveries (created_at) WHERE status = 'unconfirmed';
