"""The volunteer demo plays a month through the API, and playing it twice writes nothing new."""

from __future__ import annotations

import httpx
import pytest

from services.volunteer.api import create_volunteer_app
from services.volunteer.demo import play
from shared.auth import issue_token, upsert_departments
from shared.grid import cached_grid

pytestmark = pytest.mark.integration


async def test_demo_month_plays_and_replays_idempotently(settings):
    app = create_volunteer_app(settings)
    async with app.router.lifespan_context(app):
        pool = app.state.pool
        departments = cached_grid(settings.district_file).departments
        async with pool.acquire() as conn:
            await upsert_departments(conn, departments)
            tokens = {d["code"]: await issue_token(conn, d["code"]) for d in departments}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            summary = await play(settings, tokens, client)
            async with pool.acquire() as conn:
                counts = dict(
                    (r["type"], r["n"])
                    for r in await conn.fetch("SELECT type, count(*) AS n FROM events GROUP BY type")
                )
            again = await play(settings, tokens, client)
            async with pool.acquire() as conn:
                after = dict(
                    (r["type"], r["n"])
                    for r in await conn.fetch("SELECT type, count(*) AS n FROM events GROUP BY type")
                )
    assert summary == again
    assert after == counts
    assert counts["ActivityHeld"] == counts["ActivityReviewed"] >= 30
    assert counts["PointsRedeemed"] == counts["FundDrawn"] > 0
    assert f"{counts['ActivityHeld']} activities held" in summary
    assert counts["ProjectShortlisted"] == 4 and counts["ProjectEntered"] == 9
