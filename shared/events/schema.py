"""The public contract, generated from the pydantic models (never kept by hand).

    python -m shared.events.schema write     # docs/events/schemas/*.json and docs/events/asyncapi.yaml
    python -m shared.events.schema check     # exit 1 if the checked-in files differ from the models
    python -m shared.events.schema compat    # exit 1 on a breaking change without a new version + upcaster
    python -m shared.events.schema release   # snapshot the current schemas as released

Compatibility rules: within one version, a field may be added only if optional; no field may be
removed and no field's type may change. A breaking change needs a new `schema_version` and an
upcaster from the old one (registry.upcaster), so stored and old records still load.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

import shared.events  # noqa: F401  (registers every event type)
from shared.events.envelope import CE_SPECVERSION, DomainEvent, EventEnvelope
from shared.events.inspection import IssueReport
from shared.events.registry import EventRegistry, registry
from shared.events.topics import TOPICS
from shared.settings import ROOT

DOCS = ROOT / "docs" / "events"
SCHEMAS = DOCS / "schemas"
RELEASED = DOCS / "released"
ASYNCAPI = DOCS / "asyncapi.yaml"
SCHEMA_BASE = "https://wenming.example/schemas/events"


def _file(event_type: str, version: int) -> str:
    return f"{event_type}.v{version}.json"


def event_schema(model: type[DomainEvent]) -> dict[str, Any]:
    """JSON Schema of a whole record value: the envelope with this event's payload."""
    env = EventEnvelope.model_json_schema()
    payload = model.model_json_schema(ref_template="#/$defs/{model}")
    defs = {**env.pop("$defs", {}), **payload.pop("$defs", {})}
    env["properties"]["type"] = {"const": model.event_type, "title": "Type"}
    env["properties"]["schema_version"] = {"const": model.schema_version, "title": "Schema Version"}
    env["properties"]["payload"] = payload
    env["title"] = f"{model.event_type} v{model.schema_version}"
    env["description"] = (model.__doc__ or "").strip().split("\n\n")[0]
    env["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    env["$id"] = f"{SCHEMA_BASE}/{_file(model.event_type, model.schema_version)}"
    if defs:
        env["$defs"] = defs
    return env


def all_models(reg: EventRegistry = registry) -> dict[tuple[str, int], type[DomainEvent]]:
    models = {(m.event_type, m.schema_version): m for m in reg.types().values()}
    models.update(reg.older_versions())
    return dict(sorted(models.items()))


def all_schemas(reg: EventRegistry = registry) -> dict[str, dict[str, Any]]:
    return {_file(t, v): event_schema(m) for (t, v), m in all_models(reg).items()}


CE_HEADERS = {
    "type": "object",
    "description": "CloudEvents 1.0 Kafka binary-mode headers; the record value is the envelope (JSON).",
    "properties": {
        "ce_specversion": {"const": CE_SPECVERSION},
        "ce_id": {"type": "string", "format": "uuid", "description": "event id: dedupe on it"},
        "ce_type": {"type": "string", "description": "event type, e.g. IssueFound"},
        "ce_source": {"type": "string", "description": "/wenming/<department code>"},
        "ce_subject": {"type": "string", "description": "stream (aggregate) id, also the record key"},
        "ce_time": {"type": "string", "format": "date-time", "description": "when it happened"},
        "ce_dataschema": {"type": "string", "description": "urn:wenming:event:<type>:v<version>"},
        "content-type": {"const": "application/json"},
    },
    "required": ["ce_specversion", "ce_id", "ce_type", "ce_source", "ce_time"],
}


def asyncapi(reg: EventRegistry = registry) -> dict[str, Any]:
    """One AsyncAPI 3.0 document: every topic, its key, partitions, headers and messages."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    by_topic: dict[str, list[type[DomainEvent]]] = {}
    for model in reg.types().values():
        by_topic.setdefault(model.topic, []).append(model)
    for name, spec in TOPICS.items():
        if name.startswith("test."):
            continue
        cid = name.replace(".", "_")
        channel_messages = {}
        for model in sorted(by_topic.get(name, []), key=lambda m: m.event_type):
            mid = model.event_type
            schemas[mid] = {"$ref": f"./schemas/{_file(mid, model.schema_version)}"}
            messages[mid] = {
                "name": mid,
                "title": f"{mid} v{model.schema_version}",
                "summary": (model.__doc__ or mid).strip().split("\n")[0],
                "contentType": "application/json",
                "headers": {"$ref": "#/components/schemas/CloudEventsHeaders"},
                "payload": {"$ref": f"#/components/schemas/{mid}"},
                "bindings": {"kafka": {"key": {"type": "string", "description": spec.key}}},
            }
            channel_messages[mid] = {"$ref": f"#/components/messages/{mid}"}
        if name == "deadletter":
            channel_messages["DeadLetter"] = {"$ref": "#/components/messages/DeadLetter"}
        if name == "inspection.inbound":
            channel_messages["InboundIssue"] = {"$ref": "#/components/messages/InboundIssue"}
        channels[cid] = {
            "address": f"wenming.{name}",
            "title": name,
            "description": spec.description + " Keyed by " + spec.key + ".",
            "messages": channel_messages,
            "bindings": {
                "kafka": {"topic": f"wenming.{name}", "partitions": spec.partitions, "bindingVersion": "0.5.0"}
            },
        }
        action = "receive" if name == "inspection.inbound" else "send"
        operations[f"{action}_{cid}"] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{cid}"},
            "summary": (
                "Departments' systems publish issues found here."
                if action == "receive"
                else f"Wenming publishes {name} records."
            ),
            "messages": [{"$ref": f"#/channels/{cid}/messages/{m}"} for m in channel_messages],
        }
    messages["DeadLetter"] = {
        "name": "DeadLetter",
        "summary": "A record a consumer could not use: original key, value and headers, plus why.",
        "headers": {
            "type": "object",
            "properties": {
                h: {"type": "string"}
                for h in (
                    "wm_dlq_reason",
                    "wm_dlq_source_topic",
                    "wm_dlq_source_partition",
                    "wm_dlq_source_offset",
                    "wm_dlq_consumer",
                    "wm_dlq_at",
                )
            },
        },
        "payload": {"description": "the original record value, unchanged"},
    }
    messages["InboundIssue"] = {
        "name": "InboundIssue",
        "summary": "An issue found, from a department's own system; key = department code.",
        "contentType": "application/json",
        "payload": IssueReport.model_json_schema(),
    }
    schemas["CloudEventsHeaders"] = CE_HEADERS
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Wenming (文明) campaign events",
            "version": "1.0.0",
            "description": (
                "Topics of Wenming, the event-sourced platform of a district's civilised-city campaign. "
                "Topic names carry a deployment prefix (default `wenming`). Records are keyed by aggregate "
                "(stream) id, so one aggregate's events are in order on one partition; delivery is at least "
                "once: dedupe on the event id (`ce_id` header, `event_id` in the value)."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {"host": "127.0.0.1:9092", "protocol": "kafka", "description": "the local stack (`make up`)"}
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def _dump_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, indent=2, sort_keys=False) + "\n"


def _dump_yaml(doc: dict[str, Any]) -> str:
    return "# Generated by `python -m shared.events.schema write`; do not edit.\n" + yaml.safe_dump(
        doc, allow_unicode=True, sort_keys=False, width=110
    )


def rendered() -> dict[Path, str]:
    files = {SCHEMAS / name: _dump_json(s) for name, s in all_schemas().items()}
    files[ASYNCAPI] = _dump_yaml(asyncapi())
    return files


def write() -> list[Path]:
    SCHEMAS.mkdir(parents=True, exist_ok=True)
    changed = []
    for path, text in rendered().items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    for stale in set(SCHEMAS.glob("*.json")) - set(rendered()):
        stale.unlink()
        changed.append(stale)
    return changed


def check() -> list[str]:
    """Files that differ from what the models generate (empty when in step)."""
    want = rendered()
    diffs = [
        str(p.relative_to(ROOT)) for p, text in want.items() if not p.exists() or p.read_text(encoding="utf-8") != text
    ]
    diffs += [str(p.relative_to(ROOT)) + " (stale)" for p in set(SCHEMAS.glob("*.json")) - set(want)]
    return sorted(diffs)


def _props(schema: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    payload = schema["properties"]["payload"]
    return payload.get("properties", {}), set(payload.get("required", []))


def compat(released: dict[str, dict[str, Any]], reg: EventRegistry = registry) -> list[str]:
    """Breaking changes between released schemas and the current models; empty when compatible."""
    problems = []
    current = {t: m for t, m in reg.types().items()}
    for _name, old in sorted(released.items()):
        etype, version = old["properties"]["type"]["const"], old["properties"]["schema_version"]["const"]
        model = current.get(etype)
        if model is None:
            problems.append(f"{etype}: event type removed")
            continue
        if version > model.schema_version:
            problems.append(f"{etype}: released v{version} is newer than the current v{model.schema_version}")
        elif version < model.schema_version:
            missing = [v for v in range(version, model.schema_version) if not reg.has_upcaster(etype, v)]
            if missing:
                problems.append(
                    f"{etype}: no upcaster from v{missing[0]} (released v{version}, now v{model.schema_version})"
                )
        else:
            old_props, old_req = _props(old)
            new_props, new_req = _props(event_schema(model))
            for field in sorted(set(old_props) - set(new_props)):
                problems.append(f"{etype} v{version}: field {field!r} removed without a new version")
            for field in sorted(new_req - old_req):
                problems.append(f"{etype} v{version}: field {field!r} became required without a new version")
            for field in sorted(set(old_props) & set(new_props)):
                a, b = dict(old_props[field]), dict(new_props[field])
                for k in ("title", "description", "default"):
                    a.pop(k, None)
                    b.pop(k, None)
                if a != b:
                    problems.append(f"{etype} v{version}: field {field!r} changed type without a new version")
    return problems


def load_released(folder: Path = RELEASED) -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))}


def release() -> int:
    RELEASED.mkdir(parents=True, exist_ok=True)
    for name, schema in all_schemas().items():
        (RELEASED / name).write_text(_dump_json(schema), encoding="utf-8")
    return len(all_schemas())


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "check"
    if cmd == "write":
        for p in write():
            print(f"wrote {p.relative_to(ROOT)}")
        return 0
    if cmd == "check":
        diffs = check()
        for d in diffs:
            print(f"out of date: {d} (run `make schemas`)")
        return 1 if diffs else 0
    if cmd == "compat":
        problems = compat(load_released())
        for problem in problems:
            print(f"breaking: {problem}")
        print("compatible" if not problems else f"{len(problems)} breaking change(s)")
        return 1 if problems else 0
    if cmd == "release":
        print(f"released {release()} schemas into {RELEASED.relative_to(ROOT)}")
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
