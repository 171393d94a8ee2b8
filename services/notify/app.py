"""The notify service assembled: HTTP API, the notify projection (events -> ledger), the
dispatcher (ledger -> channels) and the reminder scheduler."""

from __future__ import annotations

from fastapi import FastAPI

from services.notify.api import router
from services.notify.channels import Channels
from services.notify.config import NotifyConfig
from services.notify.projections import NotifyProjection
from services.notify.worker import Digester, Dispatcher, ReminderScheduler
from shared.kafka import ensure_topics
from shared.projection import ProjectionRunner
from shared.service import create_app
from shared.settings import Settings


def build_app(settings: Settings, config: NotifyConfig | None = None, *, workers: bool = True) -> FastAPI:
    """`workers=False` serves the API only (the workers then run elsewhere)."""
    cfg = config or NotifyConfig()

    async def on_start(app: FastAPI) -> None:
        await ensure_topics(settings)
        if workers:
            channels = Channels(cfg)
            app.state.channels = channels
            app.state.workers.start(
                "notify-projection", ProjectionRunner(settings, app.state.pool, NotifyProjection(settings))
            )
            app.state.workers.start("dispatcher", Dispatcher(settings, app.state.pool, cfg, channels))
            app.state.workers.start(
                "reminders", ReminderScheduler(settings, app.state.pool, poll_s=cfg.reminder_poll_s)
            )
            app.state.workers.start("digests", Digester(app.state.pool, poll_s=cfg.reminder_poll_s))

    async def on_stop(app: FastAPI) -> None:
        if hasattr(app.state, "channels"):
            await app.state.channels.aclose()

    app = create_app(
        "Wenming notify",
        settings,
        description="Tells the right person of an assignment, a deadline, an escalation, a ranking.",
        on_start=on_start,
        on_stop=on_stop,
    )
    app.include_router(router)
    return app
