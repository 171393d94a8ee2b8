"""The one way tests get a broker and a database: the local stack here, testcontainers where Docker runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from shared.settings import ROOT, Settings


@dataclass
class StackHandle:
    pg_dsn: str
    kafka_bootstrap: str
    stop: object  # callable or None


def _docker_engine() -> bool:
    if os.environ.get("WENMING_TEST_DOCKER") != "1" or shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def start_stack() -> StackHandle:
    if _docker_engine():
        from testcontainers.kafka import KafkaContainer
        from testcontainers.postgres import PostgresContainer

        pg = PostgresContainer("postgres:15", driver=None).start()
        kafka = KafkaContainer("apache/kafka:4.0.1").with_kraft().start()

        def stop_containers() -> None:
            kafka.stop()
            pg.stop()

        return StackHandle(pg.get_connection_url(), kafka.get_bootstrap_server(), stop_containers)
    stack = [sys.executable, str(ROOT / "deploy" / "stack.py")]
    running = subprocess.run([*stack, "status"], capture_output=True).returncode == 0
    if not running:
        subprocess.run([*stack, "up"], check=True)
    settings = Settings()
    stop = None if running else (lambda: subprocess.run([*stack, "down"], check=True))
    return StackHandle(settings.pg_dsn.get_secret_value(), settings.kafka_bootstrap, stop)


def env_file() -> Path:
    return ROOT / ".local" / "stack.env"
