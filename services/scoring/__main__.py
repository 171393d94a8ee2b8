"""`python -m services.scoring` serves the API with the scoring worker and the day-close publisher;
`python -m services.scoring worker` runs only the worker; `python -m services.scoring rebuild`
drops the scoring read models and replays the topics with a progress bar."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from services.scoring.api import build_app
from services.scoring.projections import ScoringProjection
from services.scoring.rules import load_rules
from shared.db import create_pool, migrate
from shared.grid import cached_grid
from shared.projection import ProjectionRunner, rebuild
from shared.service import serve
from shared.settings import get_settings


async def _worker() -> None:
    settings = get_settings()
    pool = await create_pool(settings)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        projection = ScoringProjection(load_rules(), cached_grid(settings.district_file))
        runner = ProjectionRunner(settings, pool, projection)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runner.stop)
        await runner.run()
    finally:
        await pool.close()


async def _rebuild() -> None:
    settings = get_settings()
    pool = await create_pool(settings)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        projection = ScoringProjection(load_rules(), cached_grid(settings.district_file))
        totals = await rebuild(settings, pool, projection, progress=True)
        print(f"scoring rebuilt: {totals.applied} events applied, {totals.dead_lettered} unusable")
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.scoring")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "worker", "rebuild"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "worker":
        asyncio.run(_worker())
    elif args.command == "rebuild":
        asyncio.run(_rebuild())
    else:
        settings = get_settings()
        serve(build_app(settings), settings.scoring_port, settings.http_host)


if __name__ == "__main__":
    main()
