"""One registry maps event types to their payload models, versions, topics and upcasters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError, create_model

from shared.events.envelope import DomainEvent, EventEnvelope
from shared.events.topics import TOPICS

E = TypeVar("E", bound=type[DomainEvent])
Upcaster = Callable[[dict[str, Any], EventEnvelope], dict[str, Any]]
"""(payload of version n, its envelope) -> payload of version n + 1."""


class EventDecodeError(ValueError):
    """A record or payload that cannot be used; `reason` says why in one line."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _summarise(exc: ValidationError, strip: int = 0) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"][strip:]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


_ENVELOPE_FIELDS = tuple(f for f in EventEnvelope.model_fields if f != "payload")


class EventRegistry:
    def __init__(self) -> None:
        self._current: dict[str, type[DomainEvent]] = {}
        self._older: dict[tuple[str, int], type[DomainEvent]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        self._typed: dict[str, type[BaseModel]] = {}

    def register(self, cls: E) -> E:
        """Class decorator: the current version of an event type."""
        name = cls.event_type
        if cls.topic not in TOPICS:
            raise ValueError(f"{name}: unknown topic {cls.topic!r}")
        if name in self._current and self._current[name] is not cls:
            raise ValueError(f"event type {name} registered twice")
        self._current[name] = cls
        return cls

    def register_old(self, cls: E) -> E:
        """Class decorator: a superseded version, kept for the schema documents and compatibility checks."""
        self._older[(cls.event_type, cls.schema_version)] = cls
        return cls

    def has_upcaster(self, event_type: str, from_version: int) -> bool:
        return (event_type, from_version) in self._upcasters

    def upcaster(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator: turns a payload of `from_version` into `from_version + 1`."""

        def deco(fn: Upcaster) -> Upcaster:
            self._upcasters[(event_type, from_version)] = fn
            return fn

        return deco

    def without(self, event_type: str) -> EventRegistry:
        """A copy with every version and upcaster except the current model of `event_type`
        (to try out a changed model against the released schemas)."""
        other = EventRegistry()
        other._current = {k: v for k, v in self._current.items() if k != event_type}
        other._older = dict(self._older)
        other._upcasters = dict(self._upcasters)
        return other

    def types(self) -> dict[str, type[DomainEvent]]:
        return dict(self._current)

    def older_versions(self) -> dict[tuple[str, int], type[DomainEvent]]:
        return dict(self._older)

    def model(self, event_type: str) -> type[DomainEvent]:
        try:
            return self._current[event_type]
        except KeyError:
            raise EventDecodeError(f"unknown event type {event_type!r}") from None

    def topic_for(self, event_type: str) -> str:
        return self.model(event_type).topic

    def payload(self, env: EventEnvelope) -> DomainEvent:
        """The typed payload of an envelope, upcast from older schema versions."""
        model = self.model(env.type)
        data = env.payload
        version = env.schema_version
        if version > model.schema_version:
            raise EventDecodeError(f"{env.type} v{version} is newer than this reader (v{model.schema_version})")
        while version < model.schema_version:
            up = self._upcasters.get((env.type, version))
            if up is None:
                raise EventDecodeError(f"no upcaster for {env.type} v{version}")
            data = up(data, env)
            version += 1
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise EventDecodeError(f"invalid {env.type} payload: {_summarise(exc)}") from None

    def _typed_envelope(self, model: type[DomainEvent]) -> type[BaseModel]:
        """The envelope with this event's payload model, to validate a record in one pass."""
        typed = self._typed.get(model.event_type)
        if typed is None:
            typed = create_model(f"{model.__name__}Envelope", __base__=EventEnvelope, payload=(model, ...))
            self._typed[model.event_type] = typed
        return typed

    def decode(self, value: bytes | None) -> tuple[EventEnvelope, DomainEvent]:
        """A Kafka record value to (envelope, payload); EventDecodeError says what was wrong.

        A record of an event type's current version is validated in one pass (envelope and typed
        payload together); other versions go through the envelope and then the upcasters."""
        if value is None:
            raise EventDecodeError("empty record value")
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise EventDecodeError("value is not valid JSON") from None
        model = self._current.get(obj.get("type")) if isinstance(obj, dict) else None  # type: ignore[arg-type]
        if model is not None and obj.get("schema_version") == model.schema_version:
            try:
                typed = self._typed_envelope(model).model_validate(obj)
            except ValidationError as exc:
                if all(e["loc"][:1] == ("payload",) for e in exc.errors()):
                    raise EventDecodeError(f"invalid {model.event_type} payload: {_summarise(exc, 1)}") from None
                raise EventDecodeError(f"invalid envelope: {_summarise(exc)}") from None
            env = EventEnvelope.model_construct(
                **{f: getattr(typed, f) for f in _ENVELOPE_FIELDS}, payload=obj["payload"]
            )
            return env, typed.payload  # type: ignore[attr-defined]
        try:
            env = EventEnvelope.model_validate_json(value)
        except ValidationError as exc:
            if exc.errors() and exc.errors()[0]["type"] == "json_invalid":
                raise EventDecodeError("value is not valid JSON") from None
            raise EventDecodeError(f"invalid envelope: {_summarise(exc)}") from None
        return env, self.payload(env)


registry = EventRegistry()
