"""Reads of the scoring read models, shared by the API and the publications."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any
from uuid import UUID

from services.scoring.projections import _FACTS_SELECT, facts_from_row
from services.scoring.rules import (
    TOWNSHIP,
    DailyScore,
    Laggard,
    Level,
    Metrics,
    Rules,
    WeekLine,
    laggards,
    long_term_metrics,
    previous_week,
    rank_day,
    red_black,
    week_days,
    weekly_summary,
)
from shared.db import Conn
from shared.grid import Grid


async def subject_names(conn: Conn, grid: Grid, level: Level) -> dict[str, str]:
    """Display names: a township's name from the grid, a unit's from the departments table."""
    if level == TOWNSHIP:
        return {p: grid.nodes[p].name for p in grid.townships()}
    return {r["code"]: r["name"] for r in await conn.fetch("SELECT code, name FROM departments")}


async def daily_scores(conn: Conn, rules: Rules, grid: Grid, day: date, level: Level) -> list[DailyScore]:
    """The day's ranking; a day without any event has every township at the base."""
    rows = await conn.fetch(
        "SELECT day, level, subject, score, deducted, credited, items, rank FROM scoring_daily"
        " WHERE day = $1 AND level = $2 ORDER BY rank, subject",
        day,
        level,
    )
    if rows:
        return [DailyScore(**dict(r.items())) for r in rows]
    return rank_day(rules, day, level, {}, grid.townships() if level == TOWNSHIP else ())


async def explanation(conn: Conn, rules: Rules, day: date, level: Level, subject: str) -> dict[str, Any]:
    """A score item by item: the base, each item with its rule, points and reason, and the total."""
    rows = await conn.fetch(
        "SELECT event_id, rule, points, reason, occurred_at, grid_path, issue_id, rules_version FROM scoring_items"
        " WHERE day = $1 AND level = $2 AND subject = $3 ORDER BY occurred_at, event_id, rule",
        day,
        level,
        subject,
    )
    items = [dict(r.items()) for r in rows]
    total = rules.base_points + sum((r["points"] for r in items), Decimal(0))
    return {"day": day, "level": level, "subject": subject, "base": rules.base_points, "items": items, "score": total}


async def _daily_by_subject(conn: Conn, level: Level, first: date, last: date) -> dict[str, dict[date, Decimal]]:
    rows = await conn.fetch(
        "SELECT subject, day, score FROM scoring_daily WHERE level = $1 AND day BETWEEN $2 AND $3",
        level,
        first,
        last,
    )
    out: dict[str, dict[date, Decimal]] = defaultdict(dict)
    for r in rows:
        out[r["subject"]][r["day"]] = r["score"]
    return out


async def week_deductions(conn: Conn, level: Level, week: str) -> dict[str, dict[UUID, Decimal]]:
    """Points each issue cost each subject in the week (negative sums)."""
    days = week_days(week)
    rows = await conn.fetch(
        "SELECT subject, issue_id, sum(points) AS lost FROM scoring_items WHERE level = $1 AND day BETWEEN $2 AND $3"
        " AND points < 0 AND issue_id IS NOT NULL GROUP BY 1, 2",
        level,
        days[0],
        days[-1],
    )
    out: dict[str, dict[UUID, Decimal]] = defaultdict(dict)
    for r in rows:
        out[r["subject"]][r["issue_id"]] = r["lost"]
    return out


async def weekly(conn: Conn, rules: Rules, grid: Grid, week: str, level: Level) -> tuple[list[WeekLine], list[Laggard]]:
    """一周一总结 and 一周一梳理促后进 for an ISO week at one level."""
    first = week_days(previous_week(week))[0]
    last = week_days(week)[-1]
    daily = await _daily_by_subject(conn, level, first, last)
    lines = weekly_summary(rules, level, week, daily, grid.townships() if level == TOWNSHIP else ())
    return lines, laggards(rules, lines, await week_deductions(conn, level, week))


async def red_black_day(conn: Conn, rules: Rules, grid: Grid, day: date, level: Level) -> tuple[list[Any], list[Any]]:
    scores = await daily_scores(conn, rules, grid, day, level)
    return red_black(rules, [(s.subject, s.score) for s in scores])


async def red_black_week(conn: Conn, rules: Rules, grid: Grid, week: str, level: Level) -> tuple[list[Any], list[Any]]:
    lines, _ = await weekly(conn, rules, grid, week, level)
    return red_black(rules, [(line.subject, line.average) for line in lines])


async def metrics(conn: Conn, grid: Grid, node: str, first: date, last: date) -> Metrics:
    """Long-term metrics for the issues found in `node` from `first` to `last` (campaign days)."""
    rows = await conn.fetch(
        _FACTS_SELECT + " WHERE found_day BETWEEN $1 AND $2 AND (grid_path = $3 OR grid_path LIKE $4)",
        first,
        last,
        node,
        node.replace("%", r"\%").replace("_", r"\_") + "/%",
    )
    gn = grid.nodes.get(node)
    result = long_term_metrics(node, gn.population if gn is not None else 0, [facts_from_row(r) for r in rows])
    acts = await conn.fetch(
        "SELECT site_id, count(*) AS n, sum(hours) AS hours FROM scoring_activities"
        " WHERE day BETWEEN $1 AND $2 AND (grid_path = $3 OR grid_path LIKE $4) GROUP BY site_id ORDER BY site_id",
        first,
        last,
        node,
        node.replace("%", r"\%").replace("_", r"\_") + "/%",
    )
    stations = {r["site_id"]: {"activities": float(r["n"]), "volunteer_hours": float(r["hours"])} for r in acts}
    return replace(
        result,
        activities=sum(int(r["n"]) for r in acts),
        volunteer_hours=float(sum((r["hours"] for r in acts), Decimal(0))),
        stations=stations,
    )
