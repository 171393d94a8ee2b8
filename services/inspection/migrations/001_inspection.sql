-- Read models of the inspection service (projections of inspection.issue; rebuildable).
CREATE TABLE inspection_issues (
    issue_id         uuid PRIMARY KEY,
    grid_path        text NOT NULL,
    township         text NOT NULL,
    category         text NOT NULL,
    severity         text NOT NULL,
    case_type        text NOT NULL,
    method           text NOT NULL,
    description      text NOT NULL,
    location         text,
    found_at         timestamptz NOT NULL,
    found_day        date NOT NULL,
    status           text NOT NULL,
    responsible_unit text,
    owner            text,
    deadline         timestamptz,
    overdue_step     integer NOT NULL DEFAULT 0,
    escalation_level text,
    escalated_to     text,
    closed_at        timestamptz,
    on_time          boolean,
    rejections       integer NOT NULL DEFAULT 0,
    reopened         integer NOT NULL DEFAULT 0,
    public_report_id text,
    version          integer NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX inspection_issues_day_township ON inspection_issues (found_day, township);
CREATE INDEX inspection_issues_day_unit ON inspection_issues (found_day, responsible_unit);
CREATE INDEX inspection_issues_open_deadline ON inspection_issues (deadline) WHERE status IN ('assigned', 'returned');
CREATE INDEX inspection_issues_public_report ON inspection_issues (public_report_id) WHERE public_report_id IS NOT NULL;
