"""Benchmark: scoring replay from the topics beside a bare aiokafka consume loop over the same
topic, and the lag from an event's acceptance (EventStore append) to its effect on the daily
score at a steady rate.

`python -m bench.scoring_replay` runs it alone in a fresh database (bench.common.bench_run);
`STEPS` plugs it into `python -m bench`. Sizes: BENCH_SCORING_EVENTS (default 200000),
BENCH_SCORING_RATE (default 500 events/s) and BENCH_SCORING_LAG_S (default 20 s).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import BenchRun, Figure, Figures, Step, bench_run, describe, env_int, per_second
from services.scoring.projections import ScoringProjection
from services.scoring.rules import load_rules, percentile
from shared.events.envelope import DomainEvent, EventEnvelope
from shared.events.inspection import (
    IssueAssigned,
    IssueFound,
    IssueOverdue,
    RectificationClosed,
    RectificationReported,
)
from shared.eventstore import EventMeta, EventStore, StreamAppend
from shared.grid import GridLevel, cached_grid
from shared.kafka import make_consumer, make_producer, stop_consumer, topic_partitions
from shared.outbox import OutboxRelay
from shared.projection import ProjectionRunner, rebuild

describe(
    Figure(
        "scoring_replay_eps", "events/s", "scoring rebuild from inspection.issue (ledger + daily)", "raw_consume_eps"
    ),
    Figure("scoring_bare_consume_eps", "events/s", "bare aiokafka getmany loop over the same topic, same run"),
    Figure("scoring_lag_p50_ms", "ms", "append accepted -> daily score updated, median", None, None, False),
    Figure("scoring_lag_p99_ms", "ms", "append accepted -> daily score updated, 99th percentile", None, 250, False),
)

UNITS = ["urban-management", "housing", "transport", "market-regulation"]


def _lifecycle(rng: random.Random, grid: str, start: datetime) -> list[tuple[DomainEvent, datetime]]:
    """One issue: found, assigned, then closed on time (60 %) or overdue (40 %)."""
    iid = uuid.UUID(int=rng.getrandbits(128), version=4)
    unit = rng.choice(UNITS)
    deadline = start + timedelta(hours=24)
    found = IssueFound.model_construct(
        issue_id=iid,
        grid_path=grid,
        inspection_id=None,
        method="routine",
        category=rng.choice(["sanitation", "street-stall", "construction-site", "other"]),
        case_type="event",
        severity=rng.choice(["minor", "major", "serious"]),
        description="巡查发现",
        location=None,
        photos=[],
        found_at=start,
        standards_version=1,
        deadline_hours=24,
        public_report_id=None,
    )
    out: list[tuple[DomainEvent, datetime]] = [
        (found, start),
        (
            IssueAssigned(issue_id=iid, responsible_unit=unit, owner="专人", deadline=deadline),
            start + timedelta(hours=1),
        ),
    ]
    if rng.random() < 0.6:
        at = start + timedelta(hours=5)
        out.append((RectificationReported(issue_id=iid, responsible_unit=unit, text="已整改", reported_at=at), at))
        out.append(
            (
                RectificationClosed(issue_id=iid, responsible_unit=unit, deadline=deadline, on_time=True),
                at + timedelta(hours=1),
            )
        )
    else:
        overdue = IssueOverdue(
            issue_id=iid,
            responsible_unit=unit,
            deadline=deadline,
            step=1,
            escalation_level="community",
            escalated_to=grid.rsplit("/", 1)[0],
        )
        out.append((overdue, deadline + timedelta(minutes=1)))
    return out


def _envelope(stream: str, version: int, payload: DomainEvent, grid: str, at: datetime) -> EventEnvelope:
    return EventEnvelope.model_construct(
        event_id=uuid.uuid4(),
        type=payload.event_type,
        schema_version=payload.schema_version,
        stream_id=stream,
        stream_version=version,
        occurred_at=at,
        recorded_at=at,
        source="inspection-team-1",
        actor="巡查员",
        grid_path=grid,
        correlation_id=uuid.uuid4(),
        causation_id=None,
        payload=payload.model_dump(mode="json"),
    )


async def _produce(run: BenchRun, n: int) -> int:
    """n events (whole issue lifecycles over four weeks) straight onto inspection.issue."""
    rng = random.Random(4)
    grids = cached_grid(run.settings.district_file).at_level(GridLevel.GRID)
    start = datetime(2026, 10, 4, 16, 0, tzinfo=UTC)
    topic = run.settings.topic("inspection.issue")
    producer = make_producer(run.settings, linger_ms=20)
    await producer.start()
    sent = 0
    try:
        while sent < n:
            grid = rng.choice(grids)
            events = _lifecycle(rng, grid, start + timedelta(minutes=rng.randrange(28 * 24 * 60)))
            first = events[0][0]
            assert isinstance(first, IssueFound)
            iid = first.issue_id
            stream = f"issue-{iid}"
            for v, (payload, at) in enumerate(events, start=1):
                env = _envelope(stream, v, payload, grid, at)
                await producer.send(topic, env.model_dump_json().encode(), key=stream.encode())
                sent += 1
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def _bare_consume(run: BenchRun) -> tuple[int, float]:
    consumer = make_consumer(run.settings, group_id=None)
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, run.settings.topic("inspection.issue"))
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        total = sum(ends.values())
        seen = 0
        t0 = time.perf_counter()
        while seen < total:
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            seen += sum(len(r) for r in batches.values())
        return seen, time.perf_counter() - t0
    finally:
        await stop_consumer(consumer)


async def _lag(run: BenchRun, projection: ScoringProjection, rate: int, seconds: int) -> list[float]:
    """Append new issues at `rate`/s with the relay and the live worker running; the lag of each
    is from its append's return to the commit that applied it (its ledger item and daily row)."""
    store = EventStore(run.pool, run.settings)
    relay = OutboxRelay(run.settings, idle_poll_s=0.05)
    runner = ProjectionRunner(run.settings, run.pool, projection, dead_letter=False)
    tasks = [asyncio.create_task(relay.run()), asyncio.create_task(runner.run())]
    grids = cached_grid(run.settings.district_file).at_level(GridLevel.GRID)
    rng = random.Random(5)
    accepted: dict[uuid.UUID, float] = {}
    lags: list[float] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not (done.is_set() and not accepted):
            pending = list(accepted)
            if pending:
                async with run.pool.acquire() as conn:
                    rows = await conn.fetch(
                        "SELECT event_id FROM projection_applied WHERE projection = 'scoring' AND event_id = ANY($1)",
                        pending,
                    )
                now = time.perf_counter()
                for r in rows:
                    lags.append((now - accepted.pop(r["event_id"])) * 1000)
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(2)  # the worker joins its group
    tick = 0.02
    per_tick = max(1, round(rate * tick))
    t_end = time.perf_counter() + seconds
    next_at = time.perf_counter()
    while time.perf_counter() < t_end:
        appends = []
        for _ in range(per_tick):
            grid = rng.choice(grids)
            payload, _ = _lifecycle(rng, grid, datetime.now(UTC))[0]
            assert isinstance(payload, IssueFound)
            meta = EventMeta(source="inspection-team-1", actor="巡查员", grid_path=grid, occurred_at=datetime.now(UTC))
            appends.append(StreamAppend(f"issue-{payload.issue_id}", 0, [(payload, meta)]))
        result = await store.append_many(appends)
        now = time.perf_counter()
        for env in result.envelopes:
            accepted[env.event_id] = now
        next_at += tick
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    done.set()
    try:
        await asyncio.wait_for(watcher, 30)
    finally:
        relay.stop()
        runner.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
    return lags


async def scoring_bench(run: BenchRun) -> Figures:
    n = env_int("BENCH_SCORING_EVENTS", 200_000)
    rate = env_int("BENCH_SCORING_RATE", 500)
    seconds = env_int("BENCH_SCORING_LAG_S", 20)
    projection = ScoringProjection(load_rules(), cached_grid(run.settings.district_file))
    produced = await _produce(run, n)
    bare_n, bare_s = await _bare_consume(run)
    t0 = time.perf_counter()
    totals = await rebuild(run.settings, run.pool, projection, progress=False)
    replay_s = time.perf_counter() - t0
    # The topic also holds what earlier steps of the run published; the bare loop and the replay
    # both read all of it, so that is the count to compare.
    if totals.applied != bare_n:
        raise RuntimeError(f"replay applied {totals.applied} of the {bare_n} events on the topic")
    lags = await _lag(run, projection, rate, seconds)
    info: dict[str, Any] = {
        "scoring_events": totals.applied,
        "scoring_events_produced_by_step": produced,
        "scoring_replay_s": round(replay_s, 2),
        "scoring_bare_s": round(bare_s, 2),
        "scoring_lag_samples": len(lags),
        "scoring_lag_rate": rate,
    }
    run.info.update(info)
    return {
        "scoring_replay_eps": round(per_second(totals.applied, replay_s), 1),
        "scoring_bare_consume_eps": round(per_second(bare_n, bare_s), 1),
        "scoring_lag_p50_ms": round(percentile(lags, 0.5) or 0.0, 1),
        "scoring_lag_p99_ms": round(percentile(lags, 0.99) or 0.0, 1),
    }


STEPS = [Step("scoring", scoring_bench, "scoring replay vs a bare consume loop; acceptance-to-score lag")]


async def _main() -> None:
    async with bench_run() as run:
        figures = await scoring_bench(run)
    for key, value in figures.items():
        print(f"{key:26} {value:>12,.1f}")
    print(run.info)


if __name__ == "__main__":
    asyncio.run(_main())
