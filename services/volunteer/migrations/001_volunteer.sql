-- The volunteer service's own tables. Personal data lives only here, never on a topic;
-- every other table is a read model (projection) rebuildable from the volunteer.* topics.

CREATE TABLE volunteer_personal_data (
    volunteer_id  uuid PRIMARY KEY,
    name          text NOT NULL,
    phone         text NOT NULL,
    id_number     text NOT NULL UNIQUE,
    registered_by text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Read model: sites and the volunteer register (masked).
CREATE TABLE volunteer_sites (
    site_id   text PRIMARY KEY,
    kind      text NOT NULL,
    name      text NOT NULL,
    grid_path text NOT NULL,
    closed    boolean NOT NULL DEFAULT false
);
CREATE TABLE volunteer_register (
    volunteer_id     uuid PRIMARY KEY,
    site_id          text NOT NULL,
    grid_path        text NOT NULL,
    name_masked      text NOT NULL,
    phone_masked     text NOT NULL,
    skills           jsonb NOT NULL,
    registered_at    timestamptz NOT NULL,
    active           boolean NOT NULL DEFAULT true
);
CREATE INDEX volunteer_register_grid ON volunteer_register (grid_path text_pattern_ops);

-- Read model: activities (a site's calendar) and hours credited per volunteer per activity.
CREATE TABLE volunteer_activities (
    activity_id  uuid PRIMARY KEY,
    site_id      text NOT NULL,
    grid_path    text NOT NULL,
    title        text NOT NULL,
    theme        text NOT NULL,
    form         text NOT NULL,
    starts_at    timestamptz NOT NULL,
    ends_at      timestamptz NOT NULL,
    status       text NOT NULL,
    started_at   timestamptz,
    ended_at     timestamptz,
    audience     integer,
    participants integer,
    photos       jsonb,
    verdict      text,
    pending      integer NOT NULL DEFAULT 0,
    lapsed       integer NOT NULL DEFAULT 0
);
CREATE INDEX volunteer_activities_site ON volunteer_activities (site_id, starts_at);
CREATE TABLE volunteer_hours (
    volunteer_id uuid NOT NULL,
    activity_id  uuid NOT NULL,
    hours        numeric(5, 2) NOT NULL,
    basis        text NOT NULL,
    served_on    timestamptz NOT NULL,
    PRIMARY KEY (volunteer_id, activity_id)
);

-- Read model: households' civility points ledger and the incentive funds.
CREATE TABLE volunteer_households (
    household_id text PRIMARY KEY,
    grid_path    text NOT NULL,
    label        text NOT NULL,
    balance      integer NOT NULL
);
CREATE TABLE volunteer_points_ledger (
    household_id  text NOT NULL,
    entry         integer NOT NULL,
    kind          text NOT NULL,
    points        integer NOT NULL,
    balance_after integer NOT NULL,
    rule          text,
    item          text,
    reason        text NOT NULL,
    rules_version integer NOT NULL,
    occurred_at   timestamptz NOT NULL,
    PRIMARY KEY (household_id, entry)
);
CREATE TABLE volunteer_funds (
    fund_id   text PRIMARY KEY,
    name      text NOT NULL,
    grid_path text NOT NULL,
    balance   integer NOT NULL
);

-- Read model: honours and creation titles.
CREATE TABLE volunteer_honours (
    nomination_id uuid PRIMARY KEY,
    honour        text NOT NULL,
    nominee       text NOT NULL,
    grid_path     text NOT NULL,
    year          integer NOT NULL,
    endorsements  integer NOT NULL DEFAULT 0,
    level         text
);
CREATE TABLE volunteer_titles (
    title_id  text NOT NULL,
    level     text NOT NULL,
    category  text NOT NULL,
    holder    text NOT NULL,
    grid_path text NOT NULL,
    year      integer NOT NULL,
    revoked   boolean NOT NULL DEFAULT false,
    PRIMARY KEY (title_id, level)
);
