"""The foundation's benchmarks beside their raw limits (issue 2).

- raw_kafka: bare aiokafka produce, then consume, of envelope-sized records;
- raw_pg_insert: bare asyncpg INSERT ... SELECT FROM unnest of event-shaped rows;
- append: EventStore.append_many (500 new issue streams a call) and single-event appends;
- outbox: OutboxRelay publishing the rows those appends left in the outbox, until drained;
- raw_http: a bare FastAPI echo endpoint under uvicorn in a subprocess, hammered with httpx.

Sizes come from BENCH_* environment variables (see bench/README.md).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from fastapi import Body, FastAPI

from bench.common import (
    BenchRun,
    Figures,
    IssueFactory,
    Step,
    env_float,
    env_int,
    free_port,
    http_load,
    per_second,
    served,
)
from shared.eventstore import EventStore, StreamAppend
from shared.kafka import make_consumer, make_producer, stop_consumer, topic_partitions
from shared.outbox import OutboxRelay, outbox_backlog

RAW_TOPIC = "test.events"
"""Logical topic for the bare Kafka records (the catalogue's topic for tests and benchmarks)."""


async def raw_kafka(run: BenchRun) -> Figures:
    """Bare producer (make_producer's settings: acks=all, idempotent) sends N envelope-sized
    records with CloudEvents headers, keyed by stream id, awaiting each window of sends; then a
    bare consumer reads them all back with getmany(max_records=2000)."""
    n = env_int("BENCH_RAW_EVENTS", 200_000)
    window = env_int("BENCH_PRODUCE_WINDOW", 10_000)
    topic = run.settings.topic(RAW_TOPIC)
    sample = IssueFactory.for_settings(run.settings).envelope()
    value = sample.model_dump_json().encode()
    headers = sample.cloudevents_headers()
    keys = [f"issue-{uuid.uuid4()}".encode() for _ in range(n)]
    run.info.update(
        raw_events=n, record_value_bytes=len(value), record_header_bytes=sum(len(k) + len(v) for k, v in headers)
    )

    producer = make_producer(run.settings)
    await producer.start()
    try:
        await producer.partitions_for(topic)  # metadata before the clock starts
        t0 = time.perf_counter()
        for start in range(0, n, window):
            futures = [
                await producer.send(topic, value, key=keys[i], headers=headers)
                for i in range(start, min(n, start + window))
            ]
            await asyncio.gather(*futures)
        produce_s = time.perf_counter() - t0
    finally:
        await producer.stop()

    consumer = make_consumer(run.settings, group_id=None)
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        got = 0
        deadline = time.monotonic() + 120
        t0 = time.perf_counter()
        while got < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=2000)
            got += sum(len(records) for records in batch.values())
            if time.monotonic() > deadline:
                raise TimeoutError(f"consumed {got} of {n} records")
        consume_s = time.perf_counter() - t0
    finally:
        await stop_consumer(consumer)
    return {"raw_produce_eps": per_second(n, produce_s), "raw_consume_eps": per_second(got, consume_s)}


_RAW_TABLE = (
    "CREATE TABLE bench_raw_events (event_id uuid PRIMARY KEY, stream_id text NOT NULL,"
    " stream_version integer NOT NULL, occurred_at timestamptz NOT NULL, payload jsonb NOT NULL)"
)
_RAW_INSERT = (
    "INSERT INTO bench_raw_events (event_id, stream_id, stream_version, occurred_at, payload)"
    " SELECT * FROM unnest($1::uuid[], $2::text[], $3::integer[], $4::timestamptz[], $5::jsonb[])"
)


async def _in_parallel(workers: int, batches: int, one: Any) -> float:
    """Run `one(conn_index, batch_index)` for every batch over `workers` tasks; seconds taken."""
    todo = iter(range(batches))

    async def worker(w: int) -> None:
        for b in todo:
            await one(w, b)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(workers)))
    return time.perf_counter() - t0


async def raw_pg_insert(run: BenchRun) -> Figures:
    """Bare asyncpg: event-shaped rows (uuid, text, int, timestamptz, ~600-byte jsonb) into a table
    with only its primary key, one INSERT ... unnest of 500 rows a statement, 4 connections."""
    n = env_int("BENCH_PG_ROWS", 100_000)
    batch = env_int("BENCH_BATCH", 500)
    workers = env_int("BENCH_PG_CONNECTIONS", 4)
    factory = IssueFactory.for_settings(run.settings)
    payloads = [factory.issue_found()[0].model_dump(mode="json") for _ in range(batch)]
    at = datetime.now(UTC)
    batches = [
        ([uuid.uuid4() for _ in range(k)], [f"issue-{uuid.uuid4()}" for _ in range(k)], [1] * k, [at] * k, payloads[:k])
        for k in (min(batch, n - s) for s in range(0, n, batch))
    ]
    run.info.update(pg_rows=n, pg_payload_bytes=sum(len(orjson.dumps(p)) for p in payloads) // len(payloads))
    async with run.pool.acquire() as conn:
        await conn.execute(_RAW_TABLE)
    conns = [await run.pool.acquire() for _ in range(workers)]
    try:

        async def one(w: int, b: int) -> None:
            await conns[w].execute(_RAW_INSERT, *batches[b])

        seconds = await _in_parallel(workers, len(batches), one)
    finally:
        for c in conns:
            await run.pool.release(c)
    return {"raw_pg_insert_eps": per_second(n, seconds)}


async def append(run: BenchRun) -> Figures:
    """EventStore.append_many: each call 500 new issue streams with one IssueFound each, 4
    connections; then EventStore.append of one event to a new stream (expected version 0), 8
    connections. Both write the outbox rows the outbox step then relays."""
    n = env_int("BENCH_APPEND_EVENTS", 100_000)
    batch = env_int("BENCH_BATCH", 500)
    workers = env_int("BENCH_PG_CONNECTIONS", 4)
    n_single = env_int("BENCH_SINGLE_APPENDS", 5_000)
    single_workers = env_int("BENCH_SINGLE_CONNECTIONS", 8)
    store = EventStore(run.pool, run.settings)
    factory = IssueFactory.for_settings(run.settings)

    async def one_batch(_w: int, b: int) -> None:
        k = min(batch, n - b * batch)
        events = [factory.issue_found() for _ in range(k)]
        await store.append_many([StreamAppend(f"issue-{p.issue_id}", 0, [(p, m)]) for p, m in events])

    batch_s = await _in_parallel(workers, -(-n // batch), one_batch)

    async def one_single(_w: int, _b: int) -> None:
        payload, meta = factory.issue_found()
        await store.append(f"issue-{payload.issue_id}", 0, [(payload, meta)])

    single_s = await _in_parallel(single_workers, n_single, one_single)
    run.info.update(append_events=n, append_single_events=n_single)
    return {"append_eps": per_second(n, batch_s), "append_single_eps": per_second(n_single, single_s)}


async def outbox(run: BenchRun) -> Figures:
    """OutboxRelay over the rows waiting in the outbox: from its start until all are on Kafka;
    then checks the topic holds exactly that many records."""
    async with run.pool.acquire() as conn:
        backlog = await outbox_backlog(conn)
    if backlog == 0:
        return {}
    relay = OutboxRelay(run.settings)
    t0 = time.perf_counter()
    task = asyncio.create_task(relay.run())
    deadline = time.monotonic() + env_float("BENCH_OUTBOX_TIMEOUT_S", 120)
    try:
        while relay.published < backlog:
            if task.done():
                task.result()
                raise RuntimeError("outbox relay stopped early")
            if time.monotonic() > deadline:
                raise TimeoutError(f"relayed {relay.published} of {backlog} outbox rows")
            await asyncio.sleep(0.01)
        seconds = time.perf_counter() - t0
    finally:
        relay.stop()
        await task
    async with run.pool.acquire() as conn:
        left = await outbox_backlog(conn)
    on_topic = await _records_on(run, run.settings.topic("inspection.issue"))
    run.info.update(outbox_rows=backlog, outbox_left=left, outbox_records_on_topic=on_topic)
    if left or on_topic != backlog:
        raise RuntimeError(f"outbox: {backlog} rows, {left} left unsent, {on_topic} records on the topic")
    return {"outbox_eps": per_second(relay.published, seconds)}


async def _records_on(run: BenchRun, topic: str) -> int:
    consumer = make_consumer(run.settings, group_id=None)
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, topic)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        return sum(ends[tp] - starts[tp] for tp in tps)
    finally:
        await stop_consumer(consumer)


def echo_app() -> FastAPI:
    """The bare HTTP limit: one POST route that returns the JSON body it got (uvicorn --factory)."""
    app = FastAPI(title="bench echo")

    @app.post("/echo")
    async def echo(body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        return body

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


async def raw_http(run: BenchRun) -> Figures:
    """uvicorn (one worker, its default loop and parser) serving echo_app on a free loopback
    port; httpx clients keep 32 requests in flight for 5 s after a 1 s warm-up."""
    seconds = env_float("BENCH_HTTP_SECONDS", 5.0)
    concurrency = env_int("BENCH_HTTP_CONCURRENCY", 32)
    clients = env_int("BENCH_HTTP_CLIENTS", 8)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["-m", "uvicorn", "bench.foundation:echo_app", "--factory", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--log-level", "warning", "--no-access-log"]
    body = {"grid_path": "changtai/wuan/c01/g03", "category": "sanitation", "severity": "minor", "count": 1}

    async def post(client: httpx.AsyncClient) -> bool:
        r = await client.post("/echo", json=body)
        return r.status_code == 200

    async with served(args, f"{base}/healthz"):
        load = await http_load(base, post, seconds=seconds, concurrency=concurrency, clients=clients)
    run.info.update(http_requests=load.ok, http_failed=load.failed, http_concurrency=concurrency, http_clients=clients)
    if load.failed:
        raise RuntimeError(f"raw_http: {load.failed} requests failed")
    return {"raw_http_rps": load.rate}


STEPS = [
    Step("raw_kafka", raw_kafka, "bare aiokafka produce and consume"),
    Step("raw_pg_insert", raw_pg_insert, "bare asyncpg batched insert"),
    Step("append", append, "event store appends, batched and single"),
    Step("outbox", outbox, "outbox relay to Kafka"),
    Step("raw_http", raw_http, "bare FastAPI under uvicorn"),
]
