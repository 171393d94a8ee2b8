"""The public contract: generated documents in step with the models, AsyncAPI valid, breaking
changes caught, old versions upcast."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path

import jsonschema
import pytest
import yaml
from pydantic import Field

from shared.cli import validate_file
from shared.events import DomainEvent, EventEnvelope, registry
from shared.events.schema import ASYNCAPI, all_schemas, asyncapi, check, compat, event_schema

ASYNCAPI_SCHEMA = Path(__file__).parents[1] / "support" / "schemas" / "asyncapi-3.0.0.json"


def test_checked_in_documents_equal_what_the_models_generate():
    assert check() == [], "run `make schemas` and commit docs/events"


def test_asyncapi_document_is_valid_asyncapi_3():
    schema = json.loads(ASYNCAPI_SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    doc = yaml.safe_load(ASYNCAPI.read_text())
    assert [e.message for e in validator.iter_errors(doc)] == []
    broken = copy.deepcopy(doc)
    broken["channels"]["inspection_issue"]["address"] = 42
    assert list(validator.iter_errors(broken)), "the validator must be able to fail"


def test_asyncapi_lists_every_topic_key_partitions_and_message():
    doc = asyncapi()
    issue = doc["channels"]["inspection_issue"]
    assert issue["address"] == "wenming.inspection.issue"
    assert issue["bindings"]["kafka"]["partitions"] == 12
    assert "IssueFound" in issue["messages"] and "IssueOverdue" in issue["messages"]
    assert doc["components"]["messages"]["IssueFound"]["bindings"]["kafka"]["key"]["description"] == "issue id"
    assert "ce_id" in doc["components"]["schemas"]["CloudEventsHeaders"]["properties"]
    every_type = set(registry.types())
    in_doc = {m for ch in doc["channels"].values() for m in ch["messages"]}
    assert every_type <= in_doc


def _released_today() -> dict[str, dict]:
    return all_schemas()


def test_compatibility_check_passes_for_the_current_models_and_catches_a_removed_required_field():
    released = _released_today()
    assert compat(released) == []

    reg = registry.without("IssueAssigned")

    @reg.register
    class IssueAssigned(DomainEvent):  # the same version, with `owner` removed
        event_type = "IssueAssigned"
        topic = "inspection.issue"
        issue_id: uuid.UUID
        responsible_unit: str
        deadline: str

    problems = compat(released, reg)
    assert "IssueAssigned v1: field 'owner' removed without a new version" in problems
    assert any("'deadline' changed type" in p for p in problems)


def test_adding_a_required_field_needs_a_new_version_and_an_upcaster():
    released = _released_today()
    reg = registry.without("IssueReopened")

    @reg.register
    class IssueReopened(DomainEvent):
        event_type = "IssueReopened"
        topic = "inspection.issue"
        issue_id: uuid.UUID
        reason: str
        recurrence_of: uuid.UUID  # new and required, same version

    assert any("'recurrence_of' became required" in p for p in compat(released, reg))

    class IssueReopenedV2(IssueReopened):
        schema_version = 2
        recurrence_of: uuid.UUID = Field(default_factory=uuid.uuid4)

    reg2 = registry.without("IssueReopened")
    reg2.register(IssueReopenedV2)
    assert compat(released, reg2) == ["IssueReopened: no upcaster from v1 (released v1, now v2)"]
    reg2.upcaster("IssueReopened", 1)(lambda p, env: {**p, "recurrence_of": str(uuid.uuid4())})
    assert compat(released, reg2) == []


def _v1_issue_found() -> dict:
    return {
        "event_id": str(uuid.uuid4()),
        "type": "IssueFound",
        "schema_version": 1,
        "stream_id": "issue-1",
        "stream_version": 1,
        "occurred_at": "2026-03-01T01:00:00Z",
        "recorded_at": "2026-03-01T01:00:01Z",
        "source": "inspection-team-1",
        "actor": "张三",
        "grid_path": "changtai/wuan/c01/g01",
        "correlation_id": str(uuid.uuid4()),
        "payload": {
            "issue_id": str(uuid.uuid4()),
            "method": "unannounced",
            "category": "sanitation",
            "case_type": "event",
            "severity": "minor",
            "description": "垃圾",
            "found_at": "2026-03-01T01:00:00Z",
            "standards_version": 1,
            "deadline_hours": 24,
        },
    }


def test_an_old_version_record_loads_through_its_upcaster():
    old = _v1_issue_found()
    jsonschema.validate(old, event_schema(registry.older_versions()[("IssueFound", 1)]))
    env, payload = registry.decode(json.dumps(old).encode())
    assert env.schema_version == 1
    assert payload.schema_version == 2 and payload.grid_path == "changtai/wuan/c01/g01"


def test_records_of_the_current_version_validate_against_the_json_schema():
    v2 = _v1_issue_found()
    v2["schema_version"] = 2
    v2["payload"]["grid_path"] = v2["grid_path"]
    jsonschema.validate(v2, all_schemas()["IssueFound.v2.json"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(_v1_issue_found(), all_schemas()["IssueFound.v2.json"])
    EventEnvelope.model_validate(v2)


def test_validate_file_reports_each_bad_envelope(tmp_path):
    good = _v1_issue_found()
    bad = _v1_issue_found()
    bad["payload"]["severity"] = "apocalyptic"
    unknown = _v1_issue_found()
    unknown["type"] = "IssueVanished"
    f = tmp_path / "events.jsonl"
    f.write_text("\n".join(json.dumps(x) for x in (good, bad, unknown)))
    problems = validate_file(f)
    assert len(problems) == 2
    assert problems[0].startswith("#1: invalid IssueFound payload: severity")
    assert problems[1] == "#2: unknown event type 'IssueVanished'"
