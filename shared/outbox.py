"""The outbox relay: publishes committed outbox rows to Kafka, then marks them sent.

- Wakes on LISTEN/NOTIFY (`wenming_outbox`, sent by every append) with a slow poll as a net.
- Reads unsent rows by id and marks each one sent after Kafka acknowledged it; no high-water
  mark, so a row whose transaction committed late is still found.
- Crash between send and mark: the rows are sent again (at least once); consumers dedupe by
  event id, which the record carries in its value and its `ce_id` header.
- One relay at a time holds a PostgreSQL advisory lock (leader election); others wait, so
  several instances can run and one aggregate's events keep their order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka.errors import KafkaError

from shared.db import DB_ERRORS, Conn, connect
from shared.kafka import make_producer
from shared.settings import Settings

log = logging.getLogger(__name__)

RELAY_LOCK = 7_305_002
_FETCH = "SELECT id, topic, key, value, headers FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1"
_MARK = "UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[])"
_PRUNE = "DELETE FROM outbox WHERE sent_at < now() - make_interval(secs => $1)"
PRUNE_EVERY_S = 600.0


class OutboxRelay:
    def __init__(self, settings: Settings, *, batch: int | None = None, idle_poll_s: float = 1.0):
        self.settings = settings
        self.batch = batch or settings.outbox_batch
        self.idle_poll_s = idle_poll_s
        self.published = 0
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self.is_leader = False
        self._last_prune = 0.0

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        """Relay until stopped; reconnects after database or broker failures."""
        while not self._stop.is_set():
            try:
                await self._run_once()
            except (*DB_ERRORS, KafkaError) as exc:
                if self._stop.is_set():
                    break
                log.warning("outbox relay: %s; retrying in 1s", exc.__class__.__name__)
                self.is_leader = False
                await asyncio.sleep(1)

    async def _run_once(self) -> None:
        conn = await connect(self.settings)
        producer = None
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK):
                if self._stop.is_set():
                    return
                await asyncio.sleep(1)
            self.is_leader = True
            await conn.add_listener("wenming_outbox", lambda *_: self._wake.set())
            producer = make_producer(self.settings)
            await producer.start()
            while not self._stop.is_set():
                sent = await self.relay_batch(conn, producer)
                if sent == 0 and time.monotonic() - self._last_prune > PRUNE_EVERY_S:
                    await self.prune(conn)
                if sent == 0:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.idle_poll_s)
        finally:
            self.is_leader = False
            if producer is not None:
                await producer.stop()
            await conn.close(timeout=5)

    async def prune(self, conn: Conn) -> int:
        """Delete rows sent longer ago than the retention; unsent rows are never touched."""
        self._last_prune = time.monotonic()
        status = await conn.execute(_PRUNE, self.settings.outbox_retention_hours * 3600)
        return int(status.split()[-1])

    async def relay_batch(self, conn: Conn, producer: object) -> int:
        """Publish one batch of unsent rows and mark them sent; returns how many."""
        rows = await conn.fetch(_FETCH, self.batch)
        if not rows:
            return 0
        futures = []
        for r in rows:
            headers = [(k, v.encode()) for k, v in r["headers"].items()]
            futures.append(
                await producer.send(  # type: ignore[attr-defined]
                    r["topic"], r["value"], key=r["key"].encode(), headers=headers
                )
            )
        await asyncio.gather(*futures)
        await conn.execute(_MARK, [r["id"] for r in rows])
        self.published += len(rows)
        return len(rows)


async def outbox_backlog(conn: Conn) -> int:
    """Rows accepted but not yet on Kafka."""
    return int(await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL"))


async def wait_until_drained(conn: Conn, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while await outbox_backlog(conn):
        if time.monotonic() > deadline:
            raise TimeoutError("outbox not drained")
        await asyncio.sleep(0.05)


async def _main() -> None:
    import signal

    from shared.settings import get_settings

    relay = OutboxRelay(get_settings())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, relay.stop)
    await relay.run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(_main())
