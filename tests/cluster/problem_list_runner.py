"""`python -m tests.cluster.problem_list_runner`: one instance of the inspection problem-list
consumer (ProjectionRunner in the projection's consumer group), as a service would run it.

The projection also counts, per stream, how many events it applied (`cluster_applied`, in the
same transaction), so a test can prove that no event was applied twice across instances.
Settings come from WENMING_* variables; SIGTERM stops it cleanly, SIGKILL is what tests use.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence

from services.inspection.projections import ProblemList
from shared.db import Conn, create_pool
from shared.projection import Applied, ProjectionRunner
from shared.settings import Settings

COUNT_TABLE = "CREATE TABLE IF NOT EXISTS cluster_applied (stream_id text PRIMARY KEY, n integer NOT NULL)"


class CountedProblemList(ProblemList):
    """The problem list plus a non-idempotent count of applied events per stream."""

    async def apply(self, conn: Conn, events: Sequence[Applied]) -> None:
        await super().apply(conn, events)
        await conn.executemany(
            "INSERT INTO cluster_applied (stream_id, n) VALUES ($1, 1)"
            " ON CONFLICT (stream_id) DO UPDATE SET n = cluster_applied.n + 1",
            [(env.stream_id,) for env, _ in events],
        )


async def _main() -> None:
    settings = Settings()
    pool = await create_pool(settings)
    try:
        async with pool.acquire() as conn:
            await conn.execute(COUNT_TABLE)
        runner = ProjectionRunner(settings, pool, CountedProblemList())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runner.stop)
        await runner.run()
    finally:
        await pool.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(_main())
