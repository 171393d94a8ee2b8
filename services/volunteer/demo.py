"""A realistic month of volunteer work in the demo district, played over the running service's API.

Practice sites (the district centre, institutes, stations), volunteers registered at them, a
month of activities (policy and model-deeds talks, sanitation drives, civilised-traffic
persuasion, care visits, local opera and clapper-talk performances) held, credited and reviewed,
village civility points in Fangyang with its incentive fund, honours, contest projects and
creation titles. Every command carries a deterministic Idempotency-Key, so playing twice
writes nothing new.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from services.volunteer.domain import id_check_char
from shared.campaign_time import CAMPAIGN_TZ, utcnow
from shared.settings import Settings

SITES: list[tuple[str, str, str, str, str]] = [
    # (site id, kind, name, grid path, department that runs it)
    ("changtai-centre", "centre", "长泰区新时代文明实践中心", "changtai", "civilisation-office"),
    ("fangyang-institute", "institute", "枋洋镇新时代文明实践所", "changtai/fangyang", "fangyang-institute"),
    ("wuan-institute", "institute", "武安镇新时代文明实践所", "changtai/wuan", "wuan-office"),
    ("wenquan-station", "station", "文泉社区新时代文明实践站", "changtai/wuan/c01", "wenquan-station"),
    ("xiyuan-station", "station", "溪园村新时代文明实践站", "changtai/wuan/c05", "wuan-office"),
    ("qingnian-station", "station", "青年村新时代文明实践站", "changtai/fangyang/c03", "fangyang-institute"),
    ("linxi-station", "station", "林溪村新时代文明实践站", "changtai/chenxiang/c12", "chenxiang-office"),
    ("yanxi-station", "station", "岩溪社区新时代文明实践站", "changtai/yanxi/c01", "yanxi-office"),
]

ACTIVITIES: list[tuple[str, str, str, int]] = [
    # (title, theme, form, hours)
    ("学习宣传贯彻党的二十大精神宣讲", "policy_talk", "talk", 2),
    ("“倾听模范故事 汲取榜样力量”主题宣讲", "model_deeds_talk", "talk", 2),
    ("环境卫生整治志愿服务", "sanitation", "drive", 3),
    ("背街小巷垃圾清理", "sanitation", "drive", 3),
    ("文明交通劝导", "civilised_traffic", "persuasion", 2),
    ("关爱空巢老人入户走访", "care_visit", "visit", 3),
    ("芗剧《好人郑阿真》演出", "model_deeds_talk", "opera", 2),
    ("创城快板“三句半”“三字经”宣讲", "policy_talk", "clapper_talk", 2),
    ("“我们的节日·重阳”敬老活动", "festival", "performance", 3),
    ("志愿者文明交通培训", "training", "training", 2),
]
STATION_FAVOURITES = {
    "linxi-station": ["创城快板“三句半”“三字经”宣讲"],  # 林溪村老汉宣讲队
    "wenquan-station": ["文明交通劝导", "背街小巷垃圾清理"],
    "qingnian-station": ["芗剧《好人郑阿真》演出", "关爱空巢老人入户走访"],
}

SURNAMES = "林陈黄杨郑王李吴张戴叶蔡周许"
GIVEN = ["秀英", "建国", "丽华", "志强", "美玲", "国荣", "雅婷", "文杰", "淑芬", "春生", "海燕", "明辉"]
SKILLS = ["宣讲", "芗剧", "快板", "急救", "摄影", "交通劝导", "心理疏导", "理发"]


class _Player:
    def __init__(self, client: httpx.AsyncClient, tokens: dict[str, str]):
        self.client = client
        self.tokens = tokens
        self.commands = 0

    async def post(self, who: str, path: str, body: dict[str, Any], key: str) -> dict[str, Any]:
        r = await self.client.post(
            path,
            json=body,
            headers={"Authorization": f"Bearer {self.tokens[who]}", "Idempotency-Key": f"demo-volunteer-{key}"},
        )
        if r.status_code != 200:
            raise RuntimeError(f"{path} by {who}: {r.status_code} {r.text}")
        self.commands += 1
        out: dict[str, Any] = r.json()
        return out


def _person(rng: random.Random) -> dict[str, str]:
    first17 = (
        f"350625{rng.randint(1955, 2004)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(0, 999):03d}"
    )
    return {
        "name": rng.choice(SURNAMES) + rng.choice(GIVEN),
        "phone": f"1{rng.choice('3578')}{rng.randint(0, 999_999_999):09d}",
        "id_number": first17 + id_check_char(first17),
    }


async def play(settings: Settings, tokens: dict[str, str], client: httpx.AsyncClient | None = None) -> str:
    """Play a month of volunteer activity and points; returns a one-line summary."""
    own = client is None
    http = client or httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.volunteer_port}", timeout=30)
    try:
        return await _play(_Player(http, tokens))
    finally:
        if own:
            await http.aclose()


async def _play(p: _Player) -> str:
    rng = random.Random(2022)
    today = utcnow().astimezone(CAMPAIGN_TZ).date()
    month_start = today - timedelta(days=30)

    for site_id, kind, name, grid, who in SITES:
        await p.post(who, "/v1/sites", {"site_id": site_id, "kind": kind, "name": name, "grid_path": grid}, site_id)

    volunteers: dict[str, list[str]] = {}
    for site_id, _kind, _name, _grid, who in SITES:
        n = 4 if site_id.endswith("centre") or "institute" in site_id else 7
        volunteers[site_id] = []
        for i in range(n):
            body: dict[str, Any] = {"site_id": site_id, **_person(rng), "skills": rng.sample(SKILLS, 2)}
            out = await p.post(who, "/v1/volunteers", body, f"vol-{site_id}-{i}")
            volunteers[site_id].append(out["id"])

    by_title = {a[0]: a for a in ACTIVITIES}
    held = hours_total = 0
    for site_id, _kind, _name, _grid, who in SITES:
        days = sorted(rng.sample(range(0, 29), 5 if "station" in site_id else 3))
        for n, offset in enumerate(days):
            fav = STATION_FAVOURITES.get(site_id, [])
            title, theme, form, hours = (
                by_title[rng.choice(fav)] if fav and rng.random() < 0.5 else rng.choice(ACTIVITIES)
            )
            day = month_start + timedelta(days=offset)
            start = datetime(day.year, day.month, day.day, rng.choice([8, 9, 14, 15]), 0, tzinfo=CAMPAIGN_TZ)
            end = start + timedelta(hours=hours)
            key = f"act-{site_id}-{n}"
            plan = {
                "site_id": site_id,
                "title": title,
                "theme": theme,
                "form": form,
                "starts_at": start.isoformat(),
                "ends_at": end.isoformat(),
            }
            aid = (await p.post(who, "/v1/activities", plan, key))["id"]
            team = volunteers[site_id]
            served = rng.sample(team, rng.randint(3, min(6, len(team))))
            parts: list[dict[str, Any]] = [
                {"volunteer_id": v, "hours": rng.choice([hours, hours, hours - 0.5])} for v in served
            ]
            record = {
                "started_at": start.astimezone(UTC).isoformat(),
                "ended_at": end.astimezone(UTC).isoformat(),
                "participants": parts,
                "audience": rng.randint(25, 260),
                "photos": [f"photo://volunteer/{site_id}/{day.isoformat()}/{i}.jpg" for i in range(rng.randint(1, 4))],
                "summary": f"{title}，{len(parts)}名志愿者参与",
            }
            await p.post(who, f"/v1/activities/{aid}/held", record, f"{key}-held")
            hours_total += sum(int(float(x["hours"]) * 4) for x in parts)
            late = [v for v in team if v not in served]
            if late and rng.random() < 0.3:  # a helper the record missed reports hours; the station approves
                await p.post(
                    who,
                    f"/v1/activities/{aid}/hours-reports",
                    {"volunteer_id": late[0], "hours": 1, "note": "负责现场签到与拍照"},
                    f"{key}-report",
                )
                await p.post(who, f"/v1/activities/{aid}/hours-reports/{late[0]}/approve", {}, f"{key}-approve")
                hours_total += 4
            await p.post(who, f"/v1/activities/{aid}/review", {"verdict": "accepted", "note": "资料齐全"}, f"{key}-rev")
            held += 1

    # Village civility points, piloted in Fangyang with its incentive fund.
    fund = "fangyang-fund"
    await p.post(
        "fangyang-institute",
        "/v1/funds",
        {"fund_id": fund, "name": "枋洋镇乡风文明积分激励专项基金", "grid_path": "changtai/fangyang"},
        fund,
    )
    await p.post(
        "fangyang-institute", f"/v1/funds/{fund}/contributions", {"yuan": 20000, "donor": "枋洋镇财政"}, "fund-1"
    )
    await p.post("fangyang-institute", f"/v1/funds/{fund}/contributions", {"yuan": 5000, "donor": "乡贤捐助"}, "fund-2")
    rules = [
        ("clean-courtyard", 10, "庭院整洁，评为“美丽庭院”"),
        ("sorted-waste", 5, "垃圾分类准确"),
        ("volunteer-service", 10, "参加志愿服务"),
        ("simple-wedding", 30, "婚事新办，不收彩礼"),
        ("filial-care", 20, "孝老爱亲"),
        ("village-compact", 5, "遵守村规民约"),
    ]
    awarded = redeemed = 0
    for h in range(24):
        village = f"c{rng.randint(2, 8):02d}"
        hid = f"fy-{village}-h{h + 1:03d}"
        grid = f"changtai/fangyang/{village}/g{rng.randint(1, 8):02d}"
        balance = 0
        for n in range(rng.randint(2, 5)):
            rule, max_points, reason = rng.choice(rules)
            points = rng.randint(max(1, max_points // 2), max_points)
            at = datetime.combine(month_start + timedelta(days=rng.randint(0, 28)), datetime.min.time(), CAMPAIGN_TZ)
            body = {
                "grid_path": grid,
                "label": f"{village}村{rng.randint(1, 9)}组{h + 1}号",
                "points": points,
                "rule": rule,
                "reason": reason,
                "at": (at + timedelta(hours=10)).isoformat(),
            }
            await p.post("fangyang-institute", f"/v1/households/{hid}/awards", body, f"{hid}-award-{n}")
            awarded += points
            balance += points
        if balance >= 20 and rng.random() < 0.5:
            spend = rng.randrange(10, balance, 5)
            item = rng.choice(["大米一袋", "食用油两瓶", "洗衣液套装", "电饭锅"])
            body = {"fund_id": fund, "points": spend, "item": item, "reason": "积分超市兑换"}
            await p.post("fangyang-institute", f"/v1/households/{hid}/redemptions", body, f"{hid}-redeem")
            redeemed += spend

    # Honours: the two selections (道德模范, 身边好人) and good youngsters.
    honours = [
        ("good_person", "杨伟林", "changtai/wuan", "provincial", "热心公益，多年照顾孤寡老人"),
        ("good_person", "梁木山", "changtai/yanxi", "provincial", "见义勇为，勇救落水儿童"),
        ("moral_model", "郑阿真", "changtai/fangyang", "municipal", "孝老爱亲，悉心照料瘫痪婆婆三十年"),
        ("good_youngster", "林雨萱", "changtai/wuan/c01", "municipal", "品学兼优，热心志愿服务"),
        ("good_youngster", "陈思远", "changtai/chenxiang", "municipal", "自强不息，带动同学学习"),
    ]
    for i, (kind, nominee, grid, level, deeds) in enumerate(honours):
        body = {
            "honour": kind,
            "nominee": nominee,
            "grid_path": grid,
            "year": today.year,
            "deeds": deeds,
        }
        nid = (await p.post("civilisation-office", "/v1/nominations", body, f"nom-{i}"))["id"]
        await p.post("civilisation-office", f"/v1/nominations/{nid}/endorsements", {"note": "评议通过"}, f"nom-{i}-e")
        await p.post("civilisation-office", f"/v1/nominations/{nid}/award", {"level": level}, f"nom-{i}-a")

    # Nine volunteer service projects entered in the provincial contest, four shortlisted.
    projects = [
        "“护苗”未成年人关爱行动",
        "文明交通劝导岗",
        "林溪老汉宣讲队",
        "芗韵传家风",
        "银龄互助",
        "清洁家园周末行",
        "乡风文明积分超市",
        "书香少年宫",
        "邻里守望",
    ]
    contest = "fujian-volunteer-projects"
    for i, name in enumerate(projects):
        body = {"name": name, "organiser": "长泰区志愿者协会", "grid_path": "changtai"}
        pid = (await p.post("civilisation-office", "/v1/projects", body, f"proj-{i}"))["id"]
        await p.post(
            "civilisation-office",
            f"/v1/projects/{pid}/entries",
            {"contest": contest, "year": today.year, "level": "provincial"},
            f"proj-{i}-in",
        )
        if i < 4:
            await p.post(
                "civilisation-office",
                f"/v1/projects/{pid}/shortlist",
                {"contest": contest, "year": today.year},
                f"proj-{i}-sl",
            )

    # Creation titles (五大创建).
    titles = [
        ("vt-wuan", "village_town", "武安镇", "changtai/wuan", "national"),
        ("vt-fangyang-c03", "village_town", "青年村", "changtai/fangyang/c03", "provincial"),
        ("com-wuan-c01", "community", "文泉社区", "changtai/wuan/c01", "provincial"),
        ("unit-market-regulation", "unit", "区市场监督管理局", "changtai", "provincial"),
        ("campus-changtai-no1", "campus", "长泰区第一中学", "changtai/wuan", "municipal"),
        ("family-lin-c05", "family", "林氏家庭", "changtai/wuan/c05", "district"),
    ]
    for tid, cat, holder, grid, level in titles:
        body = {
            "title_id": tid,
            "category": cat,
            "holder": holder,
            "grid_path": grid,
            "level": level,
            "year": today.year,
        }
        await p.post("civilisation-office", "/v1/titles", body, f"title-{tid}-{level}")

    n_vol = sum(len(v) for v in volunteers.values())
    return (
        f"volunteer: {len(SITES)} practice sites, {n_vol} volunteers, {held} activities held and reviewed "
        f"({hours_total / 4:g} service hours), 24 Fangyang households awarded {awarded} points "
        f"({redeemed} redeemed), {len(honours)} honours, {len(projects)} projects (4 shortlisted), "
        f"{len(titles)} creation titles; {p.commands} commands"
    )
