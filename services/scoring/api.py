"""Scoring's HTTP side under /v1: rankings, explanations, weekly summaries, red/black lists,
long-term metrics (scope scoring:read, narrowed to the caller's area), and publication commands
(scope ops:admin, Idempotency-Key)."""

from __future__ import annotations

import contextlib
import re
from datetime import date
from decimal import Decimal
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request, status

from services.scoring import queries
from services.scoring.projections import ScoringProjection
from services.scoring.publishing import DayCloser, adopt_rules, publish_day, publish_week
from services.scoring.rules import TOWNSHIP, Level, Rules, load_rules
from shared.auth import Principal, require
from shared.eventstore import ConcurrencyError
from shared.grid import Grid, cached_grid
from shared.projection import ProjectionRunner
from shared.service import IdempotencyKey, create_app, idempotency_key
from shared.settings import Settings

WEEK = re.compile(r"^\d{4}-W\d{2}$")
LevelQuery = Annotated[Level, Query(description="township (grid path) or unit (responsible unit code)")]


def _rules(request: Request) -> Rules:
    rules: Rules = request.app.state.rules
    return rules


def _grid(request: Request) -> Grid:
    grid: Grid = request.app.state.grid
    return grid


def _visible(principal: Principal, grid: Grid, level: str, subject: str) -> bool:
    """Townships within (or above) the caller's area; units only to district-wide callers or to the unit itself."""
    if level == TOWNSHIP:
        return principal.sees(subject)
    return principal.area == grid.district or subject == principal.department


def _week(week: str) -> str:
    if not WEEK.match(week):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "week must look like 2026-W48")
    return week


def _jsonable(value: Any) -> Any:
    """Decimals as numbers, dataclasses as objects, for JSON responses."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {k: _jsonable(getattr(value, k)) for k in value.__dataclass_fields__}
    return value


def build_app(settings: Settings, *, worker: bool = True, rules: Rules | None = None) -> FastAPI:
    """The scoring app; with `worker` it also runs the scoring projection and the day-close publisher."""
    the_rules = rules or load_rules()
    grid = cached_grid(settings.district_file)

    async def on_start(app: FastAPI) -> None:
        app.state.rules = the_rules
        app.state.grid = grid
        if worker:
            with contextlib.suppress(ConcurrencyError):  # another instance recorded it first
                await adopt_rules(app.state.store, the_rules, grid)
            app.state.workers.start(
                "scoring-projection", ProjectionRunner(settings, app.state.pool, ScoringProjection(the_rules, grid))
            )
            app.state.workers.start("day-closer", DayCloser(app.state.store, the_rules, grid))

    app = create_app("Wenming scoring", settings, description=__doc__ or "", on_start=on_start)
    reader = Depends(require("scoring:read"))
    admin = Depends(require("ops:admin"))

    @app.get("/v1/scores")
    async def scores(request: Request, day: date, level: LevelQuery, principal: Principal = reader) -> dict[str, Any]:
        """一日一评比: every visible subject's score and rank for a campaign day."""
        async with request.app.state.pool.acquire() as conn:
            rows = await queries.daily_scores(conn, _rules(request), _grid(request), day, level)
            names = await queries.subject_names(conn, _grid(request), level)
        visible = [r for r in rows if _visible(principal, _grid(request), level, r.subject)]
        return {
            "day": day,
            "level": level,
            "scores": [{**_jsonable(r), "name": names.get(r.subject, r.subject)} for r in visible],
        }

    @app.get("/v1/scores/explanation")
    async def explain(
        request: Request, day: date, level: LevelQuery, subject: str, principal: Principal = reader
    ) -> dict[str, Any]:
        """One score item by item: base, each rule applied with its points and reason, total."""
        if not _visible(principal, _grid(request), level, subject):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"department {principal.department} may not see {subject}")
        async with request.app.state.pool.acquire() as conn:
            out = await queries.explanation(conn, _rules(request), day, level, subject)
        return dict(_jsonable(out))

    @app.get("/v1/weekly")
    async def weekly(request: Request, week: str, level: LevelQuery, principal: Principal = reader) -> dict[str, Any]:
        """一周一总结 for an ISO week: average, trend, best and worst day per subject; the laggards."""
        grid = _grid(request)
        async with request.app.state.pool.acquire() as conn:
            lines, lags = await queries.weekly(conn, _rules(request), grid, _week(week), level)
        lines = [w for w in lines if _visible(principal, grid, level, w.subject)]
        lags = [x for x in lags if _visible(principal, grid, level, x.subject)]
        return {
            "week": week,
            "level": level,
            "lines": _jsonable(lines),
            "best": _jsonable(lines[0]) if lines else None,
            "worst": _jsonable(lines[-1]) if lines else None,
            "laggards": _jsonable(lags),
        }

    @app.get("/v1/red-black")
    async def red_black(
        request: Request,
        level: LevelQuery,
        principal: Principal = reader,
        day: date | None = None,
        week: str | None = None,
    ) -> dict[str, Any]:
        """文明红黑榜 for a day or an ISO week."""
        if (day is None) == (week is None):
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "give exactly one of day or week")
        grid = _grid(request)
        async with request.app.state.pool.acquire() as conn:
            if day is not None:
                red, black = await queries.red_black_day(conn, _rules(request), grid, day, level)
            else:
                red, black = await queries.red_black_week(conn, _rules(request), grid, _week(week or ""), level)
        return {
            "period": str(day or week),
            "level": level,
            "red": [{"subject": s, "score": float(v)} for s, v in red if _visible(principal, grid, level, s)],
            "black": [{"subject": s, "score": float(v)} for s, v in black if _visible(principal, grid, level, s)],
        }

    @app.get("/v1/metrics")
    async def metrics(
        request: Request,
        node: str,
        first: Annotated[date, Query(alias="from")],
        last: Annotated[date, Query(alias="to")],
        principal: Principal = reader,
    ) -> dict[str, Any]:
        """常态长效机制: long-term metrics of the issues found in a grid node over a period."""
        grid = _grid(request)
        if node not in grid:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                [
                    {
                        "loc": ["query", "node"],
                        "msg": f"{node!r} is not a grid node of the district",
                        "type": "value_error",
                    }
                ],
            )
        principal.require_area(node)
        if last < first:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "to is before from")
        async with request.app.state.pool.acquire() as conn:
            m = await queries.metrics(conn, grid, node, first, last)
        return {"from": first, "to": last, **_jsonable(m)}

    @app.post("/v1/publications/daily", status_code=status.HTTP_200_OK)
    async def publish_daily(
        request: Request,
        day: Annotated[date, Body(embed=True)],
        principal: Principal = admin,
        key: str | None = IdempotencyKey,
    ) -> dict[str, Any]:
        """Publish a day's scores and red/black list (DailyScoresPublished, RedBlackListPublished)."""
        principal.require_area(_grid(request).district)
        out = await publish_day(
            request.app.state.store,
            _rules(request),
            _grid(request),
            day,
            source=principal.department,
            actor=principal.department,
            key=idempotency_key(principal, key, "scoring"),
        )
        return {"day": day, "revision": out.state.revision, "published": [e.type for e in out.result.envelopes]}

    @app.post("/v1/publications/weekly", status_code=status.HTTP_200_OK)
    async def publish_weekly(
        request: Request,
        week: Annotated[str, Body(embed=True)],
        principal: Principal = admin,
        key: str | None = IdempotencyKey,
    ) -> dict[str, Any]:
        """Publish an ISO week's summary, laggards and red/black list."""
        principal.require_area(_grid(request).district)
        out = await publish_week(
            request.app.state.store,
            _rules(request),
            _grid(request),
            _week(week),
            source=principal.department,
            actor=principal.department,
            key=idempotency_key(principal, key, "scoring"),
        )
        return {"week": week, "revision": out.state.revision, "published": [e.type for e in out.result.envelopes]}

    return app
