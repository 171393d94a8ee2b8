"""The rest of the system in the fault run: volunteer commands as a second load, notify's
recipients, and the checks on scoring, notify and volunteer once the faults are over.

Every check returns counts to print and problems (mismatches) that must all be 0.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
import httpx

from services.notify.domain import Recipient
from services.notify.ledger import upsert_recipient
from services.scoring.projections import ScoringProjection
from services.scoring.rules import load_rules
from services.volunteer.domain import id_check_char
from shared.campaign_time import utcnow
from shared.db import Conn
from shared.events.registry import registry
from shared.grid import cached_grid
from shared.projection import rebuild
from shared.settings import Settings
from tests.support.kafka import read_all

VOLUNTEER_DEPARTMENT = "civilisation-office"
SITE_ID = "faults-wenquan-station"
SITE_GRID = "changtai/wuan/c01"
HOUSEHOLDS = [f"faults-household-{n:02d}" for n in range(20)]
VOLUNTEER_STREAM_PREFIXES = ("site-", "volunteer-", "activity-", "household-", "fund-")
OWNER = "王五"
UNIT = "urban-management"
OWNER_ID = "faults-owner-wangwu"
UNIT_CONTACT_ID = "faults-unit-contact"


# --- notify's recipients -------------------------------------------------------------------------


async def register_recipients(conn: Conn) -> set[str]:
    """The owner every assignment of the load names and the contact of its unit, both told in the
    in-app inbox; returns their recipient ids (each IssueAssigned is delivered to both)."""
    for r in (
        Recipient(recipient_id=OWNER_ID, name=OWNER, grid_path="changtai", role="owner", unit=UNIT, channels=["inbox"]),
        Recipient(
            recipient_id=UNIT_CONTACT_ID,
            name="城管局联络员",
            grid_path="changtai",
            role="unit_contact",
            unit=UNIT,
            channels=["inbox"],
        ),
    ):
        await upsert_recipient(conn, r, None)
    return {OWNER_ID, UNIT_CONTACT_ID}


# --- the volunteer load --------------------------------------------------------------------------


@dataclass
class VolunteerTally:
    sent: int = 0
    """Commands the client asked for."""
    retries: int = 0
    acknowledged: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Client Idempotency-Key -> (stream id, number of events) of every acknowledged command."""
    refused: list[str] = field(default_factory=list)
    gave_up: int = 0


class VolunteerLoad:
    """A practice station's clerk: plans activities and records them held, registers volunteers and
    awards civility points to households, every command with its own Idempotency-Key, retried with
    that key after a connection error or a 5xx."""

    def __init__(self, base: str, token: str, retry_for_s: float, per_second: float = 3.0):
        self.base = base
        self.token = token
        self.retry_for_s = retry_for_s
        self.per_second = per_second
        self.tally = VolunteerTally()
        self.stopping = asyncio.Event()
        self.planned: list[str] = []
        self.registered = 0

    async def send(self, client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """POST with one Idempotency-Key across all retries; returns the answer if acknowledged."""
        t = self.tally
        t.sent += 1
        key = str(uuid.uuid4())
        headers = {"Authorization": f"Bearer {self.token}", "Idempotency-Key": key}
        deadline = time.monotonic() + self.retry_for_s
        while True:
            try:
                r = await client.post(path, json=body, headers=headers)
            except httpx.TransportError:
                r = None
            if r is not None and r.status_code in (200, 201):
                answer: dict[str, Any] = r.json()
                t.acknowledged[key] = (answer["stream_id"], len(answer["events"]))
                return answer
            if r is not None and r.status_code < 500:
                t.refused.append(f"{path}: {r.status_code} {r.text[:200]}")
                return None
            if time.monotonic() > deadline:
                t.gave_up += 1
                return None
            t.retries += 1
            await asyncio.sleep(0.3)

    async def register_site(self) -> None:
        async with httpx.AsyncClient(base_url=self.base, timeout=10) as client:
            body = {"site_id": SITE_ID, "kind": "station", "name": "文泉社区新时代文明实践站", "grid_path": SITE_GRID}
            if await self.send(client, "/v1/sites", body) is None:
                raise RuntimeError(f"practice site not registered: {self.tally.refused}")

    async def worker(self, seed: int) -> None:
        rng = random.Random(seed)
        async with httpx.AsyncClient(base_url=self.base, timeout=10) as client:
            while not self.stopping.is_set():
                t0 = time.monotonic()
                roll = rng.random()
                if roll < 0.25 and self.planned:
                    await self._hold(client, self.planned.pop(0))
                elif roll < 0.5:
                    await self._plan(client, rng)
                elif roll < 0.65:
                    await self._register_volunteer(client, rng)
                else:
                    await self._award(client, rng)
                pause = 1 / self.per_second - (time.monotonic() - t0)
                if pause > 0:
                    await asyncio.sleep(pause)

    async def _plan(self, client: httpx.AsyncClient, rng: random.Random) -> None:
        ends = utcnow() - timedelta(minutes=rng.randrange(10, 120))
        body = {
            "site_id": SITE_ID,
            "title": "垃圾分类宣讲进小区",
            "theme": "sanitation",
            "form": rng.choice(["talk", "drive", "persuasion", "visit"]),
            "starts_at": (ends - timedelta(hours=2)).isoformat(),
            "ends_at": ends.isoformat(),
        }
        answer = await self.send(client, "/v1/activities", body)
        if answer is not None:
            self.planned.append(answer["id"])

    async def _hold(self, client: httpx.AsyncClient, activity_id: str) -> None:
        ended = utcnow() - timedelta(minutes=5)
        body = {
            "started_at": (ended - timedelta(hours=1, minutes=30)).isoformat(),
            "ended_at": ended.isoformat(),
            "participants": [],
            "audience": 40,
            "summary": "向居民讲解垃圾分类，发放宣传册",
        }
        await self.send(client, f"/v1/activities/{activity_id}/held", body)

    async def _register_volunteer(self, client: httpx.AsyncClient, rng: random.Random) -> None:
        self.registered += 1  # the sequence number keeps every ID number of the run distinct
        first17 = "350625" + f"{rng.randrange(1960, 2005)}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}"
        first17 += f"{self.registered % 1000:03d}"
        body = {
            "site_id": SITE_ID,
            "name": "林志愿",
            "phone": f"139{rng.randrange(10**8):08d}",
            "id_number": first17 + id_check_char(first17),
            "skills": ["宣讲"],
        }
        await self.send(client, "/v1/volunteers", body)

    async def _award(self, client: httpx.AsyncClient, rng: random.Random) -> None:
        household = rng.choice(HOUSEHOLDS)
        body = {
            "grid_path": f"{SITE_GRID}/g0{1 + HOUSEHOLDS.index(household) % 9}",
            "label": f"文泉社区{household[-2:]}户",
            "points": rng.randrange(1, 6),
            "rule": "sorted-waste",
            "reason": "垃圾分类投放准确",
        }
        await self.send(client, f"/v1/households/{household}/awards", body)


# --- checks --------------------------------------------------------------------------------------


@dataclass
class Checked:
    counts: dict[str, int]
    problems: dict[str, int]


async def scoring_rows(pool: asyncpg.Pool, tables: tuple[str, ...]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the scoring read models, in a fixed order."""
    async with pool.acquire() as conn:
        return {t: sorted((tuple(r) for r in await conn.fetch(f"SELECT * FROM {t}")), key=repr) for t in tables}


async def check_scoring(settings: Settings, pool: asyncpg.Pool) -> Checked:
    """The scoring read models as kept through the faults against a rebuild from the topics (the
    scoring service must be stopped: a rebuild is exclusive). A count applied twice or missed
    differs from the rebuild."""
    projection = ScoringProjection(load_rules(), cached_grid(settings.district_file))
    kept = await scoring_rows(pool, projection.tables)
    await rebuild(settings, pool, projection, progress=False)
    rebuilt = await scoring_rows(pool, projection.tables)
    differing = 0
    for table in projection.tables:
        a, b = Counter(kept[table]), Counter(rebuilt[table])
        differing += sum(((a - b) + (b - a)).values())
    counts = {f"{t} rows": len(kept[t]) for t in projection.tables}
    return Checked(counts, {"scoring rows differing from a rebuild": differing})


async def check_notify(pool: asyncpg.Pool, recipients: set[str]) -> Checked:
    """Every assignment told to each recipient once in the inbox: one ledger row per (event,
    recipient, channel), one inbox message and one NotificationSent per sent inbox delivery,
    nothing left claimed."""
    async with pool.acquire() as conn:
        assigned = {r["event_id"] for r in await conn.fetch("SELECT event_id FROM events WHERE type = 'IssueAssigned'")}
        ledger = await conn.fetch(
            "SELECT delivery_id, event_id, rule, recipient_id, channel, status FROM notify_deliveries"
        )
        inbox = Counter(r["message_id"] for r in await conn.fetch("SELECT message_id FROM notify_inbox"))
        sent_events = Counter(
            r["stream_id"] for r in await conn.fetch("SELECT stream_id FROM events WHERE type = 'NotificationSent'")
        )
    per_key = Counter((r["event_id"], r["recipient_id"], r["channel"]) for r in ledger)
    status = Counter(r["status"] for r in ledger)
    sent_inbox = {r["delivery_id"] for r in ledger if r["status"] == "sent" and r["channel"] == "inbox"}
    sent = {r["delivery_id"] for r in ledger if r["status"] == "sent"}
    sent_ids = {str(d) for d in sent}
    expected = {(e, who, "inbox") for e in assigned for who in recipients}
    assigned_planned = {
        (r["event_id"], r["recipient_id"], r["channel"]) for r in ledger if r["rule"] == "issue-assigned"
    }
    problems = {
        "notifications planned twice (event, recipient, channel)": sum(n - 1 for n in per_key.values() if n > 1),
        "assignments not planned for a recipient": len(expected - assigned_planned),
        "assignment deliveries to no one expected": len(assigned_planned - expected),
        "deliveries left claimed": status["claimed"],
        "deliveries dead or unconfirmed": status["dead"] + status["unconfirmed"],
        "deliveries still pending or failed": status["pending"] + status["failed"],
        "inbox messages not once per sent delivery": len(sent_inbox ^ set(inbox)) + sum(n - 1 for n in inbox.values()),
        "NotificationSent not once per sent delivery": sum(1 for d in sent if sent_events[f"notification-{d}"] != 1)
        + sum(1 for s in sent_events if s.removeprefix("notification-") not in sent_ids),
    }
    counts = {
        "assignments": len(assigned),
        "deliveries": len(ledger),
        "deliveries sent": len(sent),
        "inbox messages": sum(inbox.values()),
        "NotificationSent events": sum(sent_events.values()),
    }
    return Checked(counts, problems)


async def check_volunteer(settings: Settings, pool: asyncpg.Pool, tally: VolunteerTally) -> Checked:
    """Every acknowledged volunteer command's events stored once, on the answered stream, and on
    their topics; no volunteer event stored that no acknowledged command wrote."""
    stored_key = {f"volunteer:{VOLUNTEER_DEPARTMENT}:{k}": k for k in tally.acknowledged}
    async with pool.acquire() as conn:
        keyed = {
            r["key"]: list(r["event_ids"])
            for r in await conn.fetch(
                "SELECT key, event_ids FROM idempotency_keys WHERE key = ANY($1)", list(stored_key)
            )
        }
        rows = await conn.fetch(
            "SELECT event_id, stream_id, type FROM events WHERE split_part(stream_id, '-', 1) || '-' = ANY($1)",
            list(VOLUNTEER_STREAM_PREFIXES),
        )
    stored = Counter(r["event_id"] for r in rows)
    stream_of = {r["event_id"]: r["stream_id"] for r in rows}
    topics = {settings.topic(registry.topic_for(t)) for t in {r["type"] for r in rows}}
    published: Counter[str] = Counter()
    for topic in sorted(topics):
        published.update(dict(rec.headers)["ce_id"].decode() for rec in await read_all(settings, topic))
    not_stored = wrong_stream = wrong_count = not_published = 0
    acknowledged_ids: set[Any] = set()
    for key, client_key in stored_key.items():
        stream_id, n_events = tally.acknowledged[client_key]
        ids = keyed.get(key)
        if ids is None:
            not_stored += n_events or 1
            continue
        wrong_count += len(ids) != n_events
        acknowledged_ids.update(ids)
        not_stored += sum(1 for i in ids if stored[i] == 0)
        wrong_stream += sum(1 for i in ids if stored[i] and stream_of[i] != stream_id)
        not_published += sum(1 for i in ids if published[str(i)] == 0)
    problems = {
        "volunteer events acknowledged but not stored": not_stored,
        "volunteer events stored more than once": sum(1 for n in stored.values() if n > 1),
        "volunteer commands answered with another event count": wrong_count,
        "volunteer events on another stream than answered": wrong_stream,
        "volunteer events acknowledged but not published": not_published,
        "volunteer events stored but never acknowledged": sum(1 for i in stored if i not in acknowledged_ids),
        "volunteer commands refused": len(tally.refused),
        "volunteer commands given up": tally.gave_up,
    }
    counts = {
        "volunteer commands sent": tally.sent,
        "volunteer commands retried": tally.retries,
        "volunteer commands acknowledged": len(tally.acknowledged),
        "volunteer events stored": sum(stored.values()),
        "volunteer events published (distinct)": sum(1 for i in stored if published[str(i)]),
    }
    return Checked(counts, problems)
