"""Events of the scoring context, on topic `scoring.results`: published daily scores, weekly
summaries, red/black lists (文明红黑榜) and the adoption of a version of the scoring rules.

A publication for a day or week may be repeated with a higher `revision` when late events
change that period's scores; downstream systems keep the highest revision.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.events.envelope import DomainEvent
from shared.events.registry import registry

ScoreLevel = Literal["township", "unit"]
"""township = a township's grid path (changtai/wuan); unit = a responsible unit's code."""
IsoWeek = Annotated[str, StringConstraints(pattern=r"^\d{4}-W\d{2}$")]
Subject = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SubjectScore(_Row):
    """One line of the daily ranking (一日一评比)."""

    level: ScoreLevel
    subject: Subject
    name: str
    score: float
    rank: int = Field(ge=1)
    deducted: float = Field(le=0)
    credited: float = Field(ge=0)
    items: int = Field(ge=0)


class WeeklyLine(_Row):
    """One subject's week (一周一总结): average of its seven daily scores, change on last week."""

    level: ScoreLevel
    subject: Subject
    name: str
    average: float
    trend: float
    best_day: date
    best_score: float
    worst_day: date
    worst_score: float
    rank: int = Field(ge=1)


class LaggardLine(_Row):
    """A laggard of the week (一周一梳理促后进) and the issues that cost it most."""

    level: ScoreLevel
    subject: Subject
    name: str
    average: float
    issues: list[UUID]


class ListEntry(_Row):
    level: ScoreLevel
    subject: Subject
    name: str
    score: float


@registry.register
class DailyScoresPublished(DomainEvent):
    event_type = "DailyScoresPublished"
    topic = "scoring.results"
    day: date
    revision: int = Field(ge=1)
    rules_version: int = Field(ge=1)
    digest: str = Field(min_length=1, max_length=128)
    scores: list[SubjectScore]


@registry.register
class WeeklySummaryPublished(DomainEvent):
    event_type = "WeeklySummaryPublished"
    topic = "scoring.results"
    week: IsoWeek
    revision: int = Field(ge=1)
    rules_version: int = Field(ge=1)
    digest: str = Field(min_length=1, max_length=128)
    lines: list[WeeklyLine]
    laggards: list[LaggardLine]


@registry.register
class RedBlackListPublished(DomainEvent):
    """文明红黑榜 for a day (`period` = 2026-11-24) or an ISO week (`period` = 2026-W48)."""

    event_type = "RedBlackListPublished"
    topic = "scoring.results"
    period_kind: Literal["day", "week"]
    period: Annotated[str, StringConstraints(pattern=r"^\d{4}-(W\d{2}|\d{2}-\d{2})$")]
    revision: int = Field(ge=1)
    red: list[ListEntry]
    black: list[ListEntry]


@registry.register
class ScoringRulesAdopted(DomainEvent):
    """A version of the scoring rules file took effect (the rules are data; changes are events)."""

    event_type = "ScoringRulesAdopted"
    topic = "scoring.results"
    version: int = Field(ge=1)
    digest: str = Field(min_length=1, max_length=128)
    rules: dict[str, Any]
