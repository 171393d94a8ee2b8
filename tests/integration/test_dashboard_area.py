"""The dashboard shows an operator only their grid area, and only with a valid token or session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date

import asyncpg
import httpx
import pytest

from services.dashboard.app import build_app
from services.dashboard.panels import _guarded, ranking, volunteer
from shared.campaign_time import campaign_day, utcnow
from shared.settings import Settings
from tests.e2e.serving import serve
from tests.integration.test_dashboard_stream import (
    counts,
    department_tokens,
    login,
    open_stream,
    put_issue,
    until_panel,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def tokens(pool: asyncpg.Pool, settings: Settings) -> dict[str, str]:
    return await department_tokens(pool, settings)


@pytest.fixture
async def dashboard(settings: Settings) -> AsyncIterator[str]:
    async with serve(build_app(settings, poll_s=0.1, health=False)) as base:
        yield base


async def test_township_office_sees_only_its_township(
    dashboard: str, pool: asyncpg.Pool, tokens: dict[str, str]
) -> None:
    await put_issue(pool, "changtai/yanxi/c01/g01", overdue_step=1)
    async with login(dashboard, tokens["wuan-office"]) as client, open_stream(client) as reader:
        snap = await reader.next()
        assert snap.data["area"] == "changtai/wuan"
        panels = snap.data["panels"]
        assert "health" not in panels, "stream health is for the campaign office (ops:admin)"
        assert all(r["node"].startswith("changtai/wuan/") for r in panels["counters"]["rows"])
        assert all(r["grid_path"].startswith("changtai/wuan/") for r in panels["overdue"]["rows"])
        before = counts(panels["counters"], "changtai/wuan")

        # A change elsewhere sends nothing on this stream; a change here is the next number.
        await put_issue(pool, "changtai/yanxi/c02/g01")
        assert await reader.none_within(0.5)
        await put_issue(pool, "changtai/wuan/c05/g01")
        [ev] = await until_panel(
            reader, "counters", lambda p: counts(p, "changtai/wuan")["found"] == before["found"] + 1
        )
        assert ev.seq == snap.seq + 1
        assert all(r["node"].startswith("changtai/wuan/") for r in ev.data["data"]["rows"])

        # Asking for a wider or a neighbouring area is refused; a narrower one is fine.
        assert (await client.get("/v1/panels", params={"area": "changtai"})).status_code == 403
        assert (await client.get("/v1/panels", params={"area": "changtai/yanxi"})).status_code == 403
        assert (await client.get("/v1/stream", params={"area": "changtai/yanxi"})).status_code == 403
        assert (await client.get("/v1/panels", params={"area": "changtai/nowhere"})).status_code == 422
        narrow = (await client.get("/v1/panels", params={"area": "changtai/wuan/c05"})).json()
        assert narrow["area"] == "changtai/wuan/c05"
        assert {r["node"] for r in narrow["panels"]["counters"]["rows"]} == {"changtai/wuan/c05/g01"}

        meta = (await client.get("/v1/meta")).json()
        paths = {n["path"] for n in meta["nodes"]}
        assert "changtai/wuan/c01" in paths and "changtai/yanxi" not in paths
        district = next(n for n in meta["nodes"] if n["path"] == "changtai")
        assert district["children"] == ["changtai/wuan"]


async def test_campaign_office_sees_the_district_and_stream_health(
    settings: Settings, pool: asyncpg.Pool, tokens: dict[str, str]
) -> None:
    await put_issue(pool, "changtai/yanxi/c03/g01")
    await put_issue(pool, "changtai/wuan/c06/g01")
    app = build_app(settings, poll_s=0.1, health=True, health_interval_s=0.2)
    async with serve(app) as base, login(base, tokens["campaign-office"]) as client, open_stream(client) as reader:
        snap = await reader.next()
        townships = {r["node"].split("/")[1] for r in snap.data["panels"]["counters"]["rows"]}
        assert {"wuan", "yanxi"} <= townships
        if not snap.data["panels"].get("health", {}).get("available"):
            await until_panel(reader, "health", lambda p: p.get("available"), timeout=10)
        health = (await client.get("/v1/panels")).json()["panels"]["health"]
        assert {t["topic"] for t in health["topics"]} >= {"inspection.issue", "deadletter"}
        assert health["outbox_backlog"] >= 0 and health["deadletter"] >= 0


async def test_no_token_bad_token_wrong_scope_forged_cookie(dashboard: str, tokens: dict[str, str]) -> None:
    async with httpx.AsyncClient(base_url=dashboard, timeout=5) as client:
        assert (await client.get("/v1/stream")).status_code == 401
        assert (await client.get("/v1/panels")).status_code == 401
        bad = {"Authorization": "Bearer wm_not-a-token"}
        assert (await client.post("/v1/session", headers=bad)).status_code == 401
        hotline = {"Authorization": f"Bearer {tokens['hotline-12345']}"}
        assert (await client.post("/v1/session", headers=hotline)).status_code == 403
        r = await client.post("/v1/session", headers={"Authorization": f"Bearer {tokens['yanxi-office']}"})
        assert r.status_code == 200 and r.json()["area"] == "changtai/yanxi"
        cookie = r.cookies["wm_dashboard"]
        assert tokens["yanxi-office"] not in cookie, "the cookie never carries the token"
        assert (await client.get("/v1/panels")).status_code == 200
        tampered = cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")
        client.cookies.clear()
        client.cookies.set("wm_dashboard", tampered)
        assert (await client.get("/v1/panels")).status_code == 401


async def test_panels_of_a_service_not_deployed_are_empty_not_errors(pool: asyncpg.Pool) -> None:
    day: date = campaign_day(utcnow())
    async with pool.acquire() as conn:
        await conn.execute("CREATE SCHEMA IF NOT EXISTS dashboard_test_empty")
        await conn.execute("SET search_path TO dashboard_test_empty")
        try:
            got = await _guarded("ranking", lambda: ranking(conn, "changtai", day))
            assert got == {"available": False}
            got = await _guarded("volunteer", lambda: volunteer(conn, "changtai", day))
            assert got == {"available": False}
        finally:
            await conn.execute("RESET search_path")
