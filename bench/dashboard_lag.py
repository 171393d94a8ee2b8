"""Dashboard lag (issue 7): from an accepted IssueFound (HTTP 201 from the inspection API) to its
change arriving on the dashboard's SSE stream, at a steady 200 events/s for about 10 s.

Both services run as in production (`python -m services.inspection`, `python -m services.dashboard`
in subprocesses) with the outbox relay; the path measured is API -> event store -> outbox ->
Kafka -> problem-list projection -> dashboard poll -> SSE. Each issue goes to a community in
turn; the k-th issue accepted for a community counts as shown when that community's "found
today" counter on the stream first reaches k (an update that beats the 201 counts as 0 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import defaultdict
from typing import Any

import httpx
import orjson

from bench.common import BenchRun, Figure, Figures, Step, describe, env_float, env_int, free_port, own_topics, served
from shared.auth import issue_token, upsert_departments
from shared.campaign_time import utcnow
from shared.grid import GridLevel, cached_grid
from shared.outbox import OutboxRelay

describe(
    Figure(
        "dashboard_lag_p50_ms",
        "ms",
        "accepted IssueFound (201) -> change on the dashboard SSE stream, median",
        None,
        None,
        False,
    ),
    Figure(
        "dashboard_lag_p99_ms",
        "ms",
        "accepted IssueFound (201) -> change on the dashboard SSE stream, 99th pct",
        None,
        None,
        False,
    ),
)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class LagMeter:
    """Matches acceptances with the counters seen on the stream, per community."""

    def __init__(self, communities: list[str]):
        self.communities = communities
        self.accepted: dict[str, list[float]] = defaultdict(list)
        self.base: dict[str, int] | None = None
        self.seen: dict[str, int] = defaultdict(int)
        self.matched: dict[str, int] = defaultdict(int)
        self.lags: list[float] = []

    def _found(self, panel: dict[str, Any]) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for r in panel.get("rows", ()):
            out["/".join(r["node"].split("/")[:3])] += int(r["found"])
        return out

    def counters(self, panel: dict[str, Any], at: float) -> None:
        found = self._found(panel)
        if self.base is None:
            self.base = dict(found)
            return
        for c, n in found.items():
            self.seen[c] = n - self.base.get(c, 0)
            times = self.accepted[c]
            while self.matched[c] < min(self.seen[c], len(times)):
                self.lags.append(max(0.0, at - times[self.matched[c]]))
                self.matched[c] += 1

    def accept(self, community: str, at: float) -> None:
        self.accepted[community].append(at)
        if self.seen[community] >= len(self.accepted[community]) and self.matched[community] < len(
            self.accepted[community]
        ):
            self.lags.append(0.0)
            self.matched[community] += 1

    @property
    def pending(self) -> int:
        return sum(len(v) for v in self.accepted.values()) - sum(self.matched.values())


async def _read_stream(client: httpx.AsyncClient, meter: LagMeter, ready: asyncio.Event) -> None:
    async with client.stream("GET", "/v1/stream") as response:
        response.raise_for_status()
        event, data = "", b""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = line[6:].encode()
            elif line == "" and data:
                at = time.perf_counter()
                body = orjson.loads(data)
                if event == "snapshot":
                    meter.counters(body["panels"]["counters"], at)
                    ready.set()
                elif body.get("panel") == "counters":
                    meter.counters(body["data"], at)
                event, data = "", b""


async def dashboard_lag(run: BenchRun) -> Figures:
    async with own_topics(run, "dash"):
        return await _dashboard_lag(run)


async def _dashboard_lag(run: BenchRun) -> Figures:
    settings = run.settings
    grid = cached_grid(settings.district_file)
    communities = grid.at_level(GridLevel.COMMUNITY)
    async with run.pool.acquire() as conn:
        await upsert_departments(conn, grid.departments)
        reporter = await issue_token(conn, "inspection-team-1", "bench-dashboard")
        viewer = await issue_token(conn, "campaign-office", "bench-dashboard")
    ins_port, dash_port = free_port(), free_port()
    os.environ["WENMING_INSPECTION_PORT"] = str(ins_port)
    os.environ["WENMING_DASHBOARD_PORT"] = str(dash_port)
    ins, dash = f"http://127.0.0.1:{ins_port}", f"http://127.0.0.1:{dash_port}"
    rate = env_float("BENCH_DASHBOARD_RATE", 200.0)
    seconds = env_float("BENCH_DASHBOARD_SECONDS", 10.0)
    total = int(rate * seconds)
    meter = LagMeter(communities)
    failed = 0

    relay = OutboxRelay(settings, idle_poll_s=0.2)
    relay_task = asyncio.create_task(relay.run())
    try:
        async with (
            served(["-m", "services.inspection"], f"{ins}/healthz", timeout=60),
            served(["-m", "services.dashboard"], f"{dash}/healthz", timeout=60),
            httpx.AsyncClient(base_url=dash, timeout=30) as viewer_client,
        ):
            r = await viewer_client.post("/v1/session", headers={"Authorization": f"Bearer {viewer}"})
            r.raise_for_status()
            ready = asyncio.Event()
            reader = asyncio.create_task(_read_stream(viewer_client, meter, ready))
            await asyncio.wait_for(ready.wait(), 30)

            limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
            clients = [
                httpx.AsyncClient(
                    base_url=ins, limits=limits, timeout=30, headers={"Authorization": f"Bearer {reporter}"}
                )
                for _ in range(env_int("BENCH_DASHBOARD_CLIENTS", 4))
            ]
            found_at = utcnow().isoformat()

            async def one(i: int) -> None:
                nonlocal failed
                community = communities[i % len(communities)]
                body = {
                    "grid_path": f"{community}/g01",
                    "method": "unannounced",
                    "category": "sanitation",
                    "severity": "minor",
                    "description": "沿街垃圾未及时清运，垃圾桶满溢",
                    "location": "文泉路12号",
                    "photos": [],
                    "found_at": found_at,
                }
                try:
                    got = await clients[i % len(clients)].post("/v1/issues", json=body)
                except httpx.HTTPError:
                    failed += 1
                    return
                if got.status_code == 201:
                    meter.accept(community, time.perf_counter())
                else:
                    failed += 1

            try:
                t0 = time.perf_counter()
                tasks = []
                for i in range(total):
                    delay = t0 + i / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.create_task(one(i)))
                sent_s = time.perf_counter() - t0
                await asyncio.gather(*tasks)
                run.info["dashboard_lag_accepted_eps"] = round(total / (time.perf_counter() - t0), 1)
                deadline = time.monotonic() + 15
                while meter.pending and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
            finally:
                for c in clients:
                    await c.aclose()
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                    await reader
    finally:
        relay.stop()
        await asyncio.wait_for(relay_task, 30)

    run.info["dashboard_lag_events"] = len(meter.lags)
    run.info["dashboard_lag_unmatched"] = meter.pending
    run.info["dashboard_lag_failed"] = failed
    run.info["dashboard_lag_offered_eps"] = round(total / sent_s, 1) if sent_s else 0.0
    p50, p99 = _pct(meter.lags, 0.5) * 1000, _pct(meter.lags, 0.99) * 1000
    print(
        f"dashboard lag at {rate:.0f} events/s for {seconds:.0f} s: p50 {p50:.0f} ms, p99 {p99:.0f} ms"
        f" ({len(meter.lags)} matched, {meter.pending} unmatched, {failed} failed)",
        flush=True,
    )
    return {"dashboard_lag_p50_ms": p50, "dashboard_lag_p99_ms": p99}


STEPS = [Step("dashboard_lag", dashboard_lag, "accepted IssueFound -> dashboard SSE lag at 200 events/s")]
