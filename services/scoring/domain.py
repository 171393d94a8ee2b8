"""Pure deciders of the scoring context: publishing a period's results, adopting a rules version.

A publication stream per day (`scoring-daily-2026-11-24`) or ISO week (`scoring-weekly-2026-W48`)
holds its revisions. Publishing again with the same content is a no-op; publishing after late
events changed the period's scores appends the next revision.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson

from shared.decider import Decider
from shared.events.envelope import DomainEvent
from shared.events.scoring import (
    DailyScoresPublished,
    LaggardLine,
    ListEntry,
    RedBlackListPublished,
    ScoringRulesAdopted,
    SubjectScore,
    WeeklyLine,
    WeeklySummaryPublished,
)


def digest_of(value: Any) -> str:
    """A stable fingerprint of published content (pydantic models or plain data)."""

    def default(obj: Any) -> Any:
        if hasattr(obj, "model_dump"):
            return obj.model_dump(mode="json")
        raise TypeError(type(obj).__name__)

    return hashlib.sha256(orjson.dumps(value, default=default, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True, slots=True)
class Publication:
    revision: int = 0
    digest: str | None = None


@dataclass(frozen=True, slots=True)
class PublishDay:
    day: date
    rules_version: int
    scores: list[SubjectScore]
    red: list[ListEntry]
    black: list[ListEntry]


@dataclass(frozen=True, slots=True)
class PublishWeek:
    week: str
    rules_version: int
    lines: list[WeeklyLine]
    laggards: list[LaggardLine]
    red: list[ListEntry]
    black: list[ListEntry]


def decide_publication(cmd: PublishDay | PublishWeek, state: Publication) -> list[DomainEvent]:
    if isinstance(cmd, PublishDay):
        digest = digest_of([cmd.scores, cmd.red, cmd.black])
        if digest == state.digest:
            return []
        rev = state.revision + 1
        return [
            DailyScoresPublished(
                day=cmd.day, revision=rev, rules_version=cmd.rules_version, digest=digest, scores=cmd.scores
            ),
            RedBlackListPublished(
                period_kind="day", period=cmd.day.isoformat(), revision=rev, red=cmd.red, black=cmd.black
            ),
        ]
    digest = digest_of([cmd.lines, cmd.laggards, cmd.red, cmd.black])
    if digest == state.digest:
        return []
    rev = state.revision + 1
    return [
        WeeklySummaryPublished(
            week=cmd.week,
            revision=rev,
            rules_version=cmd.rules_version,
            digest=digest,
            lines=cmd.lines,
            laggards=cmd.laggards,
        ),
        RedBlackListPublished(period_kind="week", period=cmd.week, revision=rev, red=cmd.red, black=cmd.black),
    ]


def evolve_publication(state: Publication, event: DomainEvent) -> Publication:
    if isinstance(event, DailyScoresPublished | WeeklySummaryPublished):
        return Publication(event.revision, event.digest)
    return state


publication = Decider[PublishDay | PublishWeek, Publication](Publication(), decide_publication, evolve_publication)


def daily_stream(day: date) -> str:
    return f"scoring-daily-{day.isoformat()}"


def weekly_stream(week: str) -> str:
    return f"scoring-weekly-{week}"


RULES_STREAM = "scoring-rules"


@dataclass(frozen=True, slots=True)
class AdoptRules:
    version: int
    digest: str
    rules: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AdoptedRules:
    version: int = 0
    digest: str | None = None


def decide_rules(cmd: AdoptRules, state: AdoptedRules) -> list[DomainEvent]:
    """Record a rules file whose content differs from the last adopted one."""
    if cmd.digest == state.digest:
        return []
    return [ScoringRulesAdopted(version=cmd.version, digest=cmd.digest, rules=cmd.rules)]


def evolve_rules(state: AdoptedRules, event: DomainEvent) -> AdoptedRules:
    if isinstance(event, ScoringRulesAdopted):
        return AdoptedRules(event.version, event.digest)
    return state


rules_adoption = Decider[AdoptRules, AdoptedRules](AdoptedRules(), decide_rules, evolve_rules)
