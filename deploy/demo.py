"""`make demo`: the demo district, live.

Starts every service that exists (`python -m services.<name>`) plus the outbox relay, seeds the
district's departments with fresh tokens, plays a campaign day through the services' HTTP APIs,
prints where to look, and keeps running until Ctrl-C (then stops what it started). While it runs
it supervises: a service that exits on its own (e.g. code 70, a worker died) is started again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from deploy.seed import TOKENS_FILE, seed_district
from shared.db import connect, migrate
from shared.kafka import ensure_topics
from shared.settings import ROOT, get_settings

LOGS = ROOT / ".local" / "logs"
SERVICES = ["inspection", "scoring", "volunteer", "notify", "dashboard"]


def available_services() -> list[str]:
    return [s for s in SERVICES if (ROOT / "services" / s / "__main__.py").exists()]


BASE_PORTS = {"inspection": 8101, "scoring": 8102, "volunteer": 8103, "notify": 8104, "dashboard": 8105}


def start(name: str, args: list[str], instance: int = 1) -> subprocess.Popen[bytes]:
    """Instance n of a service listens on its base port + 100 * (n - 1); all share one consumer group."""
    log = (LOGS / f"{name}-{instance}.log").open("ab")
    env = {**os.environ, "WENMING_INSTANCE": str(instance)}
    if name in BASE_PORTS:
        env[f"WENMING_{name.upper()}_PORT"] = str(BASE_PORTS[name] + 100 * (instance - 1))
    return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)


RESTART_BACKOFF_S = 5.0


@dataclass
class Supervised:
    """One service process the demo keeps running."""

    name: str
    args: list[str]
    instance: int
    proc: subprocess.Popen[bytes] = field(init=False)
    started_at: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.launch()

    def launch(self) -> None:
        self.proc = start(self.name, self.args, self.instance)
        self.started_at = time.monotonic()

    def restart_if_exited(self) -> None:
        code = self.proc.poll()
        if code is None or time.monotonic() - self.started_at < RESTART_BACKOFF_S:
            return
        print(f"{self.name}-{self.instance} exited with code {code}; starting it again (log: {LOGS})", flush=True)
        self.launch()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--no-wait", action="store_true", help="play the day, then stop (for checks)")
    args = parser.parse_args()
    settings = get_settings()
    conn = await connect(settings)
    await migrate(conn)
    await seed_district(conn, settings)
    await conn.close()
    await ensure_topics(settings)
    # One relay per instance: one leads (advisory lock), the others take over if it dies.
    procs = [Supervised("outbox-relay", ["shared.outbox"], i) for i in range(1, args.instances + 1)]
    for svc in available_services():
        for i in range(1, args.instances + 1):
            procs.append(Supervised(svc, [f"services.{svc}"], i))
    try:
        from deploy.play import play_campaign

        await play_campaign(settings, TOKENS_FILE)
    except ImportError:
        print("(no services to play a day on yet)")
    print_where_to_look(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if not args.no_wait:
        print("\nRunning; Ctrl-C stops the services (`make down` stops Kafka and PostgreSQL).")
        while not stop.is_set():
            for s in procs:
                s.restart_if_exited()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    for s in procs:
        s.proc.send_signal(signal.SIGTERM)
    for s in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            s.proc.wait(timeout=20)
        if s.proc.poll() is None:
            s.proc.kill()


def print_where_to_look(settings: object) -> None:
    s = get_settings()
    lines = [
        "",
        "Wenming demo district (长泰区) is live.",
        f"  department tokens:   {TOKENS_FILE}  (e.g. campaign-office=...)",
        f"  logs:                {LOGS}/",
        f"  Kafka:               {s.kafka_bootstrap}  topics {s.topic_prefix}.*",
    ]
    for svc, port in [
        ("inspection", s.inspection_port),
        ("scoring", s.scoring_port),
        ("volunteer", s.volunteer_port),
        ("notify", s.notify_port),
    ]:
        if svc in available_services():
            lines.append(f"  {svc + ':':<20} http://{s.http_host}:{port}/docs")
    if "dashboard" in available_services():
        dashboard_port = os.environ.get("WENMING_DASHBOARD_PORT", "8105")
        lines.append(
            f"  {'dashboard:':<20} http://{s.http_host}:{dashboard_port}/  (log in with the campaign-office token)"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
