"""Scoring on the real broker and database: a scripted week of issues gives the ranking, laggards,
red/black lists and metrics worked out by hand below; the API narrows to the caller's area;
publishing a day twice is one revision, a late event makes the next."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import httpx
import orjson
import pytest

from services.scoring.api import build_app
from services.scoring.projections import ScoringProjection
from services.scoring.rules import load_rules
from shared.auth import issue_token, upsert_departments
from shared.events.envelope import DomainEvent
from shared.events.inspection import (
    ExtensionGranted,
    ExtensionRequested,
    IssueAssigned,
    IssueBacklogged,
    IssueFound,
    IssueOverdue,
    IssueReopened,
    RectificationClosed,
    RectificationRejected,
    RectificationReported,
)
from shared.eventstore import EventMeta, EventStore, StreamAppend
from shared.grid import cached_grid
from shared.outbox import OutboxRelay, wait_until_drained
from shared.projection import ProjectionRunner
from tests.support.kafka import read_all

pytestmark = pytest.mark.integration

RULES = load_rules()
SH = timedelta(hours=8)  # Asia/Shanghai is UTC+8 all year


def sh(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """A time in March 2026, Asia/Shanghai wall clock, as an aware UTC datetime."""
    return datetime(2026, 3, day, hour, minute, second, tzinfo=UTC) - SH


def found(iid: UUID, grid: str, category: str, severity: str, at: datetime) -> IssueFound:
    return IssueFound(
        issue_id=iid,
        grid_path=grid,
        method="unannounced",
        category=category,
        case_type="event",
        severity=severity,  # type: ignore[arg-type]
        description="督查发现问题",
        found_at=at,
        standards_version=1,
        deadline_hours=24,
    )


Script = list[tuple[DomainEvent, datetime]]


async def append_issue(store: EventStore, iid: UUID, grid: str, events: Script, version: int = 0) -> None:
    metas = [
        (p, EventMeta(source="inspection-team-1", actor="张三", grid_path=grid, occurred_at=at)) for p, at in events
    ]
    await store.append_many([StreamAppend(f"issue-{iid}", version, metas)])


async def relay(settings, pool) -> None:
    r = OutboxRelay(settings)
    task = asyncio.create_task(r.run())
    async with pool.acquire() as conn:
        await wait_until_drained(conn, 60)
    r.stop()
    await task


async def catch_up(settings, pool) -> None:
    grid = cached_grid(settings.district_file)
    await ProjectionRunner(settings, pool, ScoringProjection(RULES, grid)).catch_up()


ISSUE = {n: uuid4() for n in range(1, 8)}
WUAN, YANXI, CHENXIANG, LINDUN, FANGYANG = (
    f"changtai/{t}" for t in ["wuan", "yanxi", "chenxiang", "lindun", "fangyang"]
)
UM, HOUSING, MR = "urban-management", "housing", "market-regulation"


def week_script() -> list[tuple[UUID, str, Script]]:
    """ISO week 2026-W10: Monday 2 March to Sunday 8 March (Asia/Shanghai days)."""
    g1, g2, g4 = f"{WUAN}/c01/g03", f"{YANXI}/c02/g01", f"{CHENXIANG}/c01/g02"
    i1, i2, i3, i4, i6, i7 = ISSUE[1], ISSUE[2], ISSUE[3], ISSUE[4], ISSUE[6], ISSUE[7]
    return [
        (  # wuan, sanitation/major (-2): assigned to urban management, closed on time on Tuesday (+1)
            i1,
            g1,
            [
                (found(i1, g1, "sanitation", "major", sh(2, 10)), sh(2, 10)),
                (IssueAssigned(issue_id=i1, responsible_unit=UM, owner="王五", deadline=sh(3, 12)), sh(2, 11)),
                (
                    RectificationReported(issue_id=i1, responsible_unit=UM, text="已清运", reported_at=sh(3, 9)),
                    sh(3, 9),
                ),
                (RectificationClosed(issue_id=i1, responsible_unit=UM, deadline=sh(3, 12), on_time=True), sh(3, 10)),
            ],
        ),
        (  # yanxi, construction-site/serious (-8): housing; overdue twice (-2, -3), backlogged (-2)
            i2,
            g2,
            [
                (found(i2, g2, "construction-site", "serious", sh(2, 14)), sh(2, 14)),
                (IssueAssigned(issue_id=i2, responsible_unit=HOUSING, owner="赵六", deadline=sh(3, 14)), sh(2, 15)),
                (
                    IssueOverdue(
                        issue_id=i2,
                        responsible_unit=HOUSING,
                        deadline=sh(3, 14),
                        step=1,
                        escalation_level="community",
                        escalated_to=f"{YANXI}/c02",
                    ),
                    sh(4, 9),
                ),
                (
                    IssueOverdue(
                        issue_id=i2,
                        responsible_unit=HOUSING,
                        deadline=sh(3, 14),
                        step=2,
                        escalation_level="township",
                        escalated_to=YANXI,
                    ),
                    sh(5, 9),
                ),
                (IssueBacklogged(issue_id=i2, responsible_unit=HOUSING, reason="需立项整治"), sh(6, 9)),
            ],
        ),
        (  # wuan, street-stall/minor (-1) on Tuesday: rework on Wednesday (-1), closed late, reopened Saturday (-3)
            i3,
            g1,
            [
                (found(i3, g1, "street-stall", "minor", sh(3, 8)), sh(3, 8)),
                (IssueAssigned(issue_id=i3, responsible_unit=UM, owner="王五", deadline=sh(3, 18)), sh(3, 9)),
                (
                    RectificationReported(issue_id=i3, responsible_unit=UM, text="已劝离", reported_at=sh(4, 8)),
                    sh(4, 8),
                ),
                (RectificationRejected(issue_id=i3, responsible_unit=UM, reason="摊点仍在"), sh(4, 10)),
                (RectificationClosed(issue_id=i3, responsible_unit=UM, deadline=sh(3, 18), on_time=False), sh(5, 10)),
                (IssueReopened(issue_id=i3, reason="摊点复现"), sh(7, 10)),
            ],
        ),
        (  # chenxiang, food-safety/major (-5) on Wednesday: market regulation, extension, closed on time Friday (+2.5)
            i4,
            g4,
            [
                (found(i4, g4, "food-safety", "major", sh(4, 10)), sh(4, 10)),
                (IssueAssigned(issue_id=i4, responsible_unit=MR, owner="钱七", deadline=sh(5, 10)), sh(4, 11)),
                (ExtensionRequested(issue_id=i4, requested_deadline=sh(6, 18), reason="需检测"), sh(4, 12)),
                (ExtensionGranted(issue_id=i4, previous_deadline=sh(5, 10), new_deadline=sh(6, 18)), sh(4, 13)),
                (
                    RectificationReported(issue_id=i4, responsible_unit=MR, text="已整改", reported_at=sh(6, 9)),
                    sh(6, 9),
                ),
                (RectificationClosed(issue_id=i4, responsible_unit=MR, deadline=sh(6, 18), on_time=True), sh(6, 10)),
            ],
        ),
        # fangyang, sanitation/minor (-1) one second before and exactly at midnight between Monday and Tuesday
        (
            i6,
            f"{FANGYANG}/c01/g01",
            [(found(i6, f"{FANGYANG}/c01/g01", "sanitation", "minor", sh(2, 23, 59, 59)), sh(2, 23, 59, 59))],
        ),
        (i7, f"{FANGYANG}/c01/g01", [(found(i7, f"{FANGYANG}/c01/g01", "sanitation", "minor", sh(3, 0)), sh(3, 0))]),
    ]


@pytest.fixture(scope="module")
async def week(settings):
    """The scripted week appended, relayed and scored; then an HTTP client with tokens."""
    from shared.db import create_pool

    pool = await create_pool(settings, min_size=1, max_size=5)
    store = EventStore(pool, settings)
    for iid, grid, script in week_script():
        await append_issue(store, iid, grid, script)
    await relay(settings, pool)
    await catch_up(settings, pool)
    grid = cached_grid(settings.district_file)
    async with pool.acquire() as conn:
        await upsert_departments(conn, grid.departments)
        tokens = {c: await issue_token(conn, c) for c in ["campaign-office", "wuan-office", "urban-management"]}
    app = build_app(settings, worker=False)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client, tokens, pool, store
    await pool.close()


def auth(tokens, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[who]}"}


async def scores(client, tokens, day: str, level: str, who: str = "campaign-office") -> dict[str, tuple[float, int]]:
    r = await client.get("/v1/scores", params={"day": day, "level": level}, headers=auth(tokens, who))
    assert r.status_code == 200, r.text
    return {s["subject"]: (s["score"], s["rank"]) for s in r.json()["scores"]}


async def test_daily_township_ranking_of_the_scripted_week(week):
    client, tokens, *_ = week
    mon = await scores(client, tokens, "2026-03-02", "township")
    assert len(mon) == 9  # every township of the district is ranked, untouched ones at 100
    assert mon[WUAN] == (100 - 2, 8)  # i1 found
    assert mon[YANXI] == (100 - 8, 9)  # i2 found
    assert mon[FANGYANG] == (100 - 1, 7)  # i6 found at 23:59:59
    assert mon["changtai/banli"] == (100, 1)
    tue = await scores(client, tokens, "2026-03-03", "township")
    assert tue[WUAN][0] == 100 + 1 - 1  # i1 closed on time gives back half of 2; i3 found costs 1
    assert tue[FANGYANG][0] == 100 - 1  # i7 found at 00:00:00 belongs to Tuesday
    wed = await scores(client, tokens, "2026-03-04", "township")
    assert (wed[WUAN][0], wed[YANXI][0], wed[CHENXIANG][0]) == (100 - 1, 100 - 2, 100 - 5)
    fri = await scores(client, tokens, "2026-03-06", "township")
    assert fri[CHENXIANG] == (100 + 2.5, 1) and fri[YANXI][0] == 100 - 2


async def test_daily_unit_ranking_and_the_explanation_of_a_score(week):
    client, tokens, *_ = week
    wed = await scores(client, tokens, "2026-03-04", "unit")
    assert wed == {UM: (100 - 1, 1), HOUSING: (100 - 2, 2), MR: (100 - 5, 3)}
    r = await client.get(
        "/v1/scores/explanation",
        params={"day": "2026-03-02", "level": "unit", "subject": HOUSING},
        headers=auth(tokens, "campaign-office"),
    )
    body = r.json()
    assert [(i["rule"], i["points"], i["issue_id"]) for i in body["items"]] == [("issue_assigned", -8.0, str(ISSUE[2]))]
    assert body["score"] == body["base"] + sum(i["points"] for i in body["items"]) == 92


async def test_weekly_summary_laggards_and_red_black_lists(week):
    client, tokens, *_ = week
    r = await client.get(
        "/v1/weekly", params={"week": "2026-W10", "level": "township"}, headers=auth(tokens, "campaign-office")
    )
    body = r.json()
    lines = {x["subject"]: x for x in body["lines"]}
    # seven daily scores each, a day without items counts 100
    wuan = (98 + 100 + 99 + 100 + 100 + 97 + 100) / 7
    yanxi = (92 + 100 + 98 + 97 + 98 + 100 + 100) / 7
    chenxiang = (100 + 100 + 95 + 100 + 102.5 + 100 + 100) / 7
    assert lines[WUAN]["average"] == round(wuan, 2) and lines[WUAN]["trend"] == round(wuan - 100, 2)
    assert lines[YANXI]["average"] == round(yanxi, 2) and lines[YANXI]["worst_day"] == "2026-03-02"
    assert (
        lines[CHENXIANG]["average"] == round(chenxiang, 2)
        and lines[CHENXIANG]["best_day"] == "2026-03-06"
        and lines[CHENXIANG]["best_score"] == 102.5
    )
    assert body["worst"]["subject"] == YANXI
    # bottom three that lost points, with the issues that cost them most
    assert [(x["subject"], x["issues"]) for x in body["laggards"]] == [
        (YANXI, [str(ISSUE[2])]),
        (WUAN, [str(ISSUE[3]), str(ISSUE[1])]),  # i3 cost 1 + 1 + 3, i1 cost 2
        (CHENXIANG, [str(ISSUE[4])]),  # 99.64 is below fangyang's (99 + 99 + 5 * 100) / 7 = 99.71
    ]
    rb = await client.get(
        "/v1/red-black", params={"day": "2026-03-02", "level": "township"}, headers=auth(tokens, "campaign-office")
    )
    assert [x["subject"] for x in rb.json()["black"]] == [YANXI]  # 92 < 95
    assert [x["subject"] for x in rb.json()["red"]] == ["changtai/banli", CHENXIANG, "changtai/gunong"]
    rbw = await client.get(
        "/v1/red-black", params={"week": "2026-W10", "level": "unit"}, headers=auth(tokens, "campaign-office")
    )
    assert rbw.json()["black"] == [] and rbw.json()["red"] == []  # every unit lost points, none averaged below 95


async def test_long_term_metrics_for_a_township_and_the_district(week, settings):
    client, tokens, *_ = week
    grid = cached_grid(settings.district_file)
    params = {"node": WUAN, "from": "2026-03-02", "to": "2026-03-08"}
    m = (await client.get("/v1/metrics", params=params, headers=auth(tokens, "wuan-office"))).json()
    # wuan: i1 (closed on time after 24 h) and i3 (rework, closed late, reopened within 30 days)
    assert m["issues"] == 2 and m["issues_per_1000"] == round(2 * 1000 / grid.nodes[WUAN].population, 4)
    assert (m["closed"], m["closure_rate"], m["on_time_closure_rate"]) == (1, 0.5, 1.0)
    assert (m["rework_rate"], m["recurrence_rate_30d"], m["median_hours_to_close"]) == (0.5, 0.5, 24.0)
    d = (
        await client.get("/v1/metrics", params={**params, "node": "changtai"}, headers=auth(tokens, "campaign-office"))
    ).json()
    assert (d["issues"], d["closed"], d["backlog"], d["overdue"]) == (6, 2, 1, 1)
    assert d["extension_rate"] == round(1 / 6, 4) and d["rework_rate"] == round(1 / 3, 4)
    assert (d["median_hours_to_close"], d["p90_hours_to_close"]) == ((24 + 48) / 2, 24 + 0.9 * 24)
    # a township office sees only its own area
    other = await client.get("/v1/metrics", params={**params, "node": YANXI}, headers=auth(tokens, "wuan-office"))
    assert other.status_code == 403
    mine = await scores(client, tokens, "2026-03-02", "township", who="wuan-office")
    assert list(mine) == [WUAN]
    # units' scores go to district-wide departments; a township office is not a unit that day
    assert await scores(client, tokens, "2026-03-02", "unit", who="wuan-office") == {}
    assert list(await scores(client, tokens, "2026-03-02", "unit", who="urban-management")) == [UM, HOUSING]


async def test_publishing_a_day_and_a_late_event_makes_a_revision(week, settings):
    client, tokens, pool, store = week
    sunday = "2026-03-08"
    no = await client.post("/v1/publications/daily", json={"day": sunday}, headers=auth(tokens, "wuan-office"))
    assert no.status_code == 403
    hdr = {**auth(tokens, "campaign-office"), "Idempotency-Key": "pub-sun-1"}
    first = (await client.post("/v1/publications/daily", json={"day": sunday}, headers=hdr)).json()
    assert first["revision"] == 1 and first["published"] == ["DailyScoresPublished", "RedBlackListPublished"]
    hdr2 = {**auth(tokens, "campaign-office"), "Idempotency-Key": "pub-sun-2"}
    same = (await client.post("/v1/publications/daily", json={"day": sunday}, headers=hdr2)).json()
    assert same["revision"] == 1 and same["published"] == []
    # i5 found on Sunday 23:30 in lindun, reported days later: it corrects Sunday
    g5 = f"{LINDUN}/c01/g01"
    await append_issue(
        store, ISSUE[5], g5, [(found(ISSUE[5], g5, "illegal-advertising", "serious", sh(8, 23, 30)), sh(8, 23, 30))]
    )
    await relay(settings, pool)
    await catch_up(settings, pool)
    sun = await scores(client, tokens, sunday, "township")
    assert sun[LINDUN] == (100 - 5, 9)
    hdr3 = {**auth(tokens, "campaign-office"), "Idempotency-Key": "pub-sun-3"}
    again = (await client.post("/v1/publications/daily", json={"day": sunday}, headers=hdr3)).json()
    assert again["revision"] == 2
    await relay(settings, pool)
    published = [orjson.loads(r.value) for r in await read_all(settings, settings.topic("scoring.results"))]
    daily = [p for p in published if p["type"] == "DailyScoresPublished" and p["payload"]["day"] == sunday]
    assert sorted(p["payload"]["revision"] for p in daily) == [1, 2]
    latest = max(daily, key=lambda p: p["payload"]["revision"])["payload"]
    assert {s["subject"]: s["score"] for s in latest["scores"] if s["level"] == "township"}[LINDUN] == 95
    blacks = [p for p in published if p["type"] == "RedBlackListPublished" and p["payload"]["revision"] == 2]
    assert [b["subject"] for b in blacks[0]["payload"]["black"]] == []  # 95 is not below 95
