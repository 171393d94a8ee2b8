"""The operator dashboard in a real browser (Debian's headless Chromium driven by Playwright):
log in, see an IssueFound and an overdue issue arrive live, reload mid-stream without a missed
or doubled update, switch to English and drill down. Screenshots go to test-artifacts/screenshots/."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from services.dashboard.app import build_app as build_dashboard
from services.inspection.app import build_app as build_inspection
from services.inspection.workers import DeadlineWatcher
from shared.auth import issue_token, upsert_departments
from shared.campaign_time import utcnow
from shared.eventstore import EventStore
from shared.grid import cached_grid
from shared.outbox import OutboxRelay
from shared.settings import ROOT, Settings
from tests.e2e.serving import serve

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = ROOT / "test-artifacts" / "screenshots"
LIVE_WITHIN_S = 2.0
WUAN_FOUND = '#counters-table tr[data-node="changtai/wuan"] td[data-field="found"]'
WUAN_OVERDUE = '#counters-table tr[data-node="changtai/wuan"] td[data-field="overdue"]'

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (/usr/bin/chromium)"),
]


def issue_body(grid_path: str) -> dict[str, Any]:
    return {
        "grid_path": grid_path,
        "method": "unannounced",
        "category": "sanitation",
        "severity": "minor",
        "description": "沿街垃圾未及时清运，垃圾桶满溢",
        "location": "文泉路12号东侧",
        "photos": [],
        "found_at": utcnow().isoformat(),
    }


@contextlib.asynccontextmanager
async def stack(settings: Settings) -> AsyncIterator[tuple[str, str]]:
    """The inspection service (API + problem-list projection), the outbox relay and the dashboard."""
    relay = OutboxRelay(settings, idle_poll_s=0.2)
    relay_task = asyncio.create_task(relay.run())
    try:
        async with (
            serve(build_inspection(settings, watcher_interval_s=3600)) as inspection,
            serve(build_dashboard(settings)) as dashboard,
        ):
            yield inspection, dashboard
    finally:
        relay.stop()
        await asyncio.wait_for(relay_task, 20)


async def shown(page: Any, selector: str) -> int:
    text = await page.locator(selector).inner_text()
    return int(text.replace(",", ""))


async def wait_shown(page: Any, selector: str, value: int, timeout_s: float) -> float:
    """Wait until the element shows `value`; returns the seconds it took."""
    t0 = time.monotonic()
    await page.wait_for_function(
        "([sel, v]) => { const e = document.querySelector(sel); return e && e.textContent.replace(/,/g, '') === v; }",
        arg=[selector, str(value)],
        timeout=timeout_s * 1000,
        polling=50,
    )
    return time.monotonic() - t0


def check_journal(journal: list[Any]) -> tuple[int, int]:
    """The page's journal of applied ids must run without gaps or repeats across the reload;
    returns (updates before the reload, updates after)."""
    prev: int | None = None
    before = after = 0
    reloaded = False
    for entry in journal:
        if isinstance(entry, str) and entry.startswith("snapshot:"):
            assert not reloaded, f"a snapshot after the reload means the stream did not resume: {entry}"
            prev = int(entry.split(":")[1].rsplit(".", 1)[1])
        elif isinstance(entry, str) and entry.startswith("reload:"):
            assert prev is not None and int(entry.rsplit(".", 1)[1]) == prev, "saved id is the last applied"
            reloaded = True
        else:
            assert prev is not None and entry == prev + 1, f"update {entry} after {prev}: missed or doubled"
            prev = entry
            after, before = (after + 1, before) if reloaded else (after, before + 1)
    assert reloaded, "the journal has no reload"
    return before, after


async def test_dashboard_live_in_chromium(settings: Settings, pool: asyncpg.Pool) -> None:
    from playwright.async_api import async_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    async with pool.acquire() as conn:
        await upsert_departments(conn, cached_grid(settings.district_file).departments)
        viewer = await issue_token(conn, "campaign-office", "e2e-dashboard")
        office = await issue_token(conn, "wuan-office", "e2e-dashboard")
    watcher = DeadlineWatcher(pool, EventStore(pool, settings))

    async with (
        stack(settings) as (inspection, dashboard),
        httpx.AsyncClient(base_url=inspection, headers={"Authorization": f"Bearer {office}"}, timeout=10) as api,
        async_playwright() as pw,
    ):
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1600, "height": 1000}, locale="zh-CN")
            # Log in with the department token.
            await page.goto(dashboard)
            await page.fill("#token", viewer)
            await page.click("#login-form button[type=submit]")
            await page.wait_for_selector('#stream[data-state="live"]', timeout=10_000)
            await page.wait_for_selector(WUAN_FOUND)
            assert await page.locator("h1").inner_text() == "文明创城运行看板"
            found0 = await shown(page, WUAN_FOUND)
            overdue0 = await shown(page, WUAN_OVERDUE)
            await page.screenshot(path=str(SHOTS / "01-logged-in.png"), full_page=True)

            # An IssueFound through the inspection API: the township's counter moves, no reload.
            r = await api.post("/v1/issues", json=issue_body("changtai/wuan/c01/g01"))
            assert r.status_code == 201, r.text
            issue_id = r.json()["id"]
            took = await wait_shown(page, WUAN_FOUND, found0 + 1, LIVE_WITHIN_S)
            assert took <= LIVE_WITHIN_S
            await page.screenshot(path=str(SHOTS / "02-issue-found.png"), full_page=True)

            # Assigned with a deadline two seconds ahead; once past it, the watcher marks it overdue.
            deadline = utcnow() + timedelta(seconds=2)
            r = await api.post(
                f"/v1/issues/{issue_id}/assign",
                json={"responsible_unit": "urban-management", "owner": "王五", "deadline": deadline.isoformat()},
            )
            assert r.status_code == 200, r.text
            await asyncio.sleep(max(0.0, (deadline - utcnow()).total_seconds()) + 0.1)
            t_wait = time.monotonic()
            while await watcher.tick() == 0:  # the projection may still be applying the assignment
                assert time.monotonic() - t_wait < 10, "the issue never became overdue"
                await asyncio.sleep(0.1)
            t0 = time.monotonic()
            row = page.locator(f'#overdue-table tr[data-issue="{issue_id}"]')
            await row.wait_for(state="visible", timeout=LIVE_WITHIN_S * 1000)
            await wait_shown(page, WUAN_OVERDUE, overdue0 + 1, LIVE_WITHIN_S)
            assert time.monotonic() - t0 <= LIVE_WITHIN_S
            assert "王五" in await row.inner_text()
            await page.screenshot(path=str(SHOTS / "03-overdue.png"), full_page=True)

            # Reload while issues keep arriving: the page resumes after its last id.
            stats0 = await page.evaluate("wmDashboard.stats")
            burst = 16

            async def report_burst() -> None:
                for _ in range(burst):
                    got = await api.post("/v1/issues", json=issue_body("changtai/wuan/c02/g03"))
                    assert got.status_code == 201, got.text
                    await asyncio.sleep(0.2)

            sender = asyncio.create_task(report_burst())
            await asyncio.sleep(1.2)
            await page.reload()
            await page.wait_for_selector('#stream[data-state="live"]', timeout=10_000)
            await sender
            await wait_shown(page, WUAN_FOUND, found0 + 1 + burst, 5.0)
            await asyncio.sleep(0.5)  # anything doubled would arrive now
            stats = await page.evaluate("wmDashboard.stats")
            assert stats["gaps"] == 0 and stats["dups"] == 0, stats
            assert stats["resets"] == stats0["resets"] == 0, stats
            before, after = check_journal(await page.evaluate("wmDashboard.journal()"))
            assert before > 0 and after > 0, (before, after)
            assert await shown(page, WUAN_FOUND) == found0 + 1 + burst
            await page.screenshot(path=str(SHOTS / "04-after-reload.png"), full_page=True)

            # English labels, and the drill-down to the township's communities.
            await page.click("#lang")
            await page.wait_for_function("document.querySelector('h1').textContent.startsWith('Civilised')")
            await page.screenshot(path=str(SHOTS / "05-english.png"), full_page=True)
            await page.click('#counters-table tr[data-node="changtai/wuan"] td.name')
            await page.wait_for_selector('#counters-table tr[data-node="changtai/wuan/c02"]')
            assert (
                await shown(page, '#counters-table tr[data-node="changtai/wuan/c02"] td[data-field="found"]') >= burst
            )
            assert await page.locator('#crumbs .here[data-node="changtai/wuan"]').count() == 1
            await page.screenshot(path=str(SHOTS / "06-drill-down.png"), full_page=True)
        finally:
            await browser.close()
