"""The volunteer-projects read model on the real broker and database: nine projects entered in the
provincial contest, four shortlisted, one awarded (as the report counts them); the queries by
stage, an area-limited reader, and a rebuild that gives the same rows."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from services.volunteer.api import create_volunteer_app
from services.volunteer.projections import ProjectsProjection
from shared.auth import issue_token, upsert_departments
from shared.outbox import OutboxRelay, wait_until_drained
from shared.projection import ProjectionRunner, rebuild

pytestmark = pytest.mark.integration

DEPARTMENTS: list[dict[str, Any]] = [
    {
        "code": "projects-office",
        "name": "区文明办",
        "kind": "campaign_office",
        "area": "changtai",
        "scopes": ["volunteer:write"],
    },
    {
        "code": "wuan-reader",
        "name": "武安镇新时代文明实践所",
        "kind": "practice_institute",
        "area": "changtai/wuan",
        "scopes": [],
    },
]
WUAN = ["changtai/wuan/c01", "changtai/wuan/c02", "changtai/wuan/c03", "changtai/wuan/c04", "changtai/wuan/c05"]
FANGYANG = ["changtai/fangyang/c01", "changtai/fangyang/c02", "changtai/fangyang/c03", "changtai/fangyang/c04"]
NAMES = [
    "护苗未成年人关爱行动",
    "文明交通劝导岗",
    "林溪老汉宣讲队",
    "芗韵传家风",
    "银龄互助",
    "清洁家园周末行",
    "乡风文明积分超市",
    "书香少年宫",
    "邻里守望",
]
YEAR = 2024


@dataclass
class Api:
    client: httpx.AsyncClient
    tokens: dict[str, str]

    async def post(self, path: str, body: dict[str, Any], key: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.tokens['projects-office']}", "Idempotency-Key": key}
        r = await self.client.post(path, json=body, headers=headers)
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    async def get(self, who: str, path: str, **params: str | int) -> httpx.Response:
        return await self.client.get(path, params=params, headers={"Authorization": f"Bearer {self.tokens[who]}"})


@pytest.fixture
async def api(settings, pool) -> AsyncIterator[Api]:
    app = create_volunteer_app(settings)
    async with app.router.lifespan_context(app):
        async with pool.acquire() as conn:
            await upsert_departments(conn, DEPARTMENTS)
            tokens = {dep["code"]: await issue_token(conn, dep["code"]) for dep in DEPARTMENTS}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            yield Api(client, tokens)


async def sync(settings, pool) -> None:
    """Publish the outbox and bring the projects read model up to the topic's end."""
    relay = OutboxRelay(settings)
    task = asyncio.create_task(relay.run())
    try:
        async with pool.acquire() as conn:
            await wait_until_drained(conn, timeout=30)
    finally:
        relay.stop()
        await task
    await ProjectionRunner(settings, pool, ProjectsProjection(), dead_letter=False).catch_up()


async def table_rows(pool) -> list[list[dict[str, Any]]]:
    async with pool.acquire() as conn:
        projects = await conn.fetch("SELECT * FROM volunteer_projects ORDER BY project_id")
        rounds = await conn.fetch("SELECT * FROM volunteer_project_rounds ORDER BY project_id, contest, year")
    return [[dict(r.items()) for r in projects], [dict(r.items()) for r in rounds]]


def ids(listing: httpx.Response) -> set[str]:
    assert listing.status_code == 200, listing.text
    return {p["project_id"] for p in listing.json()}


async def test_nine_entered_four_shortlisted_one_awarded(api: Api, settings, pool):
    run = uuid.uuid4().hex[:8]
    contest = f"provincial-volunteer-projects-{run}"
    places = WUAN + FANGYANG
    pids: list[str] = []
    for i, name in enumerate(NAMES):
        body = {"name": name, "organiser": "长泰区志愿者协会", "grid_path": places[i], "description": "志愿服务项目"}
        pids.append((await api.post("/v1/projects", body, f"{run}-reg-{i}"))["id"])
        await api.post(f"/v1/projects/{pids[i]}/entries", {"contest": contest, "year": YEAR}, f"{run}-in-{i}")
    shortlisted = [pids[0], pids[2], pids[5], pids[7]]  # two in Wuan, two in Fangyang
    for pid in shortlisted:
        await api.post(f"/v1/projects/{pid}/shortlist", {"contest": contest, "year": YEAR}, f"{run}-sl-{pid}")
    awarded = pids[2]
    prize = {"contest": contest, "year": YEAR, "prize": "最佳志愿服务项目"}
    await api.post(f"/v1/projects/{awarded}/awards", prize, f"{run}-aw")
    # A retried award (same key) writes nothing new.
    again = await api.post(f"/v1/projects/{awarded}/awards", prize, f"{run}-aw")
    assert again["duplicate"] is True
    await sync(settings, pool)

    q: dict[str, str | int] = {"year": YEAR, "contest": contest}
    assert ids(await api.get("projects-office", "/v1/projects", **q, status="entered")) == set(pids)
    assert ids(await api.get("projects-office", "/v1/projects", **q, status="shortlisted")) == set(shortlisted)
    assert ids(await api.get("projects-office", "/v1/projects", **q, status="awarded")) == {awarded}
    assert ids(await api.get("projects-office", "/v1/projects", **q)) == set(pids)
    assert ids(await api.get("projects-office", "/v1/projects", year=YEAR + 1, contest=contest)) == set()

    listing = (await api.get("projects-office", "/v1/projects", **q, status="awarded")).json()
    [won] = listing
    assert won["name"] == NAMES[2] and won["grid_path"] == places[2] and won["department"] == "projects-office"
    assert [(r["status"], r["level"], r["prize"]) for r in won["rounds"]] == [
        ("awarded", "provincial", "最佳志愿服务项目")
    ]

    # An area-limited reader sees the Wuan projects only, at every stage.
    wuan = {pid for pid, place in zip(pids, places, strict=True) if place.startswith("changtai/wuan/")}
    assert len(wuan) == 5
    assert ids(await api.get("wuan-reader", "/v1/projects", **q, status="entered")) == wuan
    assert ids(await api.get("wuan-reader", "/v1/projects", **q, status="shortlisted")) == wuan & set(shortlisted)
    outside = pids[7]
    assert (await api.get("wuan-reader", f"/v1/projects/{outside}")).status_code == 403
    assert (await api.get("projects-office", f"/v1/projects/{uuid.uuid4()}")).status_code == 404

    # One project with its history of contest rounds.
    r = await api.get("wuan-reader", f"/v1/projects/{awarded}")
    assert r.status_code == 200, r.text
    one = r.json()
    assert (one["rounds_entered"], one["rounds_shortlisted"], one["rounds_awarded"]) == (1, 1, 1)
    [history] = one["rounds"]
    assert history["contest"] == contest and history["year"] == YEAR and history["status"] == "awarded"
    assert history["entered_at"] <= history["shortlisted_at"] <= history["awarded_at"] == one["updated_at"]

    # Unauthenticated reads are refused.
    assert (await api.client.get("/v1/projects")).status_code == 401

    # A rebuild from the topic gives the same rows.
    before = await table_rows(pool)
    assert len(before[0]) >= 9
    await rebuild(settings, pool, ProjectsProjection(), progress=False)
    assert await table_rows(pool) == before
