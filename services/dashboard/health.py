"""Stream health, sampled about once a second: events per second per topic (end-offset deltas),
consumer lag per service and group, dead letters held, and the outbox backlog."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from shared.db import DB_ERRORS
from shared.events.topics import TOPICS
from shared.kafka import make_consumer, stop_consumer, topic_partitions
from shared.outbox import outbox_backlog
from shared.settings import Settings

log = logging.getLogger(__name__)

Panel = dict[str, Any]


def service_of(group: str) -> str:
    """The service a consumer group belongs to: `projection.<service>.<name>` or `<service>.<name>`."""
    parts = group.split(".")
    if parts[0] == "projection" and len(parts) > 1:
        return parts[1]
    return parts[0]


def rates(before: dict[str, int], after: dict[str, int], seconds: float) -> dict[str, float]:
    """Events per second per topic between two samples of summed end offsets."""
    if seconds <= 0:
        return {t: 0.0 for t in after}
    return {t: round(max(0, after[t] - before.get(t, after[t])) / seconds, 1) for t in after}


class StreamHealth:
    """Samples Kafka and the outbox; `latest` is the health panel (unavailable until the first sample)."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, interval_s: float = 1.0):
        self.settings = settings
        self.pool = pool
        self.interval_s = interval_s
        self.latest: Panel = {"available": False}
        self._stop = asyncio.Event()
        self._prefix = settings.topic_prefix + "."
        self._ends: dict[str, int] = {}
        self._at = 0.0

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Sample until stopped; reconnects after broker or database failures."""
        while not self._stop.is_set():
            consumer = make_consumer(self.settings, group_id=None)
            admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap)
            try:
                await consumer.start()
                await admin.start()
                while not self._stop.is_set():
                    self.latest = await self.sample(consumer, admin)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), self.interval_s)
            except (*DB_ERRORS, KafkaError) as exc:
                log.warning("stream health: %s; retrying", exc.__class__.__name__)
                self.latest = {**self.latest, "available": False}
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 2.0)
            finally:
                await stop_consumer(consumer)
                with contextlib.suppress(Exception):
                    await admin.close()

    async def sample(self, consumer: AIOKafkaConsumer, admin: AIOKafkaAdminClient) -> Panel:
        physical = {self.settings.topic(name): name for name in TOPICS}
        tps = await topic_partitions(consumer, *physical)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps) if tps else {}
        now = time.monotonic()
        per_topic: dict[str, int] = {name: 0 for name in TOPICS}
        for tp, end in ends.items():
            per_topic[physical[tp.topic]] += end
        eps = rates(self._ends, per_topic, now - self._at) if self._ends else {t: 0.0 for t in per_topic}
        self._ends, self._at = per_topic, now

        dlq = [tp for tp in tps if physical[tp.topic] == "deadletter"]
        firsts: dict[TopicPartition, int] = await consumer.beginning_offsets(dlq) if dlq else {}
        dead = sum(ends[tp] - firsts.get(tp, 0) for tp in dlq)

        groups = []
        for entry in await admin.list_consumer_groups():
            group = str(entry[0])
            if not group.startswith(self._prefix):
                continue
            committed = await admin.list_consumer_group_offsets(group)
            lag, topics = 0, set()
            for tp, om in committed.items():
                if tp.topic not in physical or om.offset < 0:
                    continue
                topics.add(physical[tp.topic])
                lag += max(0, ends.get(tp, om.offset) - om.offset)
            name = group[len(self._prefix) :]
            groups.append({"group": name, "service": service_of(name), "lag": lag, "topics": sorted(topics)})

        async with self.pool.acquire() as conn:
            backlog = await outbox_backlog(conn)
        return {
            "available": True,
            "topics": [
                {"topic": name, "eps": eps[name], "end": per_topic[name]}
                for name in sorted(per_topic)
                if name != "test.events"
            ],
            "groups": sorted(groups, key=lambda g: (g["service"], g["group"])),
            "deadletter": dead,
            "outbox_backlog": backlog,
        }
