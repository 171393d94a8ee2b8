"""The inspection service assembled: HTTP API, problem-list projection, deadline watcher, inbound ingest."""

from __future__ import annotations

from fastapi import FastAPI

from services.inspection import open311
from services.inspection.api import router
from services.inspection.domain import STANDARDS_STREAM, AdoptStandards, standards_decider
from services.inspection.projections import ProblemList
from services.inspection.standards import load_standards
from services.inspection.workers import DeadlineWatcher, InboundIngest
from shared.campaign_time import utcnow
from shared.decider import execute
from shared.eventstore import EventMeta
from shared.grid import cached_grid
from shared.kafka import ensure_topics
from shared.projection import ProjectionRunner
from shared.service import create_app
from shared.settings import Settings


def build_app(settings: Settings, *, workers: bool = True, watcher_interval_s: float = 30.0) -> FastAPI:
    """`workers=False` serves the API only (the projection and watcher then run elsewhere)."""

    async def on_start(app: FastAPI) -> None:
        grid = cached_grid(settings.district_file)
        table = load_standards()
        app.state.grid = grid
        app.state.standards = table
        await ensure_topics(settings)
        # The standards table in force is itself an event (一图一标准): recorded once per version.
        await execute(
            app.state.store,
            standards_decider,
            STANDARDS_STREAM,
            AdoptStandards(table.version, tuple(table.categories.values())),
            EventMeta(source="campaign-office", actor="standards-file", grid_path=grid.district, occurred_at=utcnow()),
            idempotency_key=f"standards:v{table.version}",
        )
        if workers:
            app.state.workers.start("problem-list", ProjectionRunner(settings, app.state.pool, ProblemList()))
            app.state.workers.start(
                "deadline-watcher", DeadlineWatcher(app.state.pool, app.state.store, watcher_interval_s)
            )
            app.state.workers.start(
                "inbound-ingest", InboundIngest(settings, app.state.pool, app.state.store, grid, table)
            )

    app = create_app(
        "Wenming inspection service",
        settings,
        description="The closed loop (闭环): inspections find issues, units rectify them by a deadline, "
        "the campaign office verifies. Authenticate with a department token (Bearer).",
        on_start=on_start,
    )
    app.include_router(router)
    open311.install(app)
    return app
