"""Small builders of realistic events for tests."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

from shared.events.inspection import IssueFound
from shared.eventstore import EventMeta


def issue_found(
    issue_id: UUID | None = None, grid_path: str = "changtai/wuan/c01/g01", at: datetime | None = None
) -> tuple[IssueFound, EventMeta]:
    at = at or datetime(2026, 11, 24, 2, 30, tzinfo=UTC)
    iid = issue_id or uuid4()
    payload = IssueFound(
        issue_id=iid,
        grid_path=grid_path,
        method="unannounced",
        category="sanitation",
        case_type="event",
        severity="minor",
        description="沿街垃圾未及时清运",
        location="文泉路12号",
        photos=["photo://2026/11/24/a.jpg"],
        found_at=at,
        standards_version=1,
        deadline_hours=24,
    )
    return payload, EventMeta(source="inspection-team-1", actor="张三", grid_path=grid_path, occurred_at=at)
