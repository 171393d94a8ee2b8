"""`wenming`: the operators' command-line tool.

    wenming tail inspection.issue [--from-beginning] [--limit N]   decoded, pretty-printed records
    wenming lag                                                    consumer lag per group and topic
    wenming projections                                            the projections `replay` knows
    wenming replay inspection.problem_list                         drop a read model, rebuild it from Kafka
    wenming dlq list [--limit N]                                   dead letters with their reasons
    wenming dlq redrive --offset N [--offset M ...] | --consumer X  put dead letters back on their topic
    wenming validate events.json                                   check envelopes against the schemas

Topics are named without the prefix (`inspection.issue`); settings come from the environment or
`.local/stack.env`, as for the services.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

import shared.events  # noqa: F401  (registers every event type)
from shared.db import create_pool
from shared.events.registry import EventDecodeError, registry
from shared.kafka import make_consumer, make_producer, stop_consumer, topic_partitions
from shared.projection import Projection, rebuild
from shared.settings import ROOT, Settings, get_settings

DLQ_HEADERS = (
    "wm_dlq_reason",
    "wm_dlq_source_topic",
    "wm_dlq_source_partition",
    "wm_dlq_source_offset",
    "wm_dlq_consumer",
    "wm_dlq_at",
)


def discover_projections() -> dict[str, type[Projection]]:
    """Every concrete Projection subclass in services/*/projections.py, by its name."""
    found: dict[str, type[Projection]] = {}
    for path in sorted((ROOT / "services").glob("*/projections.py")):
        module = importlib.import_module(f"services.{path.parent.name}.projections")
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(obj, Projection)
                and obj is not Projection
                and obj.__module__ == module.__name__
                and isinstance(getattr(obj, "name", None), str)
                and not inspect.isabstract(obj)
            ):
                found[obj.name] = obj
    return found


def make_projection(cls: type[Projection], settings: Settings) -> Projection:
    """Projections take no arguments, or the settings."""
    params = [p for p in inspect.signature(cls).parameters.values() if p.default is inspect.Parameter.empty]
    return cls(settings) if params else cls()  # type: ignore[call-arg]


async def read_range(
    settings: Settings, topic: str, *, from_beginning: bool, limit: int, idle_ms: int = 1500
) -> list[Any]:
    consumer = make_consumer(settings, group_id=None)
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, topic)
        if not tps:
            raise SystemExit(f"no topic {topic}")
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            for tp in tps:
                consumer.seek(tp, max(0, ends[tp] - limit))
        out: list[Any] = []
        while True:
            batch = await consumer.getmany(timeout_ms=idle_ms)
            if not batch:
                break
            for recs in batch.values():
                out.extend(recs)
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                break
        out.sort(key=lambda r: r.timestamp)
        return out[-limit:] if limit else out
    finally:
        await stop_consumer(consumer)


def _print_record(r: Any) -> None:
    try:
        env, _ = registry.decode(r.value)
        print(
            f"{env.occurred_at:%Y-%m-%d %H:%M:%S%z}  {env.type:<24} v{env.schema_version}  {env.stream_id}"
            f"@{env.stream_version}  {env.grid_path}  by {env.source}/{env.actor}"
        )
        print("    " + json.dumps(env.payload, ensure_ascii=False, default=str))
    except EventDecodeError as exc:
        print(f"[{r.partition}@{r.offset}] undecodable: {exc.reason}")


async def cmd_tail(settings: Settings, args: argparse.Namespace) -> int:
    topic = settings.topic(args.topic)
    for r in await read_range(settings, topic, from_beginning=args.from_beginning, limit=args.limit):
        _print_record(r)
    return 0


async def consumer_lag(settings: Settings) -> list[tuple[str, str, int]]:
    """(group, topic, lag) for every consumer group with committed offsets on our topics."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    consumer = make_consumer(settings, group_id=None)
    await consumer.start()
    try:
        rows = []
        for group, _ in await admin.list_consumer_groups():
            offsets = await admin.list_consumer_group_offsets(group)
            ours = {tp: o for tp, o in offsets.items() if tp.topic.startswith(settings.topic_prefix + ".")}
            if not ours:
                continue
            ends = await consumer.end_offsets(list(ours))
            per_topic: dict[str, int] = {}
            for tp, meta in ours.items():
                per_topic[tp.topic] = per_topic.get(tp.topic, 0) + max(0, ends[tp] - meta.offset)
            rows += [(group, t, lag) for t, lag in sorted(per_topic.items())]
        return rows
    finally:
        await stop_consumer(consumer)
        await admin.close()


async def cmd_lag(settings: Settings, _: argparse.Namespace) -> int:
    rows = await consumer_lag(settings)
    print(f"{'group':<50} {'topic':<40} {'lag':>8}")
    for group, topic, lag in rows:
        print(f"{group:<50} {topic:<40} {lag:>8}")
    return 0


async def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    known = discover_projections()
    if args.projection not in known:
        print(f"unknown projection {args.projection}; known: {', '.join(sorted(known))}", file=sys.stderr)
        return 2
    pool = await create_pool(settings)
    try:
        totals = await rebuild(
            settings, pool, make_projection(known[args.projection], settings), progress=True, wait=args.wait
        )
    finally:
        await pool.close()
    print(f"{args.projection}: {totals.applied} applied, {totals.dead_lettered} unusable records skipped")
    return 0


async def cmd_dlq(settings: Settings, args: argparse.Namespace) -> int:
    records = await read_range(settings, settings.topic("deadletter"), from_beginning=True, limit=0)
    if args.action == "list":
        for r in records[-args.limit :]:
            h = {k: v.decode(errors="replace") for k, v in r.headers}
            print(
                f"[{r.partition}@{r.offset}] {h.get('wm_dlq_at', '')[:19]} {h.get('wm_dlq_consumer', '?')} "
                f"from {h.get('wm_dlq_source_topic', '?')}@{h.get('wm_dlq_source_offset', '?')}: "
                f"{h.get('wm_dlq_reason', '')}"
            )
        print(f"{len(records)} dead letters")
        return 0
    chosen = [
        r
        for r in records
        if (args.offset and f"{r.partition}@{r.offset}" in args.offset)
        or (args.consumer and dict(r.headers).get("wm_dlq_consumer", b"").decode() == args.consumer)
    ]
    if not chosen:
        print("nothing matched: give --offset PARTITION@OFFSET or --consumer NAME")
        return 2
    producer = make_producer(settings)
    await producer.start()
    try:
        for r in chosen:
            h = dict(r.headers)
            topic = h["wm_dlq_source_topic"].decode()
            headers = [(k, v) for k, v in r.headers if k not in DLQ_HEADERS]
            headers.append(("wm_redriven_from", f"{r.partition}@{r.offset}".encode()))
            await producer.send_and_wait(topic, r.value, key=r.key, headers=headers)
            print(f"re-drove {r.partition}@{r.offset} to {topic}")
    finally:
        await producer.stop()
    return 0


def validate_file(path: Path) -> list[str]:
    """Problems with the envelopes in a JSON array or JSON-lines file (empty when all are valid)."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    items: Sequence[Any] = (
        json.loads(text)
        if stripped.startswith("[")
        else [json.loads(line) for line in text.splitlines() if line.strip()]
    )
    problems = []
    for i, item in enumerate(items):
        try:
            registry.decode(json.dumps(item).encode())
        except EventDecodeError as exc:
            problems.append(f"#{i}: {exc.reason}")
    return problems


async def cmd_validate(_: Settings, args: argparse.Namespace) -> int:
    problems = validate_file(Path(args.file))
    for p in problems:
        print(p)
    print("all valid" if not problems else f"{len(problems)} invalid")
    return 1 if problems else 0


async def cmd_projections(_: Settings, __: argparse.Namespace) -> int:
    for name, cls in sorted(discover_projections().items()):
        topics = getattr(cls, "topics", None) or ["(set per instance)"]
        print(f"{name:<40} topics: {', '.join(topics)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="wenming", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("tail", help="print a topic's records, decoded")
    p.add_argument("topic")
    p.add_argument("--from-beginning", action="store_true")
    p.add_argument("--limit", type=int, default=20)
    sub.add_parser("lag", help="consumer lag per group and topic")
    sub.add_parser("projections", help="list the projections replay knows")
    p = sub.add_parser("replay", help="drop a read model and rebuild it from the topics")
    p.add_argument("projection")
    p.add_argument("--wait", action="store_true", help="wait for a running consumer to stop instead of refusing")
    p = sub.add_parser("dlq", help="dead letters: list or re-drive")
    p.add_argument("action", choices=("list", "redrive"))
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--offset", action="append", help="PARTITION@OFFSET of a dead letter to re-drive")
    p.add_argument("--consumer", help="re-drive every dead letter refused by this consumer")
    p = sub.add_parser("validate", help="validate a JSON file of event envelopes against the schemas")
    p.add_argument("file")
    args = parser.parse_args(argv)
    commands = {
        "tail": cmd_tail,
        "lag": cmd_lag,
        "replay": cmd_replay,
        "dlq": cmd_dlq,
        "validate": cmd_validate,
        "projections": cmd_projections,
    }
    return asyncio.run(commands[args.cmd](get_settings(), args))


if __name__ == "__main__":
    sys.exit(main())
