"""The fault suite's own stack: one Kafka broker and one PostgreSQL, started with deploy/stack.py in
`.local/faults` on their own ports, so that stopping the broker or restarting the database hurts
nobody else's run. Always stopped at the end of the session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr

from shared.db import create_pool, migrate
from shared.kafka import ensure_topics
from shared.settings import ROOT, Settings

FAULTS_DIR = Path(os.environ.get("WENMING_FAULTS_DIR", ROOT / ".local" / "faults"))
KAFKA_PORT = int(os.environ.get("WENMING_FAULTS_KAFKA_PORT", "24092"))
PG_PORT = int(os.environ.get("WENMING_FAULTS_PG_PORT", "25433"))
"""Both below Linux's ephemeral range (32768-60999): a restarted broker or database must be able
to bind its port again, and a client's outgoing connection may hold any port in that range.
Not 29092 either: other side clusters use it."""


@dataclass(frozen=True)
class FaultStack:
    """How to reach and drive the fault suite's own broker and database."""

    env: dict[str, str]
    """Environment for deploy/stack.py: its folder and ports."""
    pg_dsn: str
    kafka_bootstrap: str
    kafka_pid_file: Path

    def stack(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        """Run deploy/stack.py on this stack only."""
        return subprocess.run(
            [sys.executable, str(ROOT / "deploy" / "stack.py"), *args],
            env=self.env,
            check=check,
            stdout=subprocess.DEVNULL,
        )


def _reuse_kafka_jars() -> None:
    """Point the fault stack at the main stack's Kafka jars when they are complete (saves a Maven run)."""
    main_libs = ROOT / ".local" / "kafka" / "libs"
    libs = FAULTS_DIR / "kafka" / "libs"
    if libs.exists() or not any(main_libs.glob(".complete-*")):
        return
    libs.parent.mkdir(parents=True, exist_ok=True)
    libs.symlink_to(main_libs, target_is_directory=True)


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")  # stopped when its tests end, not idle until the session ends
def fault_stack() -> Iterator[FaultStack]:
    if FAULTS_DIR.resolve() == (ROOT / ".local").resolve() or KAFKA_PORT == 9092 or PG_PORT == 55432:
        raise RuntimeError("the fault suite must run its own stack, apart from the shared one")
    env = {
        **os.environ,
        "WENMING_LOCAL_DIR": str(FAULTS_DIR),
        "WENMING_KAFKA_PORT": str(KAFKA_PORT),
        "WENMING_PG_PORT": str(PG_PORT),
        "CLUSTER": "1",
    }
    ours = (FAULTS_DIR / "kafka" / "node-1" / "pid").exists() or (
        FAULTS_DIR / "pg" / "data" / "postmaster.pid"
    ).exists()
    for port in (KAFKA_PORT, KAFKA_PORT + 100, PG_PORT):
        if _port_open(port) and not ours:
            raise RuntimeError(f"port {port} is taken; set WENMING_FAULTS_KAFKA_PORT / WENMING_FAULTS_PG_PORT")
    _reuse_kafka_jars()
    handle = FaultStack(env, "", f"127.0.0.1:{KAFKA_PORT}", FAULTS_DIR / "kafka" / "node-1" / "pid")
    try:
        handle.stack("up")
        values = dict(line.split("=", 1) for line in (FAULTS_DIR / "stack.env").read_text().splitlines() if "=" in line)
        yield FaultStack(env, values["WENMING_PG_DSN"], values["WENMING_KAFKA_BOOTSTRAP"], handle.kafka_pid_file)
    finally:
        handle.stack("down", check=False)


@pytest.fixture(scope="module")  # stopped when its tests end, not idle until the session ends
async def fault_settings(fault_stack: FaultStack) -> AsyncIterator[Settings]:
    """A fresh database and topic prefix on the fault stack."""
    run = uuid.uuid4().hex[:8]
    db = f"wenming_faults_{run}"
    admin = await asyncpg.connect(fault_stack.pg_dsn)
    await admin.execute(f'CREATE DATABASE "{db}"')
    await admin.close()
    dsn = fault_stack.pg_dsn.rsplit("/", 1)[0] + f"/{db}"
    settings = Settings(pg_dsn=SecretStr(dsn), kafka_bootstrap=fault_stack.kafka_bootstrap, topic_prefix=f"f{run}")
    conn = await asyncpg.connect(dsn)
    await migrate(conn)
    await conn.close()
    await ensure_topics(settings)
    yield settings


@pytest.fixture
async def fault_pool(fault_settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(fault_settings, min_size=1, max_size=6)
    yield pool
    await pool.close()
