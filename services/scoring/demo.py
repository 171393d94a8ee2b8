"""Drives the running scoring service: publishes today's and yesterday's results as the campaign
office and reads back the township ranking (the issues and activities come from the other
services' demos; scoring computes from their events)."""

from __future__ import annotations

from datetime import timedelta

import httpx

from shared.campaign_time import campaign_day, utcnow
from shared.settings import Settings


async def play(settings: Settings, tokens: dict[str, str]) -> str:
    today = campaign_day(utcnow())
    headers = {"Authorization": f"Bearer {tokens['campaign-office']}"}
    base = f"http://127.0.0.1:{settings.scoring_port}"
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        revisions = []
        for day in (today - timedelta(days=1), today):
            r = await client.post(
                "/v1/publications/daily",
                json={"day": day.isoformat()},
                headers={"Idempotency-Key": f"demo-publish-{day.isoformat()}"},
            )
            r.raise_for_status()
            revisions.append(r.json()["revision"])
        r = await client.get("/v1/scores", params={"day": today.isoformat(), "level": "township"})
        r.raise_for_status()
        scores = r.json()["scores"]
    top = scores[0] if scores else None
    bottom = scores[-1] if scores else None
    if top is None or bottom is None:
        return "scoring: no townships ranked"
    return (
        f"scoring: {today} ranking of {len(scores)} townships, best {top['name']} {top['score']},"
        f" last {bottom['name']} {bottom['score']}; published revisions {revisions}"
    )
