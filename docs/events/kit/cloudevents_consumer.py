"""The same reading through the standard CloudEvents SDK (pip install cloudevents aiokafka):
Wenming's records are CloudEvents 1.0 in Kafka binary mode, so any CloudEvents reader can use them.

    python cloudevents_consumer.py --bootstrap 127.0.0.1:9092 --topic wenming.inspection.issue --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aiokafka import AIOKafkaConsumer
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.formats.json import JSONFormat


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", default="wenming.inspection.issue")
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    consumer = AIOKafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen: set[str] = set()
    until = time.monotonic() + args.seconds
    try:
        while time.monotonic() < until:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    event = from_binary(KafkaMessage(headers=dict(r.headers), key=r.key, value=r.value), JSONFormat())
                    if event.get_id() in seen:
                        continue
                    seen.add(event.get_id())
                    data = event.get_data()
                    assert isinstance(data, dict)
                    print(
                        f"{event.get_time().isoformat()[:19]}  {event.get_type():<22} {event.get_source():<30} "
                        f"subject={event.get_subject()}  issue={data['payload'].get('issue_id', '')[:8]}",
                        flush=True,
                    )
    finally:
        await consumer.stop()
        print(f"{len(seen)} CloudEvents read", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
