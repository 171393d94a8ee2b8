"""`python -m bench` (what `make bench` runs): every benchmark step in one run, a table of the
figures beside their raw limits, and bench/results/latest.json plus a dated copy.

Steps run in the order of STEPS, in one process, against one fresh database and topic prefix.
To add benchmarks, write a module (e.g. bench/ingest.py) with its own `STEPS` list of
`bench.common.Step` and put it in STEPS below; describe new figures with `bench.common.describe`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
import traceback
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

from bench import cluster, dashboard_lag, e2e, foundation, ingest, notify, scoring_replay
from bench.common import (
    FIGURES,
    BenchRun,
    Step,
    bench_run,
    git_info,
    kafka_version,
    machine_info,
    render_table,
    write_results,
)

STEPS: list[Step] = [
    *foundation.STEPS,
    *ingest.STEPS,
    *notify.STEPS,
    *scoring_replay.STEPS,
    *dashboard_lag.STEPS,
    *e2e.STEPS,
    *cluster.STEPS,
]


async def _postgres_version(run: BenchRun) -> str:
    async with run.pool.acquire() as conn:
        return str(await conn.fetchval("SHOW server_version"))


async def run_steps(steps: list[Step], *, keep: bool) -> tuple[dict[str, Any], dict[str, float], list[str]]:
    """Run the steps; returns the flat results record, the figures and the errors (step: message)."""
    record: dict[str, Any] = {}
    errors: list[str] = []
    started = time.perf_counter()
    async with bench_run(keep=keep) as run:
        record["postgres_version"] = await _postgres_version(run)
        record["bench_run_id"] = run.run_id
        record["bench_prefix"] = run.settings.topic_prefix
        for step in steps:
            print(f"[bench] {step.name}: {step.doc} ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            try:
                got = await step.run(run)
            except Exception as exc:
                traceback.print_exc()
                errors.append(f"{step.name}: {exc.__class__.__name__}: {exc}")
                continue
            run.figures.update(got)
            shown = ", ".join(f"{k}={v:,.0f}" for k, v in got.items())
            print(f"[bench] {step.name}: {shown} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
        figures = dict(run.figures)
        record.update({k: round(v, 2) for k, v in figures.items()})
        record.update(run.info)
    record["duration_s"] = round(time.perf_counter() - started, 1)
    return record, figures, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--only", help="comma-separated step names to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the steps and figures, run nothing")
    parser.add_argument("--keep", action="store_true", help="keep the run's database and topics (for inspection)")
    parser.add_argument("--no-write", action="store_true", help="print the table only, write no results file")
    args = parser.parse_args(argv)
    if args.list:
        for s in STEPS:
            print(f"step {s.name:16} {s.doc}")
        for f in FIGURES.values():
            print(f"figure {f.key:20} {f.unit:9} {f.what}")
        return 0
    steps = STEPS
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        unknown = sorted(set(wanted) - {s.name for s in STEPS})
        if unknown:
            parser.error(f"unknown step(s): {', '.join(unknown)}")
        steps = [s for s in STEPS if s.name in wanted]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")

    record: dict[str, Any] = {"timestamp": datetime.now(UTC).isoformat(timespec="seconds")}
    record.update(machine_info())
    record.update(git_info())
    record["kafka_version"] = kafka_version()
    record["aiokafka_version"] = version("aiokafka")
    record["asyncpg_version"] = version("asyncpg")
    measured, figures, errors = asyncio.run(run_steps(steps, keep=args.keep))
    record.update(measured)
    if errors:
        record["errors"] = "; ".join(errors)

    print()
    print(
        f"Wenming bench  {record['timestamp']}  commit {str(record['git_commit'])[:10]}"
        f"{' (dirty)' if record['git_dirty'] else ''}  {record['machine_cpu']}, {record['machine_cores']} cores,"
        f" {record['machine_mem_mb']:,} MB  Kafka {record['kafka_version']}"
        f"  PostgreSQL {record.get('postgres_version', '?')}"
    )
    print(render_table(figures))
    if not args.no_write:
        latest, dated = write_results(record)
        print(f"\nwritten: {latest.relative_to(latest.parents[2])} and {dated.name}")
    if errors:
        print("\nFAILED steps:\n  " + "\n  ".join(errors), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
