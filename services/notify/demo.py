"""Demo data for notify: the demo district's leaders (district, townships, communities), each
responsible unit's contact desk and named owners, and the campaign office's overdue watch.

All recipients use the in-app inbox (the demo runs no SMTP server or webhook receiver); a few
leaders read English and keep quiet hours, so non-urgent messages wait for them overnight.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from shared.grid import GridLevel, cached_grid, level_of
from shared.settings import Settings

OWNERS = ["李明", "王芳", "陈志强", "林晓燕", "黄建国", "郑丽华", "吴海涛", "蔡文斌"]
"""The named owners the inspection demo assigns issues to (deploy/play.py)."""
DISTRICT_UNITS = ["urban-management", "housing", "transport", "market-regulation"]
ADMIN = "campaign-office"


def _slug(path: str) -> str:
    return path.replace("/", ".")


def recipients(settings: Settings) -> list[dict[str, Any]]:
    """Leaders of every grid node down to the communities, unit desks and owners per unit."""
    grid = cached_grid(settings.district_file)
    out: list[dict[str, Any]] = []
    quiet = {"start": "22:00", "end": "07:00", "tz": "Asia/Shanghai"}
    for i, (path, node) in enumerate(sorted(grid.nodes.items())):
        if level_of(path) > GridLevel.COMMUNITY:
            continue
        town = path.split("/")[1] if level_of(path) >= GridLevel.TOWNSHIP else None
        out.append(
            {
                "recipient_id": f"leader.{_slug(path)}",
                "name": f"{node.name}负责人",
                "grid_path": path,
                "role": "leader",
                "unit": f"{town}-office" if town else ADMIN,
                "channels": ["inbox"],
                "language": "en" if i % 10 == 3 else "zh",
                "quiet_hours": quiet if i % 4 == 1 else None,
            }
        )
    units = DISTRICT_UNITS + [f"{t.split('/')[1]}-office" for t in grid.townships()]
    for unit in units:
        area = grid.district if unit in DISTRICT_UNITS else f"{grid.district}/{unit.removesuffix('-office')}"
        out.append(
            {
                "recipient_id": f"desk.{unit}",
                "name": f"{unit}值班台",
                "grid_path": area,
                "role": "unit_contact",
                "unit": unit,
                "channels": ["inbox"],
                "digest_at": "17:30",  # a desk hears of every assignment: once a day, not a flood
            }
        )
        for k, name in enumerate(OWNERS):
            out.append(
                {
                    "recipient_id": f"owner.{unit}.{k}",
                    "name": name,
                    "grid_path": area,
                    "role": "owner",
                    "unit": unit,
                    "channels": ["inbox"],
                }
            )
    return out


async def play(settings: Settings, tokens: dict[str, str], client: httpx.AsyncClient | None = None) -> str:
    """Register the demo district's recipients and the office's overdue watch; returns a summary."""
    own = client is None
    http = client or httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.notify_port}", timeout=30)
    headers = {"Authorization": f"Bearer {tokens[ADMIN]}"}
    gate = asyncio.Semaphore(16)

    async def put(body: dict[str, Any]) -> None:
        async with gate:
            r = await http.put(
                f"/v1/recipients/{body['recipient_id']}",
                json=body,
                headers={**headers, "Idempotency-Key": f"demo-recipient-{body['recipient_id']}"},
            )
            r.raise_for_status()

    try:
        people = recipients(settings)
        await asyncio.gather(*(put(b) for b in people))
        grid = cached_grid(settings.district_file)
        watch = {"recipient_id": f"leader.{_slug(grid.district)}", "event_type": "IssueOverdue", "area": grid.district}
        r = await http.put("/v1/subscriptions", json=watch, headers={**headers, "Idempotency-Key": "demo-watch"})
        r.raise_for_status()
        leaders = sum(1 for p in people if p["role"] == "leader")
        owners = sum(1 for p in people if p["role"] == "owner")
        return f"notify: {len(people)} recipients ({leaders} leaders, {owners} unit owners), 1 overdue watch"
    finally:
        if own:
            await http.aclose()
