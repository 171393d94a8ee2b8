"""The inspection service against real Kafka and PostgreSQL, through its HTTP API."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import httpx
import orjson
import pytest

from services.inspection.app import build_app
from services.inspection.projections import ProblemList
from services.inspection.workers import DeadlineWatcher
from shared.auth import issue_token, upsert_departments
from shared.campaign_time import campaign_day, utcnow
from shared.grid import cached_grid
from shared.kafka import make_producer
from shared.outbox import OutboxRelay
from shared.projection import rebuild
from tests.support.kafka import read_all

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def service(settings):
    app = build_app(settings, watcher_interval_s=3600)
    relay = OutboxRelay(settings)
    relay_task = asyncio.create_task(relay.run())
    async with app.router.lifespan_context(app):
        async with app.state.pool.acquire() as conn:
            await upsert_departments(conn, cached_grid(settings.district_file).departments)
            tokens = {
                d: await issue_token(conn, d)
                for d in (
                    "campaign-office",
                    "inspection-team-1",
                    "urban-management",
                    "housing",
                    "wuan-office",
                    "yanxi-office",
                )
            }
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            yield app, client, {d: {"Authorization": f"Bearer {t}"} for d, t in tokens.items()}
    relay.stop()
    await relay_task


def issue_body(**kw):
    body = {
        "grid_path": "changtai/wuan/c01/g03",
        "category": "sanitation",
        "severity": "minor",
        "description": "沿街垃圾未及时清运",
        "found_at": (utcnow() - timedelta(minutes=30)).isoformat(),
        "location": "文泉路12号",
        "photos": ["photo://a.jpg"],
    }
    body.update(kw)
    return body


async def wait_for(predicate, timeout=15.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def problem_item(client, auth, issue_id, day, **params):
    r = await client.get("/v1/problem-list", params={"date": day, **params}, headers=auth)
    assert r.status_code == 200, r.text
    return next((i for i in r.json()["items"] if i["issue_id"] == issue_id), None)


async def test_full_loop_shows_the_right_history_and_problem_list(service, settings):
    _app, client, auth = service
    r = await client.post("/v1/issues", json=issue_body(), headers=auth["inspection-team-1"])
    assert r.status_code == 201, r.text
    iid = r.json()["id"]
    deadline = (utcnow() + timedelta(hours=24)).isoformat()
    steps = [
        ("assign", "campaign-office", {"responsible_unit": "urban-management", "owner": "李四", "deadline": deadline}),
        ("rectification", "urban-management", {"text": "已清运", "photos": ["photo://fix1.jpg"]}),
        ("verify", "campaign-office", {"accept": False, "reason": "仍有残留"}),
        ("rectification", "urban-management", {"text": "已彻底清理", "photos": ["photo://fix2.jpg"]}),
        ("verify", "campaign-office", {"accept": True}),
    ]
    for path, who, body in steps:
        r = await client.post(f"/v1/issues/{iid}/{path}", json=body, headers=auth[who])
        assert r.status_code == 200, (path, r.text)
    r = await client.get(f"/v1/issues/{iid}", headers=auth["campaign-office"])
    doc = r.json()
    assert doc["status"] == "closed" and doc["rejections"] == 1
    assert [h["type"] for h in doc["history"]] == [
        "IssueFound",
        "IssueAssigned",
        "RectificationReported",
        "RectificationRejected",
        "RectificationReported",
        "RectificationClosed",
    ]
    assert doc["history"][-1]["payload"]["on_time"] is True
    day = campaign_day(datetime.fromisoformat(issue_body()["found_at"])).isoformat()

    async def closed_on_list():
        item = await problem_item(client, auth["wuan-office"], iid, day, township="wuan")
        return item if item and item["status"] == "closed" else None

    item = await wait_for(closed_on_list)
    assert item["responsible_unit"] == "urban-management" and item["owner"] == "李四" and item["rejections"] == 1
    by_unit = await problem_item(client, auth["campaign-office"], iid, day, unit="urban-management")
    assert by_unit is not None
    # An invalid transition: reporting on a closed issue is refused with the reason; nothing appended.
    r = await client.post(f"/v1/issues/{iid}/rectification", json={"text": "again"}, headers=auth["urban-management"])
    assert r.status_code == 409 and "closed" in r.json()["detail"]
    assert len((await client.get(f"/v1/issues/{iid}", headers=auth["campaign-office"])).json()["history"]) == 6


async def test_closing_an_unassigned_issue_is_409(service):
    _, client, auth = service
    iid = (await client.post("/v1/issues", json=issue_body(), headers=auth["inspection-team-1"])).json()["id"]
    r = await client.post(f"/v1/issues/{iid}/verify", json={"accept": True}, headers=auth["campaign-office"])
    assert r.status_code == 409 and "nothing to verify" in r.json()["detail"]


async def test_two_concurrent_verifications_give_one_200_and_one_409(service):
    _, client, auth = service
    iid = (await client.post("/v1/issues", json=issue_body(), headers=auth["inspection-team-1"])).json()["id"]
    deadline = (utcnow() + timedelta(hours=4)).isoformat()
    await client.post(
        f"/v1/issues/{iid}/assign",
        headers=auth["campaign-office"],
        json={"responsible_unit": "urban-management", "owner": "李四", "deadline": deadline},
    )
    await client.post(f"/v1/issues/{iid}/rectification", json={"text": "done"}, headers=auth["urban-management"])
    results = await asyncio.gather(
        *[
            client.post(f"/v1/issues/{iid}/verify", json={"accept": True}, headers=auth["campaign-office"])
            for _ in range(2)
        ]
    )
    assert sorted(r.status_code for r in results) == [200, 409]


async def test_a_retried_command_with_the_same_idempotency_key_creates_no_second_event(service):
    _, client, auth = service
    headers = {**auth["inspection-team-1"], "Idempotency-Key": str(uuid4())}
    first = await client.post("/v1/issues", json=issue_body(), headers=headers)
    again = await client.post("/v1/issues", json=issue_body(), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"] and again.json()["duplicate"] is True
    assert again.json()["event_ids"] == first.json()["event_ids"]
    iid = first.json()["id"]
    headers = {**auth["campaign-office"], "Idempotency-Key": "assign-" + iid}
    body = {"responsible_unit": "housing", "owner": "王五", "deadline": (utcnow() + timedelta(days=1)).isoformat()}
    a = await client.post(f"/v1/issues/{iid}/assign", json=body, headers=headers)
    b = await client.post(f"/v1/issues/{iid}/assign", json=body, headers=headers)
    assert a.status_code == b.status_code == 200 and a.json()["event_ids"] == b.json()["event_ids"]
    history = (await client.get(f"/v1/issues/{iid}", headers=auth["campaign-office"])).json()["history"]
    assert [h["type"] for h in history] == ["IssueFound", "IssueAssigned"]


async def test_a_township_office_cannot_touch_another_townships_issue(service):
    _, client, auth = service
    r = await client.post(
        "/v1/issues", json=issue_body(grid_path="changtai/yanxi/c02/g01"), headers=auth["yanxi-office"]
    )
    iid = r.json()["id"]
    body = {"responsible_unit": "housing", "owner": "王五", "deadline": (utcnow() + timedelta(days=1)).isoformat()}
    r = await client.post(f"/v1/issues/{iid}/assign", json=body, headers=auth["wuan-office"])
    assert r.status_code == 403 and "only in changtai/wuan" in r.json()["detail"]
    r = await client.post(
        "/v1/issues", json=issue_body(grid_path="changtai/yanxi/c02/g01"), headers=auth["wuan-office"]
    )
    assert r.status_code == 403
    r = await client.get(f"/v1/issues/{iid}", headers=auth["wuan-office"])
    assert r.status_code == 403


@pytest.mark.parametrize(
    "patch, field, words",
    [
        ({"category": "alien-invasion"}, "category", "unknown category"),
        ({"grid_path": "xiamen/siming"}, "grid_path", "not a grid node"),
        ({"grid_path": "Not A Path"}, "grid_path", "grid path must be"),
        ({"photos": [f"photo://{i}.jpg" for i in range(11)]}, "photos", "at most 10"),
        ({"severity": "apocalyptic"}, "severity", "Input should be"),
        ({"found_at": "2026-13-40T99:00:00"}, "found_at", "datetime"),
        ({"description": ""}, "description", "at least 1"),
    ],
)
async def test_bad_reports_get_422_with_field_messages(service, patch, field, words):
    _, client, auth = service
    r = await client.post("/v1/issues", json=issue_body(**patch), headers=auth["inspection-team-1"])
    assert r.status_code == 422
    errors = r.json()["detail"]
    assert any(e["loc"][-1] == field or field in e["loc"] for e in errors), errors
    assert any(words in e["msg"] for e in errors), errors


async def test_a_deadline_in_the_past_is_422(service):
    _, client, auth = service
    iid = (await client.post("/v1/issues", json=issue_body(), headers=auth["inspection-team-1"])).json()["id"]
    r = await client.post(
        f"/v1/issues/{iid}/assign",
        headers=auth["campaign-office"],
        json={"responsible_unit": "housing", "owner": "王五", "deadline": (utcnow() - timedelta(hours=1)).isoformat()},
    )
    assert r.status_code == 422 and "deadline is in the past" in r.text


async def test_batch_report_is_all_or_nothing(service):
    _, client, auth = service
    good = [issue_body() for _ in range(5)]
    r = await client.post("/v1/issues/batch", json={"issues": good}, headers=auth["inspection-team-1"])
    assert r.status_code == 201 and len(r.json()["ids"]) == 5
    bad = [issue_body(), issue_body(category="nope")]
    r = await client.post("/v1/issues/batch", json={"issues": bad}, headers=auth["inspection-team-1"])
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "issues", 1, "category"]


async def test_watcher_emits_one_overdue_per_step_across_a_restart(service, settings):
    app, client, auth = service
    iid = (await client.post("/v1/issues", json=issue_body(), headers=auth["inspection-team-1"])).json()["id"]
    deadline = utcnow() + timedelta(seconds=2)
    r = await client.post(
        f"/v1/issues/{iid}/assign",
        headers=auth["campaign-office"],
        json={"responsible_unit": "urban-management", "owner": "李四", "deadline": deadline.isoformat()},
    )
    assert r.status_code == 200
    day = campaign_day(datetime.fromisoformat(issue_body()["found_at"])).isoformat()

    async def assigned():
        item = await problem_item(client, auth["campaign-office"], iid, day)
        return item and item["status"] == "assigned"

    await wait_for(assigned)
    pool, store = app.state.pool, app.state.store

    async def overdue_steps() -> list[dict]:
        history = (await client.get(f"/v1/issues/{iid}", headers=auth["campaign-office"])).json()["history"]
        return [h["payload"] for h in history if h["type"] == "IssueOverdue"]

    first = DeadlineWatcher(pool, store)
    await first.tick(now=deadline - timedelta(seconds=1))
    assert await overdue_steps() == []  # not yet due
    await first.tick(now=deadline + timedelta(minutes=1))
    assert [o["step"] for o in await overdue_steps()] == [1]
    # A new watcher (the service restarted), twice, and two at once after being down for two days.
    second = DeadlineWatcher(pool, store)
    await second.tick(now=deadline + timedelta(minutes=2))
    await second.tick(now=deadline + timedelta(minutes=3))
    third = DeadlineWatcher(pool, store)
    await asyncio.gather(
        third.tick(now=deadline + timedelta(hours=49)),
        DeadlineWatcher(pool, store).tick(now=deadline + timedelta(hours=49)),
    )
    history = (await client.get(f"/v1/issues/{iid}", headers=auth["campaign-office"])).json()["history"]
    overdue = [h["payload"] for h in history if h["type"] == "IssueOverdue"]
    assert [o["step"] for o in overdue] == [1, 2, 3]
    assert [o["escalation_level"] for o in overdue] == ["community", "township", "district"]

    async def listed_overdue():
        r = await client.get("/v1/overdue", headers=auth["wuan-office"])
        return next((i for i in r.json()["items"] if i["issue_id"] == iid and i["overdue_step"] == 3), None)

    item = await wait_for(listed_overdue)
    assert item["escalated_to"] == "changtai" and item["overdue_s"] >= 0 and item["escalation_level"] == "district"


async def test_inbound_records_become_issues_and_garbage_is_dead_lettered(service, settings):
    _app, client, auth = service
    topic = settings.topic("inspection.inbound")
    good = issue_body(issue_id=str(uuid4()))
    producer = make_producer(settings)
    await producer.start()
    for key, value in [
        (b"inspection-team-1", orjson.dumps(good)),
        (b"inspection-team-1", orjson.dumps(good)),  # redelivered: still one issue
        (b"inspection-team-1", b"{not json"),
        (b"inspection-team-1", orjson.dumps(issue_body(issue_id=str(uuid4()), category="x-files"))),
        (b"yanxi-office", orjson.dumps(issue_body(issue_id=str(uuid4())))),
        (b"nobody", orjson.dumps(issue_body(issue_id=str(uuid4())))),
    ]:
        await producer.send_and_wait(topic, value, key=key)
    await producer.stop()

    async def issue_exists():
        r = await client.get(f"/v1/issues/{good['issue_id']}", headers=auth["campaign-office"])
        return r.status_code == 200 and r.json()

    doc = await wait_for(issue_exists)
    assert len(doc["history"]) == 1 and doc["history"][0]["source"] == "inspection-team-1"

    async def dead():
        recs = [dict(r.headers) for r in await read_all(settings, settings.topic("deadletter"))]
        got = [h["wm_dlq_reason"].decode() for h in recs if h.get("wm_dlq_consumer") == b"inspection.inbound"]
        return got if len(got) >= 4 else None

    reasons = await wait_for(dead)
    assert any("not valid JSON" in r for r in reasons)
    assert any("unknown category 'x-files'" in r for r in reasons)
    assert any("may act only in changtai/yanxi" in r for r in reasons)
    assert any("'nobody' unknown" in r for r in reasons)


async def test_issue_events_are_on_the_documented_topic_keyed_by_issue_and_rebuild_equals_live(service, settings):
    app, client, auth = service
    iid = (await client.post("/v1/issues", json=issue_body(), headers=auth["inspection-team-1"])).json()["id"]

    async def on_topic():
        recs = await read_all(settings, settings.topic("inspection.issue"))
        return [r for r in recs if r.key == f"issue-{iid}".encode()]

    [rec] = await wait_for(on_topic)
    assert dict(rec.headers)["ce_type"] == b"IssueFound"
    day = campaign_day(datetime.fromisoformat(issue_body()["found_at"])).isoformat()
    await wait_for(lambda: problem_item(client, auth["campaign-office"], iid, day))
    cols = "issue_id, status, responsible_unit, owner, deadline, overdue_step, rejections, closed_at, on_time, version"
    # Only rows that came from events: other test modules write rows of their own into this table.
    from_events = "(SELECT (payload->>'issue_id')::uuid FROM events WHERE type = 'IssueFound')"
    async with app.state.pool.acquire() as conn:
        live = await conn.fetch(
            f"SELECT {cols} FROM inspection_issues WHERE issue_id IN {from_events} ORDER BY issue_id"
        )
    await app.state.workers.stop_one("problem-list")
    await rebuild(settings, app.state.pool, ProblemList(), progress=False)
    async with app.state.pool.acquire() as conn:
        rebuilt = await conn.fetch(
            f"SELECT {cols} FROM inspection_issues WHERE issue_id IN {from_events} ORDER BY issue_id"
        )
    assert [dict(r) for r in rebuilt] == [dict(r) for r in live]


def test_found_day_is_the_asia_shanghai_day():
    assert campaign_day(datetime(2026, 11, 24, 16, 30, tzinfo=UTC)).isoformat() == "2026-11-25"
