"""The consumer/projection runner: Kafka topics in, read models in PostgreSQL out.

Each batch is applied in one PostgreSQL transaction that also records the event ids it
applied and the next offset per partition, so a crash and restart never applies an event
twice (a re-sent duplicate with a new offset is skipped by its event id; ids are remembered for
`projection_dedupe_days`, then forgotten so the set does not grow for ever). The runner seeks
to the offsets stored in PostgreSQL, not to Kafka's committed ones (those are committed only
for lag monitoring). Records that cannot be decoded or validated go to the dead-letter topic
with the reason in headers, and the runner goes on.

`rebuild()` empties a read model and replays its topics from the beginning with a progress bar.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from tqdm import tqdm

from shared.campaign_time import utcnow
from shared.db import DB_ERRORS, Conn
from shared.events.envelope import DomainEvent, EventEnvelope
from shared.events.registry import EventDecodeError, registry
from shared.kafka import make_consumer, make_producer, stop_consumer, topic_partitions
from shared.settings import Settings

PRUNE_EVERY_S = 600.0
PRUNE_BATCH = 10_000

log = logging.getLogger(__name__)

Applied = tuple[EventEnvelope, DomainEvent]


class Projection(ABC):
    """A read model kept from topics. `apply` runs inside the runner's transaction."""

    name: str
    topics: Sequence[str]
    tables: Sequence[str] = ()

    @abstractmethod
    async def apply(self, conn: Conn, events: Sequence[Applied]) -> None: ...

    async def reset(self, conn: Conn) -> None:
        """Empty the read model (rebuild starts from here)."""
        if self.tables:
            await conn.execute("TRUNCATE " + ", ".join(self.tables))


def _lock_id(name: str) -> int:
    return zlib.crc32(f"projection:{name}".encode())


@dataclass
class Decoded:
    """A fetched batch and, per record, its decoded event or why it is unusable."""

    batches: dict[TopicPartition, list[ConsumerRecord]]
    results: list[tuple[ConsumerRecord, Applied | str]]


@dataclass
class BatchOutcome:
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0


class DeadLetters:
    """Sends unusable records to the dead-letter topic with why, where from and who refused them."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer, consumer_name: str):
        self.topic = settings.topic("deadletter")
        self.producer = producer
        self.consumer_name = consumer_name

    async def send(self, record: ConsumerRecord, reason: str) -> None:
        headers = [
            *list(record.headers or ()),
            ("wm_dlq_reason", reason[:1000].encode()),
            ("wm_dlq_source_topic", record.topic.encode()),
            ("wm_dlq_source_partition", str(record.partition).encode()),
            ("wm_dlq_source_offset", str(record.offset).encode()),
            ("wm_dlq_consumer", self.consumer_name.encode()),
            ("wm_dlq_at", utcnow().isoformat().encode()),
        ]
        value = record.value if record.value is not None else b""
        await self.producer.send_and_wait(self.topic, value, key=record.key, headers=headers)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: ProjectionRunner):
        self.runner = runner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self.runner.batch_lock:  # let the batch in flight finish first
            pass

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.runner.seek_to_stored(list(assigned))


class ProjectionRunner:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, projection: Projection, *, dead_letter: bool = True):
        self.settings = settings
        self.pool = pool
        self.projection = projection
        self.dead_letter = dead_letter
        self.group_id = f"{settings.topic_prefix}.projection.{projection.name}"
        self.topics = [settings.topic(t) for t in projection.topics]
        self.batch_lock = asyncio.Lock()
        self.consumer: AIOKafkaConsumer | None = None
        self.totals = BatchOutcome()
        self._stop = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._dlq: DeadLetters | None = None
        self._next_prune = time.monotonic() + PRUNE_EVERY_S

    def stop(self) -> None:
        self._stop.set()

    async def prune_applied(self, now: datetime | None = None) -> int:
        """Forget this projection's applied event ids older than `projection_dedupe_days`, in
        batches (an idle runner does this every 10 minutes); returns how many were forgotten."""
        self._next_prune = time.monotonic() + PRUNE_EVERY_S
        cutoff = (now or utcnow()) - timedelta(days=self.settings.projection_dedupe_days)
        total = 0
        async with self.pool.acquire() as conn:
            while True:
                status = await conn.execute(
                    "DELETE FROM projection_applied WHERE ctid = ANY(ARRAY(SELECT ctid FROM projection_applied"
                    " WHERE projection = $1 AND applied_at < $2 LIMIT $3))",
                    self.projection.name,
                    cutoff,
                    PRUNE_BATCH,
                )
                n = int(status.split()[-1])
                total += n
                if n < PRUNE_BATCH:
                    break
        if total:
            log.info("projection %s: forgot %d applied event ids older than %s", self.projection.name, total, cutoff)
        return total

    async def seek_to_stored(self, partitions: list[TopicPartition]) -> None:
        assert self.consumer is not None
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT topic, partition, next_offset FROM projection_offsets WHERE projection = $1",
                self.projection.name,
            )
        stored = {(r["topic"], r["partition"]): r["next_offset"] for r in rows}
        fresh = []
        for tp in partitions:
            off = stored.get((tp.topic, tp.partition))
            if off is None:
                fresh.append(tp)
            else:
                self.consumer.seek(tp, off)
        if fresh:
            await self.consumer.seek_to_beginning(*fresh)

    async def _start(self, *, group: bool) -> None:
        if self.dead_letter:
            self._producer = make_producer(self.settings)
            await self._producer.start()
            self._dlq = DeadLetters(self.settings, self._producer, self.projection.name)
        if group:
            self.consumer = make_consumer(self.settings, group_id=self.group_id)
            self.consumer.subscribe(self.topics, listener=_Rebalance(self))
            await self.consumer.start()
        else:
            self.consumer = make_consumer(self.settings, group_id=None)
            await self.consumer.start()
            tps = await topic_partitions(self.consumer, *self.topics)
            self.consumer.assign(tps)
            await self.seek_to_stored(tps)

    async def _close(self) -> None:
        if self.consumer is not None:
            await stop_consumer(self.consumer)
        if self._producer is not None:
            await self._producer.stop()

    async def run(self) -> None:
        """Consume in the projection's consumer group until stopped (shared lock against rebuild).
        A lost database or broker connection restarts the consumer after a pause; the offsets
        stored with the read model make the restart exact."""
        while not self._stop.is_set():
            try:
                await self._run_once()
            except (*DB_ERRORS, KafkaError) as exc:
                if self._stop.is_set():
                    break
                log.warning("projection %s: %s; restarting in 1s", self.projection.name, exc.__class__.__name__)
                await asyncio.sleep(1)

    async def _run_once(self) -> None:
        async with self.pool.acquire() as lock_conn:
            await lock_conn.execute("SELECT pg_advisory_lock_shared($1)", _lock_id(self.projection.name))
            try:
                await self._start(group=True)
                try:
                    while not self._stop.is_set():
                        if await self._poll_once(timeout_ms=200) == 0 and time.monotonic() > self._next_prune:
                            await self.prune_applied()
                finally:
                    await self._close()
            finally:
                await lock_conn.execute("SELECT pg_advisory_unlock_shared($1)", _lock_id(self.projection.name))

    async def _poll_once(self, timeout_ms: int) -> int:
        assert self.consumer is not None
        batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=self.settings.projection_batch)
        if not batches:
            return 0
        async with self.batch_lock:
            outcome = await self.process(batches)
        if self.consumer._group_id is not None:
            try:
                await self.consumer.commit({tp: recs[-1].offset + 1 for tp, recs in batches.items()})
            except Exception as exc:  # a rebalance in between: the stored offsets are what counts
                log.info("offset commit skipped: %s", exc)
        return outcome.applied + outcome.duplicates + outcome.dead_lettered

    @staticmethod
    def decode_batch(batches: dict[TopicPartition, list[ConsumerRecord]]) -> Decoded:
        """Decode every record (CPU only, no I/O): an event, or the reason it is unusable."""
        results: list[tuple[ConsumerRecord, Applied | str]] = []
        for records in batches.values():
            for rec in records:
                try:
                    results.append((rec, registry.decode(rec.value)))
                except EventDecodeError as exc:
                    results.append((rec, exc.reason))
        return Decoded(batches, results)

    async def process(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> BatchOutcome:
        """Apply one fetched batch exactly once (decode, then apply_decoded)."""
        return await self.apply_decoded(self.decode_batch(batches))

    async def apply_decoded(self, decoded: Decoded) -> BatchOutcome:
        """Skip what the stored offsets say is done (a batch fetched before a rebalance may come
        again), dead-letter the poison, apply the rest, store the offsets: one transaction."""
        batches = decoded.batches
        outcome = BatchOutcome()
        name = self.projection.name
        async with self.pool.acquire() as conn, conn.transaction():
            done = {
                (r["topic"], r["partition"]): r["next_offset"]
                for r in await conn.fetch(
                    "SELECT topic, partition, next_offset FROM projection_offsets"
                    " WHERE projection = $1 AND topic = ANY($2::text[]) FOR UPDATE",
                    name,
                    list({tp.topic for tp in batches}),
                )
            }
            good: list[Applied] = []
            for rec, result in decoded.results:
                if rec.offset < done.get((rec.topic, rec.partition), 0):
                    outcome.duplicates += 1
                elif isinstance(result, str):
                    outcome.dead_lettered += 1
                    if self._dlq is not None:
                        await self._dlq.send(rec, result)
                    log.warning("dead-lettered %s[%d]@%d: %s", rec.topic, rec.partition, rec.offset, result)
                else:
                    good.append(result)
            if good:
                rows = await conn.fetch(
                    "INSERT INTO projection_applied (projection, event_id) SELECT $1, unnest($2::uuid[])"
                    " ON CONFLICT DO NOTHING RETURNING event_id",
                    name,
                    [env.event_id for env, _ in good],
                )
                fresh_ids = {r["event_id"] for r in rows}
                seen = set()
                fresh = []
                for env, payload in good:
                    if env.event_id in fresh_ids and env.event_id not in seen:
                        seen.add(env.event_id)
                        fresh.append((env, payload))
                outcome.duplicates += len(good) - len(fresh)
                if fresh:
                    await self.projection.apply(conn, fresh)
                outcome.applied = len(fresh)
            await conn.execute(
                "INSERT INTO projection_offsets (projection, topic, partition, next_offset)"
                " SELECT $1, t, p, o FROM unnest($2::text[], $3::int[], $4::bigint[]) AS x(t, p, o)"
                " ON CONFLICT (projection, topic, partition)"
                " DO UPDATE SET next_offset = GREATEST(projection_offsets.next_offset, EXCLUDED.next_offset)",
                name,
                [tp.topic for tp in batches],
                [tp.partition for tp in batches],
                [recs[-1].offset + 1 for recs in batches.values()],
            )
        self.totals.applied += outcome.applied
        self.totals.duplicates += outcome.duplicates
        self.totals.dead_lettered += outcome.dead_lettered
        return outcome

    async def catch_up(self, *, progress: bool = False) -> BatchOutcome:
        """Consume (without a group) up to the end offsets seen at the start, then return."""
        await self._start(group=False)
        try:
            assert self.consumer is not None
            tps = list(self.consumer.assignment())
            ends = await self.consumer.end_offsets(tps)
            starts = {tp: await self.consumer.position(tp) for tp in tps}
            total = sum(max(0, ends[tp] - starts[tp]) for tp in tps)
            bar = tqdm(total=total, desc=f"rebuild {self.projection.name}", unit="ev", disable=not progress)
            remaining = {tp for tp in tps if starts[tp] < ends[tp]}
            in_flight: asyncio.Task[BatchOutcome] | None = None
            while remaining:
                batches = await self.consumer.getmany(
                    *remaining, timeout_ms=500, max_records=self.settings.projection_batch
                )
                trimmed = {tp: [r for r in recs if r.offset < ends[tp]] for tp, recs in batches.items()}
                trimmed = {tp: recs for tp, recs in trimmed.items() if recs}
                if trimmed:
                    # Decode this batch while the previous one's transaction runs in PostgreSQL.
                    decoded = self.decode_batch(trimmed)
                    if in_flight is not None:
                        await in_flight
                    in_flight = asyncio.create_task(self.apply_decoded(decoded))
                    bar.update(sum(len(r) for r in trimmed.values()))
                for tp in list(remaining):
                    if await self.consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
            if in_flight is not None:
                await in_flight
            bar.close()
            return self.totals
        finally:
            await self._close()


async def rebuild(
    settings: Settings, pool: asyncpg.Pool, projection: Projection, *, progress: bool = True, wait: bool = False
) -> BatchOutcome:
    """Drop the read model and replay its topics from the beginning.

    Holds the projection's lock exclusively: a running consumer of the same projection must be
    stopped first (or `wait=True` waits for it).
    """
    async with pool.acquire() as lock_conn:
        lock = _lock_id(projection.name)
        if wait:
            await lock_conn.execute("SELECT pg_advisory_lock($1)", lock)
        elif not await lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", lock):
            raise RuntimeError(f"projection {projection.name} is being consumed; stop its service first")
        try:
            async with pool.acquire() as conn, conn.transaction():
                await projection.reset(conn)
                await conn.execute("DELETE FROM projection_applied WHERE projection = $1", projection.name)
                await conn.execute("DELETE FROM projection_offsets WHERE projection = $1", projection.name)
            runner = ProjectionRunner(settings, pool, projection, dead_letter=False)
            return await runner.catch_up(progress=progress)
        finally:
            await lock_conn.execute("SELECT pg_advisory_unlock($1)", lock)
