"""What each dashboard panel shows, read from the read models of one grid area.

Every panel is a plain JSON-able dict, a full snapshot (never a delta), so the live feed can
compare it with the last one and send it whole when it changed. A read model that does not
exist yet (a service not deployed) gives its panel `available: false` and no rows.
"""

from __future__ import annotations

import calendar
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import yaml

from shared.campaign_time import campaign_day, day_bounds
from shared.db import Conn
from shared.grid import within

log = logging.getLogger(__name__)

Panel = dict[str, Any]

INSPECTION_PANELS = ("counters", "overdue")
"""Panels read from the problem list on every tick (~300 ms)."""
SLOW_PANELS = ("ranking", "trend", "redblack", "volunteer")
"""Panels whose read models change less often: read about once a second."""
OVERDUE_ROWS = 100
"""The overdue list shows the worst this many; its total counts them all."""
TREND_DAYS = 7
OPEN_STATUSES = ("assigned", "returned")
"""Statuses the deadline watcher escalates: an issue overdue in one of these is on the overdue list."""
SCORING_RULES = Path(__file__).resolve().parent.parent / "scoring" / "rules.yaml"


@dataclass(frozen=True, slots=True)
class RedBlackRule:
    """文明红黑榜: the `size` best at or above `red_min`, the `size` worst below `black_below`."""

    size: int = 3
    red_min: float = 100.0
    black_below: float = 95.0


def load_red_black(path: Path = SCORING_RULES) -> RedBlackRule:
    """The scoring rules' red/black thresholds; the defaults if the file or section is missing."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        rb = raw.get("red_black") or {}
        return RedBlackRule(int(rb.get("size", 3)), float(rb.get("red_min", 100)), float(rb.get("black_below", 95)))
    except (OSError, yaml.YAMLError, TypeError, ValueError) as exc:
        log.warning("scoring rules unreadable (%s); red/black list uses defaults", exc.__class__.__name__)
        return RedBlackRule()


def area_like(area: str) -> str:
    """LIKE pattern for the paths strictly inside `area`."""
    return area.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "/%"


def _num(value: Decimal | float | int | None) -> float | None:
    return None if value is None else float(value)


def _iso(value: datetime | date | None) -> str | None:
    return None if value is None else value.isoformat()


def cut_sql(column: str, level: int) -> str:
    return f"array_to_string((string_to_array({column}, '/'))[1:{level}], '/')"


async def _guarded(name: str, read: Callable[[], Awaitable[Panel]]) -> Panel:
    """Run a panel's read; a missing table or column (service not deployed yet) gives an empty panel."""
    try:
        return await read()
    except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError) as exc:
        log.debug("panel %s unavailable: %s", name, exc)
        return {"available": False}


async def counters(conn: Conn, area: str, day: date) -> Panel:
    """Today's problem list per unit grid: found, assigned, closed (of those found today) and
    overdue (open issues the deadline watcher marked overdue, whatever day they were found).
    The page adds them up to community, township and district for the drill-down."""
    rows: dict[str, dict[str, Any]] = {}

    def row(node: str) -> dict[str, Any]:
        return rows.setdefault(node, {"node": node, "found": 0, "assigned": 0, "closed": 0, "overdue": 0})

    for r in await conn.fetch(
        f"SELECT {cut_sql('grid_path', 4)} AS node, count(*) AS found,"
        " count(*) FILTER (WHERE responsible_unit IS NOT NULL) AS assigned,"
        " count(*) FILTER (WHERE status = 'closed') AS closed"
        " FROM inspection_issues WHERE found_day = $1 AND (grid_path = $2 OR grid_path LIKE $3) GROUP BY 1",
        day,
        area,
        area_like(area),
    ):
        row(r["node"]).update(found=r["found"], assigned=r["assigned"], closed=r["closed"])
    for r in await conn.fetch(
        f"SELECT {cut_sql('grid_path', 4)} AS node, count(*) AS overdue FROM inspection_issues"
        " WHERE status = ANY($1::text[]) AND overdue_step > 0 AND (grid_path = $2 OR grid_path LIKE $3) GROUP BY 1",
        list(OPEN_STATUSES),
        area,
        area_like(area),
    ):
        row(r["node"])["overdue"] = r["overdue"]
    return {"available": True, "day": day.isoformat(), "rows": [rows[k] for k in sorted(rows)]}


async def overdue(conn: Conn, area: str) -> Panel:
    """The overdue list: highest escalation first, then the longest over its deadline."""
    where = "status = ANY($1::text[]) AND overdue_step > 0 AND (grid_path = $2 OR grid_path LIKE $3)"
    args = (list(OPEN_STATUSES), area, area_like(area))
    total = await conn.fetchval(f"SELECT count(*) FROM inspection_issues WHERE {where}", *args)
    rows = await conn.fetch(
        "SELECT issue_id, grid_path, category, severity, location, found_at, responsible_unit, owner, deadline,"
        f" overdue_step, escalation_level, escalated_to FROM inspection_issues WHERE {where}"
        f" ORDER BY overdue_step DESC, deadline, issue_id LIMIT {OVERDUE_ROWS}",
        *args,
    )
    return {
        "available": True,
        "total": total,
        "rows": [
            {
                "issue_id": str(r["issue_id"]),
                "grid_path": r["grid_path"],
                "category": r["category"],
                "severity": r["severity"],
                "location": r["location"],
                "found_at": _iso(r["found_at"]),
                "responsible_unit": r["responsible_unit"],
                "owner": r["owner"],
                "deadline": _iso(r["deadline"]),
                "overdue_step": r["overdue_step"],
                "escalation_level": r["escalation_level"],
                "escalated_to": r["escalated_to"],
            }
            for r in rows
        ],
    }


def _visible(area: str, subject: str, level: str) -> bool:
    """Township subjects are grid paths; unit subjects (departments) only for a district-wide view."""
    if level == "township":
        return within(subject, area) or within(area, subject)
    return "/" not in area


async def _scores(conn: Conn, first: date, last: date) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT day, level, subject, score, deducted, credited, items, rank FROM scoring_daily"
        " WHERE day BETWEEN $1 AND $2 ORDER BY day, level, rank, subject",
        first,
        last,
    )
    return rows


async def ranking(conn: Conn, area: str, day: date) -> Panel:
    """一日一评比: the day's ranking of townships (and of units, for a district-wide view)."""
    rows = await _scores(conn, day, day)
    of = {lvl: sum(1 for r in rows if r["level"] == lvl) for lvl in ("township", "unit")}
    out: dict[str, list[dict[str, Any]]] = {"township": [], "unit": []}
    for r in rows:
        if r["level"] in out and _visible(area, r["subject"], r["level"]):
            out[r["level"]].append(
                {
                    "subject": r["subject"],
                    "score": _num(r["score"]),
                    "deducted": _num(r["deducted"]),
                    "credited": _num(r["credited"]),
                    "items": r["items"],
                    "rank": r["rank"],
                }
            )
    return {"available": True, "day": day.isoformat(), "of": of, **out}


async def trend(conn: Conn, area: str, day: date) -> Panel:
    """The week's trend: each visible township's daily score over the last seven days."""
    days = [day - timedelta(days=n) for n in range(TREND_DAYS - 1, -1, -1)]
    series: dict[str, list[float | None]] = {}
    for r in await _scores(conn, days[0], day):
        if r["level"] == "township" and _visible(area, r["subject"], "township"):
            series.setdefault(r["subject"], [None] * len(days))[(r["day"] - days[0]).days] = _num(r["score"])
    return {"available": True, "days": [d.isoformat() for d in days], "series": series}


async def red_black(conn: Conn, area: str, day: date, rule: RedBlackRule) -> Panel:
    """文明红黑榜 of the day from the townships' scores, by the scoring rules' thresholds."""
    scores = [
        (r["subject"], float(r["score"]))
        for r in await _scores(conn, day, day)
        if r["level"] == "township" and _visible(area, r["subject"], "township")
    ]
    red = [s for s in sorted(scores, key=lambda x: (-x[1], x[0])) if s[1] >= rule.red_min][: rule.size]
    black = [s for s in sorted(scores, key=lambda x: (x[1], x[0])) if s[1] < rule.black_below][: rule.size]
    return {
        "available": True,
        "day": day.isoformat(),
        "red": [{"subject": s, "score": v} for s, v in red],
        "black": [{"subject": s, "score": v} for s, v in black],
    }


def month_bounds(day: date) -> tuple[datetime, datetime]:
    """[first instant, end) of the campaign month holding `day`, in UTC."""
    first = day.replace(day=1)
    last = day.replace(day=calendar.monthrange(day.year, day.month)[1])
    return day_bounds(first)[0], day_bounds(last)[1]


async def volunteer(conn: Conn, area: str, day: date) -> Panel:
    """Volunteer activity today and this month, per township: activities, held, participants, hours."""
    today_from, today_to = day_bounds(day)
    month_from, month_to = month_bounds(day)
    acts = await conn.fetch(
        f"SELECT {cut_sql('grid_path', 2)} AS node,"
        " count(*) FILTER (WHERE starts_at >= $1 AND starts_at < $2) AS today,"
        " count(*) FILTER (WHERE starts_at >= $1 AND starts_at < $2 AND status IN ('held', 'reviewed')) AS today_held,"
        " coalesce(sum(participants) FILTER (WHERE starts_at >= $1 AND starts_at < $2), 0) AS today_people,"
        " count(*) AS month,"
        " count(*) FILTER (WHERE status IN ('held', 'reviewed')) AS month_held,"
        " coalesce(sum(participants), 0) AS month_people"
        " FROM volunteer_activities WHERE starts_at >= $3 AND starts_at < $4"
        " AND (grid_path = $5 OR grid_path LIKE $6) GROUP BY 1",
        today_from,
        today_to,
        month_from,
        month_to,
        area,
        area_like(area),
    )
    hours = await conn.fetch(
        f"SELECT {cut_sql('a.grid_path', 2)} AS node,"
        " coalesce(sum(h.hours) FILTER (WHERE h.served_on >= $1 AND h.served_on < $2), 0) AS today,"
        " coalesce(sum(h.hours), 0) AS month"
        " FROM volunteer_hours h JOIN volunteer_activities a ON a.activity_id = h.activity_id"
        " WHERE h.served_on >= $3 AND h.served_on < $4 AND (a.grid_path = $5 OR a.grid_path LIKE $6) GROUP BY 1",
        today_from,
        today_to,
        month_from,
        month_to,
        area,
        area_like(area),
    )
    by_node: dict[str, dict[str, Any]] = {}
    blank = {k: 0 for k in ("today", "today_held", "today_people", "month", "month_held", "month_people")}
    for r in acts:
        by_node[r["node"]] = {"node": r["node"], **blank, **{k: int(r[k]) for k in blank}}
    for r in hours:
        entry = by_node.setdefault(r["node"], {"node": r["node"], **blank})
        entry["today_hours"], entry["month_hours"] = float(r["today"]), float(r["month"])
    rows = [{"today_hours": 0.0, "month_hours": 0.0, **by_node[k]} for k in sorted(by_node)]
    total = {k: sum(r[k] for r in rows) for k in (*blank, "today_hours", "month_hours")}
    return {"available": True, "day": day.isoformat(), "month": day.strftime("%Y-%m"), "total": total, "rows": rows}


class PanelReader:
    """Reads the panels of one area from PostgreSQL (one connection per call)."""

    def __init__(self, pool: asyncpg.Pool, rule: RedBlackRule | None = None):
        self.pool = pool
        self.rule = rule or load_red_black()

    async def read(self, area: str, names: tuple[str, ...], now: datetime) -> dict[str, Panel]:
        day = campaign_day(now)
        readers: dict[str, Callable[[Conn], Awaitable[Panel]]] = {
            "counters": lambda c: counters(c, area, day),
            "overdue": lambda c: overdue(c, area),
            "ranking": lambda c: ranking(c, area, day),
            "trend": lambda c: trend(c, area, day),
            "redblack": lambda c: red_black(c, area, day, self.rule),
            "volunteer": lambda c: volunteer(c, area, day),
        }
        out: dict[str, Panel] = {}
        async with self.pool.acquire() as conn:
            for name in names:
                out[name] = await _guarded(name, functools.partial(readers[name], conn))
        return out
