"""The notify service over HTTP with its workers running: recipients, the inbox (list, read,
snooze), dead letters and re-drive, bounces; tokens, scopes and areas."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import httpx
import pytest
from aiohttp import web

from services.notify.app import build_app
from services.notify.config import NotifyConfig
from shared.auth import issue_token, upsert_departments
from shared.events.inspection import IssueAssigned, IssueFound
from shared.eventstore import EventMeta, EventStore
from shared.outbox import OutboxRelay

pytestmark = pytest.mark.integration

GRID = "changtai/wuan/c02/g03"


@pytest.fixture
async def tokens(pool) -> dict[str, str]:
    t = uuid4().hex[:6]
    depts = [
        {
            "code": f"office-{t}",
            "name": "区创城办",
            "kind": "campaign_office",
            "area": "changtai",
            "scopes": ["notify:admin"],
        },
        {
            "code": f"yanxi-{t}",
            "name": "岩溪镇创城办",
            "kind": "township_office",
            "area": "changtai/yanxi",
            "scopes": ["notify:admin"],
        },
        {
            "code": f"unit-{t}",
            "name": "区城市管理局",
            "kind": "district_department",
            "area": "changtai",
            "scopes": ["scoring:read"],
        },
    ]
    async with pool.acquire() as conn:
        await upsert_departments(conn, depts)
        out = {"tag": t}
        for d in depts:
            code = str(d["code"])
            out[code.rsplit("-", 1)[0]] = await issue_token(conn, code)
        return out


class Hook:
    def __init__(self) -> None:
        self.status = 410
        self.accepted = 0
        self.url = ""
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        if self.status != 200:
            return web.Response(status=self.status)
        self.accepted += 1
        return web.Response(status=204)


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    h = Hook()
    app = web.Application()
    app.router.add_post("/hook", h.handle)
    h.runner = web.AppRunner(app)
    await h.runner.setup()
    site = web.TCPSite(h.runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    h.url = f"http://127.0.0.1:{port}/hook"
    yield h
    await h.runner.cleanup()


@pytest.fixture
async def client(settings) -> AsyncIterator[httpx.AsyncClient]:
    cfg = NotifyConfig(
        smtp_servers=["127.0.0.1:9"], retry_base_s=0.05, retry_cap_s=0.2, idle_poll_s=0.1, reminder_poll_s=0.5
    )
    app = build_app(settings, cfg)
    relay = OutboxRelay(settings, idle_poll_s=0.2)
    task = asyncio.create_task(relay.run())
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c
    relay.stop()
    await task


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Idempotency-Key": uuid4().hex}


async def eventually(fn: Any, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await fn()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def assign(pool, settings, owner: str, unit: str) -> None:
    now = datetime.now(UTC)
    found = IssueFound(
        issue_id=uuid4(),
        grid_path=GRID,
        method="unannounced",
        category="street-order",
        case_type="event",
        severity="major",
        description="占道经营",
        found_at=now,
        standards_version=1,
        deadline_hours=24,
    )
    assigned = IssueAssigned(
        issue_id=found.issue_id, responsible_unit=unit, owner=owner, deadline=now + timedelta(hours=48)
    )
    meta = EventMeta(source="inspection-team-1", actor="张三", grid_path=GRID, occurred_at=now)
    await EventStore(pool, settings).append(f"issue-{found.issue_id}", 0, [(found, meta), (assigned, meta)])


async def test_tokens_scopes_and_areas_guard_the_api(client, tokens):
    t = tokens["tag"]
    body = {
        "recipient_id": f"p-{t}",
        "name": "张伟",
        "grid_path": "changtai/wuan/c02",
        "role": "owner",
        "unit": f"unit-{t}",
    }
    assert (await client.put(f"/v1/recipients/p-{t}", json=body)).status_code == 401
    assert (await client.put(f"/v1/recipients/p-{t}", json=body, headers=auth("wm_nope"))).status_code == 401
    r = await client.put(f"/v1/recipients/p-{t}", json=body, headers=auth(tokens["unit"]))
    assert r.status_code == 403 and "notify:admin" in r.json()["detail"]
    r = await client.put(f"/v1/recipients/p-{t}", json=body, headers=auth(tokens["yanxi"]))
    assert r.status_code == 403 and "changtai/yanxi" in r.json()["detail"]
    bad = {**body, "quiet_hours": {"start": "25:00", "end": "07:00"}}
    assert (await client.put(f"/v1/recipients/p-{t}", json=bad, headers=auth(tokens["office"]))).status_code == 422
    assert (await client.put(f"/v1/recipients/p-{t}", json=body, headers=auth(tokens["office"]))).status_code == 200
    assert (await client.get("/v1/deliveries", headers=auth(tokens["unit"]))).status_code == 403
    assert (await client.get(f"/v1/inbox/p-{t}", headers=auth(tokens["yanxi"]))).status_code == 403
    assert (await client.get(f"/v1/inbox/p-{t}", headers=auth(tokens["unit"]))).status_code == 200  # own unit
    listed = (await client.get("/v1/recipients?area=changtai/wuan", headers=auth(tokens["office"]))).json()
    assert f"p-{t}" in {r["recipient_id"] for r in listed}
    assert (await client.get("/v1/recipients", headers=auth(tokens["yanxi"]))).json() == [
        r
        for r in (await client.get("/v1/recipients", headers=auth(tokens["office"]))).json()
        if r["grid_path"].startswith("changtai/yanxi")
    ]


async def test_assignment_reaches_the_inbox_which_marks_read_and_snoozes(client, tokens, pool, settings):
    t = tokens["tag"]
    rid = f"owner-{t}"
    body = {
        "recipient_id": rid,
        "name": f"李娜{t}",
        "grid_path": "changtai/wuan/c02",
        "role": "owner",
        "unit": f"unit-{t}",
        "language": "en",
    }
    assert (await client.put(f"/v1/recipients/{rid}", json=body, headers=auth(tokens["office"]))).status_code == 200
    await assign(pool, settings, f"李娜{t}", f"unit-{t}")
    h = auth(tokens["unit"])

    async def messages() -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = (await client.get(f"/v1/inbox/{rid}", headers=h)).json()
        return got

    [msg] = await eventually(messages)
    assert msg["subject"].startswith("[Campaign]") and msg["read_at"] is None
    assert (await client.post(f"/v1/inbox/{rid}/{msg['message_id']}/read", headers=h)).status_code == 200
    assert (await client.get(f"/v1/inbox/{rid}?unread=true", headers=h)).json() == []
    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    r = await client.post(f"/v1/inbox/{rid}/{msg['message_id']}/snooze", json={"until": later}, headers=h)
    assert r.status_code == 200
    assert await messages() == []
    assert len((await client.get(f"/v1/inbox/{rid}?include_snoozed=true", headers=h)).json()) == 1
    assert (await client.post(f"/v1/inbox/{rid}/{uuid4()}/read", headers=h)).status_code == 404


async def test_dead_letter_is_listed_with_its_reason_redriven_and_a_bounce_turns_sent_into_failed(
    client, tokens, pool, settings, hook
):
    t = tokens["tag"]
    rid = f"hooked-{t}"
    body = {
        "recipient_id": rid,
        "name": f"赵强{t}",
        "grid_path": "changtai/wuan/c02",
        "role": "owner",
        "unit": f"unit-{t}",
        "channels": ["webhook"],
        "webhook_url": hook.url,
    }
    r = await client.put(f"/v1/recipients/{rid}", json=body, headers=auth(tokens["office"]))
    assert r.json()["webhook_secret"].startswith("whsec_")  # shown once
    await assign(pool, settings, f"赵强{t}", f"unit-{t}")
    admin = auth(tokens["office"])

    async def dead() -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = (
            await client.get(f"/v1/deliveries?status=dead&recipient_id={rid}", headers=admin)
        ).json()
        return got

    [row] = await eventually(dead)
    assert "HTTP 410" in row["last_error"] and row["attempts"] == 1
    r = await client.post(f"/v1/deliveries/{row['delivery_id']}/redrive", headers=auth(tokens["yanxi"]))
    assert r.status_code == 403  # not in yanxi's area
    hook.status = 200
    assert (await client.post(f"/v1/deliveries/{row['delivery_id']}/redrive", headers=admin)).status_code == 200
    assert (await client.post(f"/v1/deliveries/{row['delivery_id']}/redrive", headers=admin)).status_code == 409

    async def sent() -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = (
            await client.get(f"/v1/deliveries?status=sent&recipient_id={rid}", headers=admin)
        ).json()
        return got

    await eventually(sent)
    assert hook.accepted == 1
    r = await client.post(f"/v1/deliveries/{row['delivery_id']}/bounce", json={"reason": "mailbox full"}, headers=admin)
    assert r.status_code == 200
    [after] = await dead()
    assert after["last_error"] == "bounced: mailbox full"
    events = [e.type for e in await EventStore(pool, settings).load(f"notification-{row['delivery_id']}")]
    assert events == ["NotificationFailed", "NotificationSent", "NotificationFailed"]


async def test_demo_play_registers_leaders_and_owners_and_an_overdue_reaches_them(client, tokens, pool, settings):
    from services.notify.demo import play
    from shared.events.inspection import IssueOverdue

    summary = await play(settings, {"campaign-office": tokens["office"]}, client)
    assert summary.startswith("notify: ")
    listed = (await client.get("/v1/recipients?limit=5000", headers=auth(tokens["office"]))).json()
    leaders = {r["grid_path"] for r in listed if r["role"] == "leader"}
    assert {f"changtai/{t}" for t in ("wuan", "yanxi", "lindun", "gunong")} <= leaders
    assert {r["name"] for r in listed if r["unit"] == "urban-management" and r["role"] == "owner"} >= {"李明", "王芳"}

    now = datetime.now(UTC)
    issue_id = uuid4()
    found = IssueFound(
        issue_id=issue_id,
        grid_path=GRID,
        method="unannounced",
        category="sanitation",
        case_type="event",
        severity="minor",
        description="垃圾桶满溢",
        found_at=now,
        standards_version=1,
        deadline_hours=24,
    )
    assigned = IssueAssigned(issue_id=issue_id, responsible_unit="urban-management", owner="王芳", deadline=now)
    overdue = IssueOverdue(
        issue_id=issue_id,
        responsible_unit="urban-management",
        deadline=now,
        step=1,
        escalation_level="community",
        escalated_to="changtai/wuan/c02",
    )
    meta = EventMeta(source="inspection-team-1", actor="张三", grid_path=GRID, occurred_at=now)
    await EventStore(pool, settings).append(f"issue-{issue_id}", 0, [(found, meta), (assigned, meta), (overdue, meta)])
    admin = auth(tokens["office"])

    async def overdue_inbox(rid: str) -> list[dict[str, Any]]:
        msgs = (await client.get(f"/v1/inbox/{rid}", headers=admin)).json()
        return [m for m in msgs if m["event_type"] == "IssueOverdue" and "垃圾桶满溢" in m["body"]]

    assert len(await eventually(lambda: overdue_inbox("leader.changtai.wuan.c02"))) == 1
    assert len(await eventually(lambda: overdue_inbox("owner.urban-management.1"))) == 1
    assert len(await eventually(lambda: overdue_inbox("leader.changtai"))) == 1  # the office's district watch
    assert await overdue_inbox("leader.changtai.wuan") == []  # step 1 stops at the community
