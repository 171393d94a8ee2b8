"""Reading a topic whole, for assertions."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from shared.kafka import stop_consumer, topic_partitions
from shared.settings import Settings


async def read_all(settings: Settings, physical_topic: str) -> list[ConsumerRecord]:
    """Every record on the topic now, from the beginning (no consumer group)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, physical_topic)
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[ConsumerRecord] = []
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for recs in batch.values():
                out.extend(recs)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return out
    finally:
        await stop_consumer(consumer)
