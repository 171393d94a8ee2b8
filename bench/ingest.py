"""HTTP ingest of the inspection service (issue 3): issues accepted per second, one a request and
in batches, with p50/p99 latency, against the service running as it does in production
(`python -m services.inspection` under uvicorn, with its projection and workers)."""

from __future__ import annotations

import os
import random
import time
from datetime import timedelta
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
    http_load,
    own_topics,
    served,
)
from shared.auth import issue_token, upsert_departments
from shared.campaign_time import utcnow
from shared.grid import GridLevel, cached_grid

describe(
    Figure("ingest_single_p50_ms", "ms", "HTTP ingest, one issue a request: median latency", None, None, False),
    Figure("ingest_single_p99_ms", "ms", "HTTP ingest, one issue a request: 99th percentile", None, None, False),
    Figure("ingest_batch_p50_ms", "ms", "HTTP ingest, one batch a request: median latency", None, None, False),
    Figure("ingest_batch_p99_ms", "ms", "HTTP ingest, one batch a request: 99th percentile", None, None, False),
)

CATEGORIES = ["sanitation", "illegal-parking", "street-vending", "damaged-facility", "stairwell-clutter"]


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def ingest(run: BenchRun) -> Figures:
    async with own_topics(run, "ingest"):
        return await _ingest(run)


async def _ingest(run: BenchRun) -> Figures:
    settings = run.settings
    grids = cached_grid(settings.district_file).at_level(GridLevel.GRID)
    async with run.pool.acquire() as conn:
        await upsert_departments(conn, cached_grid(settings.district_file).departments)
        token = await issue_token(conn, "inspection-team-1", "bench")
    port = free_port()
    os.environ["WENMING_INSPECTION_PORT"] = str(port)
    base = f"http://127.0.0.1:{port}"
    rng = random.Random(7)
    found_at = (utcnow() - timedelta(hours=1)).isoformat()

    def issue() -> dict[str, Any]:
        return {
            "grid_path": rng.choice(grids),
            "category": rng.choice(CATEGORIES),
            "severity": "minor",
            "description": "沿街垃圾未及时清运，垃圾桶满溢",
            "found_at": found_at,
            "location": "文泉路12号",
            "photos": ["photo://bench/a.jpg"],
        }

    seconds = env_float("BENCH_INGEST_SECONDS", 6.0)
    batch_size = env_int("BENCH_INGEST_BATCH", 500)
    single_lat: list[float] = []
    batch_lat: list[float] = []

    async def one(client: httpx.AsyncClient) -> bool:
        t0 = time.perf_counter()
        r = await client.post("/v1/issues", json=issue())
        single_lat.append(time.perf_counter() - t0)
        return r.status_code == 201

    batches = [{"issues": [issue() for _ in range(batch_size)]} for _ in range(8)]

    async def batch(client: httpx.AsyncClient) -> bool:
        t0 = time.perf_counter()
        body = rng.choice(batches)
        for item in body["issues"]:
            item.pop("issue_id", None)
        r = await client.post("/v1/issues/batch", json=body)
        batch_lat.append(time.perf_counter() - t0)
        return r.status_code == 201

    headers = {"Authorization": f"Bearer {token}"}
    async with served(["-m", "services.inspection"], f"{base}/healthz", timeout=60):
        single = await http_load(base, one, seconds=seconds, concurrency=32, headers=headers)
        single_lat.clear()  # keep the measured window's latencies only
        single = await http_load(base, one, seconds=seconds, concurrency=32, headers=headers, warmup_s=0)
        batched = await http_load(base, batch, seconds=seconds, concurrency=4, clients=4, headers=headers)
    run.info["ingest_batch_size"] = batch_size
    run.info["ingest_single_failed"] = single.failed
    run.info["ingest_batch_failed"] = batched.failed
    return {
        "ingest_single_eps": single.rate,
        "ingest_single_p50_ms": _pct(single_lat, 0.5) * 1000,
        "ingest_single_p99_ms": _pct(single_lat, 0.99) * 1000,
        "ingest_batch_eps": batched.rate * batch_size,
        "ingest_batch_p50_ms": _pct(batch_lat, 0.5) * 1000,
        "ingest_batch_p99_ms": _pct(batch_lat, 0.99) * 1000,
    }


STEPS = [Step("ingest", ingest, "HTTP ingest of issues, single and batch, with latency")]
