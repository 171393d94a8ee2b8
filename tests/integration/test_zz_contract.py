"""Runs last in the session (hence the name): every record the services produced in this
session's integration tests validates against its JSON Schema, and the subscriber's kit reads
a live topic."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import jsonschema
import pytest

from shared.events.schema import all_schemas
from shared.events.topics import TOPICS
from shared.eventstore import EventStore, StreamAppend
from shared.outbox import OutboxRelay, wait_until_drained
from shared.settings import ROOT
from tests.support.factories import issue_found
from tests.support.kafka import read_all

pytestmark = pytest.mark.integration
KIT = ROOT / "docs" / "events" / "kit"


async def test_every_record_produced_in_this_session_validates_against_its_schema(settings):
    validators = {name: jsonschema.Draft202012Validator(schema) for name, schema in all_schemas().items()}
    checked: dict[str, int] = {}
    failures = []
    for logical in TOPICS:
        if logical in ("deadletter", "inspection.inbound", "test.events"):
            continue  # raw inputs and deliberately broken records
        for r in await read_all(settings, settings.topic(logical)):
            value = json.loads(r.value)
            name = f"{value.get('type')}.v{value.get('schema_version')}.json"
            if name not in validators:
                failures.append(f"{logical}@{r.offset}: no schema {name}")
                continue
            error = next(iter(validators[name].iter_errors(value)), None)
            if error is not None:
                failures.append(f"{logical}@{r.offset} {name}: {error.message[:200]}")
            assert dict(r.headers)["ce_type"].decode() == value["type"]
            checked[logical] = checked.get(logical, 0) + 1
    assert failures == []
    assert checked.get("inspection.issue", 0) > 0, checked


async def test_the_example_consumers_print_a_live_problem_list(settings, pool):
    store = EventStore(pool, settings)
    batch = [issue_found() for _ in range(3)]
    await store.append_many([StreamAppend(f"issue-{p.issue_id}", 0, [(p, m)]) for p, m in batch])
    relay = OutboxRelay(settings)
    task = asyncio.create_task(relay.run())
    async with pool.acquire() as conn:
        await wait_until_drained(conn)
    relay.stop()
    await task
    topic = settings.topic("inspection.issue")
    args = ["--bootstrap", settings.kafka_bootstrap, "--topic", topic, "--seconds", "4"]
    plain = subprocess.run(
        [sys.executable, str(KIT / "problem_list_consumer.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for p, _ in batch:
        assert f"{str(p.issue_id)[:8]}  IssueFound" in plain
    assert "problem list:" in plain.splitlines()[-1]
    ce = subprocess.run(
        [sys.executable, str(KIT / "cloudevents_consumer.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for p, _ in batch:
        assert f"issue={str(p.issue_id)[:8]}" in ce
    assert "IssueFound" in ce and "/wenming/inspection-team-1" in ce
    n_events = int(plain.splitlines()[-1].split(", ")[-1].split()[0])
    assert f"{n_events} CloudEvents read" in ce
