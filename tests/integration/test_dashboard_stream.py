"""The dashboard's live stream: snapshot, numbered panel updates, exact resume with Last-Event-ID."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import httpx
import pytest

from services.dashboard.app import build_app
from shared.auth import issue_token, upsert_departments
from shared.campaign_time import campaign_day, utcnow
from shared.grid import cached_grid
from shared.settings import Settings
from tests.e2e.serving import Event, EventReader, serve

pytestmark = pytest.mark.integration


async def put_issue(pool: asyncpg.Pool, grid_path: str, *, overdue_step: int = 0) -> UUID:
    """An issue row as the problem-list projection writes it (found now, today)."""
    now = utcnow()
    iid = uuid4()
    status = "assigned" if overdue_step else "found"
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO inspection_issues (issue_id, grid_path, township, category, severity, case_type, method,"
            " description, found_at, found_day, status, responsible_unit, owner, deadline, overdue_step,"
            " escalation_level, escalated_to, version, updated_at) VALUES ($1, $2, $3, 'sanitation', 'minor',"
            " 'event', 'unannounced', '沿街垃圾未及时清运', $4, $5, $6, $7, $8, $9, $10, $11, $12, 1, $4)",
            iid,
            grid_path,
            "/".join(grid_path.split("/")[:2]),
            now,
            campaign_day(now),
            status,
            "urban-management" if overdue_step else None,
            "李四" if overdue_step else None,
            now - timedelta(hours=1) if overdue_step else None,
            overdue_step,
            "community" if overdue_step else None,
            "/".join(grid_path.split("/")[:3]) if overdue_step else None,
        )
    return iid


def counts(panel: dict[str, Any], prefix: str) -> dict[str, int]:
    """Sum a counters panel's rows inside `prefix`."""
    out = {"found": 0, "assigned": 0, "closed": 0, "overdue": 0}
    for r in panel["rows"]:
        if r["node"] == prefix or r["node"].startswith(prefix + "/"):
            for k in out:
                out[k] += r[k]
    return out


async def department_tokens(pool: asyncpg.Pool, settings: Settings) -> dict[str, str]:
    """The demo district's departments, and a fresh token for a few of them."""
    async with pool.acquire() as conn:
        await upsert_departments(conn, cached_grid(settings.district_file).departments)
        return {
            code: await issue_token(conn, code, "dashboard-test")
            for code in ("campaign-office", "wuan-office", "yanxi-office", "hotline-12345")
        }


@pytest.fixture
async def tokens(pool: asyncpg.Pool, settings: Settings) -> dict[str, str]:
    return await department_tokens(pool, settings)


@pytest.fixture
async def dashboard(settings: Settings) -> AsyncIterator[str]:
    async with serve(build_app(settings, poll_s=0.1, health=False)) as base:
        yield base


@contextlib.asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient, *, last_id: str | None = None, query: bool = False, area: str | None = None
) -> AsyncIterator[EventReader]:
    params = {"area": area} if area else {}
    headers = {}
    if last_id and query:
        params["last_event_id"] = last_id
    elif last_id:
        headers["Last-Event-ID"] = last_id
    async with client.stream("GET", "/v1/stream", params=params, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = EventReader(response)
        try:
            yield reader
        finally:
            await reader.close()


@contextlib.asynccontextmanager
async def login(base: str, token: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client holding the session cookie (and not the token), as the page's EventSource does."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        r = await client.post("/v1/session", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        assert r.cookies.get("wm_dashboard")
        yield client


async def until_panel(reader: EventReader, panel: str, check: Any, timeout: float = 5.0) -> list[Event]:
    """Read events until `panel` satisfies `check`; returns every event read."""
    seen: list[Event] = []
    deadline = time.monotonic() + timeout
    while True:
        ev = await reader.next(max(0.05, deadline - time.monotonic()))
        seen.append(ev)
        if ev.event == "panel" and ev.data["panel"] == panel and check(ev.data["data"]):
            return seen


async def current_seq(client: httpx.AsyncClient) -> int:
    r = await client.get("/v1/panels")
    assert r.status_code == 200
    return int(r.json()["seq"])


async def test_stream_opens_with_snapshot_then_numbered_updates(
    dashboard: str, pool: asyncpg.Pool, tokens: dict[str, str]
) -> None:
    async with login(dashboard, tokens["campaign-office"]) as client, open_stream(client) as reader:
        first = await reader.next()
        assert first.event == "snapshot" and first.data["reason"] == "fresh"
        assert {"counters", "overdue", "ranking", "trend", "redblack", "volunteer"} <= set(first.data["panels"])
        before = counts(first.data["panels"]["counters"], "changtai/wuan")
        await put_issue(pool, "changtai/wuan/c01/g01")
        seen = await until_panel(
            reader, "counters", lambda p: counts(p, "changtai/wuan")["found"] == before["found"] + 1
        )
        # Every message after the snapshot is the next number, one panel's full snapshot.
        assert [e.seq for e in seen] == list(range(first.seq + 1, first.seq + 1 + len(seen)))
        assert all(e.id.split(".")[0] == first.data["epoch"] for e in seen)


@pytest.mark.parametrize("query", [False, True], ids=["header", "query"])
async def test_resume_with_last_event_id_replays_exactly_what_was_missed(
    dashboard: str, pool: asyncpg.Pool, tokens: dict[str, str], query: bool
) -> None:
    async with login(dashboard, tokens["campaign-office"]) as client:
        async with open_stream(client) as reader:
            snap = await reader.next()
            base = counts(snap.data["panels"]["counters"], "changtai/wuan")
            await put_issue(pool, "changtai/wuan/c02/g01")
            seen = await until_panel(
                reader, "counters", lambda p: counts(p, "changtai/wuan")["found"] == base["found"] + 1
            )
            last = seen[-1]
        # Disconnected: three changes happen, each in its own poll.
        for step in (0, 0, 1):
            await put_issue(pool, "changtai/wuan/c03/g02", overdue_step=step)
            await asyncio.sleep(0.3)
        target = await current_seq(client)
        assert target >= last.seq + 3

        async with open_stream(client, last_id=last.id, query=query) as reader:
            replay = [await reader.next() for _ in range(target - last.seq)]
            assert "resumed" in reader.comments
            assert all(e.event == "panel" for e in replay), "a resumable id never gets a snapshot"
            assert [e.seq for e in replay] == list(range(last.seq + 1, target + 1))
            latest: dict[str, Any] = {}
            for e in replay:
                latest[e.data["panel"]] = e.data["data"]
            got = counts(latest["counters"], "changtai/wuan")
            assert got["found"] == base["found"] + 4
            assert got["overdue"] == base["overdue"] + 1
            assert any(r["grid_path"] == "changtai/wuan/c03/g02" for r in latest["overdue"]["rows"])
            # Nothing more until something changes: no message is sent twice.
            assert await reader.none_within(0.5)

        # Resuming from the newest id sends nothing old; the next change is the next number.
        async with open_stream(client, last_id=replay[-1].id) as reader:
            assert await reader.none_within(0.4)
            await put_issue(pool, "changtai/wuan/c04/g01")
            nxt = await reader.next()
            assert nxt.seq == replay[-1].seq + 1


async def test_unknown_epoch_or_garbage_id_gets_a_fresh_snapshot(dashboard: str, tokens: dict[str, str]) -> None:
    async with login(dashboard, tokens["campaign-office"]) as client:
        async with open_stream(client, last_id="00000000.5") as reader:
            ev = await reader.next()
            assert ev.event == "snapshot" and ev.data["reason"] == "restarted"
            epoch = ev.data["epoch"]
        async with open_stream(client, last_id=f"{epoch}.999999999") as reader:
            ev = await reader.next()
            assert ev.event == "snapshot" and ev.data["reason"] == "unknown-id"
        async with open_stream(client, last_id="not-an-id") as reader:
            ev = await reader.next()
            assert ev.event == "snapshot" and ev.data["reason"] == "fresh"
