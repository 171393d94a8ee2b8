"""A three-broker KRaft cluster for the session, in its own state folder on ports 19092-19094
(controllers 19192-19194), beside the everyday single broker; it reuses the session's PostgreSQL
server with a fresh database. The cluster is always stopped and its folder removed at the end."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from shared.db import create_pool, migrate
from shared.kafka import ensure_topics
from shared.settings import ROOT, Settings
from tests.support.stack import StackHandle

CLUSTER_DIR = ROOT / ".local" / "test-cluster"
CLUSTER_PORT = 19092
BROKERS = 3


@dataclass
class Cluster:
    """The running cluster: its bootstrap list and a way to kill one broker as a crash would."""

    bootstrap: str
    folder: Path

    def broker_pid(self, node: int) -> int:
        return int((self.folder / "kafka" / f"node-{node}" / "pid").read_text().strip())

    def kill_broker(self, node: int) -> None:
        """SIGKILL one broker+controller node (no clean shutdown, no leadership hand-over)."""
        os.kill(self.broker_pid(node), signal.SIGKILL)


def _stack(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "deploy" / "stack.py"), *args]


@pytest.fixture(scope="module")  # stopped when its tests end, not idle until the session ends
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    env = {**os.environ, "WENMING_LOCAL_DIR": str(CLUSTER_DIR), "WENMING_KAFKA_PORT": str(CLUSTER_PORT)}

    def down() -> None:
        subprocess.run(_stack("down"), env=env, check=False, capture_output=True)
        shutil.rmtree(CLUSTER_DIR, ignore_errors=True)

    # Registered before `up`, so a half-started cluster is stopped too.
    request.addfinalizer(down)
    down()  # a cluster left by a killed session: start from empty storage
    subprocess.run(_stack("up", "--brokers", str(BROKERS), "--kafka-only"), env=env, check=True)
    bootstrap = ",".join(f"127.0.0.1:{CLUSTER_PORT + n}" for n in range(BROKERS))
    yield Cluster(bootstrap=bootstrap, folder=CLUSTER_DIR)


async def wait_for_brokers(bootstrap: str, count: int, timeout: float = 60) -> None:
    """Until the cluster's metadata lists `count` brokers (topics with RF 3 need all three)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            await admin.start()
            described = await admin.describe_cluster()
            if len(described["brokers"]) >= count:
                return
        except KafkaError:
            pass
        finally:
            await admin.close()
        if loop.time() > deadline:
            raise TimeoutError(f"the cluster did not show {count} brokers in {timeout:.0f}s")
        await asyncio.sleep(0.5)


@pytest.fixture(scope="module")  # stopped when its tests end, not idle until the session ends
async def cluster_settings(stack: StackHandle, cluster: Cluster) -> AsyncIterator[Settings]:
    """Settings for a fresh database on the session's PostgreSQL and fresh topics on the cluster."""
    run = uuid.uuid4().hex[:8]
    db = f"wenming_cluster_{run}"
    admin = await asyncpg.connect(stack.pg_dsn)
    await admin.execute(f'CREATE DATABASE "{db}"')
    await admin.close()
    dsn = stack.pg_dsn.rsplit("/", 1)[0] + f"/{db}"
    s = Settings(pg_dsn=dsn, kafka_bootstrap=cluster.bootstrap, topic_prefix=f"c{run}")
    conn = await asyncpg.connect(dsn)
    await migrate(conn)
    await conn.close()
    await wait_for_brokers(cluster.bootstrap, BROKERS)
    await ensure_topics(s)
    yield s
    admin = await asyncpg.connect(stack.pg_dsn)
    await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    await admin.close()


@pytest.fixture
async def cluster_pool(cluster_settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(cluster_settings, min_size=1, max_size=8)
    yield p
    await p.close()
