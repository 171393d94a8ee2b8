"""Check-in with the short-lived activity code, and the sweeper that closes check-ins left open 24 h."""

from __future__ import annotations

import random
from datetime import timedelta

from services.volunteer.workers import close_lapsed_check_ins
from shared.campaign_time import utcnow
from shared.eventstore import EventStore
from tests.integration.test_volunteer_service import Api, api, register_site, register_volunteers

__all__ = ["api"]  # the fixture, shared


async def test_check_in_with_the_code_and_the_24h_sweep_flags_without_credit(api: Api):
    rng = random.Random()
    site = f"wq-ci-{rng.randint(0, 10**9)}"
    who = "wenquan-station"
    await register_site(api, who, site, "changtai/wuan/c01")
    a, b = await register_volunteers(api, who, site, 2, rng)
    start = utcnow() - timedelta(hours=1)
    r = await api.post(
        who,
        "/v1/activities",
        {
            "site_id": site,
            "title": "文明交通劝导",
            "theme": "civilised_traffic",
            "form": "persuasion",
            "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(hours=3)).isoformat(),
        },
    )
    aid = r.json()["id"]
    opened = await api.post(who, f"/v1/activities/{aid}/check-in/open", {"valid_minutes": 60})
    assert opened.status_code == 200, opened.text
    code = opened.json()["code"]
    assert len(code) == 6 and code.isdigit()
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    r = await api.post(who, f"/v1/activities/{aid}/check-in", {"volunteer_id": a, "code": wrong})
    assert r.status_code == 409 and "wrong activity code" in r.json()["detail"]
    for v in (a, b):
        r = await api.post(who, f"/v1/activities/{aid}/check-in", {"volunteer_id": v, "code": code})
        assert r.status_code == 200, r.text
    r = await api.post(who, f"/v1/activities/{aid}/check-out", {"volunteer_id": a})
    assert r.status_code == 409 and "quarter hour" in r.json()["detail"]
    # Another station cannot check anyone in here.
    r = await api.post("qingnian-station", f"/v1/activities/{aid}/check-in", {"volunteer_id": a, "code": code})
    assert r.status_code == 403
    await api.sync()
    store = EventStore(api.pool, api.settings)
    assert await close_lapsed_check_ins(store, api.pool, utcnow()) == 0
    assert await close_lapsed_check_ins(store, api.pool, utcnow() + timedelta(hours=25)) == 2
    types = [e.type for e in await store.load(f"activity-{aid}")]
    assert types.count("CheckInLapsed") == 2 and "HoursCredited" not in types
    await api.sync()
    async with api.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM volunteer_open_check_ins WHERE activity_id = $1", aid) == 0
        assert await conn.fetchval("SELECT lapsed FROM volunteer_activities WHERE activity_id = $1", aid) == 2
    assert await close_lapsed_check_ins(store, api.pool, utcnow() + timedelta(hours=26)) == 0
