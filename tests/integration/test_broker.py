"""The Kafka version we run (4.0, KRaft) does what Wenming needs from aiokafka: consumer groups,
the idempotent producer and transactions (read_committed consumers skip aborted records)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from shared.kafka import make_consumer, make_producer, stop_consumer
from tests.support.kafka import read_all

pytestmark = pytest.mark.integration


async def test_transactions_commit_and_abort(settings):
    topic = settings.topic("test.events")
    marker = uuid.uuid4().hex.encode()
    producer: AIOKafkaProducer = make_producer(settings, transactional_id=f"probe-{uuid.uuid4()}")
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send(topic, b"committed-" + marker, key=b"k")
        await producer.begin_transaction()
        await producer.send(topic, b"aborted-" + marker, key=b"k")
        await producer.abort_transaction()
    finally:
        await producer.stop()
    values = [r.value for r in await read_all(settings, topic) if r.value and marker in r.value]
    assert values == [b"committed-" + marker]


async def test_a_consumer_group_splits_partitions_between_members(settings):
    topic = settings.topic("inspection.issue")  # 12 partitions
    group = f"probe-{uuid.uuid4()}"
    a = make_consumer(settings, topic, group_id=group)
    b = make_consumer(settings, topic, group_id=group)
    await a.start()
    await b.start()
    try:
        for _ in range(100):
            await asyncio.gather(a.getmany(timeout_ms=100), b.getmany(timeout_ms=100))
            pa, pb = a.assignment(), b.assignment()
            if pa and pb and len(pa) + len(pb) == 12:
                break
        assert pa and pb and not (pa & pb) and len(pa | pb) == 12
    finally:
        await stop_consumer(a)
        await stop_consumer(b)


async def test_idempotent_producer_writes_each_send_once(settings):
    topic = settings.topic("test.events")
    marker = uuid.uuid4().hex.encode()
    producer = make_producer(settings)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, marker + str(i).encode(), key=b"same") for i in range(200)])
    finally:
        await producer.stop()
    values = [r.value for r in await read_all(settings, topic) if r.value and r.value.startswith(marker)]
    assert values == [marker + str(i).encode() for i in range(200)]  # once each, in order on one partition
