"""PostgreSQL access: the connection pool factory and the one migration runner."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from shared.settings import ROOT, Settings

log = logging.getLogger(__name__)

Conn = asyncpg.Connection | PoolConnectionProxy
"""A connection, whether made alone or taken from a pool."""

DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
"""What a lost, restarting or refusing database raises: every retry loop catches these and tries
again on a fresh connection. InternalClientError belongs here: asyncpg raises it ("cannot switch
to state 15; another operation is in progress") when the server shuts down mid-commit, as the fault
suite's PostgreSQL restart showed; uncaught, it ended the notify dispatcher."""

MIGRATION_LOCK = 7_305_001  # advisory lock id: one migrator at a time


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=_dumps, decoder=orjson.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=_dumps, decoder=orjson.loads, schema="pg_catalog")


async def create_pool(settings: Settings, *, min_size: int | None = None, max_size: int | None = None) -> asyncpg.Pool:
    """A pool whose connections encode and decode json/jsonb with orjson."""
    pool = await asyncpg.create_pool(
        settings.pg_dsn.get_secret_value(),
        min_size=settings.pg_pool_min if min_size is None else min_size,
        max_size=settings.pg_pool_max if max_size is None else max_size,
        init=_init_connection,
        command_timeout=60,
    )
    assert pool is not None
    return pool


async def connect(settings: Settings) -> asyncpg.Connection:
    conn = await asyncpg.connect(settings.pg_dsn.get_secret_value())
    await _init_connection(conn)
    return conn


def migration_dirs() -> list[tuple[str, Path]]:
    """(component, folder) pairs: shared first, then every service that has migrations."""
    dirs = [("shared", ROOT / "shared" / "migrations")]
    for svc in sorted((ROOT / "services").iterdir()):
        if (svc / "migrations").is_dir():
            dirs.append((svc.name, svc / "migrations"))
    return dirs


async def migrate(conn: Conn, components: list[str] | None = None) -> list[str]:
    """Apply the SQL files not yet applied, in name order per component; returns what ran."""
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " component text NOT NULL, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (component, name))"
        )
        done = {(r["component"], r["name"]) for r in await conn.fetch("SELECT component, name FROM schema_migrations")}
        for component, folder in migration_dirs():
            if components is not None and component not in components and component != "shared":
                continue
            for sql_file in sorted(folder.glob("*.sql")):
                if (component, sql_file.name) in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql_file.read_text())
                    await conn.execute(
                        "INSERT INTO schema_migrations (component, name) VALUES ($1, $2)", component, sql_file.name
                    )
                applied.append(f"{component}/{sql_file.name}")
                log.info("migration applied: %s/%s", component, sql_file.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    return applied
