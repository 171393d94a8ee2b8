"""A deliberately non-idempotent projection (n = n + 1 per event) to prove exactly-once apply."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Sequence

from shared.db import Conn, create_pool
from shared.projection import Applied, Projection, ProjectionRunner
from shared.settings import Settings


class CountingProjection(Projection):
    tables = ("test_counts",)

    def __init__(self, name: str, topics: Sequence[str]):
        self.name = name
        self.topics = topics

    @staticmethod
    async def create_table(conn: Conn) -> None:
        await conn.execute("CREATE TABLE IF NOT EXISTS test_counts (stream_id text PRIMARY KEY, n int NOT NULL)")

    async def apply(self, conn: Conn, events: Sequence[Applied]) -> None:
        await conn.executemany(
            "INSERT INTO test_counts (stream_id, n) VALUES ($1, 1)"
            " ON CONFLICT (stream_id) DO UPDATE SET n = test_counts.n + 1",
            [(env.stream_id,) for env, _ in events],
        )


async def _main(name: str, topic: str) -> None:
    settings = Settings()
    pool = await create_pool(settings)
    runner = ProjectionRunner(settings, pool, CountingProjection(name, [topic]))
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, runner.stop)
    await runner.run()
    await pool.close()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2]))
