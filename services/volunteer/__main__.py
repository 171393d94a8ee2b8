"""`python -m services.volunteer`: the API on its port, plus the volunteer read models'
projection runners and the lapsed check-in sweeper as asyncio tasks; SIGTERM stops them
cleanly (uvicorn's shutdown runs the lifespan's end, which stops the tasks and waits for them)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import uvicorn
from fastapi import FastAPI

from services.volunteer.api import create_volunteer_app
from services.volunteer.projections import PROJECTIONS
from services.volunteer.workers import sweep_forever
from shared.projection import ProjectionRunner
from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)


def build_app(settings: Settings) -> FastAPI:
    """The API with its projection runners started on start-up and stopped on shutdown."""

    async def on_start(app: FastAPI) -> None:
        runners = [ProjectionRunner(settings, app.state.pool, p) for p in PROJECTIONS]
        app.state.runners = runners
        app.state.runner_tasks = [asyncio.create_task(r.run(), name=f"projection-{r.projection.name}") for r in runners]
        app.state.stop_sweeper = asyncio.Event()
        app.state.runner_tasks.append(
            asyncio.create_task(sweep_forever(app.state.store, app.state.pool, app.state.stop_sweeper), name="sweeper")
        )

    async def on_stop(app: FastAPI) -> None:
        for r in app.state.runners:
            r.stop()
        app.state.stop_sweeper.set()
        for t in app.state.runner_tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(t, 30)

    return create_volunteer_app(settings, on_start=on_start, on_stop=on_stop)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = get_settings()
    uvicorn.run(
        build_app(settings), host=settings.http_host, port=settings.volunteer_port, log_level="info", access_log=False
    )


if __name__ == "__main__":
    main()
