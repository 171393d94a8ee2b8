"""What every service's HTTP side shares: app factory, lifespan (pool, store, auth), error mapping,
body-size limit, idempotency keys and health."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI, Header, Request, Response, status
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from shared.auth import Principal, TokenAuthenticator
from shared.db import create_pool, migrate
from shared.decider import DomainError
from shared.eventstore import ConcurrencyError, EventStore
from shared.settings import Settings
from shared.workers import EXIT_WORKER_FAILED, Workers, on_worker_failure

log = logging.getLogger(__name__)

Hook = Callable[[FastAPI], Awaitable[None]]


class OrjsonRequest(Request):
    """A request whose JSON body is parsed by orjson (several times faster than the stdlib's)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class OrjsonRoute(APIRoute):
    """Routes that hand their endpoints an OrjsonRequest. Use `APIRouter(route_class=OrjsonRoute)`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def orjson_handler(request: Request) -> Response:
            return await handler(OrjsonRequest(request.scope, request.receive))

        return orjson_handler


def create_app(
    title: str,
    settings: Settings,
    *,
    description: str = "",
    on_start: Hook | None = None,
    on_stop: Hook | None = None,
) -> FastAPI:
    """A FastAPI app with the pool, event store, token authenticator and the service's background
    `Workers` on `app.state`. `on_start` starts workers there; they are stopped before `on_stop`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(settings)
        async with pool.acquire() as conn:
            await migrate(conn)
        app.state.settings = settings
        app.state.pool = pool
        app.state.store = EventStore(pool, settings)
        app.state.auth = TokenAuthenticator(pool)
        app.state.workers = Workers()
        try:
            if on_start is not None:
                await on_start(app)
            yield
        finally:
            await app.state.workers.stop()
            if on_stop is not None:
                await on_stop(app)
            await pool.close()

    app = FastAPI(title=title, description=description, lifespan=lifespan, version="1")

    @app.exception_handler(DomainError)
    async def _domain_error(_: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_409_CONFLICT)

    @app.exception_handler(ConcurrencyError)
    async def _conflict(_: Request, exc: ConcurrencyError) -> JSONResponse:
        return JSONResponse(
            {"detail": f"changed concurrently, reload and retry ({exc.detail})"}, status_code=status.HTTP_409_CONFLICT
        )

    limit = settings.body_limit_bytes

    @app.middleware("http")
    async def _body_limit(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return JSONResponse(
                {"detail": f"body larger than {limit} bytes"}, status_code=status.HTTP_413_CONTENT_TOO_LARGE
            )
        return await call_next(request)

    _document_error_responses(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz(request: Request) -> JSONResponse:
        """200 while every background worker runs; 503 naming the one that died."""
        workers: Workers | None = getattr(request.app.state, "workers", None)
        status_of = workers.status() if workers is not None else {}
        failing = workers is not None and bool(workers.failed)
        return JSONResponse(
            {"status": "failing" if failing else "ok", "workers": status_of}, status_code=503 if failing else 200
        )

    return app


def serve(app: FastAPI, port: int, host: str, **uvicorn_options: Any) -> None:
    """Run `app` under uvicorn until SIGTERM/SIGINT; if one of its workers dies, shut down cleanly
    and exit with code 70 so the supervisor restarts the process. No access log: a query string
    must never end up in a log file."""
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False, **uvicorn_options)
    )
    died: list[str] = []

    def shut_down(worker: str) -> None:
        died.append(worker)
        server.should_exit = True

    on_worker_failure(shut_down)
    try:
        server.run()
    finally:
        on_worker_failure(None)
    if died:
        log.critical("exiting with code %d: worker %s died", EXIT_WORKER_FAILED, ", ".join(died))
        sys.exit(EXIT_WORKER_FAILED)


_ERRORS: dict[str, str] = {
    "400": "Malformed request (e.g. a body that is not JSON)",
    "401": "Missing, invalid or revoked bearer token",
    "403": "The token lacks the scope, or the target lies outside the department's area",
    "404": "No such resource",
    "409": "Refused by the campaign's rules, or changed concurrently (reload and retry)",
    "413": "Request body larger than the limit",
    "422": "Invalid request",
}
_PROBLEM = {
    "content": {
        "application/json": {"schema": {"type": "object", "properties": {"detail": {}}, "required": ["detail"]}}
    }
}


def _document_error_responses(app: FastAPI) -> None:
    """Add the error answers every route may give to the OpenAPI document: 401/403 where a token is
    required, 404 where the path names a resource, 409 on commands, 413 and 422 where there is a body."""
    make_schema = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = make_schema()
        for path, item in schema.get("paths", {}).items():
            for method, op in item.items():
                if not isinstance(op, dict) or "responses" not in op:
                    continue
                codes = []
                if op.get("security"):
                    codes += ["401", "403"]
                if "{" in path:
                    codes.append("404")
                if method in ("post", "put", "patch", "delete"):
                    codes.append("409")
                if "requestBody" in op:
                    codes += ["400", "413", "422"]
                if op.get("parameters"):
                    codes += ["400", "422"]
                for code in codes:
                    op["responses"].setdefault(code, {"description": _ERRORS[code], **_PROBLEM})
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def idempotency_key(principal: Principal, key: str | None, service: str) -> str | None:
    """Keys are scoped per service and department, so neither two departments nor one department's
    calls to two services can collide (all services share one key table)."""
    return None if key is None else f"{service}:{principal.department}:{key}"


IdempotencyKey = Header(
    default=None,
    alias="Idempotency-Key",
    max_length=200,
    description="Repeat a command safely: the same key returns the first result.",
)
