"""Failover on the three-broker cluster: under steady load, with two outbox relays, two
problem-list consumers, two scoring workers and two notify instances as processes, kill -9 one
broker, the leading relay, one instance of each consumer and the notify instance that holds the
dispatcher; afterwards nothing acknowledged is missing or applied twice, the read models equal
a rebuild, and no notification was sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any
from uuid import UUID, uuid4

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from services.inspection.projections import ProblemList
from services.notify.domain import Recipient
from services.notify.ledger import upsert_recipient
from services.notify.worker import DISPATCH_LOCK
from services.scoring.projections import ScoringProjection
from services.scoring.rules import load_rules
from shared.events.envelope import DomainEvent
from shared.events.inspection import IssueAssigned, RectificationClosed, RectificationReported
from shared.events.registry import registry
from shared.eventstore import EventMeta, EventStore, StreamAppend
from shared.grid import GridLevel, cached_grid
from shared.outbox import RELAY_LOCK, outbox_backlog
from shared.projection import rebuild
from shared.settings import ROOT, Settings
from tests.cluster.conftest import Cluster
from tests.cluster.problem_list_runner import COUNT_TABLE
from tests.support.factories import issue_found
from tests.support.kafka import read_all

pytestmark = pytest.mark.integration

ISSUE_TOPIC = "inspection.issue"
PROJECTION = ProblemList.name
NOTIFY_PROJECTION = "notify"
SCORING_PROJECTION = "scoring"
SCORING_TABLES = {
    "scoring_items": "event_id, level, subject, rule",
    "scoring_issues": "issue_id",
    "scoring_daily": "day, level, subject",
}
OWNER, UNIT = "李四", "wuan-town"
STATUS_AT_VERSION = {1: "found", 2: "assigned", 3: "reported", 4: "closed"}
LOAD_S = 16.0
KILL_BROKER_AT_S = 4.0
KILL_INSTANCES_AT_S = 6.0
SETTLE_TIMEOUT_S = 120.0


# --- the load: new issues and the next lifecycle step of earlier ones -------------------------


@dataclass
class OpenIssue:
    issue_id: UUID
    grid_path: str
    found_at: datetime
    version: int = 1

    @property
    def stream_id(self) -> str:
        return f"issue-{self.issue_id}"


def next_step(issue: OpenIssue) -> tuple[DomainEvent, EventMeta]:
    """Assigned, then reported, then closed: the closed loop of one issue."""
    at = issue.found_at + timedelta(minutes=10 * issue.version)
    deadline = issue.found_at + timedelta(hours=24)
    unit = UNIT
    event: DomainEvent
    if issue.version == 1:
        event = IssueAssigned(issue_id=issue.issue_id, responsible_unit=unit, owner=OWNER, deadline=deadline)
    elif issue.version == 2:
        event = RectificationReported(
            issue_id=issue.issue_id,
            responsible_unit=unit,
            text="已清理并冲洗地面",
            photos=["photo://2026/11/24/after.jpg"],
            reported_at=at,
        )
    else:
        event = RectificationClosed(issue_id=issue.issue_id, responsible_unit=unit, deadline=deadline, on_time=True)
    return event, EventMeta(source=unit, actor=OWNER, grid_path=issue.grid_path, occurred_at=at)


class SteadyLoad:
    """Appends a few new issues and advances a few open ones every tick, through the EventStore;
    remembers every acknowledged event id (what a caller was told is stored)."""

    def __init__(self, store: EventStore, grids: list[str], *, new_per_tick: int = 4, steps_per_tick: int = 4):
        self.store = store
        self.grids = grids
        self.new_per_tick = new_per_tick
        self.steps_per_tick = steps_per_tick
        self.acknowledged: set[UUID] = set()
        self.open: list[OpenIssue] = []
        self.found = 0

    async def tick(self) -> None:
        appends = []
        new = []
        for _ in range(self.new_per_tick):
            grid = self.grids[self.found % len(self.grids)]
            at = datetime(2026, 11, 24, 1, 0, tzinfo=UTC) + timedelta(seconds=self.found)
            self.found += 1
            issue = OpenIssue(uuid4(), grid, at)
            new.append(issue)
            appends.append(StreamAppend(issue.stream_id, 0, [issue_found(issue.issue_id, grid, at)]))
        stepped = self.open[: self.steps_per_tick]
        for issue in stepped:
            appends.append(StreamAppend(issue.stream_id, issue.version, [next_step(issue)]))
        result = await self.store.append_many(appends)
        self.acknowledged.update(env.event_id for env in result.envelopes)
        for issue in stepped:
            issue.version += 1
        self.open = [i for i in self.open[self.steps_per_tick :] + stepped if i.version < 4] + new

    async def run(self, stop: asyncio.Event, tick_s: float = 0.05) -> None:
        while not stop.is_set():
            await self.tick()
            await asyncio.sleep(tick_s)


# --- processes --------------------------------------------------------------------------------


class Processes:
    """The relays and consumers this test starts, each with its own log file."""

    def __init__(self, settings: Settings, logs: Path):
        self.env = {
            **os.environ,
            "WENMING_PG_DSN": settings.pg_dsn.get_secret_value(),
            "WENMING_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "WENMING_TOPIC_PREFIX": settings.topic_prefix,
        }
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._files: list[IO[bytes]] = []

    def start(self, name: str, module: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        self._files.append(log)
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait(10)

    def alive(self, name: str) -> bool:
        return self.procs[name].poll() is None

    def log_of(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for f in self._files:
            f.close()


@pytest.fixture
def processes(cluster_settings: Settings, tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(cluster_settings, tmp_path)
    yield procs
    procs.stop_all()


# --- observations -----------------------------------------------------------------------------


async def lock_held(pool: asyncpg.Pool, key: int) -> bool:
    """Whether some session holds this advisory lock (the relay's or the dispatcher's) here."""
    return bool(
        await pool.fetchval(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
            " WHERE l.locktype = 'advisory' AND l.objid = $1 AND l.granted AND d.datname = current_database()",
            key,
        )
    )


async def group_members(settings: Settings, group_id: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([group_id])
        groups: list[Any] = described[0].to_object()["groups"]
        return sum(len(g["members"]) for g in groups if g["state"] == "Stable")
    finally:
        await admin.close()


async def replication_of(settings: Settings, topic: str) -> tuple[set[int], str | None]:
    """Replica counts of the topic's partitions and its min.insync.replicas (retried while the
    new topic's metadata reaches every broker)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        for _ in range(40):
            (meta,) = await admin.describe_topics([topic])
            described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
            resource = described[0].to_object()["resources"][0]
            configs = {e["config_names"]: e["config_value"] for e in resource["config_entries"]}
            if meta["partitions"] and "min.insync.replicas" in configs:
                return {len(p["replicas"]) for p in meta["partitions"]}, configs["min.insync.replicas"]
            await asyncio.sleep(0.25)
        return set(), None
    finally:
        await admin.close()


async def until(what: str, check: Any, timeout: float, every: float = 0.25) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise TimeoutError(f"not reached in {timeout:.0f}s: {what}")
        await asyncio.sleep(every)


ISSUE_COLUMNS = (
    "issue_id, grid_path, township, category, severity, status, responsible_unit, owner, deadline,"
    " closed_at, on_time, rejections, reopened, version, updated_at"
)


async def scoring_tables(pool: asyncpg.Pool) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the scoring read model, in key order."""
    return {
        table: [tuple(r) for r in await pool.fetch(f"SELECT * FROM {table} ORDER BY {key}")]
        for table, key in SCORING_TABLES.items()
    }


async def problem_list(pool: asyncpg.Pool) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await pool.fetch(f"SELECT {ISSUE_COLUMNS} FROM inspection_issues ORDER BY issue_id")]


# --- the test ---------------------------------------------------------------------------------


async def test_kill_a_broker_a_relay_and_a_consumer_under_load(
    cluster: Cluster, cluster_settings: Settings, cluster_pool: asyncpg.Pool, processes: Processes
) -> None:
    settings, pool = cluster_settings, cluster_pool
    async with pool.acquire() as conn:
        await conn.execute(COUNT_TABLE)
        # The owner every IssueAssigned names, told in the in-app inbox.
        owner = Recipient(
            recipient_id="owner-lisi",
            name=OWNER,
            grid_path="changtai/wuan",
            role="owner",
            unit=UNIT,
            channels=["inbox"],
        )
        await upsert_recipient(conn, owner, None)

    # The topic is replicated three ways and refuses writes with fewer than two in sync.
    replicas, min_isr = await replication_of(settings, settings.topic(ISSUE_TOPIC))
    assert replicas == {3}
    assert min_isr == "2"

    # Relay A first, so A is the leader; then the stand-by B. Notify A first, so A holds the
    # dispatcher; then notify B. And two problem-list consumers.
    processes.start("relay-a", "shared.outbox")
    await until("relay A holds the leader lock", lambda: lock_held(pool, RELAY_LOCK), 30)
    processes.start("relay-b", "shared.outbox")
    processes.start("notify-a", "tests.cluster.notify_runner")
    await until("notify A holds the dispatcher lock", lambda: lock_held(pool, DISPATCH_LOCK), 30)
    processes.start("notify-b", "tests.cluster.notify_runner")
    processes.start("consumer-1", "tests.cluster.problem_list_runner")
    processes.start("consumer-2", "tests.cluster.problem_list_runner")
    processes.start("scoring-1", "services.scoring", "worker")
    processes.start("scoring-2", "services.scoring", "worker")

    def two_members(projection: str) -> Any:
        async def check() -> bool:
            with contextlib.suppress(Exception):
                return await group_members(settings, f"{settings.topic_prefix}.projection.{projection}") == 2
            return False

        return check

    await until("both problem-list consumers in the group", two_members(PROJECTION), 60)
    await until("both notify instances in the group", two_members(NOTIFY_PROJECTION), 60)
    await until("both scoring workers in the group", two_members(SCORING_PROJECTION), 60)

    grids = cached_grid(settings.district_file).at_level(GridLevel.GRID)[:40]
    load = SteadyLoad(EventStore(pool, settings), grids)
    stop = asyncio.Event()
    loader = asyncio.create_task(load.run(stop))
    try:
        await asyncio.sleep(KILL_BROKER_AT_S)
        cluster.kill_broker(1)
        await asyncio.sleep(KILL_INSTANCES_AT_S - KILL_BROKER_AT_S)
        processes.kill("relay-a")
        processes.kill("consumer-1")
        processes.kill("notify-a")
        processes.kill("scoring-1")
        await asyncio.sleep(LOAD_S - KILL_INSTANCES_AT_S)
    finally:
        stop.set()
        await loader
    acknowledged = load.acknowledged
    assert len(acknowledged) > 1000, "the load should have been steady, not a trickle"

    async def drained() -> bool:
        async with pool.acquire() as conn:
            return await outbox_backlog(conn) == 0

    def all_applied(projection: str) -> Any:
        async def check() -> bool:
            n = await pool.fetchval("SELECT count(*) FROM projection_applied WHERE projection = $1", projection)
            return int(n) >= len(acknowledged)

        return check

    async def deliveries_settled() -> bool:
        pending = await pool.fetchval("SELECT count(*) FROM notify_deliveries WHERE status <> 'sent'")
        return int(pending) == 0

    try:
        await until("the surviving consumer applied every event", all_applied(PROJECTION), SETTLE_TIMEOUT_S)
        await until("the surviving notify planned every event", all_applied(NOTIFY_PROJECTION), SETTLE_TIMEOUT_S)
        await until(
            "the surviving scoring worker applied every event", all_applied(SCORING_PROJECTION), SETTLE_TIMEOUT_S
        )
        await until("the surviving dispatcher sent every delivery", deliveries_settled, SETTLE_TIMEOUT_S)
        await until("the stand-by relay drained the outbox", drained, SETTLE_TIMEOUT_S)
    except TimeoutError:
        for name in ("relay-b", "consumer-2", "notify-b", "scoring-2"):
            print(f"---- {name}", processes.log_of(name), sep="\n")
        raise
    assert all(processes.alive(name) for name in ("relay-b", "consumer-2", "notify-b", "scoring-2"))
    assert await lock_held(pool, RELAY_LOCK), "the stand-by relay took the leader lock"
    assert await lock_held(pool, DISPATCH_LOCK), "the other notify instance took the dispatcher"

    # Every acknowledged event is stored, and on its topic at least once: the sets are equal.
    rows = await pool.fetch("SELECT event_id, stream_id, stream_version, type FROM events")
    stored = {r["event_id"]: (r["stream_id"], r["stream_version"]) for r in rows if r["stream_id"].startswith("issue-")}
    assert set(stored) == acknowledged
    records = await read_all(settings, settings.topic(ISSUE_TOPIC))
    on_topic = [(rec.partition, registry.decode(rec.value)[0]) for rec in records]
    assert {env.event_id for _, env in on_topic} == acknowledged
    # At least once, not more: only the killed leader's unmarked last batch may be re-sent.
    copies = Counter(env.event_id for _, env in on_topic)
    resent = sum(n - 1 for n in copies.values())
    assert resent <= settings.outbox_batch
    # One aggregate stays on one partition and in order (first copies by stream version).
    partitions: dict[str, set[int]] = defaultdict(set)
    first_seen: dict[str, list[int]] = defaultdict(list)
    seen: set[UUID] = set()
    for partition, env in on_topic:
        partitions[env.stream_id].add(partition)
        if env.event_id not in seen:
            seen.add(env.event_id)
            first_seen[env.stream_id].append(env.stream_version)
    assert all(len(p) == 1 for p in partitions.values())
    assert all(v == list(range(1, len(v) + 1)) for v in first_seen.values())

    # The dispatcher's NotificationSent events are on their topic too.
    sent_events = {r["event_id"]: r["stream_id"] for r in rows if r["type"] == "NotificationSent"}
    delivery_records = await read_all(settings, settings.topic("notify.delivery"))
    assert {registry.decode(rec.value)[0].event_id for rec in delivery_records} == set(sent_events)

    # No notification sent twice: one delivery per assignment, each written to the inbox once
    # and confirmed by exactly one NotificationSent, though the dispatcher's holder was killed.
    assigned = sum(1 for r in rows if r["type"] == "IssueAssigned")
    ledger = await pool.fetch("SELECT delivery_id, status FROM notify_deliveries")
    assert len(ledger) == assigned > 0
    inbox = await pool.fetch("SELECT message_id FROM notify_inbox WHERE recipient_id = 'owner-lisi'")
    assert sorted(r["message_id"] for r in inbox) == sorted(r["delivery_id"] for r in ledger)
    sent_per_delivery = Counter(sent_events.values())
    assert sent_per_delivery == Counter({f"notification-{r['delivery_id']}": 1 for r in ledger})

    # No event applied twice, none missed: per stream, applied count == events stored.
    per_stream = Counter(stream for stream, _ in stored.values())
    applied = {r["stream_id"]: r["n"] for r in await pool.fetch("SELECT stream_id, n FROM cluster_applied")}
    assert applied == dict(per_stream)

    # The read model agrees with the store: one row per issue, its version and status.
    live = await problem_list(pool)
    assert len(live) == len(per_stream)
    expected = {UUID(s.removeprefix("issue-")): n for s, n in per_stream.items()}
    assert {row[0]: (row[13], row[5]) for row in live} == {i: (n, STATUS_AT_VERSION[n]) for i, n in expected.items()}

    # And both read models equal a rebuild from the topic (the consumers are stopped first:
    # rebuild is exclusive). Scoring's counters (reports, rejections) would differ if an event
    # had been applied twice.
    scoring_live = await scoring_tables(pool)
    assert len(scoring_live["scoring_issues"]) == len(live)
    processes.stop_all()
    await rebuild(settings, pool, ProblemList(), progress=False)
    assert await problem_list(pool) == live
    scoring = ScoringProjection(load_rules(), cached_grid(settings.district_file))
    await rebuild(settings, pool, scoring, progress=False)
    assert await scoring_tables(pool) == scoring_live
    print(
        f"cluster failover: {len(acknowledged)} events acknowledged, {len(records)} records on the topic"
        f" ({resent} re-sent by the new leader), {len(live)} issues, read model == rebuild,"
        f" scoring == rebuild ({len(scoring_live['scoring_items'])} score items),"
        f" {len(ledger)} notifications each sent once"
    )
