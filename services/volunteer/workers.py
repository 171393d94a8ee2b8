"""Background work of the volunteer service: closing check-ins never checked out within 24 h."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

import asyncpg

from services.volunteer import domain as d
from shared.campaign_time import utcnow
from shared.db import DB_ERRORS
from shared.decider import execute
from shared.eventstore import ConcurrencyError, EventMeta, EventStore

log = logging.getLogger(__name__)

SOURCE = "volunteer-service"


async def close_lapsed_check_ins(store: EventStore, pool: asyncpg.Pool, now: datetime) -> int:
    """Close (flagged, uncredited) every check-in older than 24 h; returns how many were closed.
    Reads candidates from the open check-ins read model; the activity decider decides."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT DISTINCT activity_id, grid_path FROM volunteer_open_check_ins WHERE checked_in_at < $1",
            now - d.CHECK_IN_LIMIT,
        )
    closed = 0
    for r in rows:
        meta = EventMeta(source=SOURCE, actor="check-in sweeper", grid_path=r["grid_path"], occurred_at=now)
        try:
            out = await execute(
                store, d.activity_decider, d.activity_stream(r["activity_id"]), d.CloseLapsedCheckIns(now), meta
            )
        except ConcurrencyError:
            continue  # the activity moved on; the next sweep sees it again
        closed += len(out.result.envelopes)
    return closed


async def sweep_forever(store: EventStore, pool: asyncpg.Pool, stop: asyncio.Event, every_s: float = 600) -> None:
    """Sweep lapsed check-ins every `every_s` seconds until `stop` is set."""
    while not stop.is_set():
        try:
            n = await close_lapsed_check_ins(store, pool, utcnow())
            if n:
                log.info("closed %d lapsed check-ins", n)
        except DB_ERRORS as exc:
            log.warning("check-in sweep failed: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
