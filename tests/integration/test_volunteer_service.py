"""The volunteer service on the real broker and database: a month at two stations with retries,
the redemption race, area checks, bad bodies, and no personal data on any volunteer.* topic."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.volunteer.api import create_volunteer_app
from services.volunteer.domain import id_check_char
from services.volunteer.projections import PROJECTIONS
from shared.auth import issue_token, upsert_departments
from shared.events.topics import TOPICS
from shared.outbox import OutboxRelay, wait_until_drained
from shared.projection import ProjectionRunner
from tests.support.kafka import read_all

pytestmark = pytest.mark.integration

DEPARTMENTS = [
    {
        "code": "wenquan-station",
        "name": "文泉社区新时代文明实践站",
        "kind": "practice_station",
        "area": "changtai/wuan/c01",
        "scopes": ["volunteer:write", "points:write"],
    },
    {
        "code": "qingnian-station",
        "name": "青年村新时代文明实践站",
        "kind": "practice_station",
        "area": "changtai/fangyang/c03",
        "scopes": ["volunteer:write", "points:write"],
    },
    {
        "code": "reader",
        "name": "区创城办",
        "kind": "campaign_office",
        "area": "changtai",
        "scopes": ["scoring:read"],
    },
]


@dataclass
class Api:
    client: httpx.AsyncClient
    tokens: dict[str, str]
    settings: Any
    pool: Any
    n: int = 0

    async def post(
        self, who: str, path: str, body: dict[str, Any] | None = None, key: str | None = None
    ) -> httpx.Response:
        self.n += 1
        headers = {"Authorization": f"Bearer {self.tokens[who]}", "Idempotency-Key": key or f"k-{random.random()}"}
        return await self.client.post(path, json=body or {}, headers=headers)

    async def get(self, who: str, path: str, **params: str) -> httpx.Response:
        return await self.client.get(path, params=params, headers={"Authorization": f"Bearer {self.tokens[who]}"})

    async def sync(self) -> None:
        """Publish the outbox to Kafka and bring every read model up to the topics' ends."""
        relay = OutboxRelay(self.settings)
        task = asyncio.create_task(relay.run())
        try:
            async with self.pool.acquire() as conn:
                await wait_until_drained(conn, timeout=30)
        finally:
            relay.stop()
            await task
        for p in PROJECTIONS:
            await ProjectionRunner(self.settings, self.pool, p, dead_letter=False).catch_up()


@pytest.fixture
async def api(settings, pool) -> AsyncIterator[Api]:
    app = create_volunteer_app(settings)
    async with app.router.lifespan_context(app):
        async with app.state.pool.acquire() as conn:
            await upsert_departments(conn, DEPARTMENTS)
            tokens = {dep["code"]: await issue_token(conn, dep["code"]) for dep in DEPARTMENTS}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            yield Api(client, tokens, settings, pool)


def person(rng: random.Random) -> dict[str, str]:
    first17 = (
        f"350625{rng.randint(1960, 2004)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(0, 999):03d}"
    )
    return {
        "name": rng.choice("林陈黄杨郑王李") + rng.choice(["小明", "秀英", "建国", "丽华", "志强", "美玲"]),
        "phone": f"1{rng.choice('3589')}{rng.randint(0, 999_999_999):09d}",
        "id_number": first17 + id_check_char(first17),
    }


async def register_site(api: Api, who: str, site_id: str, grid: str) -> None:
    r = await api.post(who, "/v1/sites", {"site_id": site_id, "kind": "station", "name": site_id, "grid_path": grid})
    assert r.status_code == 200, r.text


async def register_volunteers(api: Api, who: str, site_id: str, n: int, rng: random.Random) -> list[str]:
    ids = []
    for _ in range(n):
        r = await api.post(who, "/v1/volunteers", {"site_id": site_id, "skills": ["宣讲"], **person(rng)})
        assert r.status_code == 200, r.text
        ids.append(r.json()["id"])
    return ids


async def test_a_month_at_two_stations_credits_hours_once_and_fills_the_calendars(api: Api):
    rng = random.Random(5)
    suffix = f"{rng.randint(0, 10**6)}-{random.randint(0, 10**6)}"
    wq, qn = f"wenquan-{suffix}", f"qingnian-{suffix}"
    await register_site(api, "wenquan-station", wq, "changtai/wuan/c01")
    await register_site(api, "qingnian-station", qn, "changtai/fangyang/c03")
    team = {
        wq: ("wenquan-station", await register_volunteers(api, "wenquan-station", wq, 4, rng)),
        qn: ("qingnian-station", await register_volunteers(api, "qingnian-station", qn, 4, rng)),
    }
    kinds = [
        ("党的二十大精神宣讲", "policy_talk", "talk"),
        ("环境卫生整治", "sanitation", "drive"),
        ("文明交通劝导", "civilised_traffic", "persuasion"),
        ("关爱空巢老人走访", "care_visit", "visit"),
        ("芗剧道德模范事迹演出", "model_deeds_talk", "opera"),
        ("快板三句半说创城", "policy_talk", "clapper_talk"),
    ]
    expected_hours: Counter[str] = Counter()
    planned: dict[str, list[str]] = {wq: [], qn: []}
    held_request: tuple[str, str, dict[str, Any], str] | None = None
    for day in range(2, 24, 3):  # every third day of November, at both stations
        for site, (who, vols) in team.items():
            title, theme, form = kinds[(day + len(site)) % len(kinds)]
            start = datetime(2026, 11, day, 0, 30, tzinfo=UTC)  # 08:30 in Changtai
            r = await api.post(
                who,
                "/v1/activities",
                {
                    "site_id": site,
                    "title": title,
                    "theme": theme,
                    "form": form,
                    "starts_at": start.isoformat(),
                    "ends_at": (start + timedelta(hours=3)).isoformat(),
                },
            )
            assert r.status_code == 200, r.text
            aid = r.json()["id"]
            planned[site].append(aid)
            served = rng.sample(vols, 3)
            parts = [{"volunteer_id": v, "hours": rng.choice([1.5, 2, 2.5, 3])} for v in served]
            body = {
                "started_at": start.isoformat(),
                "ended_at": (start + timedelta(hours=3)).isoformat(),
                "participants": parts,
                "audience": rng.randint(20, 200),
                "photos": [f"photo://2026/11/{day:02d}/{aid}.jpg"],
            }
            key = f"held-{aid}"
            r = await api.post(who, f"/v1/activities/{aid}/held", body, key=key)
            assert r.status_code == 200, r.text
            assert r.json()["events"] == ["ActivityHeld"] + ["HoursCredited"] * 3
            for p in parts:
                expected_hours[p["volunteer_id"]] += p["hours"]
            held_request = (who, aid, body, key)
            r = await api.post(who, f"/v1/activities/{aid}/review", {"verdict": "accepted"})
            assert r.status_code == 200, r.text

    # A retried command (same key) writes nothing; the same record under a new key is refused.
    assert held_request is not None
    who, aid, body, key = held_request
    async with api.pool.acquire() as conn:
        before = await conn.fetchval("SELECT count(*) FROM events WHERE stream_id = $1", f"activity-{aid}")
    again = await api.post(who, f"/v1/activities/{aid}/held", body, key=key)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert (await api.post(who, f"/v1/activities/{aid}/held", body)).status_code == 409
    async with api.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM events WHERE stream_id = $1", f"activity-{aid}") == before

    # A self-reported helper at the last Qingnian activity: pending, then approved.
    last_qn = planned[qn][-1]
    helper = team[qn][1][0]
    async with api.pool.acquire() as conn:
        credited = await conn.fetch(
            "SELECT payload->>'volunteer_id' AS v FROM events WHERE stream_id = $1 AND type = 'HoursCredited'",
            f"activity-{last_qn}",
        )
    if helper in {r["v"] for r in credited}:
        helper = next(v for v in team[qn][1] if v not in {r["v"] for r in credited})
    # The activity is reviewed and closed: a late report is refused.
    r = await api.post(
        "qingnian-station", f"/v1/activities/{last_qn}/hours-reports", {"volunteer_id": helper, "hours": 1}
    )
    assert r.status_code == 409 and "closed" in r.json()["detail"]

    # Holding, planning or reviewing at a site outside one's area: 403.
    wq_activity = planned[wq][0]
    r = await api.post("qingnian-station", f"/v1/activities/{wq_activity}/review", {"verdict": "accepted"})
    assert r.status_code == 403
    r = await api.post(
        "qingnian-station",
        "/v1/activities",
        {
            "site_id": wq,
            "title": "越界活动",
            "theme": "sanitation",
            "form": "drive",
            "starts_at": "2026-11-20T01:00:00Z",
            "ends_at": "2026-11-20T03:00:00Z",
        },
    )
    assert r.status_code == 403

    await api.sync()

    # Every volunteer's hours as the station recorded them, each activity once.
    for _site, (_who, vols) in team.items():
        for v in vols:
            r = await api.get("reader", f"/v1/volunteers/{v}")
            assert r.status_code == 200, r.text
            data = r.json()
            assert data["total_hours"] == pytest.approx(expected_hours[v])
            assert len({a["activity_id"] for a in data["activities"]}) == len(data["activities"])
            assert "phone" not in data and data["phone_masked"].count("*") == 4
    # The station prints a volunteer's hours certificate; another station may not.
    v = team[wq][1][0]
    r = await api.get("wenquan-station", f"/v1/volunteers/{v}/certificate.pdf")
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    assert (
        r.content.startswith(b"%PDF")
        and f"{expected_hours[v]:g}".encode("utf-16-be").hex().upper().encode() in r.content
    )
    assert (await api.get("qingnian-station", f"/v1/volunteers/{v}/certificate.pdf")).status_code == 403
    # A station may not read a volunteer registered in another township.
    r = await api.get("qingnian-station", f"/v1/volunteers/{team[wq][1][0]}")
    assert r.status_code == 403

    # The site's calendar lists its month in order, every activity reviewed.
    r = await api.get(
        "reader", f"/v1/sites/{wq}/calendar", **{"from": "2026-11-01T00:00:00+08:00", "to": "2026-12-01T00:00:00+08:00"}
    )
    assert r.status_code == 200
    cal = r.json()["activities"]
    assert [a["activity_id"] for a in cal] == planned[wq]
    assert {a["status"] for a in cal} == {"reviewed"}
    r = await api.get("reader", f"/v1/sites/{qn}/calendar", **{"from": "2026-11-10T00:00:00+08:00"})
    assert len(r.json()["activities"]) == len([d for d in range(2, 24, 3) if d >= 10])


async def test_self_reported_hours_are_credited_only_when_approved(api: Api):
    rng = random.Random()
    site = f"wq-self-{rng.randint(0, 10**9)}"
    await register_site(api, "wenquan-station", site, "changtai/wuan/c01")
    a, b = await register_volunteers(api, "wenquan-station", site, 2, rng)
    r = await api.post(
        "wenquan-station",
        "/v1/activities",
        {
            "site_id": site,
            "title": "垃圾分类宣传",
            "theme": "sanitation",
            "form": "drive",
            "starts_at": "2026-11-21T01:00:00Z",
            "ends_at": "2026-11-21T03:00:00Z",
        },
    )
    aid = r.json()["id"]
    held = {
        "started_at": "2026-11-21T01:00:00Z",
        "ended_at": "2026-11-21T03:00:00Z",
        "participants": [],
        "audience": 30,
    }
    assert (await api.post("wenquan-station", f"/v1/activities/{aid}/held", held)).status_code == 200
    for v in (a, b):
        r = await api.post("wenquan-station", f"/v1/activities/{aid}/hours-reports", {"volunteer_id": v, "hours": 1.5})
        assert r.status_code == 200, r.text
    assert (
        await api.post("wenquan-station", f"/v1/activities/{aid}/review", {"verdict": "accepted"})
    ).status_code == 409
    assert (await api.post("wenquan-station", f"/v1/activities/{aid}/hours-reports/{a}/approve")).status_code == 200
    r = await api.post("wenquan-station", f"/v1/activities/{aid}/hours-reports/{b}/decline", {"reason": "无签到记录"})
    assert r.status_code == 200
    assert (await api.post("wenquan-station", f"/v1/activities/{aid}/hours-reports/{a}/approve")).status_code == 409
    await api.sync()
    assert (await api.get("reader", f"/v1/volunteers/{a}")).json()["total_hours"] == 1.5
    assert (await api.get("reader", f"/v1/volunteers/{b}")).json()["total_hours"] == 0


async def test_concurrent_redemptions_beyond_the_balance_one_wins_one_409(api: Api):
    tag = random.randint(0, 10**9)
    fund, hh = f"qn-fund-{tag}", f"qn-h{tag}"
    who = "qingnian-station"
    r = await api.post(
        who, "/v1/funds", {"fund_id": fund, "name": "青年村乡风文明积分基金", "grid_path": "changtai/fangyang/c03"}
    )
    assert r.status_code == 200, r.text
    assert (await api.post(who, f"/v1/funds/{fund}/contributions", {"yuan": 500, "donor": "镇财政"})).status_code == 200
    for points, rule in [(50, "good-deed"), (10, "clean-courtyard")]:
        r = await api.post(
            who,
            f"/v1/households/{hh}/awards",
            {
                "grid_path": "changtai/fangyang/c03/g02",
                "label": "青年村2组8号",
                "points": points,
                "rule": rule,
                "reason": rule,
            },
        )
        assert r.status_code == 200, r.text
    r = await api.post(
        who,
        f"/v1/households/{hh}/awards",
        {
            "grid_path": "changtai/fangyang/c03/g02",
            "label": "x",
            "points": 99,
            "rule": "clean-courtyard",
            "reason": "r",
        },
    )
    assert r.status_code == 409 and "at most" in r.json()["detail"]
    redeem = {"fund_id": fund, "points": 40, "item": "大米一袋"}
    results = await asyncio.gather(*(api.post(who, f"/v1/households/{hh}/redemptions", redeem) for _ in range(2)))
    assert sorted(r.status_code for r in results) == [200, 409]
    # A retry of the winner is the same result, not a second redemption.
    winner_key = None
    again = await api.post(who, f"/v1/households/{hh}/redemptions", {**redeem, "points": 20}, key="same-key")
    assert again.status_code == 200
    winner_key = "same-key"
    again2 = await api.post(who, f"/v1/households/{hh}/redemptions", {**redeem, "points": 20}, key=winner_key)
    assert again2.json()["duplicate"] is True
    assert (await api.post(who, f"/v1/households/{hh}/redemptions", {**redeem, "points": 1})).status_code == 409
    # Another household's station cannot touch it.
    r = await api.post("wenquan-station", f"/v1/households/{hh}/redemptions", {**redeem, "points": 1})
    assert r.status_code == 403
    await api.sync()
    r = await api.get(who, f"/v1/households/{hh}/points")
    assert r.status_code == 200
    data = r.json()
    assert data["balance"] == 0
    assert [(e["kind"], e["points"]) for e in data["ledger"]] == [
        ("awarded", 50),
        ("awarded", 10),
        ("redeemed", -40),
        ("redeemed", -20),
    ]
    assert all(e["rules_version"] >= 1 for e in data["ledger"])
    fund_row = (await api.get(who, f"/v1/funds/{fund}")).json()
    assert fund_row["balance"] == 500 - 60


async def test_redemption_beyond_the_fund_is_refused(api: Api):
    tag = random.randint(0, 10**9)
    fund, hh = f"small-fund-{tag}", f"wq-h{tag}"
    who = "wenquan-station"
    await api.post(who, "/v1/funds", {"fund_id": fund, "name": "小基金", "grid_path": "changtai/wuan/c01"})
    await api.post(who, f"/v1/funds/{fund}/contributions", {"yuan": 30, "donor": "社区"})
    await api.post(
        who,
        f"/v1/households/{hh}/awards",
        {"grid_path": "changtai/wuan/c01", "label": "文泉1号", "points": 50, "rule": "good-deed", "reason": "见义勇为"},
    )
    r = await api.post(who, f"/v1/households/{hh}/redemptions", {"fund_id": fund, "points": 40, "item": "电饭锅"})
    assert r.status_code == 409 and "holds 30 yuan" in r.json()["detail"]


async def test_bad_bodies_get_422_with_the_field_and_a_token_is_needed(api: Api):
    r = await api.post(
        "wenquan-station", "/v1/volunteers", {"site_id": "x", "name": "林明", "phone": "12345", "id_number": "1"}
    )
    assert r.status_code == 422
    fields = {e["loc"][-1] for e in r.json()["detail"]}
    assert {"phone", "id_number"} <= fields
    r = await api.client.post(
        "/v1/sites",
        json={"site_id": "s", "kind": "station", "name": "n", "grid_path": "changtai/wuan/c01"},
        headers={"Authorization": f"Bearer {api.tokens['wenquan-station']}"},
    )
    assert r.status_code == 422 and any(e["loc"][-1] == "Idempotency-Key" for e in r.json()["detail"])
    r = await api.client.post("/v1/sites", json={}, headers={"Idempotency-Key": "x"})
    assert r.status_code == 401
    r = await api.post(
        "reader", "/v1/sites", {"site_id": "s", "kind": "station", "name": "n", "grid_path": "changtai/wuan/c01"}
    )
    assert r.status_code == 403


async def test_no_full_phone_or_id_number_on_any_volunteer_topic(api: Api):
    rng = random.Random()
    site = f"wq-pii-{rng.randint(0, 10**9)}"
    await register_site(api, "wenquan-station", site, "changtai/wuan/c01")
    await register_volunteers(api, "wenquan-station", site, 3, rng)
    await api.sync()
    async with api.pool.acquire() as conn:
        people = await conn.fetch("SELECT name, phone, id_number FROM volunteer_personal_data")
    assert len(people) >= 3
    secrets = [p["phone"].encode() for p in people] + [p["id_number"].encode() for p in people]
    masked = [f"{p['phone'][:3]}****{p['phone'][-4:]}".encode() for p in people]
    seen_masked = 0
    total = 0
    for logical in TOPICS:
        if not logical.startswith("volunteer."):
            continue
        for rec in await read_all(api.settings, api.settings.topic(logical)):
            total += 1
            blob = (rec.key or b"") + (rec.value or b"") + b"".join(v for _, v in rec.headers or ())
            assert not [s for s in secrets if s in blob], f"personal data on {logical}"
            seen_masked += sum(m in blob for m in masked)
    assert total > 0 and seen_masked >= len(people)
