-- Scoring read models. All are rebuilt from the topics by `python -m services.scoring rebuild`.

-- The ledger: one row per (event, scored subject, rule); every score is the base plus its items.
CREATE TABLE scoring_items (
    event_id    uuid NOT NULL,
    level       text NOT NULL CHECK (level IN ('township', 'unit')),
    subject     text NOT NULL,
    rule        text NOT NULL,
    day         date NOT NULL,
    points      numeric(10, 2) NOT NULL,
    reason      text NOT NULL,
    occurred_at timestamptz NOT NULL,
    grid_path   text NOT NULL,
    issue_id    uuid,
    rules_version integer NOT NULL,
    PRIMARY KEY (event_id, level, subject, rule)
);
CREATE INDEX scoring_items_day ON scoring_items (day, level, subject);

-- What scoring knows of each issue (folded from its events), for the long-term metrics.
CREATE TABLE scoring_issues (
    issue_id            uuid PRIMARY KEY,
    grid_path           text NOT NULL,
    township            text,
    category            text,
    severity            text,
    found_at            timestamptz,
    found_day           date,
    responsible_unit    text,
    charged_unit        text,
    deadline            timestamptz,
    reported            integer NOT NULL,
    rejected            integer NOT NULL,
    extension_requested boolean NOT NULL,
    extensions_granted  integer NOT NULL,
    closed_at           timestamptz,
    on_time             boolean,
    last_closed_at      timestamptz,
    backlogged_at       timestamptz,
    overdue_steps       integer NOT NULL,
    reopened            integer NOT NULL,
    recurred_30d        boolean NOT NULL
);
CREATE INDEX scoring_issues_found ON scoring_issues (found_day, grid_path);

-- The daily ranking (一日一评比), recomputed from the ledger for every day an event touches.
CREATE TABLE scoring_daily (
    day      date NOT NULL,
    level    text NOT NULL,
    subject  text NOT NULL,
    score    numeric(10, 2) NOT NULL,
    deducted numeric(10, 2) NOT NULL,
    credited numeric(10, 2) NOT NULL,
    items    integer NOT NULL,
    rank     integer NOT NULL,
    PRIMARY KEY (day, level, subject)
);

-- Volunteer activities held (when the volunteer context publishes ActivityHeld).
CREATE TABLE scoring_activities (
    event_id  uuid PRIMARY KEY,
    site_id   text NOT NULL,
    grid_path text NOT NULL,
    day       date NOT NULL,
    hours     numeric(10, 2) NOT NULL
);
CREATE INDEX scoring_activities_day ON scoring_activities (day, grid_path);
