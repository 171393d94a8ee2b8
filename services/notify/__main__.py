"""`python -m services.notify`: the API on its port, plus the notify projection, dispatcher and
reminder scheduler as tasks; SIGTERM stops them cleanly (uvicorn's shutdown runs the lifespan's end)."""

from __future__ import annotations

import logging

from services.notify.app import build_app
from shared.service import serve
from shared.settings import get_settings


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = get_settings()
    serve(build_app(settings), settings.notify_port, settings.http_host)


if __name__ == "__main__":
    main()
