"""The dashboard assembled: API and page, the feed hub polling the read models, the stream-health sampler."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from services.dashboard.api import router
from services.dashboard.feed import FeedHub
from services.dashboard.health import StreamHealth
from services.dashboard.panels import PanelReader
from services.dashboard.session import SessionSigner
from shared.grid import cached_grid
from shared.service import create_app
from shared.settings import Settings

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_PORT = 8105


def dashboard_port() -> int:
    """WENMING_DASHBOARD_PORT, else 8105."""
    raw = os.environ.get("WENMING_DASHBOARD_PORT", "").strip()
    return int(raw) if raw else DEFAULT_PORT


def _categories() -> dict[str, dict[str, str]]:
    """Category names from the inspection standards table (codes only if it cannot be read)."""
    try:
        from services.inspection.standards import load_standards

        table = load_standards()
        return {
            code: {"name": getattr(c, "name", code), "name_en": getattr(c, "name_en", code)}
            for code, c in table.categories.items()
        }
    except Exception as exc:  # the page falls back to codes
        log.warning("standards table unreadable: %s", exc.__class__.__name__)
        return {}


def build_app(
    settings: Settings, *, poll_s: float = 0.3, health: bool = True, health_interval_s: float = 1.0
) -> FastAPI:
    """`health=False` leaves the stream-health panel unavailable (no Kafka clients)."""

    async def on_start(app: FastAPI) -> None:
        app.state.grid = cached_grid(settings.district_file)
        app.state.signer = SessionSigner()
        app.state.categories = _categories()
        sampler = StreamHealth(settings, app.state.pool, health_interval_s) if health else None
        hub = FeedHub(PanelReader(app.state.pool), sampler, poll_s=poll_s)
        app.state.hub, app.state.health = hub, sampler
        app.state.workers.start("dashboard-feeds", hub)
        if sampler is not None:
            app.state.workers.start("stream-health", sampler)

    app = create_app(
        "Wenming operator dashboard",
        settings,
        description="Live read-only views of the campaign and its streams for the campaign office's operators.",
        on_start=on_start,
    )
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    return app
