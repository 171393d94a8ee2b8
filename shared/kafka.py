"""The one place Kafka clients are made: producer, consumer, topic creation, dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from shared.events.topics import TOPICS
from shared.settings import Settings

log = logging.getLogger(__name__)

MAX_RECORD_BYTES = 1_048_576


def _back_off_failed_metadata_updates() -> None:
    """Wait `retry_backoff_ms` after a failed metadata update before the next one may start.

    aiokafka 0.14.0 has none: while every broker is down, a consumer's fetcher asks for metadata,
    the update fails at once (connection refused) and the fetcher asks again, thousands of times a
    second (aio-libs/aiokafka#1155, #496), burning the CPU the rest of the system needs to recover
    and writing megabytes of "Unable connect to node" a second. The Java client backs off by
    `retry.backoff.ms` here; this does the same. Remove when aiokafka does it itself.
    """
    update = AIOKafkaClient._metadata_update
    if getattr(update, "wenming_backoff", False):
        return

    async def metadata_update_with_backoff(self: AIOKafkaClient, cluster_metadata: Any, topics: Any) -> bool:
        ok: bool = await update(self, cluster_metadata, topics)
        if not ok:
            await asyncio.sleep(self._retry_backoff)
        return ok

    metadata_update_with_backoff.wenming_backoff = True  # type: ignore[attr-defined]
    AIOKafkaClient._metadata_update = metadata_update_with_backoff


_back_off_failed_metadata_updates()


def make_producer(settings: Settings, *, transactional_id: str | None = None, linger_ms: int = 5) -> AIOKafkaProducer:
    """Idempotent producer, acks=all: a retry never duplicates, a send is durable when acknowledged."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=linger_ms,
        max_batch_size=256 * 1024,
        transactional_id=transactional_id,
        request_timeout_ms=30_000,
    )


def make_consumer(settings: Settings, *topics: str, group_id: str | None, **kwargs: object) -> AIOKafkaConsumer:
    """A consumer that commits only what the caller says it has applied."""
    opts: dict[str, object] = dict(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
    )
    opts.update(kwargs)
    return AIOKafkaConsumer(*topics, **opts)


async def ensure_topics(
    settings: Settings, logical: Iterable[str] | None = None, *, replication: int | None = None
) -> None:
    """Create the catalogue's topics that do not exist yet (idempotent)."""
    names = list(logical) if logical is not None else list(TOPICS)
    brokers = len(settings.kafka_bootstrap.split(","))
    rf = replication or min(3, brokers)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    for attempt in range(30):
        try:
            await admin.start()
            break
        except KafkaConnectionError:
            if attempt == 29:
                raise
            await asyncio.sleep(1)
    try:
        existing = set(await admin.list_topics())
        new = []
        for name in names:
            spec = TOPICS[name]
            physical = settings.topic(name)
            if physical in existing:
                continue
            configs = {"min.insync.replicas": "2" if rf >= 3 else "1"}
            if spec.compacted:
                configs["cleanup.policy"] = "compact"
            new.append(NewTopic(physical, spec.partitions, rf, topic_configs=configs))
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
            log.info("created topics: %s", ", ".join(t.name for t in new))
    finally:
        await admin.close()


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """Stop a consumer. aiokafka #647: stop() can re-raise the CancelledError of its own
    background task when that task was cancelled before it first ran; that one is not ours."""
    await asyncio.sleep(0)
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


async def topic_partitions(consumer: AIOKafkaConsumer, *topics: str) -> list[TopicPartition]:
    """All partitions of the topics, from fresh cluster metadata (a manual-assign consumer
    has none for topics it has not subscribed to)."""
    cluster = await consumer._client.fetch_all_metadata()
    return [TopicPartition(t, p) for t in topics for p in sorted(cluster.partitions_for_topic(t) or ())]
