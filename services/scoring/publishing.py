"""Publishing results on scoring.results: a day's scores and red/black list, a week's summary,
laggards and red/black list; at day close or when an operator asks; revisions after late events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import date, timedelta

from services.scoring import queries
from services.scoring.domain import (
    RULES_STREAM,
    AdoptedRules,
    AdoptRules,
    Publication,
    PublishDay,
    PublishWeek,
    daily_stream,
    publication,
    rules_adoption,
    weekly_stream,
)
from services.scoring.rules import LEVELS, Rules, iso_week, previous_week
from shared.campaign_time import campaign_day, utcnow
from shared.db import Conn
from shared.decider import Outcome, execute
from shared.events.scoring import LaggardLine, ListEntry, SubjectScore, WeeklyLine
from shared.eventstore import EventMeta, EventStore
from shared.grid import Grid

log = logging.getLogger(__name__)


async def build_day(conn: Conn, rules: Rules, grid: Grid, day: date) -> PublishDay:
    scores: list[SubjectScore] = []
    red: list[ListEntry] = []
    black: list[ListEntry] = []
    for level in LEVELS:
        names = await queries.subject_names(conn, grid, level)
        rows = await queries.daily_scores(conn, rules, grid, day, level)
        scores += [
            SubjectScore(
                level=level,
                subject=r.subject,
                name=names.get(r.subject, r.subject),
                score=float(r.score),
                rank=r.rank,
                deducted=float(r.deducted),
                credited=float(r.credited),
                items=r.items,
            )
            for r in rows
        ]
        r_list, b_list = await queries.red_black_day(conn, rules, grid, day, level)
        red += [ListEntry(level=level, subject=s, name=names.get(s, s), score=float(v)) for s, v in r_list]
        black += [ListEntry(level=level, subject=s, name=names.get(s, s), score=float(v)) for s, v in b_list]
    return PublishDay(day, rules.version, scores, red, black)


async def build_week(conn: Conn, rules: Rules, grid: Grid, week: str) -> PublishWeek:
    lines: list[WeeklyLine] = []
    lags: list[LaggardLine] = []
    red: list[ListEntry] = []
    black: list[ListEntry] = []
    for level in LEVELS:
        names = await queries.subject_names(conn, grid, level)
        week_lines, week_lags = await queries.weekly(conn, rules, grid, week, level)
        lines += [
            WeeklyLine(
                level=level,
                subject=w.subject,
                name=names.get(w.subject, w.subject),
                average=float(w.average),
                trend=float(w.trend),
                best_day=w.best_day,
                best_score=float(w.best_score),
                worst_day=w.worst_day,
                worst_score=float(w.worst_score),
                rank=w.rank,
            )
            for w in week_lines
        ]
        lags += [
            LaggardLine(
                level=level,
                subject=x.subject,
                name=names.get(x.subject, x.subject),
                average=float(x.average),
                issues=x.issues,
            )
            for x in week_lags
        ]
        r_list, b_list = await queries.red_black_week(conn, rules, grid, week, level)
        red += [ListEntry(level=level, subject=s, name=names.get(s, s), score=float(v)) for s, v in r_list]
        black += [ListEntry(level=level, subject=s, name=names.get(s, s), score=float(v)) for s, v in b_list]
    return PublishWeek(week, rules.version, lines, lags, red, black)


def _meta(grid: Grid, source: str, actor: str) -> EventMeta:
    return EventMeta(source=source, actor=actor, grid_path=grid.district, occurred_at=utcnow())


async def publish_day(
    store: EventStore, rules: Rules, grid: Grid, day: date, *, source: str, actor: str, key: str | None = None
) -> Outcome[Publication]:
    """Publish the day's scores and red/black list (a new revision only if they changed)."""
    async with store.pool.acquire() as conn:
        cmd = await build_day(conn, rules, grid, day)
    return await execute(store, publication, daily_stream(day), cmd, _meta(grid, source, actor), key)


async def publish_week(
    store: EventStore, rules: Rules, grid: Grid, week: str, *, source: str, actor: str, key: str | None = None
) -> Outcome[Publication]:
    async with store.pool.acquire() as conn:
        cmd = await build_week(conn, rules, grid, week)
    return await execute(store, publication, weekly_stream(week), cmd, _meta(grid, source, actor), key)


async def adopt_rules(store: EventStore, rules: Rules, grid: Grid) -> Outcome[AdoptedRules]:
    """Record the rules file as a ScoringRulesAdopted event if it differs from the last one adopted."""
    cmd = AdoptRules(rules.version, rules.digest(), rules.model_dump(mode="json"))
    return await execute(store, rules_adoption, RULES_STREAM, cmd, _meta(grid, "scoring", "scoring-service"))


class DayCloser:
    """At day close publishes yesterday (and, on Mondays, last week); re-publishes the last
    `lookback_days` days already published when late events changed them."""

    def __init__(self, store: EventStore, rules: Rules, grid: Grid, *, every_s: float = 60.0, lookback_days: int = 7):
        self.store, self.rules, self.grid = store, rules, grid
        self.every_s = every_s
        self.lookback_days = lookback_days
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def close_once(self, today: date) -> int:
        """One pass; returns how many publications were appended."""
        appended = 0
        yesterday = today - timedelta(days=1)
        for back in range(1, self.lookback_days + 1):
            day = today - timedelta(days=back)
            _, version = await self.store.load_typed(daily_stream(day))
            if day == yesterday or version > 0:
                out = await publish_day(self.store, self.rules, self.grid, day, source="scoring", actor="day-close")
                appended += bool(out.result.envelopes)
        last_week = previous_week(iso_week(today))
        for week in (last_week, previous_week(last_week)):
            _, version = await self.store.load_typed(weekly_stream(week))
            if week == last_week or version > 0:
                out = await publish_week(self.store, self.rules, self.grid, week, source="scoring", actor="day-close")
                appended += bool(out.result.envelopes)
        return appended

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.close_once(campaign_day(utcnow()))
            except Exception:
                log.exception("day close failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.every_s)
