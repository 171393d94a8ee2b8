"""The problem list (问题清单): one row per issue with its status, owner, deadline and escalation."""

from __future__ import annotations

from collections.abc import Sequence

from shared.campaign_time import campaign_day
from shared.db import Conn
from shared.events.inspection import (
    AssignmentReturned,
    ExtensionGranted,
    IssueAssigned,
    IssueBacklogged,
    IssueFound,
    IssueOverdue,
    IssueReopened,
    RectificationClosed,
    RectificationRejected,
    RectificationReported,
)
from shared.grid import GridLevel, cut
from shared.projection import Applied, Projection

_SET = "UPDATE inspection_issues SET version = $2, updated_at = $3, {} WHERE issue_id = $1 AND version < $2"


class ProblemList(Projection):
    name = "inspection.problem_list"
    topics = ("inspection.issue",)
    tables = ("inspection_issues",)

    async def apply(self, conn: Conn, events: Sequence[Applied]) -> None:
        for env, e in events:
            base = (getattr(e, "issue_id", None), env.stream_version, env.occurred_at)
            if isinstance(e, IssueFound):
                await conn.execute(
                    "INSERT INTO inspection_issues (issue_id, grid_path, township, category, severity, case_type,"
                    " method, description, location, found_at, found_day, status, public_report_id, version,"
                    " updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'found', $12, $13, $14)"
                    " ON CONFLICT (issue_id) DO NOTHING",
                    e.issue_id,
                    e.grid_path,
                    cut(e.grid_path, GridLevel.TOWNSHIP),
                    e.category,
                    e.severity,
                    e.case_type,
                    e.method,
                    e.description,
                    e.location,
                    e.found_at,
                    campaign_day(e.found_at),
                    e.public_report_id,
                    env.stream_version,
                    env.occurred_at,
                )
            elif isinstance(e, IssueAssigned):
                await conn.execute(
                    _SET.format(
                        "status = 'assigned', responsible_unit = $4, owner = $5, deadline = $6,"
                        " overdue_step = 0, escalation_level = NULL, escalated_to = NULL"
                    ),
                    *base,
                    e.responsible_unit,
                    e.owner,
                    e.deadline,
                )
            elif isinstance(e, AssignmentReturned):
                await conn.execute(_SET.format("status = 'returned'"), *base)
            elif isinstance(e, ExtensionGranted):
                await conn.execute(_SET.format("deadline = $4"), *base, e.new_deadline)
            elif isinstance(e, RectificationReported):
                await conn.execute(_SET.format("status = 'reported'"), *base)
            elif isinstance(e, RectificationRejected):
                await conn.execute(_SET.format("status = 'assigned', rejections = rejections + 1"), *base)
            elif isinstance(e, RectificationClosed):
                await conn.execute(_SET.format("status = 'closed', closed_at = $3, on_time = $4"), *base, e.on_time)
            elif isinstance(e, IssueBacklogged):
                await conn.execute(_SET.format("status = 'backlogged', closed_at = $3, on_time = false"), *base)
            elif isinstance(e, IssueOverdue):
                await conn.execute(
                    _SET.format("overdue_step = $4, escalation_level = $5, escalated_to = $6"),
                    *base,
                    e.step,
                    e.escalation_level,
                    e.escalated_to,
                )
            elif isinstance(e, IssueReopened):
                await conn.execute(
                    _SET.format(
                        "status = 'found', reopened = reopened + 1, responsible_unit = NULL,"
                        " owner = NULL, deadline = NULL, overdue_step = 0, closed_at = NULL,"
                        " on_time = NULL"
                    ),
                    *base,
                )
            elif hasattr(e, "issue_id"):
                await conn.execute(_SET.format("status = status"), *base)
