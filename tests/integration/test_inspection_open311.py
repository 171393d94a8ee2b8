"""The Open311 GeoReport v2 facade: a hotline files a public report; its status follows the issue."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest

from services.inspection.app import build_app
from shared.auth import issue_token, upsert_departments
from shared.campaign_time import utcnow
from shared.grid import cached_grid
from shared.outbox import OutboxRelay

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def open311(settings):
    app = build_app(settings, watcher_interval_s=3600)
    relay = OutboxRelay(settings)
    relay_task = asyncio.create_task(relay.run())
    async with app.router.lifespan_context(app):
        async with app.state.pool.acquire() as conn:
            await upsert_departments(conn, cached_grid(settings.district_file).departments)
            tokens = {
                d: await issue_token(conn, d)
                for d in ("hotline-12345", "campaign-office", "urban-management", "transport")
            }
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            yield client, tokens
    relay.stop()
    await relay_task


async def test_services_list_the_standards_categories(open311):
    client, _ = open311
    services = (await client.get("/open311/v2/services.json")).json()
    codes = {s["service_code"] for s in services}
    assert {"sanitation", "illegal-parking", "damaged-facility"} <= codes
    assert all(s["type"] == "realtime" for s in services)


async def test_a_form_encoded_public_report_becomes_an_issue_whose_status_follows_the_loop(open311):
    client, tokens = open311
    form = {
        "api_key": tokens["hotline-12345"],
        "service_code": "damaged-facility",
        "description": "市民来电：井盖缺失",
        "address_string": "武安镇文泉路口",
        "attribute[grid_path]": "changtai/wuan/c01/g02",
        "media_url": "https://example.invalid/p.jpg",
    }
    r = await client.post("/open311/v2/requests.json", data=form)
    assert r.status_code == 201, r.text
    rid = r.json()[0]["service_request_id"]
    issue = (
        await client.get(f"/v1/issues/{rid}", headers={"Authorization": f"Bearer {tokens['campaign-office']}"})
    ).json()
    found = issue["history"][0]["payload"]
    assert found["method"] == "public_report" and found["public_report_id"] == rid
    assert issue["history"][0]["source"] == "hotline-12345"

    async def status_of() -> str | None:
        got = (await client.get(f"/open311/v2/requests/{rid}.json")).json()
        return got[0]["status"] if got else None

    assert await status_of() == "open"
    office = {"Authorization": f"Bearer {tokens['campaign-office']}"}
    unit = {"Authorization": f"Bearer {tokens['urban-management']}"}
    deadline = (utcnow() + timedelta(hours=8)).isoformat()
    await client.post(
        f"/v1/issues/{rid}/assign",
        headers=office,
        json={"responsible_unit": "urban-management", "owner": "李四", "deadline": deadline},
    )
    await client.post(f"/v1/issues/{rid}/rectification", headers=unit, json={"text": "已补装井盖"})
    assert (await client.post(f"/v1/issues/{rid}/verify", headers=office, json={"accept": True})).status_code == 200
    for _ in range(200):
        listed = (await client.get("/open311/v2/requests.json", params={"service_request_id": rid})).json()
        if listed and listed[0]["status"] == "closed":
            break
        await asyncio.sleep(0.05)
    got = (await client.get(f"/open311/v2/requests/{rid}.json")).json()[0]
    assert got["status"] == "closed" and got["agency_responsible"] == "urban-management"
    listed = (await client.get("/open311/v2/requests.json", params={"status": "closed"})).json()
    assert rid in {x["service_request_id"] for x in listed}


async def test_bad_public_reports_get_open311_errors(open311):
    client, tokens = open311
    r = await client.post("/open311/v2/requests.json", data={"service_code": "sanitation"})
    assert r.status_code == 401 and r.json()[0]["description"] == "api_key is required"
    r = await client.post("/open311/v2/requests.json", data={"api_key": tokens["transport"], "service_code": "x"})
    assert r.status_code == 403
    r = await client.post(
        "/open311/v2/requests.json",
        json={"api_key": tokens["hotline-12345"], "service_code": "ufo", "grid_path": "changtai/wuan"},
    )
    assert r.status_code == 400 and "unknown category" in r.json()[0]["description"]
    r = await client.post(
        "/open311/v2/requests.json", data={"api_key": tokens["hotline-12345"], "service_code": "sanitation"}
    )
    assert r.status_code == 400 and "grid_path" in r.json()[0]["description"]
