"""The scoring worker killed mid-stream and restarted gives the same tables as a rebuild from the
topics (an uninterrupted replay), row for row, even with the relay re-sending events."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from services.scoring.projections import ScoringProjection
from services.scoring.rules import load_rules
from shared.events.envelope import DomainEvent
from shared.events.inspection import (
    IssueAssigned,
    IssueFound,
    IssueOverdue,
    IssueReopened,
    RectificationClosed,
    RectificationRejected,
    RectificationReported,
)
from shared.eventstore import EventMeta, EventStore, StreamAppend
from shared.grid import cached_grid
from shared.kafka import make_consumer, make_producer, stop_consumer, topic_partitions
from shared.outbox import OutboxRelay, wait_until_drained
from shared.projection import rebuild
from shared.settings import ROOT
from tests.support.kafka import read_all

pytestmark = pytest.mark.integration

TABLES = {
    "scoring_items": "event_id, level, subject, rule",
    "scoring_issues": "issue_id",
    "scoring_daily": "day, level, subject",
}
UNITS = ["urban-management", "housing", "transport", "market-regulation"]
CATEGORIES = ["sanitation", "street-stall", "construction-site", "food-safety", "other"]


def lifecycle(rng: random.Random, iid: UUID, grid: str, start: datetime) -> list[tuple[DomainEvent, datetime]]:
    """One issue's events in a random but plausible order (week 2026-W20)."""
    unit = rng.choice(UNITS)
    deadline = start + timedelta(hours=24)
    sev = rng.choice(["minor", "major", "serious"])
    out: list[tuple[DomainEvent, datetime]] = [
        (
            IssueFound(
                issue_id=iid,
                grid_path=grid,
                method="routine",
                category=rng.choice(CATEGORIES),
                case_type="event",
                severity=sev,  # type: ignore[arg-type]
                description="巡查发现",
                found_at=start,
                standards_version=1,
                deadline_hours=24,
            ),
            start,
        ),
        (
            IssueAssigned(issue_id=iid, responsible_unit=unit, owner="专人", deadline=deadline),
            start + timedelta(hours=1),
        ),
    ]
    fate = rng.random()
    if fate < 0.5:
        out.append(
            (
                RectificationReported(
                    issue_id=iid, responsible_unit=unit, text="已整改", reported_at=start + timedelta(hours=5)
                ),
                start + timedelta(hours=5),
            )
        )
        out.append(
            (
                RectificationClosed(issue_id=iid, responsible_unit=unit, deadline=deadline, on_time=True),
                start + timedelta(hours=6),
            )
        )
        if fate < 0.1:
            out.append((IssueReopened(issue_id=iid, reason="复发"), start + timedelta(days=3)))
    elif fate < 0.8:
        out.append(
            (
                IssueOverdue(
                    issue_id=iid,
                    responsible_unit=unit,
                    deadline=deadline,
                    step=1,
                    escalation_level="community",
                    escalated_to=grid.rsplit("/", 1)[0],
                ),
                deadline + timedelta(minutes=1),
            )
        )
        out.append(
            (RectificationRejected(issue_id=iid, responsible_unit=unit, reason="不合格"), deadline + timedelta(hours=3))
        )
    return out


async def publish_random_week(settings, pool, n_issues: int, seed: int) -> None:
    rng = random.Random(seed)
    grid = cached_grid(settings.district_file)
    grids = [p for p in grid.nodes if p.count("/") == 3]
    store = EventStore(pool, settings)
    monday = datetime(2026, 5, 10, 16, 0, tzinfo=UTC)  # 00:00 Monday 11 May 2026 in Shanghai
    appends = []
    for _ in range(n_issues):
        iid = UUID(int=rng.getrandbits(128), version=4)
        where = rng.choice(grids)
        events = lifecycle(rng, iid, where, monday + timedelta(minutes=rng.randrange(7 * 24 * 60)))
        metas = [
            (p, EventMeta(source="inspection-team-2", actor="巡查员", grid_path=where, occurred_at=at))
            for p, at in events
        ]
        appends.append(StreamAppend(f"issue-{iid}", 0, metas))
    for i in range(0, len(appends), 300):
        await store.append_many(appends[i : i + 300])
    relay = OutboxRelay(settings)
    task = asyncio.create_task(relay.run())
    async with pool.acquire() as conn:
        await wait_until_drained(conn, 60)
    relay.stop()
    await task


async def snapshot(pool) -> dict[str, list[tuple[object, ...]]]:
    async with pool.acquire() as conn:
        return {t: [tuple(r) for r in await conn.fetch(f"SELECT * FROM {t} ORDER BY {k}")] for t, k in TABLES.items()}


async def applied_offsets(pool) -> int:
    async with pool.acquire() as conn:
        return int(
            await conn.fetchval(
                "SELECT coalesce(sum(next_offset), 0) FROM projection_offsets WHERE projection = 'scoring'"
            )
        )


async def end_offsets(settings, topics: list[str]) -> int:
    consumer = make_consumer(settings, group_id=None)
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, *[settings.topic(t) for t in topics])
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await stop_consumer(consumer)


async def test_kill_mid_stream_and_restart_gives_the_same_tables_as_a_rebuild(settings, pool):
    rules = load_rules()
    projection = ScoringProjection(rules, cached_grid(settings.district_file))
    await publish_random_week(settings, pool, 1500, seed=20260511)
    topic = settings.topic("inspection.issue")
    env = {**os.environ, "WENMING_PROJECTION_BATCH": "100"}
    cmd = [sys.executable, "-m", "services.scoring", "worker"]
    total = await end_offsets(settings, list(projection.topics))
    before = await applied_offsets(pool)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(3000):
            if await applied_offsets(pool) > before + 500:
                break
            await asyncio.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = await applied_offsets(pool)
    assert before < killed_at < total, "the kill should come mid-stream"

    # the relay's at-least-once contract: some events arrive a second time at new offsets
    producer = make_producer(settings)
    await producer.start()
    for r in (await read_all(settings, topic))[:300]:
        await producer.send(topic, r.value, key=r.key, headers=list(r.headers))
    await producer.flush()
    await producer.stop()
    total += 300

    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            if await applied_offsets(pool) >= total:
                break
            await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert await applied_offsets(pool) == total
    incremental = await snapshot(pool)
    async with pool.acquire() as conn:
        issues = await conn.fetchval(
            "SELECT count(*) FROM scoring_issues WHERE found_day BETWEEN '2026-05-11' AND '2026-05-17'"
        )
        found = await conn.fetchval(
            "SELECT count(*) FROM scoring_items"
            " WHERE rule = 'issue_found' AND day BETWEEN '2026-05-11' AND '2026-05-17'"
        )
    assert issues == found == 1500  # each issue scored once despite the kill and the re-sent events

    await rebuild(settings, pool, projection, progress=False)
    rebuilt = await snapshot(pool)
    for table in TABLES:
        assert rebuilt[table] == incremental[table], table
