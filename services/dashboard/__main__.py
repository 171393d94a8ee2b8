"""`python -m services.dashboard`: the operator dashboard on WENMING_DASHBOARD_PORT (default 8105)."""

from __future__ import annotations

import logging

import uvicorn

from services.dashboard.app import build_app, dashboard_port
from shared.settings import get_settings


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = get_settings()
    # No access log: a query string or header must never end up in a log file.
    uvicorn.run(
        build_app(settings),
        host=settings.http_host,
        port=dashboard_port(),
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=3,
    )


if __name__ == "__main__":
    main()
