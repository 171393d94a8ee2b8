"""The projection runner on real Kafka and PostgreSQL: exactly-once apply across crashes,
duplicates skipped, poison records dead-lettered, rebuild equal to incremental, applied ids
forgotten after the dedupe window."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from shared.eventstore import EventStore, StreamAppend
from shared.kafka import make_producer
from shared.outbox import OutboxRelay, wait_until_drained
from shared.projection import ProjectionRunner, rebuild
from shared.settings import ROOT
from tests.support.counting_projection import CountingProjection
from tests.support.factories import issue_found
from tests.support.kafka import read_all

pytestmark = pytest.mark.integration


async def _publish_issues(settings, pool, n: int) -> None:
    store = EventStore(pool, settings)
    for start in range(0, n, 500):
        batch = [issue_found() for _ in range(min(500, n - start))]
        await store.append_many([StreamAppend(f"issue-{p.issue_id}", 0, [(p, m)]) for p, m in batch])
    relay = OutboxRelay(settings)
    task = asyncio.create_task(relay.run())
    async with pool.acquire() as conn:
        await wait_until_drained(conn, 60)
    relay.stop()
    await task


async def _counts(pool) -> dict[str, int]:
    async with pool.acquire() as conn:
        return {r["stream_id"]: r["n"] for r in await conn.fetch("SELECT stream_id, n FROM test_counts")}


async def test_crash_restart_and_redelivery_apply_each_event_exactly_once(pool, settings):
    async with pool.acquire() as conn:
        await CountingProjection.create_table(conn)
    await _publish_issues(settings, pool, 6000)
    topic = settings.topic("inspection.issue")
    records = await read_all(settings, topic)
    per_stream: dict[str, set[str]] = {}
    for r in records:  # distinct events per stream (other tests' streams may have several)
        per_stream.setdefault(r.key.decode(), set()).add(dict(r.headers)["ce_id"].decode())
    expected = {stream: len(ids) for stream, ids in per_stream.items()}
    total = sum(expected.values())
    cmd = [sys.executable, "-m", "tests.support.counting_projection", "crashy", "inspection.issue"]
    env = dict(os.environ)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    try:
        for _ in range(2000):
            applied = sum((await _counts(pool)).values())
            if applied > 0:
                break
            await asyncio.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    after_crash = sum((await _counts(pool)).values())
    assert 0 < after_crash < total, "the crash should come mid-stream"

    # The relay's at-least-once contract: the same events published again (new offsets).
    producer = make_producer(settings)
    await producer.start()
    for r in records[:500]:
        await producer.send(topic, r.value, key=r.key, headers=list(r.headers))
    await producer.flush()
    await producer.stop()

    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    try:
        for _ in range(600):
            counts = await _counts(pool)
            if sum(counts.values()) >= total:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # let it also consume the re-sent duplicates
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    counts = await _counts(pool)
    assert counts == expected  # every event applied exactly once

    # Rebuild from scratch gives the same table.
    await rebuild(settings, pool, CountingProjection("crashy", ["inspection.issue"]), progress=False)
    assert await _counts(pool) == counts


async def test_poison_records_go_to_the_dead_letter_topic_and_good_ones_after_them_apply(pool, settings):
    async with pool.acquire() as conn:
        await CountingProjection.create_table(conn)
    topic = settings.topic("test.events")
    good1, meta = issue_found()
    good2, _ = issue_found()
    store = EventStore(pool, settings)
    res = await store.append_many([StreamAppend(f"poison-test-{p.issue_id}", 0, [(p, meta)]) for p in (good1, good2)])
    values = [e.model_dump_json().encode() for e in res.envelopes]
    unknown = values[0].replace(b'"IssueFound"', b'"IssueVanished"')
    bad_payload = values[0].replace(b'"severity":"minor"', b'"severity":"apocalyptic"')
    producer = make_producer(settings)
    await producer.start()
    for key, value in [
        (b"a", values[0]),
        (b"a", b"\x00garbage{"),
        (b"a", unknown),
        (b"a", bad_payload),
        (b"a", values[1]),
    ]:
        await producer.send_and_wait(topic, value, key=key)
    await producer.stop()

    runner = ProjectionRunner(settings, pool, CountingProjection("poison", ["test.events"]))
    task = asyncio.create_task(runner.run())
    try:
        for _ in range(300):
            if runner.totals.applied >= 2 and runner.totals.dead_lettered >= 3:
                break
            await asyncio.sleep(0.05)
    finally:
        runner.stop()
        await task
    counts = await _counts(pool)
    assert counts.get(f"poison-test-{good1.issue_id}") == 1
    assert counts.get(f"poison-test-{good2.issue_id}") == 1
    dead = [
        dict(r.headers)
        for r in await read_all(settings, settings.topic("deadletter"))
        if dict(r.headers).get("wm_dlq_consumer") == b"poison" and r.key == b"a"  # ours, not other tests'
    ]
    reasons = sorted(h["wm_dlq_reason"].decode() for h in dead)
    assert len(reasons) == 3
    assert any("not valid JSON" in r for r in reasons)
    assert any("unknown event type 'IssueVanished'" in r for r in reasons)
    assert any("severity" in r for r in reasons)
    assert all(h["wm_dlq_source_topic"] == topic.encode() for h in dead)


async def test_rebuild_refuses_while_the_projection_is_being_consumed(pool, settings):
    async with pool.acquire() as conn:
        await CountingProjection.create_table(conn)
    projection = CountingProjection("busy", ["test.events"])
    runner = ProjectionRunner(settings, pool, projection)
    task = asyncio.create_task(runner.run())
    try:
        await asyncio.sleep(1.0)
        with pytest.raises(RuntimeError, match="stop its service first"):
            await rebuild(settings, pool, projection, progress=False)
    finally:
        runner.stop()
        await task


async def test_applied_event_ids_are_forgotten_after_the_dedupe_window_and_only_this_projection_s(pool, settings):
    tag = uuid4().hex[:8]
    runner = ProjectionRunner(settings, pool, CountingProjection(f"forgetful-{tag}", ["inspection.issue"]))
    now = datetime.now(UTC)
    old, fresh, neighbours = [uuid4() for _ in range(3)], [uuid4() for _ in range(2)], [uuid4() for _ in range(2)]
    window = timedelta(days=settings.projection_dedupe_days)
    async with pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO projection_applied (projection, event_id, applied_at) VALUES ($1, $2, $3)",
            [(f"forgetful-{tag}", i, now - window - timedelta(hours=1)) for i in old]
            + [(f"forgetful-{tag}", i, now - window + timedelta(hours=1)) for i in fresh]
            + [(f"neighbour-{tag}", i, now - window - timedelta(days=5)) for i in neighbours],
        )
    assert await runner.prune_applied(now) == 3
    assert await runner.prune_applied(now) == 0
    async with pool.acquire() as conn:
        kept = await conn.fetch(
            "SELECT projection, event_id FROM projection_applied WHERE projection LIKE '%-' || $1", tag
        )
    assert {(r["projection"], r["event_id"]) for r in kept} == {(f"forgetful-{tag}", i) for i in fresh} | {
        (f"neighbour-{tag}", i) for i in neighbours
    }
