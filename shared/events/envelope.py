"""The event envelope every Wenming event travels in, and its CloudEvents Kafka headers."""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.grid import GridPath

CE_SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"


class DomainEvent(BaseModel):
    """Base of every event payload model. Subclasses set `event_type`, `schema_version`, `topic`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1
    topic: ClassVar[str]
    """Logical topic (see shared.events.topics); the physical name adds the settings' prefix."""


class EventEnvelope(BaseModel):
    """What is stored and published: the payload plus who, when, where and in which stream."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: UUID
    type: str = Field(min_length=1, max_length=100)
    schema_version: int = Field(ge=1)
    stream_id: str = Field(min_length=1, max_length=200)
    stream_version: int = Field(ge=1)
    occurred_at: AwareDatetime
    recorded_at: AwareDatetime
    source: str = Field(min_length=1, max_length=100, description="department code that published it")
    actor: str = Field(min_length=1, max_length=200, description="person or system that acted")
    grid_path: GridPath
    correlation_id: UUID
    causation_id: UUID | None = None
    payload: dict[str, Any]

    def cloudevents_headers(self) -> list[tuple[str, bytes]]:
        """CloudEvents 1.0 Kafka binary-mode headers; the record value is this envelope as JSON."""
        return cloudevents_headers(
            str(self.event_id),
            self.type,
            self.schema_version,
            self.source,
            self.stream_id,
            self.occurred_at.isoformat(),
        )


def cloudevents_headers(
    event_id: str, event_type: str, schema_version: int, source: str, subject: str, time_iso: str
) -> list[tuple[str, bytes]]:
    return [
        ("ce_specversion", CE_SPECVERSION.encode()),
        ("ce_id", event_id.encode()),
        ("ce_type", event_type.encode()),
        ("ce_source", f"/wenming/{source}".encode()),
        ("ce_subject", subject.encode()),
        ("ce_time", time_iso.encode()),
        ("ce_dataschema", f"urn:wenming:event:{event_type}:v{schema_version}".encode()),
        ("content-type", CONTENT_TYPE.encode()),
    ]
