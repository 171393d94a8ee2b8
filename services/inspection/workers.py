"""Background work of the inspection service: the deadline watcher and the Kafka inbound ingest."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from uuid import UUID

import asyncpg
import orjson
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from services.inspection.domain import (
    MAX_OVERDUE_STEPS,
    MarkOverdue,
    ReportIssue,
    issue_decider,
    issue_stream,
    overdue_steps_due,
)
from services.inspection.standards import StandardsTable
from shared.campaign_time import utcnow
from shared.db import DB_ERRORS
from shared.decider import DomainError, execute
from shared.events.inspection import IssueReport
from shared.eventstore import EventMeta, EventStore
from shared.grid import Grid, within
from shared.kafka import make_consumer, make_producer, stop_consumer
from shared.projection import DeadLetters
from shared.settings import Settings
from shared.workers import Periodic

log = logging.getLogger(__name__)
WATCHER = "deadline-watcher"


class DeadlineWatcher(Periodic):
    """Emits IssueOverdue once per deadline passed and escalation step.

    Each step is appended with the idempotency key `overdue:<issue>:<step>`, and the decider
    accepts only the next due step, so a restart, a watcher that was down across the deadline,
    or two watchers at once still give exactly one event per step.
    """

    name = "deadline watcher"

    def __init__(
        self, pool: asyncpg.Pool, store: EventStore, interval_s: float = 30.0, clock: Callable[[], datetime] = utcnow
    ):
        super().__init__(interval_s)
        self.pool = pool
        self.store = store
        self.clock = clock

    async def tick(self, now: datetime | None = None) -> int:
        """Mark every due step of every open issue past its deadline; returns how many were emitted."""
        now = now or self.clock()
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT issue_id FROM inspection_issues WHERE status IN ('assigned', 'returned') AND deadline < $1"
                " AND overdue_step < $2",
                now,
                MAX_OVERDUE_STEPS,
            )
        emitted = 0
        for r in rows:
            emitted += await self._escalate(r["issue_id"], now)
        return emitted

    async def _escalate(self, issue_id: UUID, now: datetime) -> int:
        emitted = 0
        events, _ = await self.store.load_typed(issue_stream(issue_id))
        state = issue_decider.fold(events)
        for step in range(state.overdue_steps + 1, overdue_steps_due(state, now) + 1):
            try:
                out = await execute(
                    self.store,
                    issue_decider,
                    issue_stream(issue_id),
                    MarkOverdue(step, now),
                    lambda s: EventMeta(source=WATCHER, actor=WATCHER, grid_path=s.grid_path, occurred_at=now),
                    idempotency_key=f"{WATCHER}:{issue_id}:{step}",
                )
            except DomainError:
                break  # closed meanwhile, or another watcher got there first
            emitted += 0 if out.result.duplicate else len(out.result.envelopes)
        return emitted


class InboundIngest:
    """Turns IssueFound-shaped records on `inspection.inbound` into issues; the rest is dead-lettered.

    A record's key is the department code; its value is an IssueReport JSON object that must carry
    `issue_id` (the department's own id, which makes redelivery idempotent). The department must
    exist with scope issue:report and the grid path must lie in its area. On Kafka, who may write
    the inbound topic is for the cluster's ACLs to say (one principal per department).
    """

    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, store: EventStore, grid: Grid, standards: StandardsTable
    ):
        self.settings = settings
        self.pool = pool
        self.store = store
        self.grid = grid
        self.standards = standards
        self.accepted = 0
        self.dead_lettered = 0
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Ingest until stopped; a lost database or broker connection restarts the consumer after a
        pause (uncommitted records are read again and their issue ids make that idempotent)."""
        while not self._stop.is_set():
            try:
                await self._run_once()
            except (*DB_ERRORS, KafkaError) as exc:
                if self._stop.is_set():
                    break
                log.warning("inbound ingest: %s; restarting in 1s", exc.__class__.__name__)
                await asyncio.sleep(1)

    async def _run_once(self) -> None:
        consumer = make_consumer(
            self.settings,
            self.settings.topic("inspection.inbound"),
            group_id=f"{self.settings.topic_prefix}.inspection.inbound",
        )
        producer = make_producer(self.settings)
        await consumer.start()
        await producer.start()
        dlq = DeadLetters(self.settings, producer, "inspection.inbound")
        try:
            while not self._stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=500)
                for records in batches.values():
                    for rec in records:
                        reason = await self.ingest(rec)
                        if reason is not None:
                            self.dead_lettered += 1
                            await dlq.send(rec, reason)
                if batches:
                    await consumer.commit()
        finally:
            await stop_consumer(consumer)
            await producer.stop()

    async def ingest(self, rec: ConsumerRecord) -> str | None:
        """Accept one record; returns the reason it was refused, or None."""
        if rec.key is None:
            return "record key must be the department code"
        dept_code = rec.key.decode(errors="replace")
        try:
            body = IssueReport.model_validate(orjson.loads(rec.value or b""))
        except orjson.JSONDecodeError:
            return "value is not valid JSON"
        except ValidationError as exc:
            return "invalid issue: " + "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
            )
        if body.issue_id is None:
            return "issue_id is required on the inbound topic (it makes redelivery idempotent)"
        async with self.pool.acquire() as conn:
            dept = await conn.fetchrow("SELECT area, scopes FROM departments WHERE code = $1", dept_code)
        if dept is None or "issue:report" not in dept["scopes"]:
            return f"department {dept_code!r} unknown or without scope issue:report"
        if body.grid_path not in self.grid:
            return f"grid_path {body.grid_path} is not in district {self.grid.district}"
        if not within(body.grid_path, dept["area"]):
            return f"department {dept_code} may act only in {dept['area']}"
        if body.category not in self.standards.categories:
            return f"unknown category {body.category!r}"
        cmd = ReportIssue(
            issue_id=body.issue_id,
            grid_path=body.grid_path,
            method=body.method,
            category=self.standards.category(body.category),
            severity=body.severity,
            description=body.description,
            found_at=body.found_at,
            standards_version=self.standards.version,
            location=body.location,
            photos=tuple(body.photos),
            inspection_id=body.inspection_id,
        )
        try:
            await execute(
                self.store,
                issue_decider,
                issue_stream(body.issue_id),
                cmd,
                EventMeta(source=dept_code, actor=dept_code, grid_path=body.grid_path, occurred_at=body.found_at),
                idempotency_key=f"{dept_code}:inbound:{body.issue_id}",
            )
        except DomainError as exc:
            if "already exists" in str(exc):
                return None  # redelivered: the first delivery was accepted
            return str(exc)
        self.accepted += 1
        return None
