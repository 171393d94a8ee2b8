"""Benchmark: one against two instances of the scoring consumer on the three-broker cluster.

Each round gets fresh topics (RF 3, min.insync.replicas 2) and an empty scoring read model.
N IssueFound records (envelopes with CloudEvents headers, keyed by stream id, over the demo
district's grids) are first produced to `inspection.issue` (12 partitions); then k instances of
`python -m services.scoring worker` start in the `scoring` consumer group, and the clock runs
from the first applied batch until `projection_applied` holds all N (so the second instance's
join and the rebalance it causes are inside the measured span). Also measured: events per
CPU-second of the instances, the figure that does not depend on how busy the machine is.

The cluster: BENCH_CLUSTER_BOOTSTRAP if set (e.g. a `stack.py up --brokers 3` already running);
otherwise the step starts its own in `.local/bench-cluster` on ports BENCH_CLUSTER_PORT
(default 29092..29094, controllers +100) with PostgreSQL left to the running stack, and stops it.

`python -m bench.cluster` runs it alone in a fresh database and prints the figures and the ratio;
`STEPS` plugs it into `python -m bench`. Size: BENCH_CLUSTER_EVENTS (default 20000).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from bench.common import BenchRun, Figure, Figures, IssueFactory, Step, bench_run, describe, env_int, per_second
from shared.kafka import ensure_topics, make_producer
from shared.settings import ROOT, Settings

describe(
    Figure("cluster_scoring_1_eps", "events/s", "scoring consumer, 1 instance, 3-broker cluster (RF 3)"),
    Figure("cluster_scoring_2_eps", "events/s", "scoring consumer, 2 instances in one group, 3-broker cluster"),
    Figure("cluster_scoring_ratio", "x", "2 instances / 1 instance (2.0 = linear)"),
    Figure("cluster_scoring_cpu_eps", "events/CPU-s", "scoring consumer, 1 instance: events per CPU-second it used"),
    Figure("cluster_produce_eps", "events/s", "producing the round's records to the cluster (acks=all)"),
)

ISSUE_TOPIC = "inspection.issue"
PROJECTION = "scoring"
SCORING_TABLES = ("scoring_items", "scoring_issues", "scoring_daily", "scoring_activities")
BENCH_CLUSTER_DIR = ROOT / ".local" / "bench-cluster"


def _stack(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "deploy" / "stack.py"), *args]


@contextlib.asynccontextmanager
async def three_brokers() -> AsyncIterator[str]:
    """The cluster's bootstrap list: the given one, or one started here and stopped after."""
    given = os.environ.get("BENCH_CLUSTER_BOOTSTRAP", "").strip()
    if given:
        yield given
        return
    port = env_int("BENCH_CLUSTER_PORT", 29092)
    env = {**os.environ, "WENMING_LOCAL_DIR": str(BENCH_CLUSTER_DIR), "WENMING_KAFKA_PORT": str(port)}
    env.pop("WENMING_PG_DSN", None)
    try:
        await asyncio.to_thread(
            subprocess.run, _stack("up", "--brokers", "3", "--kafka-only"), env=env, check=True, stdout=sys.stderr
        )
        yield ",".join(f"127.0.0.1:{port + n}" for n in range(3))
    finally:
        await asyncio.to_thread(subprocess.run, _stack("down"), env=env, check=False, capture_output=True)
        shutil.rmtree(BENCH_CLUSTER_DIR, ignore_errors=True)


async def _admin(bootstrap: str) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    return admin


async def wait_for_brokers(bootstrap: str, count: int = 3, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(KafkaError, OSError):
            admin = await _admin(bootstrap)
            try:
                if len((await admin.describe_cluster())["brokers"]) >= count:
                    return
            finally:
                await admin.close()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} brokers not seen at {bootstrap}")
        await asyncio.sleep(0.5)


async def _delete_topics(settings: Settings) -> None:
    with contextlib.suppress(KafkaError, OSError):
        admin = await _admin(settings.kafka_bootstrap)
        try:
            ours = [t for t in await admin.list_topics() if t.startswith(settings.topic_prefix + ".")]
            if ours:
                await admin.delete_topics(ours, timeout_ms=30_000)
        finally:
            await admin.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (from /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Round:
    events_per_s: float
    """Events applied per second of wall time, from the first applied batch to the last."""
    events_per_cpu_s: float
    """Events applied per CPU-second used by the instances over the same span."""
    produced_per_s: float


async def one_round(run: BenchRun, bootstrap: str, instances: int, n: int) -> Round:
    """Produce n fresh records, then let k scoring instances apply them all."""
    settings = run.settings.model_copy(
        update={"kafka_bootstrap": bootstrap, "topic_prefix": f"{run.settings.topic_prefix}c{instances}"}
    )
    await ensure_topics(settings)
    async with run.pool.acquire() as conn:
        await conn.execute("TRUNCATE " + ", ".join(SCORING_TABLES))
        await conn.execute("DELETE FROM projection_applied WHERE projection = $1", PROJECTION)
        await conn.execute("DELETE FROM projection_offsets WHERE projection = $1", PROJECTION)
    factory = IssueFactory.for_settings(settings)
    envelopes = [factory.envelope() for _ in range(n)]
    records = [(e.stream_id.encode(), e.model_dump_json().encode(), e.cloudevents_headers()) for e in envelopes]
    topic = settings.topic(ISSUE_TOPIC)
    producer = make_producer(settings)
    await producer.start()
    try:
        await producer.partitions_for(topic)
        t0 = time.perf_counter()
        for start in range(0, n, 5000):
            futures = [
                await producer.send(topic, value, key=key, headers=headers)
                for key, value, headers in records[start : start + 5000]
            ]
            await asyncio.gather(*futures)
        produce_s = time.perf_counter() - t0
    finally:
        await producer.stop()

    env = {
        **os.environ,
        "WENMING_PG_DSN": settings.pg_dsn.get_secret_value(),
        "WENMING_KAFKA_BOOTSTRAP": bootstrap,
        "WENMING_TOPIC_PREFIX": settings.topic_prefix,
    }
    with contextlib.ExitStack() as files:
        logs = [files.enter_context(tempfile.TemporaryFile()) for _ in range(instances)]
        return await _apply_all(run, settings, env, logs, n, produce_s)


async def _apply_all(
    run: BenchRun, settings: Settings, env: dict[str, str], logs: list[Any], n: int, produce_s: float
) -> Round:
    """Start one instance per log file, time them until all n events are applied, stop them."""
    instances = len(logs)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(instances):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "services.scoring", "worker"],
                    cwd=ROOT,
                    env=env,
                    stdout=logs[i],
                    stderr=subprocess.STDOUT,
                )
            )
        first: tuple[float, int, float] | None = None
        deadline = time.monotonic() + 600
        while True:
            done = int(
                await run.pool.fetchval("SELECT count(*) FROM projection_applied WHERE projection = $1", PROJECTION)
            )
            now = time.perf_counter()
            cpu = sum(cpu_seconds(p.pid) for p in procs)
            if first is None and done > 0:
                first = (now, done, cpu)
            if done >= n:
                break
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                logs[0].seek(0)
                tail = logs[0].read()[-2000:].decode(errors="replace")
                raise RuntimeError(f"scoring applied {done} of {n} with {instances} instance(s): {tail}")
            await asyncio.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        await _delete_topics(settings)
    assert first is not None
    t_first, done_first, cpu_first = first
    applied = n - done_first
    return Round(
        events_per_s=per_second(applied, now - t_first),
        events_per_cpu_s=per_second(applied, cpu - cpu_first),
        produced_per_s=per_second(n, produce_s),
    )


async def cluster_scale(run: BenchRun) -> Figures:
    """Scoring consumer throughput with one and with two instances on the three-broker cluster."""
    n = env_int("BENCH_CLUSTER_EVENTS", 20_000)
    async with three_brokers() as bootstrap:
        await wait_for_brokers(bootstrap)
        one = await one_round(run, bootstrap, 1, n)
        two = await one_round(run, bootstrap, 2, n)
    run.info.update(cluster_events=n, cluster_brokers=3, cluster_partitions=12, cluster_load_avg=os.getloadavg()[0])
    return {
        "cluster_scoring_1_eps": one.events_per_s,
        "cluster_scoring_2_eps": two.events_per_s,
        "cluster_scoring_ratio": two.events_per_s / one.events_per_s if one.events_per_s else 0.0,
        "cluster_scoring_cpu_eps": one.events_per_cpu_s,
        "cluster_produce_eps": min(one.produced_per_s, two.produced_per_s),
    }


STEPS = [Step("cluster", cluster_scale, "scoring consumer, 1 vs 2 instances, three-broker cluster")]


async def _main() -> None:
    async with bench_run() as run:
        figures = await cluster_scale(run)
    print(f"scoring on 3 brokers, {run.info.get('cluster_events')} events:")
    print(f"  1 instance : {figures['cluster_scoring_1_eps']:>9,.0f} events/s")
    print(f"  2 instances: {figures['cluster_scoring_2_eps']:>9,.0f} events/s")
    print(f"  ratio      : {figures['cluster_scoring_ratio']:>9.2f} x")
    print(f"  per CPU-s  : {figures['cluster_scoring_cpu_eps']:>9,.0f} events per CPU-second of one instance")
    print(f"  load avg   : {run.info.get('cluster_load_avg', 0):>9.1f} on {os.cpu_count()} cores")
    print(f"  (producing : {figures['cluster_produce_eps']:>9,.0f} events/s, acks=all, RF 3)")


if __name__ == "__main__":
    asyncio.run(_main())
