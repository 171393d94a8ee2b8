"""The one place Kafka clients are made: producer, consumer, topic creation, dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from shared.events.topics import TOPICS
from shared.settings import Settings

log = logging.getLogger(__name__)

MAX_RECORD_BYTES = 1_048_576


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
