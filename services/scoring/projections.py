"""The scoring read models, kept from inspection.issue (and volunteer.activity when the volunteer
context publishes ActivityHeld) by the shared ProjectionRunner.

Per batch, in the runner's transaction: the issues' facts are loaded, each event is scored by the
pure rules (services/scoring/rules.py) and folded into its issue's facts, the score items go
into the ledger (idempotent on (event, subject, rule)), and the daily ranking of every
(day, level) the batch touched is recomputed from the ledger as absolute values. The runner
applies each event id once and stores its offsets in the same transaction, so a crash or a
replay never double-counts, and a rebuild gives the same rows as the live worker.

Why not faust: faust-streaming 0.15.3 does run against Kafka 4.0.1 here (once its topics exist),
but a table cannot be changed inside a `stream.take()` batch ("Cannot modify table key from
outside of stream iteration"), so batching and tables exclude each other; per-event table
updates measured ~2,700 events/s, and its RocksDB/changelog recovery is the hang users report.
State lives in PostgreSQL instead, written in the same transaction as the consumed offsets, so
there is nothing to recover after a restart and live and replay run the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from datetime import date
from typing import Any
from uuid import UUID

import asyncpg

import shared.events  # noqa: F401  (registers every context's events)
from services.scoring.rules import (
    TOWNSHIP,
    IssueFacts,
    Level,
    Rules,
    ScoreItem,
    activity_hours,
    evolve_issue,
    issue_id_of,
    score_activity,
    score_event,
)
from shared.campaign_time import campaign_day
from shared.db import Conn
from shared.events.registry import registry
from shared.grid import Grid
from shared.projection import Applied, Projection

ISSUE_TOPIC = "inspection.issue"
ACTIVITY_TOPIC = "volunteer.activity"
ACTIVITY_HELD = "ActivityHeld"


def activities_known() -> bool:
    """Volunteer activities are credited only if the ActivityHeld event type exists."""
    return ACTIVITY_HELD in registry.types()


FACT_COLUMNS = [f.name for f in fields(IssueFacts)]
ITEM_COLUMNS = [f.name for f in fields(ScoreItem)]


def _columns(rows: Sequence[object], names: list[str]) -> list[list[Any]]:
    """Column lists for an unnest insert (shallow: dataclasses.astuple deep-copies every value)."""
    return [[getattr(r, n) for r in rows] for n in names]


_FACTS_SELECT = f"SELECT {', '.join(FACT_COLUMNS)} FROM scoring_issues"
_FACT_TYPES = [
    "uuid", "text", "text", "text", "text", "timestamptz", "text", "text", "timestamptz", "int", "int", "bool",
    "int", "timestamptz", "bool", "timestamptz", "timestamptz", "int", "int", "bool",
]  # fmt: skip
assert len(_FACT_TYPES) == len(FACT_COLUMNS)


def facts_from_row(row: asyncpg.Record) -> IssueFacts:
    return IssueFacts(**{c: row[c] for c in FACT_COLUMNS})


class ScoringProjection(Projection):
    """Ledger of score items, issue facts, daily ranking and activities."""

    name = "scoring"
    tables = ("scoring_items", "scoring_issues", "scoring_daily", "scoring_activities")

    def __init__(self, rules: Rules, grid: Grid):
        self.rules = rules
        self.grid = grid
        self.townships = grid.townships()
        self.topics = [ISSUE_TOPIC, ACTIVITY_TOPIC] if activities_known() else [ISSUE_TOPIC]

    async def apply(self, conn: Conn, events: Sequence[Applied]) -> None:
        ids = list({iid for _, p in events if (iid := issue_id_of(p)) is not None})
        facts: dict[UUID, IssueFacts] = {}
        if ids:
            for row in await conn.fetch(_FACTS_SELECT + " WHERE issue_id = ANY($1::uuid[])", ids):
                facts[row["issue_id"]] = facts_from_row(row)
        changed: set[UUID] = set()
        items: list[ScoreItem] = []
        activities: list[tuple[Any, ...]] = []
        for env, payload in events:
            iid = issue_id_of(payload)
            if env.type == ACTIVITY_HELD:
                items.extend(score_activity(self.rules, env, payload))
                where = str(getattr(payload, "grid_path", None) or env.grid_path)
                site = str(getattr(payload, "site_id", None) or where)
                activities.append((env.event_id, site, where, campaign_day(env.occurred_at), activity_hours(payload)))
            elif iid is not None:
                before = facts.get(iid)
                items.extend(score_event(self.rules, before, env, payload))
                after = evolve_issue(before, env, payload)
                if after is not None:
                    facts[iid] = after
                    changed.add(iid)
        await self._write_items(conn, items)
        await self._write_facts(conn, [facts[i] for i in sorted(changed)])
        if activities:
            await conn.executemany(
                "INSERT INTO scoring_activities (event_id, site_id, grid_path, day, hours) VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT DO NOTHING",
                activities,
            )
        await self.recompute_days(conn, {(i.day, i.level) for i in items})

    async def _write_items(self, conn: Conn, items: list[ScoreItem]) -> None:
        """Insert the items; the ones new to the ledger add to their day's sums (so a repeat adds nothing)."""
        if not items:
            return
        await conn.execute(
            "WITH ins AS (INSERT INTO scoring_items (event_id, level, subject, rule, day, points, reason, occurred_at,"
            " grid_path, issue_id, rules_version) SELECT *, $11 FROM unnest($1::uuid[], $2::text[], $3::text[],"
            " $4::text[], $5::date[], $6::numeric[], $7::text[], $8::timestamptz[], $9::text[], $10::uuid[])"
            " ON CONFLICT DO NOTHING RETURNING day, level, subject, points)"
            " INSERT INTO scoring_daily AS d (day, level, subject, score, deducted, credited, items, rank)"
            " SELECT day, level, subject, $12::numeric + sum(points),"
            " coalesce(sum(points) FILTER (WHERE points < 0), 0),"
            " coalesce(sum(points) FILTER (WHERE points > 0), 0), count(*), 0 FROM ins GROUP BY 1, 2, 3"
            " ON CONFLICT (day, level, subject) DO UPDATE SET score = d.score + EXCLUDED.deducted + EXCLUDED.credited,"
            " deducted = d.deducted + EXCLUDED.deducted, credited = d.credited + EXCLUDED.credited,"
            " items = d.items + EXCLUDED.items",
            *_columns(items, ITEM_COLUMNS),
            self.rules.version,
            self.rules.base_points,
        )

    async def _write_facts(self, conn: Conn, facts: list[IssueFacts]) -> None:
        if not facts:
            return
        cols = _columns(facts, FACT_COLUMNS)
        found_days = [campaign_day(f.found_at) if f.found_at is not None else None for f in facts]
        params = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(_FACT_TYPES))
        n = len(FACT_COLUMNS)
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in [*FACT_COLUMNS[1:], "found_day"])
        await conn.execute(
            f"INSERT INTO scoring_issues ({', '.join(FACT_COLUMNS)}, found_day)"
            f" SELECT * FROM unnest({params}, ${n + 1}::date[])"
            f" ON CONFLICT (issue_id) DO UPDATE SET {updates}",
            *cols,
            found_days,
        )

    async def recompute_days(self, conn: Conn, touched: set[tuple[date, Level]]) -> None:
        """Rank every subject of each touched (day, level) again; every township of the grid is
        ranked, at the base when it has no items that day."""
        if not touched:
            return
        pairs = sorted(touched)
        days = [d for d, _ in pairs]
        levels = [lv for _, lv in pairs]
        town_days = sorted({d for d, lv in pairs if lv == TOWNSHIP})
        if town_days and self.townships:
            await conn.execute(
                "INSERT INTO scoring_daily (day, level, subject, score, deducted, credited, items, rank)"
                " SELECT d, 'township', t, $3, 0, 0, 0, 0 FROM unnest($1::date[]) AS d, unnest($2::text[]) AS t"
                " ON CONFLICT DO NOTHING",
                town_days,
                self.townships,
                self.rules.base_points,
            )
        await conn.execute(
            "UPDATE scoring_daily d SET rank = r.rk FROM ("
            " SELECT s.day, s.level, s.subject, rank() OVER (PARTITION BY s.day, s.level ORDER BY s.score DESC) AS rk"
            " FROM scoring_daily s JOIN unnest($1::date[], $2::text[]) AS t (day, level)"
            " ON s.day = t.day AND s.level = t.level) r"
            " WHERE d.day = r.day AND d.level = r.level AND d.subject = r.subject AND d.rank <> r.rk",
            days,
            levels,
        )
