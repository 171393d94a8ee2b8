"""Under a steady load of issues through the inspection HTTP API and of volunteer commands through
the volunteer API, parts of the system die and come back: each service (inspection, the outbox
relay, scoring, notify, volunteer) is killed with SIGKILL in turn and restarted, the Kafka broker is
stopped and started, PostgreSQL restarts, and garbage goes into the inbound topic and the HTTP
endpoints. Afterwards every acknowledged event (issues and volunteer commands) must be stored exactly
once and be on its topic, the problem list and the scoring read models must equal a rebuild from the
topics, every assignment must have reached each recipient's inbox exactly once (one ledger row per
event, recipient and channel, none left claimed), and the garbage must sit in the dead-letter topic
with its reasons while nothing else changed. The counts are printed.

Clients retry a request after a connection error or a 5xx with the same Idempotency-Key, so a
request whose answer was lost is not counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from services.inspection.projections import ProblemList
from shared.auth import issue_token, upsert_departments
from shared.campaign_time import utcnow
from shared.events.registry import registry
from shared.grid import GridLevel, cached_grid
from shared.kafka import make_producer
from shared.outbox import wait_until_drained
from shared.projection import rebuild
from shared.settings import ROOT, Settings
from tests.faults.conftest import FAULTS_DIR, FaultStack
from tests.faults.whole_system import (
    UNIT,
    VOLUNTEER_DEPARTMENT,
    Checked,
    VolunteerLoad,
    check_notify,
    check_scoring,
    check_volunteer,
    register_recipients,
)
from tests.support.kafka import read_all

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

LOAD_WORKERS = 4
PER_WORKER_RPS = 12.0
BATCH = 10
RETRY_FOR_S = 120.0
SETTLE_S = 150.0
RECONNECT_LOG_LIMIT = 3000
"""While the broker is down each client retries every retry_backoff_ms (100 ms): some hundreds of
reconnect lines per process. Tens of thousands mean a client spins (aio-libs/aiokafka#1155)."""
ACTIVITY_TOPIC = "volunteer.activity"
CATEGORIES = ["sanitation", "illegal-parking", "street-vending", "damaged-facility", "stairwell-clutter"]


# --- processes under test ------------------------------------------------------------------------


class Service:
    """One service process (`python -m <module>`), started, SIGKILLed and restarted by its pid."""

    def __init__(self, name: str, module: str, env: dict[str, str], ready_url: str | None = None):
        self.name = name
        self.module = module
        self.env = env
        self.ready_url = ready_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.held_down = False
        """Killed on purpose and not yet restarted: the supervisor leaves it alone."""
        self.unexpected_exits: list[str] = []

    async def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"{self.name} is still running")
        self.held_down = False
        self.starts += 1
        log = (FAULTS_DIR / "logs" / f"{self.name}-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        if self.ready_url is None:
            return
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {log.name}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self.ready_url)).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} not ready at {self.ready_url}")
                await asyncio.sleep(0.1)

    def kill9(self) -> None:
        assert self.proc is not None
        self.held_down = True
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    async def stop(self) -> None:
        """SIGTERM and wait (the service stops its projection and workers cleanly)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.held_down = True
        self.proc.send_signal(signal.SIGTERM)
        for _ in range(400):
            if self.proc.poll() is not None:
                return
            await asyncio.sleep(0.1)
        self.proc.kill()
        self.proc.wait()

    async def supervise(self) -> None:
        """Restart the process if it dies on its own (as a supervisor would), and note that it did."""
        assert self.proc is not None
        if not self.held_down and self.proc.poll() is not None:
            self.unexpected_exits.append(f"{self.name}-{self.starts} exited with {self.proc.returncode}")
            await self.start()


# --- the load ------------------------------------------------------------------------------------


@dataclass
class Tally:
    sent: int = 0
    """Events the clients asked to record."""
    requests: int = 0
    retries: int = 0
    acknowledged: set[str] = field(default_factory=set)
    ack_twice: int = 0
    """Event ids answered for two different requests (a double count)."""
    refused: list[str] = field(default_factory=list)
    gave_up: int = 0
    open_issues: dict[int, list[str]] = field(default_factory=dict)


class Load:
    """Workers reporting issues (one a request and in batches) and assigning their own issues."""

    def __init__(self, base: str, tokens: dict[str, str], grids: list[str]):
        self.base = base
        self.tokens = tokens
        self.grids = grids
        self.tally = Tally()
        self.stopping = asyncio.Event()

    def _issue(self, rng: random.Random) -> dict[str, Any]:
        return {
            "issue_id": str(uuid.uuid4()),
            "grid_path": rng.choice(self.grids),
            "category": rng.choice(CATEGORIES),
            "severity": rng.choice(["minor", "major", "serious"]),
            "description": "沿街垃圾未及时清运，垃圾桶满溢",
            "found_at": (utcnow() - timedelta(minutes=30)).isoformat(),
            "location": "文泉路12号",
            "photos": ["photo://faults/a.jpg"],
        }

    async def _send(self, client: httpx.AsyncClient, path: str, body: dict[str, Any], who: str, events: int) -> bool:
        """POST with one Idempotency-Key across all retries; returns whether it was acknowledged."""
        t = self.tally
        t.sent += events
        t.requests += 1
        headers = {"Authorization": f"Bearer {self.tokens[who]}", "Idempotency-Key": str(uuid.uuid4())}
        deadline = time.monotonic() + RETRY_FOR_S
        while True:
            try:
                r = await client.post(path, json=body, headers=headers)
            except httpx.TransportError:
                r = None
            if r is not None and r.status_code in (200, 201):
                ids = [str(i) for i in r.json()["event_ids"]]
                if len(ids) != events:
                    t.refused.append(f"{path}: {len(ids)} event ids for {events} events")
                for i in ids:
                    if i in t.acknowledged and not r.json().get("duplicate"):
                        t.ack_twice += 1
                    t.acknowledged.add(i)
                return True
            if r is not None and r.status_code < 500:
                t.refused.append(f"{path}: {r.status_code} {r.text[:200]}")
                return False
            if time.monotonic() > deadline:
                t.gave_up += 1
                return False
            t.retries += 1
            await asyncio.sleep(0.3)

    async def worker(self, n: int) -> None:
        rng = random.Random(n)
        mine = self.tally.open_issues.setdefault(n, [])
        async with httpx.AsyncClient(base_url=self.base, timeout=10) as client:
            while not self.stopping.is_set():
                t0 = time.monotonic()
                roll = rng.random()
                if roll < 0.15 and mine:
                    issue_id = mine.pop(rng.randrange(len(mine)))
                    body = {
                        "responsible_unit": UNIT,
                        "owner": "王五",
                        "deadline": (utcnow() + timedelta(days=3)).isoformat(),
                    }
                    await self._send(client, f"/v1/issues/{issue_id}/assign", body, "campaign-office", 1)
                elif roll < 0.3:
                    issues = [self._issue(rng) for _ in range(BATCH)]
                    if await self._send(client, "/v1/issues/batch", {"issues": issues}, "inspection-team-1", BATCH):
                        mine += [i["issue_id"] for i in issues[:2]]
                else:
                    issue = self._issue(rng)
                    if await self._send(client, "/v1/issues", issue, "inspection-team-1", 1):
                        mine.append(issue["issue_id"])
                pause = 1 / PER_WORKER_RPS - (time.monotonic() - t0)
                if pause > 0:
                    await asyncio.sleep(pause)


# --- garbage -------------------------------------------------------------------------------------


async def garbage_into_inbound(settings: Settings) -> set[tuple[int, int]]:
    """Unusable records on the inbound topic; returns where each landed (partition, offset)."""
    good_shape = {
        "issue_id": str(uuid.uuid4()),
        "grid_path": "changtai/wuan/c01/g01",
        "category": "sanitation",
        "severity": "minor",
        "description": "x",
        "found_at": utcnow().isoformat(),
    }
    records: list[tuple[bytes | None, bytes]] = [
        (b"inspection-team-1", b"\x00\xff not json {"),
        (b"inspection-team-1", b"[1, 2, 3]"),
        (b"inspection-team-1", orjson.dumps({**good_shape, "severity": "apocalyptic"})),
        (b"inspection-team-1", orjson.dumps({k: v for k, v in good_shape.items() if k != "issue_id"})),
        (None, orjson.dumps(good_shape)),
        (b"no-such-department", orjson.dumps(good_shape)),
        (b"inspection-team-1", orjson.dumps({**good_shape, "grid_path": "elsewhere/x/y/z"})),
        (b"inspection-team-1", orjson.dumps({**good_shape, "category": "unicorns"})),
        # Oversized: just under the broker's record limit, a description far beyond its bound.
        (b"inspection-team-1", orjson.dumps({**good_shape, "description": "垃" * 300_000})),
        (b"inspection-team-1", b"{" * 900_000),
    ]
    producer = make_producer(settings)
    await producer.start()
    where = set()
    try:
        for key, value in records:
            meta = await producer.send_and_wait(settings.topic("inspection.inbound"), value, key=key)
            where.add((meta.partition, meta.offset))
    finally:
        await producer.stop()
    return where


async def garbage_into_http(base: str, token: str) -> Counter[int]:
    """Malformed, oversized, unauthenticated and misplaced requests; returns the status codes."""
    auth = {"Authorization": f"Bearer {token}"}
    json_ct = {**auth, "Content-Type": "application/json"}
    issue = {
        "grid_path": "changtai/wuan/c01/g01",
        "category": "sanitation",
        "severity": "minor",
        "description": "x",
        "found_at": utcnow().isoformat(),
    }
    attempts: list[tuple[str, dict[str, str], bytes]] = [
        ("/v1/issues", json_ct, b"\x00\xff not json {"),
        ("/v1/issues", json_ct, b'{"grid_path": 5}'),
        ("/v1/issues", json_ct, b"[" * 100_000),
        ("/v1/issues", json_ct, b'{"a": "' + b"x" * 3_000_000 + b'"}'),
        ("/v1/issues", json_ct, orjson.dumps({**issue, "description": "垃" * 500_000})),
        ("/v1/issues", {"Content-Type": "application/json"}, orjson.dumps(issue)),
        ("/v1/issues", {**json_ct, "Authorization": "Bearer wm_forged"}, orjson.dumps(issue)),
        ("/v1/issues", json_ct, orjson.dumps({**issue, "grid_path": "changtai/nowhere/c99/g99"})),
        ("/v1/issues", {**json_ct, "Idempotency-Key": "k" * 500}, orjson.dumps(issue)),
        ("/v1/issues/batch", json_ct, orjson.dumps({"issues": "x"})),
        ("/v1/issues/batch", json_ct, orjson.dumps({"issues": [issue] * 1001})),
        (f"/v1/issues/{uuid.uuid4()}/assign", json_ct, b'{"responsible_unit": "x", "owner": "y", "deadline": 1}'),
        ("/v1/issues/not-a-uuid/verify", json_ct, b'{"accept": true}'),
    ]
    codes: Counter[int] = Counter()
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for path, headers, body in attempts:
            r = await client.post(path, content=body, headers=headers)
            codes[r.status_code] += 1
    return codes


# --- checks --------------------------------------------------------------------------------------


async def problem_list_rows(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        return [dict(r) for r in await conn.fetch("SELECT * FROM inspection_issues ORDER BY issue_id")]


async def wait_for(what: str, check: Any, timeout: float = 90, explain: Any = None) -> None:
    """Poll `check` until it is true; on timeout, raise with what `explain` says of the state."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            detail = f": {await explain()}" if explain is not None else ""
            raise TimeoutError(f"{what}{detail}")
        await asyncio.sleep(0.5)


def _log_tail(name: str, lines: int = 40) -> str:
    """The last lines of every log the named service wrote in this run."""
    out = []
    for path in sorted((FAULTS_DIR / "logs").glob(f"{name}-*.log")):
        text = path.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"--- {path.name}\n" + "\n".join(text))
    return "\n".join(out)


async def test_nothing_lost_nothing_doubled_under_kills_restarts_and_garbage(
    fault_stack: FaultStack, fault_settings: Settings, fault_pool: asyncpg.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = fault_settings
    grid = cached_grid(settings.district_file)
    departments = ("inspection-team-1", "campaign-office", VOLUNTEER_DEPARTMENT)
    async with fault_pool.acquire() as conn:
        await upsert_departments(conn, grid.departments)
        tokens = {code: await issue_token(conn, code, "faults") for code in departments}
        recipients = await register_recipients(conn)
    ports = {name: _free_port() for name in ("inspection", "scoring", "notify", "volunteer")}
    base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    env = {
        **os.environ,
        "WENMING_PG_DSN": settings.pg_dsn.get_secret_value(),
        "WENMING_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "WENMING_TOPIC_PREFIX": settings.topic_prefix,
        **{f"WENMING_{name.upper()}_PORT": str(port) for name, port in ports.items()},
    }
    system = System(
        inspection=Service("inspection", "services.inspection", env, f"{base['inspection']}/healthz"),
        relay=Service("relay", "shared.outbox", env),
        scoring=Service("scoring", "services.scoring", env, f"{base['scoring']}/healthz"),
        notify=Service("notify", "services.notify", env, f"{base['notify']}/healthz"),
        volunteer=Service("volunteer", "services.volunteer", env, f"{base['volunteer']}/healthz"),
        recipients=recipients,
    )
    load = Load(base["inspection"], tokens, grid.at_level(GridLevel.GRID))
    volunteer_load = VolunteerLoad(base["volunteer"], tokens[VOLUNTEER_DEPARTMENT], RETRY_FOR_S)
    faults: Counter[str] = Counter()
    try:
        await _load_with_faults(fault_stack, settings, fault_pool, system, load, volunteer_load, faults, capsys)
    finally:
        for service in system.services:
            await service.stop()


@dataclass
class System:
    """The service processes under test and the notify recipients of the load's assignments."""

    inspection: Service
    relay: Service
    scoring: Service
    notify: Service
    volunteer: Service
    recipients: set[str]

    @property
    def services(self) -> list[Service]:
        return [self.inspection, self.relay, self.scoring, self.notify, self.volunteer]

    async def supervise(self) -> None:
        for service in self.services:
            await service.supervise()

    @property
    def unexpected_exits(self) -> list[str]:
        return [e for s in self.services for e in s.unexpected_exits]


async def _load_with_faults(
    fault_stack: FaultStack,
    settings: Settings,
    fault_pool: asyncpg.Pool,
    system: System,
    load: Load,
    volunteer_load: VolunteerLoad,
    faults: Counter[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    garbage_at: set[tuple[int, int]] = set()
    http_garbage: Counter[int] = Counter()
    base = load.base
    inspection, relay = system.inspection, system.relay

    async def supervise() -> None:
        while not load.stopping.is_set():
            await system.supervise()
            await asyncio.sleep(0.5)

    for service in system.services:
        for stale in (FAULTS_DIR / "logs").glob(f"{service.name}-*.log"):  # an earlier run's
            stale.unlink()
    for service in system.services:
        await service.start()
    await volunteer_load.register_site()
    workers = [asyncio.create_task(load.worker(n)) for n in range(LOAD_WORKERS)]
    workers.append(asyncio.create_task(volunteer_load.worker(LOAD_WORKERS)))
    supervisor = asyncio.create_task(supervise())
    try:
        await asyncio.sleep(6)
        for _ in range(2):  # (a) SIGKILL each process in turn, restart it
            inspection.kill9()
            faults["kill -9 inspection"] += 1
            await asyncio.sleep(1)
            await inspection.start()
            await asyncio.sleep(5)
            relay.kill9()
            faults["kill -9 relay"] += 1
            await asyncio.sleep(1)
            await relay.start()
            await asyncio.sleep(5)
        for service in (system.scoring, system.notify, system.volunteer):
            service.kill9()
            faults[f"kill -9 {service.name}"] += 1
            await asyncio.sleep(1)
            await service.start()
            await asyncio.sleep(5)
        # (b) stop the broker (our own one), keep the load on for a while, start it again
        kafka_pid = int(fault_stack.kafka_pid_file.read_text())
        os.kill(kafka_pid, signal.SIGTERM)
        while _alive(kafka_pid):
            await asyncio.sleep(0.2)
        faults["kafka broker stopped"] += 1
        await asyncio.sleep(5)
        await asyncio.to_thread(fault_stack.stack, "up")
        await asyncio.sleep(8)
        # (c) restart PostgreSQL (our own one)
        await asyncio.to_thread(fault_stack.stack, "restart-postgres")
        faults["postgresql restarted"] += 1
        await asyncio.sleep(8)
        # (d) garbage into the inbound topic and the HTTP endpoints
        garbage_at = await garbage_into_inbound(settings)
        faults["garbage inbound records"] += len(garbage_at)
        http_garbage = await garbage_into_http(base, load.tokens["inspection-team-1"])
        faults["garbage http requests"] += sum(http_garbage.values())
        await asyncio.sleep(6)
    finally:
        load.stopping.set()
        volunteer_load.stopping.set()
        load_errors = [e for e in await asyncio.gather(*workers, return_exceptions=True) if e is not None]
        supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor

    tally = load.tally
    try:
        # Everything acknowledged reaches Kafka and the problem list catches up.
        async with fault_pool.acquire() as conn:
            await wait_until_drained(conn, timeout=120)
        published_records = await read_all(settings, settings.topic("inspection.issue"))
        published = Counter(dict(r.headers)["ce_id"].decode() for r in published_records)

        async def caught_up() -> bool:
            await inspection.supervise()
            async with fault_pool.acquire() as conn:
                n = await conn.fetchval(
                    "SELECT count(*) FROM projection_applied WHERE projection = $1", ProblemList.name
                )
            return int(n) >= len(published)

        await wait_for("problem list to catch up", caught_up)
        activity_ids = {
            dict(r.headers)["ce_id"].decode() for r in await read_all(settings, settings.topic(ACTIVITY_TOPIC))
        }
        scored = [*published, *activity_ids]

        async def scoring_caught_up() -> bool:
            await system.supervise()
            async with fault_pool.acquire() as conn:
                n = await conn.fetchval(
                    "SELECT count(*) FROM projection_applied"
                    " WHERE projection = 'scoring' AND event_id = ANY($1::uuid[])",
                    scored,
                )
            return int(n) == len(scored)

        await wait_for("scoring to apply every issue and activity event", scoring_caught_up, timeout=SETTLE_S)

        async def notify_settled() -> bool:
            await system.supervise()
            async with fault_pool.acquire() as conn:
                unplanned = await conn.fetchval(
                    "SELECT count(*) FROM events e WHERE e.type = 'IssueAssigned' AND NOT EXISTS"
                    " (SELECT 1 FROM projection_applied a WHERE a.projection = 'notify' AND a.event_id = e.event_id)"
                )
                unsent = await conn.fetchval(
                    "SELECT count(*) FROM notify_deliveries WHERE status IN ('pending', 'claimed', 'failed')"
                )
            return int(unplanned) == 0 and int(unsent) == 0

        async def notify_state() -> str:
            async with fault_pool.acquire() as conn:
                unplanned = await conn.fetch(
                    "SELECT e.event_id, e.position FROM events e WHERE e.type = 'IssueAssigned' AND NOT EXISTS"
                    " (SELECT 1 FROM projection_applied a WHERE a.projection = 'notify' AND a.event_id = e.event_id)"
                    " LIMIT 5"
                )
                statuses = await conn.fetch(
                    "SELECT status, count(*) AS n, max(last_error) AS error FROM notify_deliveries GROUP BY status"
                )
                offsets = await conn.fetch("SELECT * FROM projection_offsets WHERE projection = 'notify'")
            return (
                f"unplanned {[dict(r) for r in unplanned]}; deliveries {[dict(r) for r in statuses]};"
                f" offsets {[dict(r) for r in offsets]}\n{_log_tail('notify')}"
            )

        await wait_for(
            "notify to plan and send every assignment", notify_settled, timeout=SETTLE_S, explain=notify_state
        )
        async with fault_pool.acquire() as conn:  # the NotificationSent events too
            await wait_until_drained(conn, timeout=120)

        async def inbound_dead_lettered() -> bool:
            dead = await read_all(settings, settings.topic("deadletter"))
            return len(garbage_at & _dead_positions(dead, "inspection.inbound", settings)) == len(garbage_at)

        await wait_for("garbage to reach the dead-letter topic", inbound_dead_lettered, timeout=60)
    finally:
        for service in system.services:
            await service.stop()

    async with fault_pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT event_id::text AS id, type, stream_id FROM events WHERE stream_id LIKE 'issue-%'"
        )
    stored = Counter(r["id"] for r in rows)
    topic_of = {r["id"]: settings.topic(registry.topic_for(r["type"])) for r in rows}
    on_topic = {dict(r.headers)["ce_id"].decode(): r.topic for r in published_records}
    dead = await read_all(settings, settings.topic("deadletter"))
    dead_inbound = [r for r in dead if dict(r.headers).get("wm_dlq_consumer") == b"inspection.inbound"]
    dead_other = [r for r in dead if dict(r.headers).get("wm_dlq_consumer") != b"inspection.inbound"]
    dead_positions = _dead_positions(dead, "inspection.inbound", settings)

    # The problem list as kept incrementally through all of that, and as rebuilt from the topic.
    kept = await problem_list_rows(fault_pool)
    await rebuild(settings, fault_pool, ProblemList(), progress=False)
    rebuilt = await problem_list_rows(fault_pool)
    kept_by_id = {r["issue_id"]: r for r in kept}
    rebuilt_by_id = {r["issue_id"]: r for r in rebuilt}
    # Scoring (kept vs rebuilt), notify's deliveries and the volunteer commands.
    checked: list[Checked] = [
        await check_scoring(settings, fault_pool),
        await check_notify(fault_pool, system.recipients),
        await check_volunteer(settings, fault_pool, volunteer_load.tally),
    ]

    reconnects = {
        path.name: path.read_text(errors="replace").count("Unable connect to node")
        for service in system.services
        for path in (FAULTS_DIR / "logs").glob(f"{service.name}-*.log")
    }
    problems: dict[str, int] = {
        "acknowledged but not stored": sum(1 for i in tally.acknowledged if stored[i] == 0),
        "stored more than once": sum(1 for n in stored.values() if n > 1),
        "stored but never acknowledged": sum(1 for i in stored if i not in tally.acknowledged),
        "acknowledged for two requests": tally.ack_twice,
        "acknowledged but not published": sum(1 for i in tally.acknowledged if published[i] == 0),
        "published on the wrong topic": sum(1 for i, t in on_topic.items() if i in topic_of and t != topic_of[i]),
        "published but not stored": sum(1 for i in published if stored[i] == 0),
        "problem list rows differing from a rebuild": sum(
            1 for k in kept_by_id.keys() | rebuilt_by_id.keys() if kept_by_id.get(k) != rebuilt_by_id.get(k)
        ),
        "garbage records missing from the dead-letter topic": len(garbage_at - dead_positions),
        "dead-lettered inbound records that were not garbage": len(dead_positions - garbage_at),
        "dead letters without a reason": sum(1 for r in dead if not dict(r.headers).get("wm_dlq_reason")),
        "dead letters from other consumers": len(dead_other),
        "garbage http requests answered 2xx or 5xx": sum(
            n for code, n in http_garbage.items() if code < 400 or code >= 500
        ),
        "legit requests refused": len(tally.refused),
        "legit requests given up": tally.gave_up,
        "load workers that failed": len(load_errors),
        f"processes logging over {RECONNECT_LOG_LIMIT} broker reconnects (a busy loop)": sum(
            1 for n in reconnects.values() if n > RECONNECT_LOG_LIMIT
        ),
    }
    for c in checked:
        problems.update(c.problems)
    issues_found = sum(1 for r in rows if r["type"] == "IssueFound")
    counts = {
        "events sent": tally.sent,
        "requests": tally.requests,
        "retried requests": tally.retries,
        "acknowledged": len(tally.acknowledged),
        "stored": sum(stored.values()),
        "published (distinct event ids)": sum(1 for i in published if i in stored),
        "records on the topic (with relay repeats)": len(published_records),
        "problem list rows": len(kept),
        "issues found": issues_found,
        "dead letters (inbound)": len(dead_inbound),
        **{k: v for c in checked for k, v in c.counts.items()},
        "broker reconnects logged (most by one process)": max(reconnects.values(), default=0),
        "faults injected": sum(faults.values()),
        "unexpected exits": len(system.unexpected_exits),
        "mismatches": sum(problems.values()),
    }
    with capsys.disabled():
        print("\n[faults] " + ", ".join(f"{k}: {v}" for k, v in faults.items()))
        print("[faults] http garbage answered: " + ", ".join(f"{c}x{n}" for c, n in sorted(http_garbage.items())))
        print("[faults] " + "\n[faults] ".join(f"{k:45} {v}" for k, v in counts.items()))
        for k, v in problems.items():
            if v:
                print(f"[faults] MISMATCH {k}: {v}")
        for exit_ in system.unexpected_exits:
            print(f"[faults] supervisor restarted {exit_}")
        for reason in tally.refused[:5] + volunteer_load.tally.refused[:5]:
            print(f"[faults] refused: {reason}")
        for error in load_errors:
            print(f"[faults] load worker failed: {error!r}")
        for r in dead_inbound[:20]:
            print(f"[faults] dead letter: {dict(r.headers)['wm_dlq_reason'].decode()[:120]}")
    assert tally.acknowledged, "the load was not acknowledged at all"
    assert volunteer_load.tally.acknowledged, "the volunteer load was not acknowledged at all"
    assert len(kept) == issues_found
    assert {k: v for k, v in problems.items() if v} == {}


def _dead_positions(dead: list[Any], consumer: str, settings: Settings) -> set[tuple[int, int]]:
    out = set()
    for r in dead:
        h = dict(r.headers)
        if h.get("wm_dlq_consumer") == consumer.encode() and h.get("wm_dlq_source_topic") == (
            settings.topic("inspection.inbound").encode()
        ):
            out.add((int(h["wm_dlq_source_partition"]), int(h["wm_dlq_source_offset"])))
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    return True


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
