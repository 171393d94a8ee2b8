"""`python -m services.dashboard`: the operator dashboard on WENMING_DASHBOARD_PORT (default 8105)."""

from __future__ import annotations

import logging

from services.dashboard.app import build_app, dashboard_port
from shared.service import serve
from shared.settings import get_settings


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = get_settings()
    serve(build_app(settings), dashboard_port(), settings.http_host, timeout_graceful_shutdown=3)


if __name__ == "__main__":
    main()
