-- Read model (projection volunteer-projects): volunteer service projects and their contest rounds.
-- Every row is rebuildable from the volunteer.project topic.
CREATE TABLE volunteer_projects (
    project_id         uuid PRIMARY KEY,
    name               text NOT NULL,
    organiser          text NOT NULL,
    department         text NOT NULL,
    grid_path          text NOT NULL,
    description        text NOT NULL,
    registered_at      timestamptz NOT NULL,
    rounds_entered     integer NOT NULL DEFAULT 0,
    rounds_shortlisted integer NOT NULL DEFAULT 0,
    rounds_awarded     integer NOT NULL DEFAULT 0,
    updated_at         timestamptz NOT NULL
);
CREATE INDEX volunteer_projects_grid ON volunteer_projects (grid_path text_pattern_ops);

-- One row per contest round a project was entered in; shortlisted/awarded when it got that far.
CREATE TABLE volunteer_project_rounds (
    project_id     uuid NOT NULL,
    contest        text NOT NULL,
    year           integer NOT NULL,
    level          text,
    entered_at     timestamptz NOT NULL,
    shortlisted_at timestamptz,
    awarded_at     timestamptz,
    prize          text,
    PRIMARY KEY (project_id, contest, year)
);
CREATE INDEX volunteer_project_rounds_year ON volunteer_project_rounds (year, contest);
