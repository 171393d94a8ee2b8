"""What every benchmark step shares: the run's fresh database and topics, the figures' catalogue
(unit, raw limit, target), event builders, a subprocess server helper, the table and the results file.

A step is an async function `(BenchRun) -> dict[str, float]` wrapped in `Step`; a module lists its
steps in `STEPS` and `bench/__main__.py` runs every module's steps in order, in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr

from shared.db import create_pool, migrate
from shared.events.envelope import EventEnvelope
from shared.events.inspection import IssueFound
from shared.eventstore import EventMeta
from shared.grid import GridLevel, cached_grid
from shared.kafka import ensure_topics
from shared.settings import ROOT, Settings, get_settings

RESULTS_DIR = ROOT / "bench" / "results"
Figures = dict[str, float]


def env_int(name: str, default: int) -> int:
    """A size knob from the environment (e.g. BENCH_RAW_EVENTS=50000), else the default."""
    raw = os.environ.get(name, "").strip().replace("_", "")
    return int(raw) if raw else default


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def per_second(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


# --- the figures' catalogue ------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """What a figure means, its unit, the raw figure it is compared with, and its target if any."""

    key: str
    unit: str
    what: str
    raw: str | None = None
    target: float | None = None
    higher_is_better: bool = True


FIGURES: dict[str, Figure] = {}


def describe(*figures: Figure) -> None:
    """Add or replace figures in the catalogue (a later module may refine one)."""
    for f in figures:
        FIGURES[f.key] = f


describe(
    Figure("raw_produce_eps", "events/s", "bare aiokafka producer (acks=all, idempotent), envelope-sized records"),
    Figure("raw_consume_eps", "events/s", "bare aiokafka consumer, getmany(max_records=2000)"),
    Figure("raw_pg_insert_eps", "rows/s", "bare asyncpg INSERT ... unnest, 500 rows a statement, 4 connections"),
    Figure("raw_http_rps", "req/s", "bare FastAPI echo under uvicorn, httpx client, 32 in flight"),
    Figure(
        "append_eps", "events/s", "EventStore.append_many, 500 new streams a call, 4 connections", "raw_pg_insert_eps"
    ),
    Figure("append_single_eps", "events/s", "EventStore.append, one event a call, 8 connections", "raw_pg_insert_eps"),
    Figure("outbox_eps", "events/s", "OutboxRelay: outbox rows to Kafka, until drained", "raw_produce_eps"),
    # Defined by issue 9; measured by steps other modules add.
    Figure("ingest_single_eps", "events/s", "HTTP ingest, one event a request", "raw_http_rps"),
    Figure("ingest_batch_eps", "events/s", "HTTP ingest, batches of events", "raw_pg_insert_eps", 10_000),
    Figure("scoring_replay_eps", "events/s", "scoring replay from the topics", "raw_consume_eps", 20_000),
    Figure("notify_eps", "events/s", "notify delivery rate", "raw_consume_eps"),
    Figure("e2e_p50_ms", "ms", "accepted -> score updated -> dashboard, median", None, None, False),
    Figure("e2e_p99_ms", "ms", "accepted -> score updated -> dashboard, 99th percentile", None, 250, False),
    Figure("max_rss_mb", "MB", "largest resident memory of a service", None, 200, False),
)


# --- the run: fresh database, fresh topics, one pool -------------------------------------------


@dataclass
class BenchRun:
    """One benchmark run: settings pointing at its own database and topic prefix, and a pool."""

    settings: Settings
    pool: asyncpg.Pool
    run_id: str
    figures: Figures = field(default_factory=dict)
    """Figures measured so far in this run (a step may read an earlier step's figure)."""
    info: dict[str, Any] = field(default_factory=dict)
    """Flat extras for the results file: sizes, record bytes, checks."""


def _dsn_with_database(dsn: str, database: str) -> str:
    base, _, tail = dsn.rpartition("/")
    query = tail.partition("?")[2]
    return f"{base}/{database}" + (f"?{query}" if query else "")


@contextlib.asynccontextmanager
async def bench_run(*, keep: bool = False) -> AsyncIterator[BenchRun]:
    """Create a database and the catalogue's topics under a fresh prefix; drop both at the end.

    The run's settings also go into WENMING_* environment variables, so services a step starts
    in a subprocess use the same database and topics.
    """
    base = get_settings()
    run_id = uuid.uuid4().hex[:8]
    database = f"wenming_bench_{run_id}"
    admin_dsn = base.pg_dsn.get_secret_value()
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    dsn = _dsn_with_database(admin_dsn, database)
    settings = Settings(pg_dsn=SecretStr(dsn), topic_prefix=f"bench{run_id}")
    saved_env = {k: os.environ.get(k) for k in ("WENMING_PG_DSN", "WENMING_TOPIC_PREFIX")}
    os.environ["WENMING_PG_DSN"] = dsn
    os.environ["WENMING_TOPIC_PREFIX"] = settings.topic_prefix
    pool: asyncpg.Pool | None = None
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        await ensure_topics(settings)
        pool = await create_pool(settings, min_size=8, max_size=12)
        yield BenchRun(settings=settings, pool=pool, run_id=run_id)
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if pool is not None:
            await pool.close()
        if not keep:
            await _delete_topics(settings)
            admin = await asyncpg.connect(admin_dsn)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            finally:
                await admin.close()


@contextlib.asynccontextmanager
async def own_topics(run: BenchRun, name: str) -> AsyncIterator[Settings]:
    """For the step's duration, a topic prefix of its own (`<run prefix><name>`), so the events
    earlier steps published do not queue up before what this step measures. Services the step
    starts in subprocesses get it through WENMING_TOPIC_PREFIX."""
    base = run.settings
    settings = base.model_copy(update={"topic_prefix": f"{base.topic_prefix}{name}"})
    await ensure_topics(settings)
    saved = os.environ.get("WENMING_TOPIC_PREFIX")
    os.environ["WENMING_TOPIC_PREFIX"] = settings.topic_prefix
    run.settings = settings
    try:
        yield settings
    finally:
        run.settings = base
        if saved is None:
            os.environ.pop("WENMING_TOPIC_PREFIX", None)
        else:
            os.environ["WENMING_TOPIC_PREFIX"] = saved


async def _delete_topics(settings: Settings) -> None:
    """Delete the run's topics (the benchmark writes hundreds of MB; nobody reads them after)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        ours = [t for t in await admin.list_topics() if t.startswith(settings.topic_prefix)]  # steps' own too
        if ours:
            await admin.delete_topics(ours, timeout_ms=30_000)
    finally:
        await admin.close()


# --- event builders (IssueFound as the inspection teams report them) ---------------------------

_TEMPLATES: list[dict[str, Any]] = [
    dict(
        method="unannounced",
        category="sanitation",
        case_type="event",
        severity="minor",
        description="沿街垃圾未及时清运，垃圾桶满溢，周边地面有散落垃圾和污水，早高峰行人绕行，需当日清理并冲洗地面",
        location="文泉路12号东侧人行道",
        photos=["photo://2026/11/24/a.jpg", "photo://2026/11/24/b.jpg"],
        deadline_hours=24,
    ),
    dict(
        method="routine",
        category="street-vending",
        case_type="event",
        severity="major",
        description="占道经营，流动摊贩占用盲道和人行道，影响行人通行，现场劝离后又返回，需市场监管和城管联合处置",
        location="兴泰路农贸市场北门",
        photos=["photo://2026/11/24/c.jpg"],
        deadline_hours=12,
    ),
    dict(
        method="unannounced",
        category="public-facility",
        case_type="component",
        severity="serious",
        description="井盖破损缺失，存在安全隐患，未设置警示标志，夜间照明不足，需立即设置围挡并更换井盖",
        location="珠坂社区第三网格主干道",
        photos=["photo://2026/11/24/d.jpg", "photo://2026/11/24/e.jpg", "photo://2026/11/24/f.jpg"],
        deadline_hours=4,
    ),
]


@dataclass
class IssueFactory:
    """Builds IssueFound events over the demo district's unit grids: one validated template per
    kind of issue, then a cheap copy per event with its own issue id, grid and time."""

    grid_paths: list[str]
    day: datetime = datetime(2026, 11, 24, 0, 30, tzinfo=UTC)
    _templates: list[IssueFound] = field(default_factory=list)
    _n: int = 0

    @classmethod
    def for_settings(cls, settings: Settings) -> IssueFactory:
        grids = cached_grid(settings.district_file).at_level(GridLevel.GRID)
        factory = cls(grid_paths=grids or ["changtai/wuan/c01/g01"])
        for t in _TEMPLATES:
            data = dict(t, issue_id=uuid.uuid4(), found_at=factory.day, standards_version=1)
            if "grid_path" in IssueFound.model_fields:
                data["grid_path"] = factory.grid_paths[0]
            factory._templates.append(IssueFound.model_validate(data))
        return factory

    def issue_found(self) -> tuple[IssueFound, EventMeta]:
        i = self._n
        self._n += 1
        grid = self.grid_paths[(i * 7919) % len(self.grid_paths)]
        at = self.day + timedelta(seconds=(i * 13) % 43_200)
        update: dict[str, Any] = {"issue_id": uuid.uuid4(), "found_at": at}
        if "grid_path" in IssueFound.model_fields:
            update["grid_path"] = grid
        payload = self._templates[i % len(self._templates)].model_copy(update=update)
        team = f"inspection-team-{1 + i % 6}"
        return payload, EventMeta(source=team, actor=f"巡查员{1 + i % 40:02d}", grid_path=grid, occurred_at=at)

    def envelope(self) -> EventEnvelope:
        """An envelope exactly as the event store writes it (for record sizes)."""
        payload, meta = self.issue_found()
        return EventEnvelope.model_construct(
            event_id=uuid.uuid4(),
            type=payload.event_type,
            schema_version=payload.schema_version,
            stream_id=f"issue-{payload.issue_id}",
            stream_version=1,
            occurred_at=meta.occurred_at,
            recorded_at=meta.occurred_at,
            source=meta.source,
            actor=meta.actor,
            grid_path=meta.grid_path,
            correlation_id=meta.correlation_id,
            causation_id=None,
            payload=payload.model_dump(mode="json"),
        )


# --- a server in a subprocess ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def served(args: Sequence[str], ready_url: str, *, timeout: float = 20.0) -> AsyncIterator[int]:
    """Start `python <args>` in a subprocess, wait until GET ready_url answers, yield its pid;
    terminate it (then kill) on the way out."""
    with tempfile.TemporaryFile() as errlog:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=errlog
        )
        try:
            deadline = time.monotonic() + timeout
            async with httpx.AsyncClient(timeout=2) as client:
                while True:
                    if proc.returncode is not None:
                        errlog.seek(0)
                        tail = errlog.read()[-2000:].decode(errors="replace")
                        raise RuntimeError(f"server exited with {proc.returncode}: {tail}")
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(ready_url)).status_code < 500:
                            break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"server not ready at {ready_url}")
                    await asyncio.sleep(0.1)
            yield proc.pid
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


@dataclass
class HttpLoad:
    ok: int
    failed: int
    seconds: float

    @property
    def rate(self) -> float:
        return per_second(self.ok, self.seconds)


async def http_load(
    base_url: str,
    request: Callable[[httpx.AsyncClient], Awaitable[bool]],
    *,
    seconds: float,
    concurrency: int = 32,
    clients: int = 8,
    warmup_s: float = 1.0,
    headers: dict[str, str] | None = None,
) -> HttpLoad:
    """Keep `concurrency` requests in flight for `seconds` (after a warm-up), spread over `clients`
    httpx.AsyncClients; `request(client)` sends one and says whether it succeeded.

    Several clients, not one: a single AsyncClient with 32 pooled connections spends its time in
    its pool's bookkeeping (about 270 req/s here, against about 1,100 with 8 clients of 4)."""
    clients = max(1, min(clients, concurrency))
    per_client = -(-concurrency // clients)
    limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
    pool = [httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30, headers=headers) for _ in range(clients)]
    counts = [0, 0]

    async def worker(client: httpx.AsyncClient, until: float, count: bool) -> None:
        while time.perf_counter() < until:
            try:
                ok = await request(client)
            except httpx.HTTPError:
                ok = False
            if count:
                counts[0 if ok else 1] += 1

    try:
        mine = [pool[i % clients] for i in range(concurrency)]
        if warmup_s > 0:
            until = time.perf_counter() + warmup_s
            await asyncio.gather(*(worker(c, until, False) for c in mine))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c, t0 + seconds, True) for c in mine))
        return HttpLoad(ok=counts[0], failed=counts[1], seconds=time.perf_counter() - t0)
    finally:
        for c in pool:
            await c.aclose()


# --- steps -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One benchmark: a name to select it by, and the coroutine that measures its figures."""

    name: str
    run: Callable[[BenchRun], Awaitable[Figures]]
    doc: str = ""


# --- machine, table, results ---------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_mb = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_mb = int(line.split()[1]) // 1024
                break
    return {
        "machine_cpu": cpu,
        "machine_cores": os.cpu_count() or 0,
        "machine_mem_mb": mem_mb,
        "machine_os": f"{platform.system()} {platform.release()}",
        "python_version": platform.python_version(),
    }


def git_info() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    return {"git_commit": git("rev-parse", "HEAD"), "git_dirty": bool(git("status", "--porcelain"))}


def kafka_version() -> str:
    """The broker version the local stack pins (deploy/kafka/pom.xml)."""
    try:
        text = (ROOT / "deploy" / "kafka" / "pom.xml").read_text()
        return text.split("<kafka.version>")[1].split("</kafka.version>")[0].strip()
    except (OSError, IndexError):
        return "unknown"


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def ratio_of(key: str, figures: Figures) -> float | None:
    fig = FIGURES.get(key)
    if fig is None or fig.raw is None or key not in figures or not figures.get(fig.raw):
        return None
    return figures[key] / figures[fig.raw]


def render_table(figures: Figures) -> str:
    """figure | value | unit | raw limit | ratio | target, in catalogue order, then any others."""
    order = [k for k in FIGURES if k in figures] + sorted(k for k in figures if k not in FIGURES)
    rows = [("figure", "value", "unit", "raw limit", "ratio", "target")]
    for key in order:
        fig = FIGURES.get(key)
        unit = fig.unit if fig else ""
        raw = ""
        if fig and fig.raw:
            raw = f"{fig.raw} {_fmt(figures[fig.raw])}" if fig.raw in figures else f"{fig.raw} (not run)"
        ratio = ratio_of(key, figures)
        target = ""
        if fig and fig.target is not None:
            met = figures[key] >= fig.target if fig.higher_is_better else figures[key] <= fig.target
            target = f"{'>=' if fig.higher_is_better else '<='} {_fmt(fig.target)} {'met' if met else 'MISSED'}"
        rows.append((key, _fmt(figures[key]), unit, raw, "" if ratio is None else f"{ratio:.2f}", target))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        cells = [c.rjust(w) if i in (1, 4) else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_results(record: dict[str, Any], results_dir: Path = RESULTS_DIR) -> tuple[Path, Path]:
    """Write latest.json and a dated copy (atomically: a reader never sees half a file)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    commit = str(record.get("git_commit", ""))[:7] or "nocommit"
    text = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    paths = (results_dir / "latest.json", results_dir / f"{stamp}-{commit}.json")
    for path in paths:
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return paths
