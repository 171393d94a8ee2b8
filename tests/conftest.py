"""Fixtures: one stack per test session, a fresh database and a fresh topic prefix per session."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from shared.db import create_pool, migrate
from shared.kafka import ensure_topics
from shared.settings import Settings
from tests.support.stack import StackHandle, start_stack


@pytest.fixture(scope="session")
def stack() -> Iterator[StackHandle]:
    handle = start_stack()
    yield handle
    if callable(handle.stop):
        handle.stop()


@pytest.fixture(scope="session")
async def settings(stack: StackHandle) -> AsyncIterator[Settings]:
    run = uuid.uuid4().hex[:8]
    base = stack.pg_dsn
    db = f"wenming_test_{run}"
    admin = await asyncpg.connect(base)
    await admin.execute(f'CREATE DATABASE "{db}"')
    await admin.close()
    dsn = base.rsplit("/", 1)[0] + f"/{db}"
    s = Settings(pg_dsn=dsn, kafka_bootstrap=stack.kafka_bootstrap, topic_prefix=f"t{run}")  # type: ignore[arg-type]
    os.environ["WENMING_PG_DSN"] = dsn
    os.environ["WENMING_KAFKA_BOOTSTRAP"] = stack.kafka_bootstrap
    os.environ["WENMING_TOPIC_PREFIX"] = s.topic_prefix
    conn = await asyncpg.connect(dsn)
    await migrate(conn)
    await conn.close()
    await ensure_topics(s)
    yield s
    admin = await asyncpg.connect(base)
    await asyncio.sleep(0)
    await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    await admin.close()


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(settings, min_size=1, max_size=10)
    yield p
    await p.close()
