"""`python -m services.inspection`: the API on its port, plus its projection and workers.
`python -m services.inspection rebuild`: drop the problem list and replay it from Kafka."""

from __future__ import annotations

import asyncio
import logging
import sys

from services.inspection.app import build_app
from services.inspection.projections import ProblemList
from shared.db import create_pool
from shared.projection import rebuild
from shared.service import serve
from shared.settings import get_settings


async def _rebuild() -> None:
    settings = get_settings()
    pool = await create_pool(settings)
    try:
        totals = await rebuild(settings, pool, ProblemList(), progress=True)
        print(f"rebuilt inspection.problem_list: {totals.applied} events applied")
    finally:
        await pool.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = get_settings()
    if sys.argv[1:] == ["rebuild"]:
        asyncio.run(_rebuild())
        return
    serve(build_app(settings), settings.inspection_port, settings.http_host)


if __name__ == "__main__":
    main()
