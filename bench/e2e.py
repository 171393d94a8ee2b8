"""End-to-end lag and resident memory (issue 9): issues sent at a fixed rate (in small batches), to the
inspection service running as in production (`python -m services.inspection` with its projection,
plus `python -m shared.outbox`); each one's lag is from its HTTP 201 to the moment its row shows in
the problem-list read model (inspection_issues), polled every few milliseconds. Meanwhile the
resident memory (VmRSS) of every service process started here is sampled; the largest counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import random
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    BenchRun,
    Figure,
    Figures,
    Step,
    describe,
    env_float,
    env_int,
    free_port,
    own_topics,
    per_second,
    served,
)
from shared.auth import issue_token, upsert_departments
from shared.campaign_time import utcnow
from shared.grid import GridLevel, cached_grid
from shared.settings import ROOT

describe(
    Figure(
        "e2e_p50_ms", "ms", "accepted (HTTP 201) -> in the problem list, median, at a fixed rate", None, None, False
    ),
    Figure("e2e_p99_ms", "ms", "accepted (HTTP 201) -> in the problem list, 99th percentile", None, 250, False),
    Figure("e2e_rate_eps", "events/s", "rate the e2e step actually sent at (target BENCH_E2E_RATE)"),
    Figure("max_rss_mb", "MB", "largest resident memory of a service process", None, 200, False),
)
for _service in ("inspection", "relay", "volunteer"):
    describe(Figure(f"rss_{_service}_mb", "MB", f"largest resident memory of {_service}", None, 200, False))

CATEGORIES = ["sanitation", "illegal-parking", "street-vending", "damaged-facility", "stairwell-clutter"]
POLL_S = 0.005


def rss_mb(pid: int) -> float:
    """Resident memory of a process from /proc/<pid>/status (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


class RssSampler:
    """Samples each named process's resident memory until stopped; keeps the largest."""

    def __init__(self, interval_s: float = 0.2):
        self.interval_s = interval_s
        self.pids: dict[str, int] = {}
        self.peak: dict[str, float] = {}
        self._stop = asyncio.Event()

    def watch(self, name: str, pid: int) -> None:
        self.pids[name] = pid
        self.peak.setdefault(name, 0.0)

    def sample(self) -> None:
        for name, pid in self.pids.items():
            self.peak[name] = max(self.peak[name], rss_mb(pid))

    async def run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval_s)

    def stop(self) -> None:
        self.sample()
        self._stop.set()


@contextlib.asynccontextmanager
async def background(module: str) -> AsyncIterator[int]:
    """`python -m <module>` without an HTTP port (the outbox relay); yields its pid, SIGTERMs it after."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        yield proc.pid
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def e2e(run: BenchRun) -> Figures:
    async with own_topics(run, "e2e"):
        return await _e2e(run)


async def _e2e(run: BenchRun) -> Figures:
    settings = run.settings
    grid = cached_grid(settings.district_file)
    grids = grid.at_level(GridLevel.GRID)
    async with run.pool.acquire() as conn:
        await upsert_departments(conn, grid.departments)
        token = await issue_token(conn, "inspection-team-1", "bench-e2e")
    rate = env_float("BENCH_E2E_RATE", 500.0)
    seconds = env_float("BENCH_E2E_SECONDS", 10.0)
    in_flight = env_int("BENCH_E2E_IN_FLIGHT", 64)
    batch = env_int("BENCH_E2E_BATCH", 10)
    """Issues a request: 50 requests/s of 10 make 500 events/s (one a request, this box's
    HTTP stack tops out near 300 requests/s with everything else running on it)."""
    port = free_port()
    os.environ["WENMING_INSPECTION_PORT"] = str(port)
    base = f"http://127.0.0.1:{port}"
    rng = random.Random(11)
    found_at = (utcnow() - timedelta(minutes=30)).isoformat()
    accepted: dict[uuid.UUID, float] = {}
    visible: dict[uuid.UUID, float] = {}
    failed = 0
    sampler = RssSampler()

    def issue() -> dict[str, Any]:
        return {
            "issue_id": str(uuid.uuid4()),
            "grid_path": rng.choice(grids),
            "category": rng.choice(CATEGORIES),
            "severity": "minor",
            "description": "沿街垃圾未及时清运，垃圾桶满溢",
            "found_at": found_at,
            "location": "文泉路12号",
        }

    async def one(client: httpx.AsyncClient, gate: asyncio.Semaphore) -> None:
        """Report `batch` issues (one request); each counts as accepted when the 201 arrives."""
        nonlocal failed
        issues = [issue() for _ in range(batch)]
        async with gate:
            try:
                if batch == 1:
                    r = await client.post("/v1/issues", json=issues[0])
                else:
                    r = await client.post("/v1/issues/batch", json={"issues": issues})
            except httpx.HTTPError:
                failed += batch
                return
        if r.status_code == 201:
            now = time.perf_counter()
            for i in issues:
                accepted[uuid.UUID(i["issue_id"])] = now
        else:
            failed += batch

    async def watch(done: asyncio.Event) -> None:
        """Poll the read model for accepted issues not yet seen."""
        async with run.pool.acquire() as conn:
            while not done.is_set() or len(visible) < len(accepted):
                pending = [i for i in accepted if i not in visible]
                if pending:
                    rows = await conn.fetch(
                        "SELECT issue_id FROM inspection_issues WHERE issue_id = ANY($1::uuid[])", pending
                    )
                    now = time.perf_counter()
                    for r in rows:
                        visible[r["issue_id"]] = now
                await asyncio.sleep(POLL_S)

    volunteer = _importable("services.volunteer.__main__")
    sampler_task = asyncio.create_task(sampler.run())
    try:
        async with contextlib.AsyncExitStack() as stack:
            sampler.watch(
                "inspection",
                await stack.enter_async_context(served(["-m", "services.inspection"], f"{base}/healthz", timeout=60)),
            )
            sampler.watch("relay", await stack.enter_async_context(background("shared.outbox")))
            if volunteer:
                vport = free_port()
                os.environ["WENMING_VOLUNTEER_PORT"] = str(vport)
                sampler.watch(
                    "volunteer",
                    await stack.enter_async_context(
                        served(["-m", "services.volunteer"], f"http://127.0.0.1:{vport}/healthz", timeout=60)
                    ),
                )
            limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30, headers=headers) as client:
                gate = asyncio.Semaphore(in_flight)
                # Warm up (connections, caches, the projection's first batch), then measure afresh.
                await asyncio.gather(*(one(client, gate) for _ in range(20)))
                accepted.clear()
                failed = 0
                done = asyncio.Event()
                watcher = asyncio.create_task(watch(done))
                tasks = []
                requests = int(rate * seconds / batch)
                t0 = time.perf_counter()
                for i in range(requests):
                    delay = t0 + i * batch / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.create_task(one(client, gate)))
                await asyncio.gather(*tasks)
                sent_s = time.perf_counter() - t0
                done.set()
                try:
                    await asyncio.wait_for(watcher, 60)
                except TimeoutError:
                    watcher.cancel()
    finally:
        sampler.stop()
        await sampler_task
    lags = [max(0.0, visible[i] - accepted[i]) * 1000 for i in accepted if i in visible]
    run.info["e2e_sent"] = int(rate * seconds / batch) * batch
    run.info["e2e_batch"] = batch
    run.info["e2e_accepted"] = len(accepted)
    run.info["e2e_not_visible"] = len(accepted) - len(lags)
    run.info["e2e_failed"] = failed
    run.info["e2e_poll_ms"] = POLL_S * 1000
    figures: Figures = {
        "e2e_p50_ms": _pct(lags, 0.5),
        "e2e_p99_ms": _pct(lags, 0.99),
        "e2e_rate_eps": per_second(len(accepted), sent_s),
    }
    for name, peak in sampler.peak.items():
        figures[f"rss_{name}_mb"] = peak
    figures["max_rss_mb"] = max(sampler.peak.values(), default=0.0)
    return figures


def _importable(module: str) -> bool:
    """True if the module imports cleanly (a service still being written is left out)."""
    try:
        return importlib.util.find_spec(module) is not None and bool(__import__(module, fromlist=["main"]))
    except Exception:
        return False


STEPS = [Step("e2e", e2e, "end-to-end lag at a fixed rate (HTTP 201 -> problem list) and resident memory")]
