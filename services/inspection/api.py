"""HTTP API of the inspection service: commands of the closed loop in, problem lists out (/v1)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID, uuid4

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from services.inspection.domain import (
    AssignIssue,
    BacklogIssue,
    DecideExtension,
    IssueCommand,
    IssueState,
    RecordInspection,
    ReopenIssue,
    ReportIssue,
    ReportRectification,
    RequestExtension,
    ReturnAssignment,
    VerifyRectification,
    inspection_decider,
    issue_decider,
    issue_stream,
)
from services.inspection.standards import StandardsTable
from shared.auth import Principal, require
from shared.campaign_time import day_bounds, utcnow
from shared.decider import execute
from shared.events.inspection import MAX_PHOTOS, Code, InspectionMethod, IssueReport, PhotoRef, ShortText
from shared.events.registry import registry
from shared.eventstore import EventMeta, EventStore, StreamAppend, new_ids
from shared.grid import Grid, GridPath, within
from shared.service import IdempotencyKey, OrjsonRoute, idempotency_key

router = APIRouter(prefix="/v1", route_class=OrjsonRoute)
FUTURE_SLACK = timedelta(minutes=5)
"""Clock skew tolerated on times that must not be in the future."""
MAX_BATCH = 1000


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InspectionIn(Strict):
    method: InspectionMethod
    area: GridPath
    started_at: AwareDatetime
    finished_at: AwareDatetime
    inspectors: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(max_length=50)
    notes: str = Field(default="", max_length=4000)
    inspection_id: UUID | None = None


class IssueBatchIn(Strict):
    issues: list[IssueReport] = Field(min_length=1, max_length=MAX_BATCH)


class AssignIn(Strict):
    responsible_unit: Code
    owner: Annotated[str, Field(min_length=1, max_length=100)]
    deadline: AwareDatetime

    @field_validator("deadline")
    @classmethod
    def _future(cls, v: datetime) -> datetime:
        if v <= utcnow():
            raise ValueError("deadline is in the past")
        return v


class RectificationIn(Strict):
    text: ShortText
    photos: list[PhotoRef] = Field(default_factory=list, max_length=MAX_PHOTOS)


class VerifyIn(Strict):
    accept: bool
    reason: str = Field(default="", max_length=2000)


class ReasonIn(Strict):
    reason: ShortText


class ExtensionRequestIn(Strict):
    requested_deadline: AwareDatetime
    reason: ShortText


class ExtensionDecisionIn(Strict):
    grant: bool
    reason: str = Field(default="", max_length=2000)


class Accepted(BaseModel):
    id: UUID
    version: int
    event_ids: list[UUID]
    duplicate: bool = False


def _store(request: Request) -> EventStore:
    store: EventStore = request.app.state.store
    return store


def _grid(request: Request) -> Grid:
    grid: Grid = request.app.state.grid
    return grid


def _standards(request: Request) -> StandardsTable:
    table: StandardsTable = request.app.state.standards
    return table


def _unprocessable(loc: list[Any], msg: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [{"loc": loc, "msg": msg, "type": "value_error"}])


def _report_command(
    body: IssueReport,
    request: Request,
    principal: Principal,
    loc: list[Any],
    issue_id: UUID | None = None,
    now: datetime | None = None,
) -> ReportIssue:
    grid, table = _grid(request), _standards(request)
    if body.grid_path not in grid:
        raise _unprocessable([*loc, "grid_path"], f"{body.grid_path} is not a grid node of district {grid.district}")
    principal.require_area(body.grid_path)
    if body.category not in table.categories:
        raise _unprocessable(
            [*loc, "category"], f"unknown category {body.category!r}; known: {', '.join(sorted(table.categories))}"
        )
    if body.found_at > (now or utcnow()) + FUTURE_SLACK:
        raise _unprocessable([*loc, "found_at"], "found_at is in the future")
    return ReportIssue(
        issue_id=body.issue_id or issue_id or uuid4(),
        grid_path=body.grid_path,
        method=body.method,
        category=table.category(body.category),
        severity=body.severity,
        description=body.description,
        found_at=body.found_at,
        standards_version=table.version,
        location=body.location,
        photos=tuple(body.photos),
        inspection_id=body.inspection_id,
    )


def _meta(principal: Principal, grid_path: str, at: datetime, correlation_id: UUID | None = None) -> EventMeta:
    return EventMeta(
        source=principal.department,
        actor=principal.department,
        grid_path=grid_path,
        occurred_at=at,
        correlation_id=correlation_id or uuid4(),
    )


@router.post("/inspections", status_code=201, response_model=Accepted, tags=["inspections"])
async def record_inspection(
    body: InspectionIn,
    request: Request,
    principal: Principal = Depends(require("inspection:write")),
    key: str | None = IdempotencyKey,
) -> Accepted:
    if body.area not in _grid(request):
        raise _unprocessable(["body", "area"], f"{body.area} is not a grid node of the district")
    principal.require_area(body.area)
    if body.finished_at > utcnow() + FUTURE_SLACK:
        raise _unprocessable(["body", "finished_at"], "finished_at is in the future")
    iid = body.inspection_id or uuid4()
    cmd = RecordInspection(
        iid,
        principal.department,
        body.method,
        body.area,
        body.started_at,
        body.finished_at,
        tuple(body.inspectors),
        body.notes,
    )
    out = await execute(
        _store(request),
        inspection_decider,
        f"inspection-{iid}",
        cmd,
        _meta(principal, body.area, body.finished_at),
        idempotency_key(principal, key, "inspection"),
    )
    return Accepted(
        id=iid,
        version=out.version,
        event_ids=[e.event_id for e in out.result.envelopes],
        duplicate=out.result.duplicate,
    )


@router.post("/issues", status_code=201, response_model=Accepted, tags=["issues"])
async def report_issue(
    body: IssueReport,
    request: Request,
    principal: Principal = Depends(require("issue:report")),
    key: str | None = IdempotencyKey,
) -> Accepted:
    """Put an issue on the day's problem list."""
    cmd = _report_command(body, request, principal, ["body"])
    out = await execute(
        _store(request),
        issue_decider,
        issue_stream(cmd.issue_id),
        cmd,
        _meta(principal, cmd.grid_path, cmd.found_at),
        idempotency_key(principal, key, "inspection"),
    )
    first = out.result.envelopes[0] if out.result.envelopes else None
    return Accepted(
        id=UUID(str(first.payload["issue_id"])) if first else cmd.issue_id,
        version=out.version,
        event_ids=[e.event_id for e in out.result.envelopes],
        duplicate=out.result.duplicate,
    )


class BatchAccepted(BaseModel):
    ids: list[UUID]
    event_ids: list[UUID]
    duplicate: bool = False


@router.post("/issues/batch", status_code=201, response_model=BatchAccepted, tags=["issues"])
async def report_issues(
    body: IssueBatchIn,
    request: Request,
    principal: Principal = Depends(require("issue:report")),
    key: str | None = IdempotencyKey,
) -> BatchAccepted:
    """Report up to 1,000 issues at once: all are accepted or none (one transaction)."""
    ids = new_ids(len(body.issues))
    now = utcnow()
    cmds = [
        _report_command(item, request, principal, ["body", "issues", i], ids[i], now)
        for i, item in enumerate(body.issues)
    ]
    correlation = uuid4()  # one command: its events share a correlation id
    appends = []
    for c in cmds:
        [event] = issue_decider.decide(c, issue_decider.initial)
        meta = _meta(principal, c.grid_path, c.found_at, correlation)
        appends.append(StreamAppend(issue_stream(c.issue_id), 0, [(event, meta)]))
    result = await _store(request).append_many(appends, idempotency_key(principal, key, "inspection"))
    return BatchAccepted(
        ids=[UUID(str(e.payload["issue_id"])) for e in result.envelopes],
        event_ids=[e.event_id for e in result.envelopes],
        duplicate=result.duplicate,
    )


async def _issue_command(
    request: Request, principal: Principal, issue_id: UUID, cmd: IssueCommand, key: str | None
) -> Accepted:
    at: datetime = getattr(cmd, "at", utcnow())

    def guard(state: IssueState) -> None:
        if state.status == "none":
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no issue {issue_id}")
        principal.require_area(state.grid_path)

    out = await execute(
        _store(request),
        issue_decider,
        issue_stream(issue_id),
        cmd,
        lambda state: _meta(principal, state.grid_path, at),
        idempotency_key(principal, key, "inspection"),
        guard=guard,
    )
    return Accepted(
        id=issue_id,
        version=out.version,
        event_ids=[e.event_id for e in out.result.envelopes],
        duplicate=out.result.duplicate,
    )


@router.post("/issues/{issue_id}/reroute", response_model=Accepted, tags=["issues"], summary="Re-route")
@router.post("/issues/{issue_id}/assign", response_model=Accepted, tags=["issues"])
async def assign(
    issue_id: UUID,
    body: AssignIn,
    request: Request,
    principal: Principal = Depends(require("issue:assign")),
    key: str | None = IdempotencyKey,
) -> Accepted:
    """Assign a responsible unit, one named owner and a deadline; on `/reroute`, send a returned
    issue to another unit (the same command: the decider tells a re-route by the issue's state)."""
    return await _issue_command(
        request, principal, issue_id, AssignIssue(body.responsible_unit, body.owner, body.deadline, utcnow()), key
    )


@router.post("/issues/{issue_id}/return", response_model=Accepted, tags=["issues"])
async def return_assignment(
    issue_id: UUID,
    body: ReasonIn,
    request: Request,
    principal: Principal = Depends(require("issue:rectify")),
    key: str | None = IdempotencyKey,
) -> Accepted:
    """The responsible unit returns an issue that is not its remit."""
    return await _issue_command(
        request, principal, issue_id, ReturnAssignment(principal.department, body.reason, utcnow()), key
    )


@router.post("/issues/{issue_id}/rectification", response_model=Accepted, tags=["issues"])
async def report_rectification(
    issue_id: UUID,
    body: RectificationIn,
    request: Request,
    principal: Principal = Depends(require("issue:rectify")),
    key: str | None = IdempotencyKey,
) -> Accepted:
    """The responsible unit reports back with evidence (text and photo references)."""
    return await _issue_command(
        request,
        principal,
        issue_id,
        ReportRectification(principal.department, body.text, tuple(body.photos), utcnow()),
        key,
    )


@router.post("/issues/{issue_id}/verify", response_model=Accepted, tags=["issues"])
async def verify(
    issue_id: UUID,
    body: VerifyIn,
    request: Request,
    principal: Principal = Depends(require("issue:verify")),
    key: str | None = IdempotencyKey,
) -> Accepted:
    """The campaign office verifies: close as fixed, or reject back to in progress with a reason."""
    return await _issue_command(
        request, principal, issue_id, VerifyRectification(body.accept, body.reason, utcnow()), key
    )


@router.post("/issues/{issue_id}/backlog", response_model=Accepted, tags=["issues"])
async def backlog(
    issue_id: UUID,
    body: ReasonIn,
    request: Request,
    principal: Principal = Depends(require("issue:verify")),
    key: str | None = IdempotencyKey,
) -> Accepted:
    """Close as backlogged (挂账): cannot be fixed in time; never counted as fixed."""
    return await _issue_command(request, principal, issue_id, BacklogIssue(body.reason, utcnow()), key)


@router.post("/issues/{issue_id}/reopen", response_model=Accepted, tags=["issues"])
async def reopen(
    issue_id: UUID,
    body: ReasonIn,
    request: Request,
    principal: Principal = Depends(require("issue:report")),
    key: str | None = IdempotencyKey,
) -> Accepted:
    """The issue recurred: back on the list, to be assigned again."""
    return await _issue_command(request, principal, issue_id, ReopenIssue(body.reason, utcnow()), key)


@router.post("/issues/{issue_id}/extension-request", response_model=Accepted, tags=["issues"])
async def request_extension(
    issue_id: UUID,
    body: ExtensionRequestIn,
    request: Request,
    principal: Principal = Depends(require("issue:rectify")),
    key: str | None = IdempotencyKey,
) -> Accepted:
    return await _issue_command(
        request,
        principal,
        issue_id,
        RequestExtension(principal.department, body.requested_deadline, body.reason, utcnow()),
        key,
    )


@router.post("/issues/{issue_id}/extension-decision", response_model=Accepted, tags=["issues"])
async def decide_extension(
    issue_id: UUID,
    body: ExtensionDecisionIn,
    request: Request,
    principal: Principal = Depends(require("issue:assign")),
    key: str | None = IdempotencyKey,
) -> Accepted:
    return await _issue_command(request, principal, issue_id, DecideExtension(body.grant, body.reason, utcnow()), key)


@router.get("/issues/{issue_id}", tags=["issues"])
async def get_issue(issue_id: UUID, request: Request, principal: Principal = Depends(require())) -> dict[str, Any]:
    """The issue's current state and its full event history (from the event store)."""
    envs = await _store(request).load(issue_stream(issue_id))
    if not envs:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no issue {issue_id}")
    if not principal.sees(envs[0].grid_path):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"issue {issue_id} is outside {principal.area}")
    state = issue_decider.fold(registry.payload(e) for e in envs)
    return {
        "issue_id": str(issue_id),
        "status": state.status,
        "grid_path": state.grid_path,
        "category": state.category,
        "severity": state.severity,
        "responsible_unit": state.responsible_unit,
        "owner": state.owner,
        "deadline": state.deadline,
        "overdue_steps": state.overdue_steps,
        "rejections": state.rejections,
        "version": envs[-1].stream_version,
        "history": [
            {
                "version": e.stream_version,
                "type": e.type,
                "occurred_at": e.occurred_at,
                "source": e.source,
                "actor": e.actor,
                "event_id": str(e.event_id),
                "payload": e.payload,
            }
            for e in envs
        ],
    }


def _item(row: Any, now: datetime) -> dict[str, Any]:
    d = dict(row)
    deadline = d.get("deadline")
    open_ = d["status"] in ("found", "assigned", "reported", "returned")
    d["time_left_s"] = int((deadline - now).total_seconds()) if deadline is not None and open_ else None
    return d


_LIST_COLS = (
    "issue_id, grid_path, township, category, severity, case_type, method, description, location, found_at,"
    " found_day, status, responsible_unit, owner, deadline, overdue_step, escalation_level, escalated_to,"
    " closed_at, on_time, rejections, reopened"
)


@router.get("/problem-list", tags=["queries"])
async def problem_list(
    request: Request,
    day: Annotated[
        date,
        Query(alias="date", description="campaign day (Asia/Shanghai)", ge=date(2000, 1, 1), le=date(2100, 12, 31)),
    ],
    township: Annotated[str | None, Query(description="township code, e.g. wuan")] = None,
    unit: Annotated[str | None, Query(description="responsible unit (department code)")] = None,
    principal: Principal = Depends(require()),
) -> dict[str, Any]:
    """The day's problem list (问题清单) for a township or a responsible unit, with each item's time left."""
    grid = _grid(request)
    area = f"{grid.district}/{township}" if township else grid.district
    if township and area not in grid:
        raise _unprocessable(["query", "township"], f"unknown township {township!r}")
    if not principal.sees(area):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"{area} is outside {principal.area}")
    scope = area if within(area, principal.area) else principal.area
    sql = f"SELECT {_LIST_COLS} FROM inspection_issues WHERE found_day = $1 AND (grid_path = $2 OR grid_path LIKE $3)"
    args: list[Any] = [day, scope, scope + "/%"]
    if unit:
        sql += " AND responsible_unit = $4"
        args.append(unit)
    async with request.app.state.pool.acquire() as conn:
        rows = await conn.fetch(sql + " ORDER BY found_at", *args)
    now = utcnow()
    items = [_item(r, now) for r in rows]
    counts: dict[str, int] = {}
    for it in items:
        counts[it["status"]] = counts.get(it["status"], 0) + 1
    start, end = day_bounds(day)
    return {
        "date": day.isoformat(),
        "area": scope,
        "unit": unit,
        "from": start,
        "to": end,
        "counts": counts,
        "items": items,
    }


@router.get("/overdue", tags=["queries"])
async def overdue(
    request: Request, principal: Principal = Depends(require()), area: Annotated[str | None, Query()] = None
) -> dict[str, Any]:
    """Open issues past their deadline, with time over and escalation level."""
    scope = area or principal.area
    if not within(scope, principal.area):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"{scope} is outside {principal.area}")
    now = utcnow()
    async with request.app.state.pool.acquire() as conn:
        rows = await conn.fetch(
            f"SELECT {_LIST_COLS} FROM inspection_issues WHERE status IN ('assigned', 'returned')"
            " AND deadline < $1 AND (grid_path = $2 OR grid_path LIKE $3) ORDER BY deadline",
            now,
            scope,
            scope + "/%",
        )
    items = []
    for r in rows:
        d = dict(r)
        d["overdue_s"] = int((now - r["deadline"]).total_seconds())
        items.append(d)
    return {"area": scope, "count": len(items), "items": items}
