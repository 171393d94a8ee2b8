"""`python -m services.volunteer`: the API on its port, plus the volunteer read models'
projection runners and the lapsed check-in sweeper as asyncio tasks; SIGTERM stops them
cleanly (uvicorn's shutdown runs the lifespan's end, which stops the tasks and waits for them)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI

from services.volunteer.api import create_volunteer_app
from services.volunteer.projections import PROJECTIONS
from services.volunteer.workers import sweep_forever
from shared.projection import ProjectionRunner
from shared.service import serve
from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)


def build_app(settings: Settings) -> FastAPI:
    """The API with its projection runners started on start-up and stopped on shutdown."""

    async def on_start(app: FastAPI) -> None:
        for projection in PROJECTIONS:
            app.state.workers.start(
                f"projection-{projection.name}", ProjectionRunner(settings, app.state.pool, projection)
            )
        stop_sweeper = asyncio.Event()
        app.state.workers.start_coroutine(
            "check-in-sweeper", sweep_forever(app.state.store, app.state.pool, stop_sweeper), stop_sweeper.set
        )

    return create_volunteer_app(settings, on_start=on_start)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = get_settings()
    serve(build_app(settings), settings.volunteer_port, settings.http_host)


if __name__ == "__main__":
    main()
