"""The notify projection: events in, issue deadline state, reminders and planned deliveries out.

Runs under `ProjectionRunner`, so each event is applied once (by event id) in the same
transaction as the ledger rows it plans. Rules match by event type name: the projection
subscribes to the topic of every rule's event type that is registered, so scoring's and
volunteer's events are picked up as soon as their models exist.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from services.notify.domain import (
    IssueFacts,
    Occurrence,
    RuleBook,
    Templates,
    default_rules,
    default_templates,
    plan,
    reminders_for,
)
from services.notify.ledger import insert_planned, load_directory
from shared.campaign_time import utcnow
from shared.db import Conn
from shared.events.registry import EventDecodeError, registry
from shared.grid import cached_grid
from shared.projection import Applied, Projection
from shared.settings import Settings

ISSUE_TOPIC = "inspection.issue"


def place_namer(settings: Settings) -> Callable[[str], str]:
    """Grid path -> the place's name in the district file (the path itself if unknown)."""
    try:
        grid = cached_grid(settings.district_file)
    except (OSError, KeyError, ValueError):
        return lambda p: p

    def name(path: str) -> str:
        node = grid.nodes.get(path)
        return node.name if node is not None else path

    return name


def facts_from_row(row: asyncpg.Record | None) -> IssueFacts | None:
    if row is None:
        return None
    return IssueFacts(
        issue_id=row["issue_id"],
        grid_path=row["grid_path"],
        category=row["category"],
        severity=row["severity"],
        description=row["description"],
        responsible_unit=row["responsible_unit"],
        owner=row["owner"],
        deadline=row["deadline"],
        closed=row["closed"],
    )


async def load_issue(conn: Conn, issue_id: UUID) -> IssueFacts | None:
    return facts_from_row(await conn.fetchrow("SELECT * FROM notify_issues WHERE issue_id = $1", issue_id))


class NotifyProjection(Projection):
    name = "notify"
    tables = ("notify_issues",)
    """Only the issue state is rebuilt; the ledger and reminders keep what was sent and fired."""

    def __init__(
        self,
        settings: Settings,
        book: RuleBook | None = None,
        templates: Templates | None = None,
        clock: Callable[[], datetime] = utcnow,
    ):
        self.book = book or default_rules()
        self.templates = templates or default_templates()
        self.clock = clock
        self.place_name = place_namer(settings)
        topics = {ISSUE_TOPIC}
        for event_type in self.book.event_types():
            try:
                topics.add(registry.topic_for(event_type))
            except EventDecodeError:
                continue  # not published by anyone yet
        self.topics = sorted(topics)

    async def apply(self, conn: Conn, events: Sequence[Applied]) -> None:
        directory = None
        wanted = self.book.event_types()
        for env, payload in events:
            data: dict[str, Any] = payload.model_dump(mode="json")
            issue_id = getattr(payload, "issue_id", None) if env.type != "InspectionConducted" else None
            if isinstance(issue_id, UUID):
                await self._track_issue(conn, env.type, issue_id, env.grid_path, env.occurred_at, data)
            if env.type not in wanted:
                continue
            if directory is None:
                directory = await load_directory(conn)
            facts = await load_issue(conn, issue_id) if isinstance(issue_id, UUID) else None
            area = await self._open_and_overdue(conn) if env.type == "DailyScoresPublished" else {}
            occ = Occurrence(env.event_id, env.type, env.grid_path, env.occurred_at, data, facts, area)
            planned = plan(
                self.book, self.templates, occ, directory[0], directory[1], now=self.clock(), place_name=self.place_name
            )
            await insert_planned(conn, planned)

    async def _open_and_overdue(self, conn: Conn) -> dict[str, dict[str, Any]]:
        """Open and overdue issues per township (grid path) and per unit (`unit:<code>`), for digests."""
        rows = await conn.fetch(
            "SELECT key, count(*) AS open_issues, count(*) FILTER (WHERE deadline < $1) AS overdue_issues"
            " FROM (SELECT split_part(grid_path, '/', 1) || '/' || split_part(grid_path, '/', 2) AS key, deadline"
            " FROM notify_issues WHERE NOT closed AND deadline IS NOT NULL"
            " UNION ALL SELECT 'unit:' || responsible_unit, deadline FROM notify_issues"
            " WHERE NOT closed AND deadline IS NOT NULL AND responsible_unit IS NOT NULL) x GROUP BY key",
            self.clock(),
        )
        return {r["key"]: {"open_issues": r["open_issues"], "overdue_issues": r["overdue_issues"]} for r in rows}

    async def _track_issue(
        self, conn: Conn, kind: str, issue_id: UUID, grid_path: str, at: datetime, data: dict[str, Any]
    ) -> None:
        """Keep the issue's owner, deadline and open/closed state, and its reminders."""
        await conn.execute(
            "INSERT INTO notify_issues (issue_id, grid_path) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            issue_id,
            grid_path,
        )
        if kind == "IssueFound":
            await conn.execute(
                "UPDATE notify_issues SET category = $2, severity = $3, description = $4, grid_path = $5,"
                " updated_at = now() WHERE issue_id = $1",
                issue_id,
                data["category"],
                data["severity"],
                data["description"],
                grid_path,
            )
        elif kind == "IssueAssigned":
            deadline = datetime.fromisoformat(data["deadline"])
            await conn.execute(
                "UPDATE notify_issues SET owner = $2, responsible_unit = $3, deadline = $4, closed = false,"
                " updated_at = now() WHERE issue_id = $1",
                issue_id,
                data["owner"],
                data["responsible_unit"],
                deadline,
            )
            await self._schedule(conn, issue_id, deadline, at)
        elif kind == "ExtensionGranted":
            deadline = datetime.fromisoformat(data["new_deadline"])
            await conn.execute(
                "UPDATE notify_issues SET deadline = $2, updated_at = now() WHERE issue_id = $1", issue_id, deadline
            )
            await self._schedule(conn, issue_id, deadline, at)
        elif kind in ("RectificationClosed", "IssueBacklogged"):
            await conn.execute(
                "UPDATE notify_issues SET closed = true, updated_at = now() WHERE issue_id = $1", issue_id
            )
            await self._cancel(conn, issue_id, None)
        elif kind == "AssignmentReturned":
            await self._cancel(conn, issue_id, None)
        elif kind == "IssueReopened":
            await conn.execute(
                "UPDATE notify_issues SET closed = false, updated_at = now() WHERE issue_id = $1", issue_id
            )

    async def _cancel(self, conn: Conn, issue_id: UUID, keep_deadline: datetime | None) -> None:
        await conn.execute(
            "UPDATE notify_reminders SET cancelled_at = now() WHERE issue_id = $1 AND fired_at IS NULL"
            " AND cancelled_at IS NULL AND ($2::timestamptz IS NULL OR deadline <> $2)",
            issue_id,
            keep_deadline,
        )

    async def _schedule(self, conn: Conn, issue_id: UUID, deadline: datetime, at: datetime) -> None:
        await self._cancel(conn, issue_id, deadline)
        due = reminders_for(self.book, issue_id, deadline, at)
        if due:
            await conn.executemany(
                "INSERT INTO notify_reminders (issue_id, before_hours, deadline, due_at) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (issue_id, before_hours, deadline) DO UPDATE SET cancelled_at = NULL"
                " WHERE notify_reminders.fired_at IS NULL",
                [(d.issue_id, d.before_hours, d.deadline, d.due_at) for d in due],
            )
