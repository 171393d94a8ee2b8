-- Notify: recipients and subscriptions, per-issue deadline state, reminders, the delivery
-- ledger (exactly once per event, recipient and channel) and the in-app inbox.

CREATE TABLE notify_recipients (
    recipient_id   text PRIMARY KEY,
    name           text NOT NULL,
    grid_path      text NOT NULL,
    role           text NOT NULL,
    unit           text,
    channels       text[] NOT NULL,
    email          text,
    webhook_url    text,
    webhook_secret text,
    phone          text,
    quiet_hours    jsonb,
    language       text NOT NULL DEFAULT 'zh',
    active         boolean NOT NULL DEFAULT true,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notify_recipients_name ON notify_recipients (name);

CREATE TABLE notify_subscriptions (
    recipient_id text NOT NULL REFERENCES notify_recipients (recipient_id) ON DELETE CASCADE,
    event_type   text NOT NULL,
    area         text NOT NULL,
    PRIMARY KEY (recipient_id, event_type, area)
);

-- What notify keeps of each issue from its events: who owns it and by when.
CREATE TABLE notify_issues (
    issue_id         uuid PRIMARY KEY,
    grid_path        text NOT NULL,
    category         text NOT NULL DEFAULT '',
    severity         text NOT NULL DEFAULT '',
    description      text NOT NULL DEFAULT '',
    responsible_unit text,
    owner            text,
    deadline         timestamptz,
    closed           boolean NOT NULL DEFAULT false,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- One row per (issue, reminder offset, deadline): a new deadline makes new rows; a closed
-- issue's unfired rows are cancelled; a fired row never fires again.
CREATE TABLE notify_reminders (
    issue_id     uuid NOT NULL,
    before_hours double precision NOT NULL,
    deadline     timestamptz NOT NULL,
    due_at       timestamptz NOT NULL,
    fired_at     timestamptz,
    cancelled_at timestamptz,
    PRIMARY KEY (issue_id, before_hours, deadline)
);
CREATE INDEX notify_reminders_due ON notify_reminders (due_at) WHERE fired_at IS NULL AND cancelled_at IS NULL;

-- The delivery ledger. status: pending -> claimed -> sent | failed (retry at next_attempt_at)
-- | dead (dead-lettered with last_error; an operator may re-drive it back to pending).
CREATE TABLE notify_deliveries (
    delivery_id     uuid PRIMARY KEY,
    event_id        uuid NOT NULL,
    event_type      text NOT NULL,
    rule            text NOT NULL,
    rules_version   integer NOT NULL,
    recipient_id    text NOT NULL,
    channel         text NOT NULL,
    address         text NOT NULL,
    language        text NOT NULL,
    subject         text NOT NULL,
    body            text NOT NULL,
    urgent          boolean NOT NULL,
    grid_path       text NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'claimed', 'sent', 'failed', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    claimed_at      timestamptz,
    sent_at         timestamptz,
    provider        text,
    last_error      text,
    stream_version  integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, recipient_id, channel)
);
CREATE INDEX notify_deliveries_due ON notify_deliveries (next_attempt_at) WHERE status IN ('pending', 'failed');
CREATE INDEX notify_deliveries_dead ON notify_deliveries (created_at) WHERE status = 'dead';

-- The in-app inbox; message_id is the delivery id, so a message is written at most once.
CREATE TABLE notify_inbox (
    message_id    uuid PRIMARY KEY,
    recipient_id  text NOT NULL,
    event_type    text NOT NULL,
    subject       text NOT NULL,
    body          text NOT NULL,
    urgent        boolean NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    read_at       timestamptz,
    snoozed_until timestamptz
);
CREATE INDEX notify_inbox_recipient ON notify_inbox (recipient_id, created_at DESC);
