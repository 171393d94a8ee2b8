"""Plays a realistic campaign day against the running services, over their HTTP APIs.

About 300 issues across the demo district's townships (more in the town centres), found by
unannounced inspections through the day; most are assigned, rectified and closed in time, some
are rejected once, a few returned and re-routed or backlogged, and some get short deadlines so
that the deadline watcher marks them overdue while the demo runs.
"""

from __future__ import annotations

import asyncio
import importlib
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from shared.campaign_time import utcnow
from shared.grid import cached_grid
from shared.settings import Settings

UNIT_FOR = {
    "sanitation": "urban-management",
    "illegal-parking": "transport",
    "street-vending": "urban-management",
    "damaged-facility": "housing",
    "public-service-posters": "urban-management",
    "stairwell-clutter": "{township}-office",
    "shopfront-pledge-breach": "market-regulation",
    "uncivil-behaviour": "{township}-office",
    "illegal-advertising": "urban-management",
}
CATEGORY_WEIGHTS = {
    "sanitation": 30,
    "illegal-parking": 18,
    "street-vending": 12,
    "damaged-facility": 8,
    "public-service-posters": 5,
    "stairwell-clutter": 9,
    "shopfront-pledge-breach": 8,
    "uncivil-behaviour": 6,
    "illegal-advertising": 4,
}
TOWNSHIP_WEIGHT = {
    "wuan": 5,
    "lindun": 4,
    "xingtai": 3,
    "chenxiang": 2,
    "yanxi": 2,
    "fangyang": 1,
    "banli": 1,
    "mayangxi": 1,
    "gunong": 1,
}
DESCRIPTIONS = {
    "sanitation": "沿街垃圾未及时清运",
    "illegal-parking": "机动车占用人行道停放",
    "street-vending": "流动摊点占道经营",
    "damaged-facility": "井盖破损存在安全隐患",
    "public-service-posters": "公益广告破损未更换",
    "stairwell-clutter": "楼道堆放杂物",
    "shopfront-pledge-breach": "店外超门窗经营，责任牌缺失",
    "uncivil-behaviour": "不文明养犬未牵绳",
    "illegal-advertising": "电线杆小广告",
}
OWNERS = ["李明", "王芳", "陈志强", "林晓燕", "黄建国", "郑丽华", "吴海涛", "蔡文斌"]


def load_tokens(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().split() if "=" in line)


async def wait_healthy(client: httpx.AsyncClient, url: str, timeout: float = 60) -> None:
    for _ in range(int(timeout * 5)):
        try:
            if (await client.get(url + "/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not become healthy")


async def play_inspection_day(
    settings: Settings, tokens: dict[str, str], n_issues: int = 300, seed: int = 2022
) -> dict[str, int]:
    rng = random.Random(seed)
    grid = cached_grid(settings.district_file)
    base = f"http://{settings.http_host}:{settings.inspection_port}"
    auth = {d: {"Authorization": f"Bearer {t}"} for d, t in tokens.items()}
    now = utcnow()
    counts = {"found": 0, "closed": 0, "rejected_once": 0, "returned": 0, "backlogged": 0, "overdue_soon": 0, "open": 0}
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        await wait_healthy(client, base)
        townships = [t.split("/")[1] for t in grid.townships()]
        per_township = {t: 0 for t in townships}
        for _ in range(n_issues):
            per_township[rng.choices(townships, [TOWNSHIP_WEIGHT.get(t, 1) for t in townships])[0]] += 1
        issues: list[tuple[str, str, str]] = []
        for township, n in per_township.items():
            team = rng.choice(["inspection-team-1", "inspection-team-2"])
            started = now - timedelta(hours=rng.uniform(3, 9))
            r = await client.post(
                "/v1/inspections",
                headers=auth[team],
                json={
                    "method": "unannounced",
                    "area": f"changtai/{township}",
                    "started_at": started.isoformat(),
                    "finished_at": (started + timedelta(hours=2)).isoformat(),
                    "inspectors": rng.sample(OWNERS, 2),
                },
            )
            r.raise_for_status()
            inspection_id = r.json()["id"]
            batch = []
            for _ in range(n):
                community = rng.choice(grid.node(f"changtai/{township}").children)
                cell = rng.choice(grid.node(community).children)
                category = rng.choices(list(CATEGORY_WEIGHTS), list(CATEGORY_WEIGHTS.values()))[0]
                batch.append(
                    {
                        "grid_path": cell,
                        "category": category,
                        "severity": rng.choices(["minor", "major", "serious"], [70, 25, 5])[0],
                        "description": DESCRIPTIONS[category],
                        "method": "unannounced",
                        "found_at": (started + timedelta(minutes=rng.uniform(0, 120))).isoformat(),
                        "location": f"{grid.node(community).name}{rng.randint(1, 80)}号附近",
                        "photos": [f"photo://{township}/{rng.getrandbits(32):08x}.jpg"],
                        "inspection_id": inspection_id,
                    }
                )
            if batch:
                r = await client.post("/v1/issues/batch", json={"issues": batch}, headers=auth[team])
                r.raise_for_status()
                for iid, item in zip(r.json()["ids"], batch, strict=True):
                    unit = UNIT_FOR[item["category"]].format(township=township)
                    issues.append((iid, unit, township))
        counts["found"] = len(issues)
        sem = asyncio.Semaphore(8)

        async def lifecycle(iid: str, unit: str, township: str) -> None:
            fate = rng.random()
            async with sem:
                if fate < 0.08:
                    counts["open"] += 1
                    return  # found late in the day, not yet assigned
                office = auth["campaign-office"]
                short = fate > 0.93
                deadline = now + (timedelta(seconds=rng.uniform(20, 120)) if short else timedelta(hours=24))
                body = {"responsible_unit": unit, "owner": rng.choice(OWNERS), "deadline": deadline.isoformat()}
                (await client.post(f"/v1/issues/{iid}/assign", json=body, headers=office)).raise_for_status()
                if short:
                    counts["overdue_soon"] += 1
                    return
                if fate < 0.12:
                    await client.post(f"/v1/issues/{iid}/return", json={"reason": "不属本单位职责"}, headers=auth[unit])
                    body["responsible_unit"] = "urban-management" if unit != "urban-management" else "housing"
                    await client.post(f"/v1/issues/{iid}/reroute", json=body, headers=office)
                    unit = body["responsible_unit"]
                    counts["returned"] += 1
                if fate > 0.90:
                    await client.post(
                        f"/v1/issues/{iid}/backlog", json={"reason": "需纳入年度改造计划"}, headers=office
                    )
                    counts["backlogged"] += 1
                    return
                if fate > 0.75:
                    counts["open"] += 1
                    return  # in progress, deadline tomorrow
                await client.post(
                    f"/v1/issues/{iid}/rectification",
                    headers=auth[unit],
                    json={"text": "已按标准整改", "photos": [f"photo://fix/{iid[:8]}.jpg"]},
                )
                if fate > 0.62:
                    await client.post(
                        f"/v1/issues/{iid}/verify", json={"accept": False, "reason": "整改不彻底"}, headers=office
                    )
                    await client.post(
                        f"/v1/issues/{iid}/rectification", json={"text": "已二次整改"}, headers=auth[unit]
                    )
                    counts["rejected_once"] += 1
                r = await client.post(f"/v1/issues/{iid}/verify", json={"accept": True}, headers=office)
                if r.status_code == 200:
                    counts["closed"] += 1

        await asyncio.gather(*(lifecycle(*i) for i in issues))
    return counts


async def play_campaign(settings: Settings, tokens_file: Path) -> None:
    tokens = load_tokens(tokens_file)
    counts = await play_inspection_day(settings, tokens)
    print("inspection day played: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for svc in ("volunteer", "notify", "scoring"):
        try:
            mod: Any = importlib.import_module(f"services.{svc}.demo")
        except ImportError:
            continue
        try:
            print(f"{svc}: {await mod.play(settings, tokens)}")
        except Exception as exc:  # one service's demo data must not stop the others
            print(f"{svc}: demo data failed: {exc}")
