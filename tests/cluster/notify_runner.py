"""`python -m tests.cluster.notify_runner`: one instance of notify's workers without its HTTP API
(several instances would fight over one port): the notify projection in its consumer group
(events -> delivery ledger) and the dispatcher (ledger -> channels; one at a time by lock).

Settings come from WENMING_* variables; SIGTERM stops it cleanly, SIGKILL is what tests use.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from services.notify.channels import Channels
from services.notify.config import NotifyConfig
from services.notify.projections import NotifyProjection
from services.notify.worker import Dispatcher
from shared.db import create_pool
from shared.projection import ProjectionRunner
from shared.settings import Settings


async def _main() -> None:
    settings = Settings()
    config = NotifyConfig()
    pool = await create_pool(settings)
    channels = Channels(config)
    try:
        runner = ProjectionRunner(settings, pool, NotifyProjection(settings))
        dispatcher = Dispatcher(settings, pool, config, channels)
        loop = asyncio.get_running_loop()

        def stop() -> None:
            runner.stop()
            dispatcher.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        await asyncio.gather(runner.run(), dispatcher.run())
    finally:
        await channels.aclose()
        await pool.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(_main())
