"""The event store against a real PostgreSQL: append/load, conflicts, idempotency, append-only."""

from __future__ import annotations

import asyncio
from uuid import uuid4

import asyncpg
import pytest

from shared.events import registry
from shared.events.inspection import IssueAssigned
from shared.eventstore import ConcurrencyError, EventStore, StreamAppend
from tests.support.factories import issue_found

pytestmark = pytest.mark.integration


async def test_append_then_load_rebuilds_the_stream(pool, settings):
    store = EventStore(pool, settings)
    found, meta = issue_found()
    stream = f"issue-{found.issue_id}"
    assigned = IssueAssigned(
        issue_id=found.issue_id,
        responsible_unit="urban-management",
        owner="李四",
        deadline=found.found_at.replace(day=25),
    )
    r1 = await store.append(stream, 0, [(found, meta)])
    r2 = await store.append(stream, 1, [(assigned, meta)])
    assert [e.stream_version for e in r1.envelopes + r2.envelopes] == [1, 2]
    loaded = await store.load(stream)
    assert [e.type for e in loaded] == ["IssueFound", "IssueAssigned"]
    assert [e.event_id for e in loaded] == [r1.envelopes[0].event_id, r2.envelopes[0].event_id]
    assert registry.payload(loaded[1]) == assigned
    assert loaded[0].occurred_at == meta.occurred_at and loaded[0].grid_path == meta.grid_path


async def test_stale_expected_version_is_refused_and_writes_nothing(pool, settings):
    store = EventStore(pool, settings)
    found, meta = issue_found()
    stream = f"issue-{found.issue_id}"
    await store.append(stream, 0, [(found, meta)])
    with pytest.raises(ConcurrencyError, match="expected 0, is 1"):
        await store.append(stream, 0, [(found, meta)])
    with pytest.raises(ConcurrencyError, match="expected 5, is 1"):
        await store.append(stream, 5, [(found, meta)])
    assert len(await store.load(stream)) == 1


async def test_concurrent_appends_with_the_same_version_one_wins(pool, settings):
    store = EventStore(pool, settings)
    found, meta = issue_found()
    stream = f"issue-{found.issue_id}"
    await store.append(stream, 0, [(found, meta)])
    assign = IssueAssigned(
        issue_id=found.issue_id, responsible_unit="housing", owner="王五", deadline=found.found_at.replace(day=26)
    )
    results = await asyncio.gather(
        *(store.append(stream, 1, [(assign, meta)]) for _ in range(8)), return_exceptions=True
    )
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(isinstance(r, ConcurrencyError) for r in results if isinstance(r, Exception))
    assert [e.stream_version for e in await store.load(stream)] == [1, 2]


async def test_repeated_idempotency_key_returns_the_first_result_and_writes_nothing(pool, settings):
    store = EventStore(pool, settings)
    found, meta = issue_found()
    stream = f"issue-{found.issue_id}"
    key = f"team-1:{uuid4()}"
    first = await store.append(stream, 0, [(found, meta)], idempotency_key=key)
    again = await store.append(stream, 0, [(found, meta)], idempotency_key=key)
    assert not first.duplicate and again.duplicate
    assert [e.event_id for e in again.envelopes] == [e.event_id for e in first.envelopes]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM events WHERE stream_id = $1", stream) == 1
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE key = $1", stream) == 1


async def test_batch_append_is_all_or_nothing(pool, settings):
    store = EventStore(pool, settings)
    a, meta = issue_found()
    b, _ = issue_found()
    await store.append(f"issue-{b.issue_id}", 0, [(b, meta)])
    with pytest.raises(ConcurrencyError):
        await store.append_many(
            [StreamAppend(f"issue-{a.issue_id}", 0, [(a, meta)]), StreamAppend(f"issue-{b.issue_id}", 0, [(b, meta)])]
        )
    assert await store.load(f"issue-{a.issue_id}") == []


async def test_events_are_append_only(pool, settings):
    store = EventStore(pool, settings)
    found, meta = issue_found()
    await store.append(f"issue-{found.issue_id}", 0, [(found, meta)])
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await conn.execute("UPDATE events SET actor = 'x' WHERE stream_id = $1", f"issue-{found.issue_id}")
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await conn.execute("DELETE FROM events")


async def test_an_append_is_one_statement(pool, settings):
    """Once the statement is prepared, an append to several streams sends one query to the server."""
    store = EventStore(pool, settings)
    queries: list[str] = []
    async with pool.acquire() as conn:
        warm = [issue_found() for _ in range(3)]
        await store.append_many([StreamAppend(f"issue-{p.issue_id}", 0, [(p, m)]) for p, m in warm], conn=conn)
        conn.add_query_logger(lambda record: queries.append(record.query))
        batch = [issue_found() for _ in range(3)]
        await store.append_many([StreamAppend(f"issue-{p.issue_id}", 0, [(p, m)]) for p, m in batch], conn=conn)
        await asyncio.sleep(0.05)  # the logger is called soon after the query
        count = len(queries)
    assert count == 1 and "wenming_append" in queries[0]
