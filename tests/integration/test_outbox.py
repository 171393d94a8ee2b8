"""Outbox relay against real Kafka and PostgreSQL: delivery, crash mid-batch, late commits."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter

import pytest

from shared.eventstore import EventStore, StreamAppend
from shared.outbox import OutboxRelay, outbox_backlog, wait_until_drained
from shared.settings import ROOT
from tests.support.factories import issue_found
from tests.support.kafka import read_all

pytestmark = pytest.mark.integration


async def _run_relay_until_drained(settings, pool) -> None:
    relay = OutboxRelay(settings)
    task = asyncio.create_task(relay.run())
    try:
        async with pool.acquire() as conn:
            await wait_until_drained(conn, timeout=60)
    finally:
        relay.stop()
        await task


async def _published_ids(settings) -> Counter[str]:
    records = await read_all(settings, settings.topic("inspection.issue"))
    return Counter(dict(r.headers)["ce_id"].decode() for r in records)


async def test_appended_events_reach_kafka_with_cloudevents_headers_keyed_by_stream(pool, settings):
    store = EventStore(pool, settings)
    found, meta = issue_found()
    result = await store.append(f"issue-{found.issue_id}", 0, [(found, meta)])
    await _run_relay_until_drained(settings, pool)
    records = [
        r
        for r in await read_all(settings, settings.topic("inspection.issue"))
        if r.key == f"issue-{found.issue_id}".encode()
    ]
    assert len(records) == 1
    headers = dict(records[0].headers)
    assert headers["ce_id"].decode() == str(result.envelopes[0].event_id)
    assert headers["ce_type"] == b"IssueFound"
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_source"] == b"/wenming/inspection-team-1"
    assert headers["ce_time"].decode().startswith("2026-11-24T02:30:00")


async def test_relay_wakes_on_notify_not_on_the_slow_poll(pool, settings):
    relay = OutboxRelay(settings, idle_poll_s=30)
    task = asyncio.create_task(relay.run())
    try:
        while not relay.is_leader:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # idle now, waiting on LISTEN
        store = EventStore(pool, settings)
        found, meta = issue_found()
        before = relay.published
        await store.append(f"issue-{found.issue_id}", 0, [(found, meta)])
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while relay.published == before:
            assert loop.time() - t0 < 5, "relay did not wake on NOTIFY"
            await asyncio.sleep(0.01)
    finally:
        relay.stop()
        await task


async def test_late_committing_transaction_is_not_skipped(pool, settings):
    """Two overlapping transactions commit out of id order; the relay publishes both."""
    store = EventStore(pool, settings)
    early, meta = issue_found()
    late, _ = issue_found()
    async with pool.acquire() as slow:
        tx = slow.transaction()
        await tx.start()
        await store.append_many([StreamAppend(f"issue-{early.issue_id}", 0, [(early, meta)])], conn=slow)
        async with pool.acquire() as fast:
            # Takes a higher outbox id than the open transaction, and commits first.
            await store.append_many([StreamAppend(f"issue-{late.issue_id}", 0, [(late, meta)])], conn=fast)
            ids = await fast.fetch(
                "SELECT id, key FROM outbox WHERE key = ANY($1)", [f"issue-{early.issue_id}", f"issue-{late.issue_id}"]
            )
        assert len(ids) == 1  # the early one is invisible until it commits
        await _run_relay_until_drained(settings, pool)
        await tx.commit()
    await _run_relay_until_drained(settings, pool)
    keys = {r.key for r in await read_all(settings, settings.topic("inspection.issue"))}
    assert f"issue-{early.issue_id}".encode() in keys
    assert f"issue-{late.issue_id}".encode() in keys


async def test_relay_killed_mid_batch_and_restarted_loses_nothing(pool, settings):
    store = EventStore(pool, settings)
    appended: list[str] = []
    for _ in range(40):
        batch = [issue_found() for _ in range(250)]
        res = await store.append_many([StreamAppend(f"issue-{p.issue_id}", 0, [(p, m)]) for p, m in batch])
        appended += [str(e.event_id) for e in res.envelopes]
    env = {**os.environ, "WENMING_OUTBOX_BATCH": "500"}
    cmd = [sys.executable, "-m", "shared.outbox"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with pool.acquire() as conn:
            total = await outbox_backlog(conn)
            assert total >= 10_000
            for _ in range(3000):
                if total - await outbox_backlog(conn) >= 1500:
                    break
                await asyncio.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            left = await outbox_backlog(conn)
        assert 0 < left < total, f"kill came too late or too early ({left} left)"
    finally:
        if proc.poll() is None:
            proc.kill()
    restarted = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with pool.acquire() as conn:
            await wait_until_drained(conn, timeout=120)
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(timeout=30)
    published = await _published_ids(settings)
    missing = [e for e in appended if published[e] == 0]
    assert missing == []


async def test_prune_deletes_only_rows_sent_before_the_retention(pool, settings):
    store = EventStore(pool, settings)
    old, meta = issue_found()
    recent, _ = issue_found()
    unsent, _ = issue_found()
    for p in (old, recent):
        await store.append(f"issue-{p.issue_id}", 0, [(p, meta)])
    await _run_relay_until_drained(settings, pool)
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE outbox SET sent_at = now() - interval '4 days' WHERE key = $1", f"issue-{old.issue_id}"
        )
        await store.append(f"issue-{unsent.issue_id}", 0, [(unsent, meta)])
        await conn.execute(
            "UPDATE outbox SET created_at = now() - interval '5 days' WHERE key = $1", f"issue-{unsent.issue_id}"
        )
        pruned = await OutboxRelay(settings).prune(conn)
        left = {
            r["key"]
            for r in await conn.fetch(
                "SELECT key FROM outbox WHERE key = ANY($1)", [f"issue-{p.issue_id}" for p in (old, recent, unsent)]
            )
        }
        events = await conn.fetchval("SELECT count(*) FROM events WHERE stream_id = $1", f"issue-{old.issue_id}")
    assert pruned >= 1
    assert left == {f"issue-{recent.issue_id}", f"issue-{unsent.issue_id}"}  # unsent stays, however old
    assert events == 1  # the event itself is never deleted
