"""The volunteer service's HTTP API under /v1: commands in (token, scope, grid area,
Idempotency-Key), queries out of the read models in `projections.py`.

Every command answers with the stream it changed, the stream's version, the events it added and
whether it was a repeat of an earlier Idempotency-Key (then nothing new was written). A refused
command is 409 with the reason; a body that does not parse is 422 with the field at fault; acting
outside one's grid area is 403.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar
from uuid import UUID, uuid4

import asyncpg
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from services.volunteer import domain as d
from services.volunteer.certificate import ServiceRow, certificate_pdf
from shared.auth import Principal, require
from shared.campaign_time import campaign_day, utcnow
from shared.decider import Decider, DomainError, execute
from shared.events.volunteer import (
    ActivityForm,
    ActivityTheme,
    Code,
    CreationCategory,
    HonourKind,
    Hours,
    Level,
    Name,
    Participation,
    PhotoRef,
    Points,
    ReviewVerdict,
    ShortText,
    SiteKind,
    Year,
)
from shared.eventstore import AppendResult, ConcurrencyError, EventMeta, EventStore, StreamAppend
from shared.grid import GridPath
from shared.service import create_app, idempotency_key
from shared.settings import Settings

C = TypeVar("C")
S = TypeVar("S")

RETRIES = 5
"""A command that meets a concurrent change is re-decided on the fresh state this many times."""

IdemKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Required on every command: repeating a command with the same key returns the first "
        "result and writes nothing.",
    ),
]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CommandResult(BaseModel):
    id: str
    stream_id: str
    version: int
    events: list[str]
    duplicate: bool


def _result(stream_id: str, prefix: str, result: AppendResult, version: int) -> CommandResult:
    """The answer to a command; for a repeated Idempotency-Key, the first command's stream."""
    if result.duplicate and result.envelopes:
        stream_id = result.envelopes[0].stream_id
    return CommandResult(
        id=stream_id.removeprefix(prefix),
        stream_id=stream_id,
        version=result.version_of(stream_id) if result.duplicate else version,
        events=[e.type for e in result.envelopes],
        duplicate=result.duplicate,
    )


def _store(request: Request) -> EventStore:
    store: EventStore = request.app.state.store
    return store


def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


def _meta(who: Principal, grid_path: str, at: datetime | None = None) -> EventMeta:
    return EventMeta(source=who.department, actor=who.department, grid_path=grid_path, occurred_at=at or utcnow())


async def _state(store: EventStore, decider: Decider[C, S], stream_id: str) -> S:
    events, _ = await store.load_typed(stream_id)
    return decider.fold(events)


async def _run(
    request: Request,
    decider: Decider[C, S],
    stream_id: str,
    command: C,
    meta: EventMeta,
    key: str,
) -> tuple[AppendResult, int]:
    """Decide and append, deciding again on the fresh state after a concurrent change."""
    store = _store(request)
    for attempt in range(RETRIES):
        try:
            out = await execute(store, decider, stream_id, command, meta, key)
        except ConcurrencyError:
            if attempt == RETRIES - 1:
                raise
            continue
        return out.result, out.version
    raise AssertionError("unreachable")


def _not_after_now(v: datetime | None) -> datetime | None:
    if v is not None and v > utcnow() + timedelta(minutes=5):
        raise ValueError("must not be in the future")
    return v


# --- request bodies ----------------------------------------------------------------------------


class SiteIn(Body):
    site_id: Code
    kind: SiteKind
    name: Name
    grid_path: GridPath


class CloseIn(Body):
    reason: ShortText


class VolunteerIn(Body):
    volunteer_id: UUID | None = None
    site_id: Code
    name: Annotated[str, StringConstraints(min_length=1, max_length=50, strip_whitespace=True)]
    phone: Annotated[str, StringConstraints(pattern=r"^1[3-9]\d{9}$")] = Field(
        description="mainland mobile number; kept in the service, masked on every topic"
    )
    id_number: Annotated[str, StringConstraints(pattern=r"^\d{17}[\dX]$")] = Field(
        description="resident ID number; kept in the service, masked on every topic"
    )
    skills: list[Annotated[str, StringConstraints(min_length=1, max_length=50)]] = Field(
        default_factory=list, max_length=20
    )

    @field_validator("id_number")
    @classmethod
    def _check_char(cls, v: str) -> str:
        if not d.valid_id_number(v):
            raise ValueError("check character does not match")
        return v


class ActivityIn(Body):
    activity_id: UUID | None = None
    site_id: Code
    title: Name
    theme: ActivityTheme
    form: ActivityForm
    starts_at: AwareDatetime
    ends_at: AwareDatetime


class HeldIn(Body):
    started_at: AwareDatetime
    ended_at: AwareDatetime
    participants: list[Participation] = Field(max_length=500)
    audience: int = Field(ge=0, le=100_000)
    photos: list[PhotoRef] = Field(default_factory=list, max_length=10)
    summary: str = Field(default="", max_length=4000)

    _past = field_validator("ended_at")(_not_after_now)


class OpenCheckInIn(Body):
    valid_minutes: int = Field(default=240, ge=5, le=720)


class CheckInIn(Body):
    volunteer_id: UUID
    code: Annotated[str, StringConstraints(pattern=r"^\d{6}$")]


class CheckOutIn(Body):
    volunteer_id: UUID


class ReportHoursIn(Body):
    volunteer_id: UUID
    hours: Hours
    note: str = Field(default="", max_length=2000)


class DeclineIn(Body):
    reason: ShortText


class ReviewIn(Body):
    verdict: ReviewVerdict
    note: str = Field(default="", max_length=2000)


class FundIn(Body):
    fund_id: Code
    name: Name
    grid_path: GridPath


class ContributionIn(Body):
    yuan: int = Field(gt=0, le=10_000_000)
    donor: Name


class AwardIn(Body):
    grid_path: GridPath
    label: Name
    points: Points
    rule: Code
    reason: ShortText
    at: AwareDatetime | None = None

    _past = field_validator("at")(_not_after_now)


class RedeemIn(Body):
    fund_id: Code
    points: Points
    item: Name
    reason: ShortText = "积分兑换"
    at: AwareDatetime | None = None

    _past = field_validator("at")(_not_after_now)


class ProjectIn(Body):
    project_id: UUID | None = None
    name: Name
    organiser: Name
    grid_path: GridPath
    description: str = Field(default="", max_length=4000)


class ContestIn(Body):
    contest: Code
    year: Year


class EntryIn(ContestIn):
    level: Level | None = None


class PrizeIn(ContestIn):
    prize: Name


ProjectStage = Literal["entered", "shortlisted", "awarded"]
"""How far a project got in a contest round: entered (入选申报), shortlisted (入围), awarded (获奖)."""


class NominationIn(Body):
    nomination_id: UUID | None = None
    honour: HonourKind
    nominee: Name
    grid_path: GridPath
    year: Year
    deeds: ShortText


class EndorseIn(Body):
    note: str = Field(default="", max_length=2000)


class HonourIn(Body):
    level: Level


class TitleIn(Body):
    title_id: Code
    category: CreationCategory
    holder: Name
    grid_path: GridPath
    level: Level
    year: Year


class TitleReviewIn(Body):
    level: Level
    passed: bool
    year: Year
    note: str = Field(default="", max_length=2000)


class TitleRevokeIn(Body):
    level: Level
    reason: ShortText


class CheckInOpened(CommandResult):
    code: str
    valid_until: datetime


# --- the app -----------------------------------------------------------------------------------

Hook = Callable[[FastAPI], Awaitable[None]]
WRITE = Depends(require("volunteer:write"))
POINTS = Depends(require("points:write"))
HONOURS = Depends(require("honours:write"))
TITLES = Depends(require("titles:write"))
READ = Depends(require())


def create_volunteer_app(settings: Settings, *, on_start: Hook | None = None, on_stop: Hook | None = None) -> FastAPI:
    """The volunteer service's FastAPI app (projection runners are started by `__main__`)."""

    async def start(app: FastAPI) -> None:
        app.state.points_rules = d.load_rules()
        if on_start is not None:
            await on_start(app)

    app = create_app(
        "Wenming volunteer service",
        settings,
        description="Practice sites, volunteers, activities and service hours, projects, honours, "
        "village civility points and creation titles.",
        on_start=start,
        on_stop=on_stop,
    )
    _routes(app)
    return app


async def _site(request: Request, site_id: str) -> d.SiteState:
    return await _state(_store(request), d.site_decider, d.site_stream(site_id))


async def _activity(request: Request, who: Principal, activity_id: UUID) -> d.ActivityState:
    s = await _state(_store(request), d.activity_decider, d.activity_stream(activity_id))
    if s.status == "none":
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no activity {activity_id}")
    who.require_area(s.grid_path)
    return s


async def _active(request: Request, ids: set[UUID]) -> frozenset[UUID]:
    store = _store(request)
    return frozenset([v for v in ids if (await _state(store, d.volunteer_decider, d.volunteer_stream(v))).active])


def _rows(records: list[asyncpg.Record]) -> list[dict[str, Any]]:
    return [dict(r.items()) for r in records]


def _routes(app: FastAPI) -> None:
    # --- practice sites ---
    @app.post("/v1/sites", tags=["sites"])
    async def register_site(request: Request, body: SiteIn, key: IdemKey, who: Principal = WRITE) -> CommandResult:
        who.require_area(body.grid_path)
        sid = d.site_stream(body.site_id)
        cmd = d.RegisterSite(body.site_id, body.kind, body.name, body.grid_path)
        res, v = await _run(request, d.site_decider, sid, cmd, _meta(who, body.grid_path), _k(who, key))
        return _result(sid, "site-", res, v)

    @app.post("/v1/sites/{site_id}/close", tags=["sites"])
    async def close_site(
        request: Request, site_id: str, body: CloseIn, key: IdemKey, who: Principal = WRITE
    ) -> CommandResult:
        site = await _site(request, site_id)
        if not site.registered:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no site {site_id}")
        who.require_area(site.grid_path)
        sid = d.site_stream(site_id)
        cmd = d.CloseSite(site_id, body.reason)
        res, v = await _run(request, d.site_decider, sid, cmd, _meta(who, site.grid_path), _k(who, key))
        return _result(sid, "site-", res, v)

    # --- volunteers ---
    @app.post("/v1/volunteers", tags=["volunteers"])
    async def register_volunteer(
        request: Request, body: VolunteerIn, key: IdemKey, who: Principal = WRITE
    ) -> CommandResult:
        """Register a volunteer at a site. Name, phone and ID number stay in this service; events
        carry only their masked forms."""
        store = _store(request)
        k = _k(who, key)
        first = await store.by_idempotency_key(k)
        if first is not None:
            sid = first.envelopes[0].stream_id
            return _result(sid, "volunteer-", first, first.version_of(sid))
        site = await _site(request, body.site_id)
        if site.registered:
            who.require_area(site.grid_path)
        vid = body.volunteer_id or uuid4()
        sid = d.volunteer_stream(vid)
        state = await _state(store, d.volunteer_decider, sid)
        at = utcnow()
        cmd = d.RegisterVolunteer(
            vid, body.site_id, site, body.name, body.phone, body.id_number, at, tuple(body.skills)
        )
        events = d.decide_volunteer(cmd, state)
        meta = _meta(who, site.grid_path, at)
        async with _pool(request).acquire() as conn:
            try:
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO volunteer_personal_data (volunteer_id, name, phone, id_number, registered_by)"
                        " VALUES ($1, $2, $3, $4, $5)",
                        vid,
                        body.name,
                        body.phone,
                        body.id_number,
                        who.department,
                    )
                    res = await store.append_many([StreamAppend(sid, 0, [(e, meta) for e in events])], k, conn=conn)
                    if res.duplicate:
                        raise _Repeat(res)
            except asyncpg.UniqueViolationError as exc:
                if "id_number" in str(exc.constraint_name):
                    raise DomainError("a volunteer with this ID number is already registered") from None
                raise DomainError(f"volunteer {vid} is already registered") from None
            except _Repeat as rep:
                rsid = rep.result.envelopes[0].stream_id
                return _result(rsid, "volunteer-", rep.result, rep.result.version_of(rsid))
        return _result(sid, "volunteer-", res, len(events))

    @app.post("/v1/volunteers/{volunteer_id}/deactivate", tags=["volunteers"])
    async def deactivate_volunteer(
        request: Request, volunteer_id: UUID, body: CloseIn, key: IdemKey, who: Principal = WRITE
    ) -> CommandResult:
        sid = d.volunteer_stream(volunteer_id)
        state = await _state(_store(request), d.volunteer_decider, sid)
        if not state.registered:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no volunteer {volunteer_id}")
        who.require_area(state.grid_path)
        at = utcnow()
        cmd = d.DeactivateVolunteer(volunteer_id, body.reason, at)
        res, v = await _run(request, d.volunteer_decider, sid, cmd, _meta(who, state.grid_path, at), _k(who, key))
        return _result(sid, "volunteer-", res, v)

    @app.get("/v1/volunteers/{volunteer_id}", tags=["volunteers"])
    async def volunteer_hours(request: Request, volunteer_id: UUID, who: Principal = READ) -> dict[str, Any]:
        """A volunteer's register entry (masked), total hours and the activities served."""
        async with _pool(request).acquire() as conn:
            row = await conn.fetchrow(
                "SELECT volunteer_id, site_id, grid_path, name_masked, phone_masked, skills, registered_at, active"
                " FROM volunteer_register WHERE volunteer_id = $1",
                volunteer_id,
            )
            if row is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"no volunteer {volunteer_id}")
            if not who.sees(row["grid_path"]):
                raise HTTPException(status.HTTP_403_FORBIDDEN, f"volunteer {volunteer_id} is outside {who.area}")
            acts = await conn.fetch(
                "SELECT h.activity_id, h.hours::float8 AS hours, h.basis, h.served_on, a.title, a.theme, a.form,"
                " a.site_id FROM volunteer_hours h LEFT JOIN volunteer_activities a USING (activity_id)"
                " WHERE h.volunteer_id = $1 ORDER BY h.served_on",
                volunteer_id,
            )
        activities = _rows(acts)
        return {
            **dict(row.items()),
            "total_hours": sum(a["hours"] for a in activities),
            "activities": activities,
        }

    @app.get(
        "/v1/volunteers/{volunteer_id}/certificate.pdf",
        tags=["volunteers"],
        response_class=Response,
        responses={200: {"content": {"application/pdf": {}}, "description": "the certificate, one page"}},
    )
    async def hours_certificate(request: Request, volunteer_id: UUID, who: Principal = WRITE) -> Response:
        """The volunteer's service-hours certificate, for the station to print (the volunteer's own area
        only: it carries the full name)."""
        async with _pool(request).acquire() as conn:
            row = await conn.fetchrow(
                "SELECT r.grid_path, p.name, s.name AS site_name FROM volunteer_register r"
                " JOIN volunteer_personal_data p USING (volunteer_id)"
                " LEFT JOIN volunteer_sites s ON s.site_id = r.site_id WHERE r.volunteer_id = $1",
                volunteer_id,
            )
            if row is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"no volunteer {volunteer_id}")
            who.require_area(row["grid_path"])
            acts = await conn.fetch(
                "SELECT h.served_on, h.hours::float8 AS hours, coalesce(a.title, '') AS title FROM volunteer_hours h"
                " LEFT JOIN volunteer_activities a USING (activity_id) WHERE h.volunteer_id = $1 ORDER BY h.served_on",
                volunteer_id,
            )
        rows = [ServiceRow(campaign_day(a["served_on"]), a["title"], a["hours"]) for a in acts]
        pdf = certificate_pdf(
            name=row["name"],
            site_name=row["site_name"] or "",
            issued_on=campaign_day(utcnow()),
            total_hours=sum(r.hours for r in rows),
            rows=rows,
            serial=f"{volunteer_id}-{len(rows)}",
        )
        return Response(
            pdf,
            media_type="application/pdf",
            headers={"Content-Disposition": f'inline; filename="hours-{volunteer_id}.pdf"'},
        )

    # --- activities ---
    @app.post("/v1/activities", tags=["activities"])
    async def plan_activity(request: Request, body: ActivityIn, key: IdemKey, who: Principal = WRITE) -> CommandResult:
        site = await _site(request, body.site_id)
        if site.registered:
            who.require_area(site.grid_path)
        aid = body.activity_id or uuid4()
        sid = d.activity_stream(aid)
        cmd = d.PlanActivity(aid, body.site_id, site, body.title, body.theme, body.form, body.starts_at, body.ends_at)
        k = _k(who, key)
        res, v = await _run(request, d.activity_decider, sid, cmd, _meta(who, site.grid_path or "changtai"), k)
        return _result(sid, "activity-", res, v)

    async def _activity_command(
        request: Request,
        who: Principal,
        activity_id: UUID,
        key: str,
        make: d.ActivityCommand,
        at: datetime | None = None,
    ) -> CommandResult:
        s = await _activity(request, who, activity_id)
        sid = d.activity_stream(activity_id)
        res, v = await _run(request, d.activity_decider, sid, make, _meta(who, s.grid_path, at), _k(who, key))
        return _result(sid, "activity-", res, v)

    @app.post("/v1/activities/{activity_id}/held", tags=["activities"])
    async def hold_activity(
        request: Request, activity_id: UUID, body: HeldIn, key: IdemKey, who: Principal = WRITE
    ) -> CommandResult:
        """Record the activity as held: each participant's hours are credited once."""
        await _activity(request, who, activity_id)
        active = await _active(request, {p.volunteer_id for p in body.participants})
        cmd = d.HoldActivity(
            body.started_at,
            body.ended_at,
            body.participants,
            body.audience,
            active,
            tuple(body.photos),
            body.summary,
        )
        return await _activity_command(request, who, activity_id, key, cmd, body.ended_at)

    @app.post("/v1/activities/{activity_id}/check-in/open", tags=["activities"])
    async def open_check_in(
        request: Request, activity_id: UUID, body: OpenCheckInIn, key: IdemKey, who: Principal = WRITE
    ) -> CheckInOpened:
        """Open check-in with a fresh 6-digit activity code (show it, or its QR code, at the site)."""
        now = utcnow()
        code = f"{secrets.randbelow(1_000_000):06d}"
        until = now + timedelta(minutes=body.valid_minutes)
        res = await _activity_command(request, who, activity_id, key, d.OpenCheckIn(code, until, now), now)
        if res.duplicate:
            raise HTTPException(status.HTTP_409_CONFLICT, "check-in was already opened with this key")
        return CheckInOpened(**res.model_dump(), code=code, valid_until=until)

    @app.post("/v1/activities/{activity_id}/check-in", tags=["activities"])
    async def check_in(
        request: Request, activity_id: UUID, body: CheckInIn, key: IdemKey, who: Principal = WRITE
    ) -> CommandResult:
        now = utcnow()
        active = body.volunteer_id in await _active(request, {body.volunteer_id})
        cmd = d.CheckIn(body.volunteer_id, body.code, now, active)
        return await _activity_command(request, who, activity_id, key, cmd, now)

    @app.post("/v1/activities/{activity_id}/check-out", tags=["activities"])
    async def check_out(
        request: Request, activity_id: UUID, body: CheckOutIn, key: IdemKey, who: Principal = WRITE
    ) -> CommandResult:
        now = utcnow()
        cmd = d.CheckOut(body.volunteer_id, now)
        return await _activity_command(request, who, activity_id, key, cmd, now)

    @app.post("/v1/activities/{activity_id}/close-lapsed", tags=["activities"])
    async def close_lapsed(request: Request, activity_id: UUID, key: IdemKey, who: Principal = WRITE) -> CommandResult:
        """Close check-ins never checked out within 24 h: flagged, no hours credited."""
        now = utcnow()
        return await _activity_command(request, who, activity_id, key, d.CloseLapsedCheckIns(now), now)

    @app.post("/v1/activities/{activity_id}/hours-reports", tags=["activities"])
    async def report_hours(
        request: Request, activity_id: UUID, body: ReportHoursIn, key: IdemKey, who: Principal = WRITE
    ) -> CommandResult:
        """Self-reported hours: pending until approved or declined."""
        active = body.volunteer_id in await _active(request, {body.volunteer_id})
        cmd = d.ReportHours(body.volunteer_id, body.hours, active, body.note)
        return await _activity_command(request, who, activity_id, key, cmd)

    @app.post("/v1/activities/{activity_id}/hours-reports/{volunteer_id}/approve", tags=["activities"])
    async def approve_hours(
        request: Request, activity_id: UUID, volunteer_id: UUID, key: IdemKey, who: Principal = WRITE
    ) -> CommandResult:
        return await _activity_command(request, who, activity_id, key, d.ApproveHours(volunteer_id))

    @app.post("/v1/activities/{activity_id}/hours-reports/{volunteer_id}/decline", tags=["activities"])
    async def decline_hours(
        request: Request, activity_id: UUID, volunteer_id: UUID, body: DeclineIn, key: IdemKey, who: Principal = WRITE
    ) -> CommandResult:
        cmd = d.DeclineHours(volunteer_id, body.reason)
        return await _activity_command(request, who, activity_id, key, cmd)

    @app.post("/v1/activities/{activity_id}/review", tags=["activities"])
    async def review_activity(
        request: Request, activity_id: UUID, body: ReviewIn, key: IdemKey, who: Principal = WRITE
    ) -> CommandResult:
        now = utcnow()
        cmd = d.ReviewActivity(body.verdict, now, body.note)
        return await _activity_command(request, who, activity_id, key, cmd, now)

    @app.get("/v1/activities/{activity_id}", tags=["activities"])
    async def get_activity(request: Request, activity_id: UUID, who: Principal = READ) -> dict[str, Any]:
        async with _pool(request).acquire() as conn:
            row = await conn.fetchrow("SELECT * FROM volunteer_activities WHERE activity_id = $1", activity_id)
            if row is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"no activity {activity_id}")
            if not who.sees(row["grid_path"]):
                raise HTTPException(status.HTTP_403_FORBIDDEN, f"activity {activity_id} is outside {who.area}")
            hours = await conn.fetch(
                "SELECT volunteer_id, hours::float8 AS hours, basis FROM volunteer_hours WHERE activity_id = $1"
                " ORDER BY volunteer_id",
                activity_id,
            )
        return {**dict(row.items()), "credited": _rows(hours)}

    @app.get("/v1/sites/{site_id}/calendar", tags=["sites"])
    async def site_calendar(
        request: Request,
        site_id: str,
        who: Principal = READ,
        start: Annotated[AwareDatetime | None, Query(alias="from")] = None,
        end: Annotated[AwareDatetime | None, Query(alias="to")] = None,
    ) -> dict[str, Any]:
        """A site's activities in [from, to), by planned start."""
        async with _pool(request).acquire() as conn:
            site = await conn.fetchrow("SELECT * FROM volunteer_sites WHERE site_id = $1", site_id)
            if site is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"no site {site_id}")
            if not who.sees(site["grid_path"]):
                raise HTTPException(status.HTTP_403_FORBIDDEN, f"site {site_id} is outside {who.area}")
            rows = await conn.fetch(
                "SELECT activity_id, title, theme, form, starts_at, ends_at, status, audience, participants, verdict"
                " FROM volunteer_activities WHERE site_id = $1 AND ($2::timestamptz IS NULL OR starts_at >= $2)"
                " AND ($3::timestamptz IS NULL OR starts_at < $3) ORDER BY starts_at",
                site_id,
                start,
                end,
            )
        return {"site": dict(site.items()), "activities": _rows(rows)}

    # --- civility points and funds ---
    @app.post("/v1/funds", tags=["points"])
    async def establish_fund(request: Request, body: FundIn, key: IdemKey, who: Principal = POINTS) -> CommandResult:
        who.require_area(body.grid_path)
        sid = d.fund_stream(body.fund_id)
        cmd = d.EstablishFund(body.fund_id, body.name, body.grid_path)
        res, v = await _run(request, d.fund_decider, sid, cmd, _meta(who, body.grid_path), _k(who, key))
        return _result(sid, "fund-", res, v)

    @app.post("/v1/funds/{fund_id}/contributions", tags=["points"])
    async def contribute(
        request: Request, fund_id: str, body: ContributionIn, key: IdemKey, who: Principal = POINTS
    ) -> CommandResult:
        sid = d.fund_stream(fund_id)
        fund = await _state(_store(request), d.fund_decider, sid)
        if not fund.established:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no fund {fund_id}")
        who.require_area(fund.grid_path)
        cmd = d.ContributeToFund(fund_id, body.yuan, body.donor)
        res, v = await _run(request, d.fund_decider, sid, cmd, _meta(who, fund.grid_path), _k(who, key))
        return _result(sid, "fund-", res, v)

    @app.get("/v1/funds/{fund_id}", tags=["points"])
    async def get_fund(request: Request, fund_id: str, who: Principal = READ) -> dict[str, Any]:
        async with _pool(request).acquire() as conn:
            row = await conn.fetchrow("SELECT * FROM volunteer_funds WHERE fund_id = $1", fund_id)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no fund {fund_id}")
        if not who.sees(row["grid_path"]):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"fund {fund_id} is outside {who.area}")
        return dict(row.items())

    @app.post("/v1/households/{household_id}/awards", tags=["points"])
    async def award_points(
        request: Request, household_id: str, body: AwardIn, key: IdemKey, who: Principal = POINTS
    ) -> CommandResult:
        """Award civility points under a rule of the points rules file; the first award enrols."""
        _code(household_id)
        sid = d.household_stream(household_id)
        h = await _state(_store(request), d.household_decider, sid)
        who.require_area(h.grid_path if h.enrolled else body.grid_path)
        rules: d.PointsRules = request.app.state.points_rules
        cmd = d.AwardPoints(household_id, body.grid_path, body.label, body.points, body.rule, body.reason, rules)
        meta = _meta(who, h.grid_path or body.grid_path, body.at)
        res, v = await _run(request, d.household_decider, sid, cmd, meta, _k(who, key))
        return _result(sid, "household-", res, v)

    @app.post("/v1/households/{household_id}/redemptions", tags=["points"])
    async def redeem_points(
        request: Request, household_id: str, body: RedeemIn, key: IdemKey, who: Principal = POINTS
    ) -> CommandResult:
        """Spend a household's points on an item paid from the incentive fund. Refused (409) beyond
        the household's balance or the fund's."""
        store = _store(request)
        k = _k(who, key)
        hsid, fsid = d.household_stream(household_id), d.fund_stream(body.fund_id)
        rules: d.PointsRules = request.app.state.points_rules
        cmd = d.RedeemPoints(household_id, body.fund_id, body.points, body.item, body.reason, rules)
        for attempt in range(RETRIES):
            first = await store.by_idempotency_key(k)
            if first is not None:
                return _result(hsid, "household-", first, first.version_of(hsid))
            h_events, hv = await store.load_typed(hsid)
            f_events, fv = await store.load_typed(fsid)
            h = d.household_decider.fold(h_events)
            if not h.enrolled:
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"no household {household_id}")
            who.require_area(h.grid_path)
            f = d.fund_decider.fold(f_events)
            h_new, f_new = d.decide_redemption(cmd, h, f)
            at = body.at or utcnow()
            try:
                res = await store.append_many(
                    [
                        StreamAppend(hsid, hv, [(e, _meta(who, h.grid_path, at)) for e in h_new]),
                        StreamAppend(fsid, fv, [(e, _meta(who, f.grid_path, at)) for e in f_new]),
                    ],
                    k,
                )
            except ConcurrencyError:
                if attempt == RETRIES - 1:
                    raise
                continue
            return _result(hsid, "household-", res, res.version_of(hsid))
        raise AssertionError("unreachable")

    @app.get("/v1/households/{household_id}/points", tags=["points"])
    async def points_ledger(request: Request, household_id: str, who: Principal = READ) -> dict[str, Any]:
        """A household's balance and its ledger of awards and redemptions, oldest first."""
        async with _pool(request).acquire() as conn:
            row = await conn.fetchrow("SELECT * FROM volunteer_households WHERE household_id = $1", household_id)
            if row is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"no household {household_id}")
            if not who.sees(row["grid_path"]):
                raise HTTPException(status.HTTP_403_FORBIDDEN, f"household {household_id} is outside {who.area}")
            ledger = await conn.fetch(
                "SELECT entry, kind, points, balance_after, rule, item, reason, rules_version, occurred_at"
                " FROM volunteer_points_ledger WHERE household_id = $1 ORDER BY entry",
                household_id,
            )
        return {**dict(row.items()), "ledger": _rows(ledger)}

    # --- projects ---
    @app.post("/v1/projects", tags=["projects"])
    async def register_project(
        request: Request, body: ProjectIn, key: IdemKey, who: Principal = WRITE
    ) -> CommandResult:
        who.require_area(body.grid_path)
        k = _k(who, key)
        pid = body.project_id or uuid4()
        sid = d.project_stream(pid)
        cmd = d.project_command(
            pid, d.RegisterProject(pid, body.name, body.organiser, body.grid_path, body.description)
        )
        res, v = await _run(request, d.project_decider, sid, cmd, _meta(who, body.grid_path), k)
        return _result(sid, "project-", res, v)

    async def _project(
        request: Request, who: Principal, project_id: UUID, key: str, command: d.ProjectCommand
    ) -> CommandResult:
        sid = d.project_stream(project_id)
        s = await _state(_store(request), d.project_decider, sid)
        if not s.registered:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no project {project_id}")
        who.require_area(s.grid_path)
        cmd = d.project_command(project_id, command)
        res, v = await _run(request, d.project_decider, sid, cmd, _meta(who, s.grid_path), _k(who, key))
        return _result(sid, "project-", res, v)

    @app.post("/v1/projects/{project_id}/entries", tags=["projects"])
    async def enter_project(
        request: Request, project_id: UUID, body: EntryIn, key: IdemKey, who: Principal = WRITE
    ) -> CommandResult:
        return await _project(request, who, project_id, key, d.EnterProject(body.contest, body.year, body.level))

    @app.post("/v1/projects/{project_id}/shortlist", tags=["projects"])
    async def shortlist_project(
        request: Request, project_id: UUID, body: ContestIn, key: IdemKey, who: Principal = WRITE
    ) -> CommandResult:
        return await _project(request, who, project_id, key, d.ShortlistProject(body.contest, body.year))

    @app.post("/v1/projects/{project_id}/awards", tags=["projects"])
    async def award_project(
        request: Request, project_id: UUID, body: PrizeIn, key: IdemKey, who: Principal = WRITE
    ) -> CommandResult:
        return await _project(request, who, project_id, key, d.AwardProject(body.contest, body.year, body.prize))

    @app.get("/v1/projects", tags=["projects"])
    async def projects(
        request: Request,
        who: Principal = READ,
        year: Annotated[int | None, Query(ge=2000, le=2100)] = None,
        status_: Annotated[ProjectStage | None, Query(alias="status")] = None,
        contest: Code | None = None,
    ) -> list[dict[str, Any]]:
        """Projects with the contest rounds they reached, by year, stage and contest. A stage counts
        every round that got at least that far (an awarded project is also shortlisted), as the
        campaign reports them: 9 entered, 4 shortlisted."""
        async with _pool(request).acquire() as conn:
            rows = await conn.fetch(
                f"SELECT p.project_id, p.name, p.organiser, p.department, p.grid_path, {_ROUND_COLUMNS}"
                " FROM volunteer_project_rounds r JOIN volunteer_projects p USING (project_id)"
                " WHERE ($1::int IS NULL OR r.year = $1) AND ($3::text IS NULL OR r.contest = $3)"
                " AND ($2::text IS NULL OR $2 = 'entered' OR ($2 = 'shortlisted' AND r.shortlisted_at IS NOT NULL)"
                " OR ($2 = 'awarded' AND r.awarded_at IS NOT NULL))"
                " ORDER BY p.name, p.project_id, r.year, r.entered_at, r.contest",
                year,
                status_,
                contest,
            )
        found: dict[UUID, dict[str, Any]] = {}
        for r in _rows(rows):
            if not who.sees(r["grid_path"]):
                continue
            head = {k: r.pop(k) for k in ("project_id", "name", "organiser", "department", "grid_path")}
            found.setdefault(head["project_id"], {**head, "rounds": []})["rounds"].append(r)
        return list(found.values())

    @app.get("/v1/projects/{project_id}", tags=["projects"])
    async def get_project(request: Request, project_id: UUID, who: Principal = READ) -> dict[str, Any]:
        """A project and its history of contest rounds, oldest first."""
        async with _pool(request).acquire() as conn:
            row = await conn.fetchrow("SELECT * FROM volunteer_projects WHERE project_id = $1", project_id)
            if row is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"no project {project_id}")
            if not who.sees(row["grid_path"]):
                raise HTTPException(status.HTTP_403_FORBIDDEN, f"project {project_id} is outside {who.area}")
            rounds = await conn.fetch(
                f"SELECT {_ROUND_COLUMNS} FROM volunteer_project_rounds r WHERE r.project_id = $1"
                " ORDER BY r.year, r.entered_at, r.contest",
                project_id,
            )
        return {**dict(row.items()), "rounds": _rows(rounds)}

    # --- honours ---
    @app.post("/v1/nominations", tags=["honours"])
    async def submit_nomination(
        request: Request, body: NominationIn, key: IdemKey, who: Principal = HONOURS
    ) -> CommandResult:
        who.require_area(body.grid_path)
        k = _k(who, key)
        nid = body.nomination_id or uuid4()
        sid = d.nomination_stream(nid)
        cmd = d.SubmitNomination(nid, body.honour, body.nominee, body.grid_path, body.year, body.deeds)
        res, v = await _run(request, d.nomination_decider, sid, cmd, _meta(who, body.grid_path), k)
        return _result(sid, "nomination-", res, v)

    async def _nomination(
        request: Request, who: Principal, nomination_id: UUID, key: str, command: d.NominationCommand
    ) -> CommandResult:
        sid = d.nomination_stream(nomination_id)
        s = await _state(_store(request), d.nomination_decider, sid)
        if not s.submitted:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no nomination {nomination_id}")
        who.require_area(s.grid_path)
        res, v = await _run(request, d.nomination_decider, sid, command, _meta(who, s.grid_path), _k(who, key))
        return _result(sid, "nomination-", res, v)

    @app.post("/v1/nominations/{nomination_id}/endorsements", tags=["honours"])
    async def endorse_nomination(
        request: Request, nomination_id: UUID, body: EndorseIn, key: IdemKey, who: Principal = HONOURS
    ) -> CommandResult:
        cmd = d.EndorseNomination(nomination_id, who.department, body.note)
        return await _nomination(request, who, nomination_id, key, cmd)

    @app.post("/v1/nominations/{nomination_id}/award", tags=["honours"])
    async def award_honour(
        request: Request, nomination_id: UUID, body: HonourIn, key: IdemKey, who: Principal = HONOURS
    ) -> CommandResult:
        return await _nomination(request, who, nomination_id, key, d.AwardHonour(nomination_id, body.level))

    @app.get("/v1/honours", tags=["honours"])
    async def honours(
        request: Request,
        who: Principal = READ,
        year: Annotated[int | None, Query(ge=2000, le=2100)] = None,
        level: Level | None = None,
    ) -> list[dict[str, Any]]:
        """Honours awarded, by year and level."""
        async with _pool(request).acquire() as conn:
            rows = await conn.fetch(
                "SELECT nomination_id, honour, nominee, grid_path, year, level FROM volunteer_honours"
                " WHERE level IS NOT NULL AND ($1::int IS NULL OR year = $1) AND ($2::text IS NULL OR level = $2)"
                " ORDER BY year, level, honour, nominee",
                year,
                level,
            )
        return [r for r in _rows(rows) if who.sees(r["grid_path"])]

    # --- creation titles ---
    async def _title(
        request: Request, who: Principal, title_id: str, grid_path: str | None, key: str, command: d.TitleCommand
    ) -> CommandResult:
        sid = d.title_stream(title_id)
        s = await _state(_store(request), d.title_decider, sid)
        where = s.grid_path if s.exists else grid_path
        if where is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no title {title_id}")
        who.require_area(where)
        res, v = await _run(request, d.title_decider, sid, command, _meta(who, where), _k(who, key))
        return _result(sid, "title-", res, v)

    @app.post("/v1/titles", tags=["titles"])
    async def award_title(request: Request, body: TitleIn, key: IdemKey, who: Principal = TITLES) -> CommandResult:
        """Award a creation title at a level (refused if already held at that level)."""
        cmd = d.AwardTitle(body.title_id, body.category, body.holder, body.grid_path, body.level, body.year)
        return await _title(request, who, body.title_id, body.grid_path, key, cmd)

    @app.post("/v1/titles/{title_id}/reviews", tags=["titles"])
    async def review_title(
        request: Request, title_id: str, body: TitleReviewIn, key: IdemKey, who: Principal = TITLES
    ) -> CommandResult:
        cmd = d.ReviewTitle(title_id, body.level, body.passed, body.year, body.note)
        return await _title(request, who, title_id, None, key, cmd)

    @app.post("/v1/titles/{title_id}/revocations", tags=["titles"])
    async def revoke_title(
        request: Request, title_id: str, body: TitleRevokeIn, key: IdemKey, who: Principal = TITLES
    ) -> CommandResult:
        return await _title(request, who, title_id, None, key, d.RevokeTitle(title_id, body.level, body.reason))

    @app.get("/v1/titles", tags=["titles"])
    async def titles(request: Request, who: Principal = READ, level: Level | None = None) -> list[dict[str, Any]]:
        """Creation titles held now, by level."""
        async with _pool(request).acquire() as conn:
            rows = await conn.fetch(
                "SELECT title_id, level, category, holder, grid_path, year FROM volunteer_titles"
                " WHERE NOT revoked AND ($1::text IS NULL OR level = $1) ORDER BY level, category, holder",
                level,
            )
        return [r for r in _rows(rows) if who.sees(r["grid_path"])]


_ROUND_COLUMNS = (
    "r.contest, r.year, r.level, CASE WHEN r.awarded_at IS NOT NULL THEN 'awarded'"
    " WHEN r.shortlisted_at IS NOT NULL THEN 'shortlisted' ELSE 'entered' END AS status,"
    " r.entered_at, r.shortlisted_at, r.awarded_at, r.prize"
)
"""A contest round as the project queries show it (fixed text, no user input)."""

_CODE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class _Repeat(Exception):
    """Raised inside a transaction to roll it back when the Idempotency-Key was already used."""

    def __init__(self, result: AppendResult):
        super().__init__("repeated idempotency key")
        self.result = result


def _k(who: Principal, key: str) -> str:
    """The stored key, scoped to this service and the department (shared rule)."""
    k = idempotency_key(who, key, "volunteer")
    assert k is not None
    return k


def _code(value: str) -> None:
    if not _CODE.match(value):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "household id must be lower-case letters, digits, '-' or '_'"
        )
