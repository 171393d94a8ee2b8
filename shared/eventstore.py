"""The event store on PostgreSQL: append with expected version and idempotency key, load a stream.

Each append is one round trip: a call to `wenming_append` (shared/migrations) that checks the
idempotency key, checks every stream's version, and inserts the events and their outbox rows
in the same transaction.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID, uuid4

import asyncpg

from shared.campaign_time import utcnow
from shared.db import Conn
from shared.events.envelope import DomainEvent, EventEnvelope, cloudevents_headers
from shared.events.registry import registry
from shared.settings import Settings


class ConcurrencyError(Exception):
    """The stream moved on since it was loaded (wrong expected version)."""

    def __init__(self, detail: str):
        super().__init__(f"wrong expected version: {detail}")
        self.detail = detail


@dataclass(frozen=True, slots=True)
class EventMeta:
    """Who did it, where, when it happened, and why (the command that caused it)."""

    source: str
    actor: str
    grid_path: str
    occurred_at: datetime
    correlation_id: UUID = field(default_factory=uuid4)
    causation_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class StreamAppend:
    """Events to add to one stream that the caller saw at `expected_version` (0 = new stream)."""

    stream_id: str
    expected_version: int
    events: Sequence[tuple[DomainEvent, EventMeta]]


@dataclass(frozen=True, slots=True)
class AppendResult:
    envelopes: list[EventEnvelope]
    """The events as stored (for a duplicate, as first stored)."""
    duplicate: bool
    """True when the idempotency key was seen before: nothing was written."""

    def version_of(self, stream_id: str) -> int:
        return max((e.stream_version for e in self.envelopes if e.stream_id == stream_id), default=0)


_APPEND_SQL = (
    "SELECT * FROM wenming_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
)
_LOAD_SQL = (
    "SELECT event_id, type, schema_version, stream_id, stream_version, occurred_at, recorded_at, source, actor,"
    " grid_path, correlation_id, causation_id, payload FROM events WHERE stream_id = $1 ORDER BY stream_version"
)
_BY_IDS_SQL = _LOAD_SQL.replace(
    "WHERE stream_id = $1 ORDER BY stream_version", "WHERE event_id = ANY($1) ORDER BY position"
)


def new_ids(n: int) -> list[UUID]:
    """n random (version 4) UUIDs from one read of the OS's random source, not n reads."""
    raw = os.urandom(16 * n)
    return [UUID(bytes=raw[i : i + 16], version=4) for i in range(0, 16 * n, 16)]


def _row_envelope(row: asyncpg.Record) -> EventEnvelope:
    return EventEnvelope.model_construct(**dict(row.items()))


class EventStore:
    def __init__(self, pool: asyncpg.Pool, settings: Settings):
        self.pool = pool
        self.settings = settings

    async def append(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[tuple[DomainEvent, EventMeta]],
        idempotency_key: str | None = None,
    ) -> AppendResult:
        return await self.append_many([StreamAppend(stream_id, expected_version, events)], idempotency_key)

    async def append_many(
        self,
        appends: Sequence[StreamAppend],
        idempotency_key: str | None = None,
        conn: Conn | None = None,
    ) -> AppendResult:
        """Append to several distinct streams atomically: all or nothing, one round trip."""
        if len({a.stream_id for a in appends}) != len(appends):
            raise ValueError("each stream may appear once per append")
        recorded = utcnow()
        envs: list[EventEnvelope] = []
        ids: list[UUID] = []
        sids: list[str] = []
        vers: list[int] = []
        types: list[str] = []
        svers: list[int] = []
        occ: list[datetime] = []
        rec: list[datetime] = []
        srcs: list[str] = []
        actors: list[str] = []
        grids: list[str] = []
        corr: list[UUID] = []
        caus: list[UUID | None] = []
        payloads: list[dict[str, object]] = []
        topics: list[str] = []
        values: list[bytes] = []
        headers: list[dict[str, str]] = []
        fresh_ids = iter(new_ids(sum(len(a.events) for a in appends)))
        for a in appends:
            for i, (payload, meta) in enumerate(a.events, start=1):
                data = payload.model_dump(mode="json")
                env = EventEnvelope.model_construct(
                    event_id=next(fresh_ids),
                    type=payload.event_type,
                    schema_version=payload.schema_version,
                    stream_id=a.stream_id,
                    stream_version=a.expected_version + i,
                    occurred_at=meta.occurred_at,
                    recorded_at=recorded,
                    source=meta.source,
                    actor=meta.actor,
                    grid_path=meta.grid_path,
                    correlation_id=meta.correlation_id,
                    causation_id=meta.causation_id,
                    payload=data,
                )
                envs.append(env)
                ids.append(env.event_id)
                sids.append(a.stream_id)
                vers.append(env.stream_version)
                types.append(env.type)
                svers.append(env.schema_version)
                occ.append(meta.occurred_at)
                rec.append(recorded)
                srcs.append(meta.source)
                actors.append(meta.actor)
                grids.append(meta.grid_path)
                corr.append(meta.correlation_id)
                caus.append(meta.causation_id)
                payloads.append(data)
                topics.append(self.settings.topic(payload.topic))
                values.append(env.model_dump_json().encode())
                headers.append(
                    {
                        k: v.decode()
                        for k, v in cloudevents_headers(
                            str(env.event_id),
                            env.type,
                            env.schema_version,
                            meta.source,
                            a.stream_id,
                            meta.occurred_at.isoformat(),
                        )
                    }
                )
        args = (
            [a.stream_id for a in appends],
            [a.expected_version for a in appends],
            ids,
            sids,
            vers,
            types,
            svers,
            occ,
            rec,
            srcs,
            actors,
            grids,
            corr,
            caus,
            payloads,
            topics,
            values,
            headers,
            idempotency_key,
        )
        try:
            if conn is not None:
                rows = await conn.fetch(_APPEND_SQL, *args)
            else:
                async with self.pool.acquire() as c:
                    rows = await c.fetch(_APPEND_SQL, *args)
        except asyncpg.PostgresError as exc:
            if getattr(exc, "sqlstate", None) == "WM409":
                raise ConcurrencyError(getattr(exc, "detail", None) or "concurrent append") from None
            if isinstance(exc, asyncpg.UniqueViolationError):
                raise ConcurrencyError("concurrent append") from None
            raise
        if rows and rows[0]["duplicate"]:
            return AppendResult(await self.load_events([r["event_id"] for r in rows]), duplicate=True)
        return AppendResult(envs, duplicate=False)

    async def by_idempotency_key(self, key: str) -> AppendResult | None:
        """The first result of a command with this key, or None if the key is new."""
        async with self.pool.acquire() as conn:
            ids = await conn.fetchval("SELECT event_ids FROM idempotency_keys WHERE key = $1", key)
        if ids is None:
            return None
        return AppendResult(await self.load_events(list(ids)), duplicate=True)

    async def load(self, stream_id: str) -> list[EventEnvelope]:
        """Every event of a stream, oldest first."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(_LOAD_SQL, stream_id)
        return [_row_envelope(r) for r in rows]

    async def load_events(self, event_ids: list[UUID]) -> list[EventEnvelope]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(_BY_IDS_SQL, event_ids)
        return [_row_envelope(r) for r in rows]

    async def load_typed(self, stream_id: str) -> tuple[list[DomainEvent], int]:
        """The stream's payloads (upcast to current versions) and its version."""
        envs = await self.load(stream_id)
        return [registry.payload(e) for e in envs], (envs[-1].stream_version if envs else 0)
