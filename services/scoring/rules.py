"""The scoring rules as pure functions over the rules file (rules.yaml) and the events.

Nothing here does I/O or reads a clock. The worker folds each issue's events into `IssueFacts`
(what scoring knows of one issue), turns each event into `ScoreItem`s (one line of a score's
explanation), and sums the items of a campaign day into the daily ranking. The weekly summary,
the laggard list, the red/black lists and the long-term metrics are pure functions of those.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field

from shared.campaign_time import campaign_day
from shared.events.envelope import DomainEvent, EventEnvelope
from shared.events.inspection import (
    AssignmentReturned,
    ExtensionGranted,
    ExtensionRequested,
    IssueAssigned,
    IssueBacklogged,
    IssueFound,
    IssueOverdue,
    IssueReopened,
    RectificationClosed,
    RectificationRejected,
    RectificationReported,
    Severity,
)
from shared.grid import GridLevel, cut, level_of

RULES_FILE = Path(__file__).with_name("rules.yaml")
TOWNSHIP: Literal["township"] = "township"
UNIT: Literal["unit"] = "unit"
Level = Literal["township", "unit"]
LEVELS: tuple[Level, ...] = (TOWNSHIP, UNIT)
CENT = Decimal("0.01")
RECURRENCE_WINDOW = timedelta(days=30)


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SeverityPoints(_Strict):
    minor: Decimal = Field(ge=0)
    major: Decimal = Field(ge=0)
    serious: Decimal = Field(ge=0)


class IssueFoundRule(_Strict):
    default: SeverityPoints
    categories: dict[str, SeverityPoints] = Field(default_factory=dict)


class RedBlackRule(_Strict):
    size: int = Field(ge=1)
    red_min: Decimal
    black_below: Decimal


class Rules(_Strict):
    """The rules file, validated. Deductions are written as positive numbers."""

    version: int = Field(ge=1)
    base_points: Decimal
    issue_found: IssueFoundRule
    closed_on_time_share: Decimal = Field(ge=0, le=1)
    overdue_step: list[Decimal] = Field(min_length=1)
    reopened: Decimal = Field(ge=0)
    rectification_rejected: Decimal = Field(ge=0)
    backlogged: Decimal = Field(ge=0)
    activity_held: Decimal = Field(ge=0)
    red_black: RedBlackRule
    laggards: int = Field(ge=1)
    laggard_issues: int = Field(ge=1)

    def found_points(self, category: str | None, severity: Severity | None) -> Decimal:
        """What an issue of this category and severity deducts (positive number)."""
        if severity is None:
            return Decimal(0)
        table = self.issue_found.categories.get(category or "", self.issue_found.default)
        return Decimal(getattr(table, severity))

    def overdue_points(self, step: int) -> Decimal:
        steps = self.overdue_step
        return steps[min(step, len(steps)) - 1]

    def digest(self) -> str:
        return hashlib.sha256(orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)).hexdigest()


def parse_rules(raw: Mapping[str, Any]) -> Rules:
    return Rules.model_validate(raw)


def load_rules(path: Path = RULES_FILE) -> Rules:
    return parse_rules(yaml.safe_load(path.read_text(encoding="utf-8")))


@dataclass(frozen=True, slots=True)
class IssueFacts:
    """What scoring knows about one issue, folded from its events in stream order."""

    issue_id: UUID
    grid_path: str
    township: str | None
    category: str | None = None
    severity: Severity | None = None
    found_at: datetime | None = None
    responsible_unit: str | None = None
    charged_unit: str | None = None
    """The unit that carries the issue's found deduction (refunded if the assignment moves)."""
    deadline: datetime | None = None
    reported: int = 0
    rejected: int = 0
    extension_requested: bool = False
    extensions_granted: int = 0
    closed_at: datetime | None = None
    on_time: bool | None = None
    last_closed_at: datetime | None = None
    backlogged_at: datetime | None = None
    overdue_steps: int = 0
    reopened: int = 0
    recurred_30d: bool = False


@dataclass(frozen=True, slots=True)
class ScoreItem:
    """One line of a score's explanation: who gains or loses how much, on which day, and why."""

    event_id: UUID
    level: Level
    subject: str
    rule: str
    day: date
    points: Decimal
    reason: str
    occurred_at: datetime
    grid_path: str
    issue_id: UUID | None = None


def township_of(grid_path: str) -> str | None:
    """The township a grid path lies in, or None for a path above township level."""
    return cut(grid_path, GridLevel.TOWNSHIP) if level_of(grid_path) >= GridLevel.TOWNSHIP else None


def issue_id_of(payload: DomainEvent) -> UUID | None:
    value = getattr(payload, "issue_id", None)
    return value if isinstance(value, UUID) else None


def evolve_issue(facts: IssueFacts | None, env: EventEnvelope, payload: DomainEvent) -> IssueFacts | None:
    """The issue's facts after one of its events (None for an event that is not about an issue)."""
    iid = issue_id_of(payload)
    if iid is None:
        return facts
    f = facts or IssueFacts(issue_id=iid, grid_path=env.grid_path, township=township_of(env.grid_path))
    at = env.occurred_at
    match payload:
        case IssueFound():
            return replace(
                f,
                grid_path=payload.grid_path,
                township=township_of(payload.grid_path),
                category=payload.category,
                severity=payload.severity,
                found_at=payload.found_at,
            )
        case IssueAssigned():
            return replace(
                f,
                responsible_unit=payload.responsible_unit,
                charged_unit=payload.responsible_unit,
                deadline=payload.deadline,
            )
        case AssignmentReturned():
            return replace(f, responsible_unit=None, charged_unit=None)
        case ExtensionRequested():
            return replace(f, extension_requested=True)
        case ExtensionGranted():
            return replace(f, extensions_granted=f.extensions_granted + 1, deadline=payload.new_deadline)
        case RectificationReported():
            return replace(f, reported=f.reported + 1)
        case RectificationRejected():
            return replace(f, rejected=f.rejected + 1)
        case RectificationClosed():
            return replace(f, closed_at=at, on_time=payload.on_time, last_closed_at=at)
        case IssueBacklogged():
            return replace(f, backlogged_at=at)
        case IssueOverdue():
            return replace(f, overdue_steps=max(f.overdue_steps, payload.step))
        case IssueReopened():
            recurred = f.last_closed_at is not None and at - f.last_closed_at <= RECURRENCE_WINDOW
            return replace(
                f, reopened=f.reopened + 1, recurred_30d=f.recurred_30d or recurred, closed_at=None, on_time=None
            )
    return f


def _q(value: Decimal) -> Decimal:
    return value.quantize(CENT)


def score_event(rules: Rules, before: IssueFacts | None, env: EventEnvelope, payload: DomainEvent) -> list[ScoreItem]:
    """The score items one issue event gives, from the issue's facts before it.

    The items fall on the Asia/Shanghai day of the event's occurred-at time, so a late event
    corrects the day it belongs to. Townships are charged for what happens in their area,
    responsible units for what they were assigned.
    """
    iid = issue_id_of(payload)
    if iid is None:
        return []
    f = before or IssueFacts(issue_id=iid, grid_path=env.grid_path, township=township_of(env.grid_path))
    day = campaign_day(env.occurred_at)
    grid = f.grid_path
    out: list[ScoreItem] = []

    def item(level: Level, subject: str | None, rule: str, points: Decimal, reason: str) -> None:
        if subject is None or points == 0:
            return
        out.append(ScoreItem(env.event_id, level, subject, rule, day, _q(points), reason, env.occurred_at, grid, iid))

    def both(unit: str | None, rule: str, points: Decimal, reason: str) -> None:
        item(TOWNSHIP, f.township, rule, points, reason)
        item(UNIT, unit, rule, points, reason)

    what = f"{f.category or '?'}/{f.severity or '?'} issue at {grid}"
    found = rules.found_points(f.category, f.severity)
    match payload:
        case IssueFound():
            pts = rules.found_points(payload.category, payload.severity)
            where = payload.grid_path
            item(
                TOWNSHIP,
                township_of(where),
                "issue_found",
                -pts,
                f"{payload.category}/{payload.severity} issue found at {where}",
            )
        case IssueAssigned():
            if f.charged_unit != payload.responsible_unit:
                item(
                    UNIT, f.charged_unit, "assignment_moved", found, f"{what} re-assigned to {payload.responsible_unit}"
                )
                item(UNIT, payload.responsible_unit, "issue_assigned", -found, f"{what} assigned")
        case AssignmentReturned():
            item(UNIT, f.charged_unit, "assignment_returned", found, f"{what} returned as not its remit")
        case RectificationClosed():
            if payload.on_time:
                back = found * rules.closed_on_time_share
                both(payload.responsible_unit, "closed_on_time", back, f"{what} closed by its deadline")
        case IssueOverdue():
            pts = rules.overdue_points(payload.step)
            both(payload.responsible_unit, "overdue_step", -pts, f"{what} overdue, step {payload.step}")
        case IssueReopened():
            both(f.responsible_unit, "reopened", -rules.reopened, f"{what} reopened (recurrence)")
        case RectificationRejected():
            both(payload.responsible_unit, "rectification_rejected", -rules.rectification_rejected, f"{what}: rework")
        case IssueBacklogged():
            unit = payload.responsible_unit or f.responsible_unit
            both(unit, "backlogged", -rules.backlogged, f"{what} backlogged (挂账)")
    return out


def score_activity(rules: Rules, env: EventEnvelope, payload: DomainEvent) -> list[ScoreItem]:
    """Credit for a volunteer activity held in a township's area (ActivityHeld, when it exists)."""
    where = str(getattr(payload, "grid_path", None) or env.grid_path)
    township = township_of(where)
    if township is None or rules.activity_held == 0:
        return []
    day = campaign_day(env.occurred_at)
    reason = f"volunteer activity held at {where}"
    return [
        ScoreItem(
            env.event_id,
            TOWNSHIP,
            township,
            "activity_held",
            day,
            _q(rules.activity_held),
            reason,
            env.occurred_at,
            where,
        )
    ]


def activity_hours(payload: DomainEvent) -> Decimal:
    """Volunteer hours of an activity: the participants' hours, where the event carries them."""
    total = Decimal(0)
    for p in getattr(payload, "participants", None) or ():
        hours = getattr(p, "hours", None)
        if hours is not None:
            total += Decimal(str(hours))
    return total


# ---------------------------------------------------------------- daily ranking


@dataclass(frozen=True, slots=True)
class DaySums:
    deducted: Decimal = Decimal(0)
    credited: Decimal = Decimal(0)
    items: int = 0


@dataclass(frozen=True, slots=True)
class DailyScore:
    day: date
    level: Level
    subject: str
    score: Decimal
    deducted: Decimal
    credited: Decimal
    items: int
    rank: int


def competition_rank(
    scores: Sequence[tuple[str, Decimal]], *, descending: bool = True
) -> list[tuple[str, Decimal, int]]:
    """Order by score (ties by subject) and give equal scores the same rank (1, 2, 2, 4)."""
    ordered = sorted(scores, key=lambda s: ((-s[1] if descending else s[1]), s[0]))
    out: list[tuple[str, Decimal, int]] = []
    for i, (subject, score) in enumerate(ordered):
        rank = out[-1][2] if out and out[-1][1] == score else i + 1
        out.append((subject, score, rank))
    return out


def rank_day(
    rules: Rules, day: date, level: Level, sums: Mapping[str, DaySums], subjects: Iterable[str] = ()
) -> list[DailyScore]:
    """The day's ranking at one level: every subject starts at the base; `subjects` without items score the base."""
    all_sums = {s: DaySums() for s in subjects}
    all_sums.update(sums)
    scores = [(s, rules.base_points + v.deducted + v.credited) for s, v in all_sums.items()]
    return [
        DailyScore(
            day, level, s, _q(score), _q(all_sums[s].deducted), _q(all_sums[s].credited), all_sums[s].items, rank
        )
        for s, score, rank in competition_rank(scores)
    ]


# ---------------------------------------------------------------- weeks


def iso_week(day: date) -> str:
    y, w, _ = day.isocalendar()
    return f"{y}-W{w:02d}"


def week_days(week: str) -> list[date]:
    """The seven days (Monday first) of an ISO week written 2026-W48."""
    year, w = week.split("-W")
    monday = date.fromisocalendar(int(year), int(w), 1)
    return [monday + timedelta(days=i) for i in range(7)]


def previous_week(week: str) -> str:
    return iso_week(week_days(week)[0] - timedelta(days=7))


@dataclass(frozen=True, slots=True)
class WeekLine:
    level: Level
    subject: str
    average: Decimal
    trend: Decimal
    best_day: date
    best_score: Decimal
    worst_day: date
    worst_score: Decimal
    rank: int


def _average(rules: Rules, days: list[date], scores: Mapping[date, Decimal]) -> Decimal:
    return _q(sum((scores.get(d, rules.base_points) for d in days), Decimal(0)) / len(days))


def weekly_summary(
    rules: Rules,
    level: Level,
    week: str,
    daily: Mapping[str, Mapping[date, Decimal]],
    subjects: Iterable[str] = (),
) -> list[WeekLine]:
    """一周一总结 for one level: each subject's average over the week's seven days (a day without
    a score counts as the base), its change on the week before, its best and worst day; ranked."""
    days = week_days(week)
    prev_days = week_days(previous_week(week))
    names = set(subjects) | {s for s, by_day in daily.items() if any(d in by_day for d in days)}
    lines: dict[str, tuple[Decimal, Decimal, date, Decimal, date, Decimal]] = {}
    for s in names:
        by_day = daily.get(s, {})
        avg = _average(rules, days, by_day)
        prev = _average(rules, prev_days, by_day)
        week_scores = [(d, by_day.get(d, rules.base_points)) for d in days]
        best = min(week_scores, key=lambda x: (-x[1], x[0]))
        worst = min(week_scores, key=lambda x: (x[1], x[0]))
        lines[s] = (avg, avg - prev, best[0], best[1], worst[0], worst[1])
    ranked = competition_rank([(s, v[0]) for s, v in lines.items()])
    return [WeekLine(level, s, *lines[s], rank) for s, _, rank in ranked]


@dataclass(frozen=True, slots=True)
class Laggard:
    level: Level
    subject: str
    average: Decimal
    issues: list[UUID]


def laggards(
    rules: Rules, lines: Sequence[WeekLine], deductions: Mapping[str, Mapping[UUID, Decimal]]
) -> list[Laggard]:
    """一周一梳理促后进: the bottom N of the week that lost points, each with the issues that cost it
    most (by points lost that week, largest first)."""
    below = [line for line in lines if line.average < rules.base_points]
    bottom = sorted(below, key=lambda line: (line.average, line.subject))[: rules.laggards]
    out = []
    for line in bottom:
        lost = deductions.get(line.subject, {})
        worst = sorted(lost.items(), key=lambda kv: (kv[1], str(kv[0])))[: rules.laggard_issues]
        out.append(Laggard(line.level, line.subject, line.average, [iid for iid, _ in worst]))
    return out


def red_black(
    rules: Rules, scores: Sequence[tuple[str, Decimal]]
) -> tuple[list[tuple[str, Decimal]], list[tuple[str, Decimal]]]:
    """文明红黑榜: (red list, black list) from (subject, score) pairs of one level."""
    rb = rules.red_black
    red = [s for s in sorted(scores, key=lambda x: (-x[1], x[0])) if s[1] >= rb.red_min][: rb.size]
    black = [s for s in sorted(scores, key=lambda x: (x[1], x[0])) if s[1] < rb.black_below][: rb.size]
    return red, black


# ---------------------------------------------------------------- long-term metrics


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th quantile (0..1) by linear interpolation between closest ranks (PostgreSQL's percentile_cont)."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _rate(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(part / whole, 4)


@dataclass(frozen=True, slots=True)
class Metrics:
    """常态长效机制 metrics for the issues found in one grid node over one period."""

    node: str
    population: int
    issues: int
    issues_per_1000: float | None
    closed: int
    closure_rate: float | None
    on_time_closure_rate: float | None
    rework_rate: float | None
    extension_rate: float | None
    backlog: int
    median_hours_to_close: float | None
    p90_hours_to_close: float | None
    overdue: int
    recurrence_rate_30d: float | None
    activities: int = 0
    volunteer_hours: float = 0.0
    stations: dict[str, dict[str, float]] = field(default_factory=dict)


def long_term_metrics(node: str, population: int, facts: Sequence[IssueFacts]) -> Metrics:
    """Issues per 1,000 residents; closure, on-time closure, rework (rejected rectifications per
    reported one), extension and 30-day recurrence rates; backlog and overdue counts; median and
    p90 hours from found to closed."""
    n = len(facts)
    closed = [f for f in facts if f.closed_at is not None]
    ever_closed = [f for f in facts if f.last_closed_at is not None]
    hours = [
        (f.closed_at - f.found_at).total_seconds() / 3600
        for f in closed
        if f.closed_at is not None and f.found_at is not None
    ]
    med, p90 = percentile(hours, 0.5), percentile(hours, 0.9)
    return Metrics(
        node=node,
        population=population,
        issues=n,
        issues_per_1000=None if population == 0 else round(n * 1000 / population, 4),
        closed=len(closed),
        closure_rate=_rate(len(closed), n),
        on_time_closure_rate=_rate(sum(1 for f in closed if f.on_time), len(closed)),
        rework_rate=_rate(sum(f.rejected for f in facts), sum(f.reported for f in facts)),
        extension_rate=_rate(sum(1 for f in facts if f.extension_requested), n),
        backlog=sum(1 for f in facts if f.backlogged_at is not None),
        median_hours_to_close=None if med is None else round(med, 2),
        p90_hours_to_close=None if p90 is None else round(p90, 2),
        overdue=sum(1 for f in facts if f.overdue_steps > 0),
        recurrence_rate_30d=_rate(sum(1 for f in ever_closed if f.recurred_30d), len(ever_closed)),
    )
