"""Notify on the real broker and database, with a real SMTP server and a real webhook receiver on
loopback: exactly once per (event, recipient, channel), retries, crash recovery, reminders, personal
digests, and a bounce e-mail turning a sent e-mail into a failed one."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
import orjson
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller

from services.notify.app import build_app
from services.notify.channels import Channels, verify
from services.notify.config import NotifyConfig
from services.notify.domain import Recipient, RetryPolicy, next_local
from services.notify.ledger import upsert_recipient
from services.notify.projections import NotifyProjection
from services.notify.worker import Digester, Dispatcher, ReminderScheduler, redrive, stream_of
from shared.auth import issue_token, upsert_departments
from shared.events.inspection import IssueAssigned, IssueFound, RectificationClosed
from shared.events.registry import registry
from shared.eventstore import EventMeta, EventStore
from shared.outbox import OutboxRelay, wait_until_drained
from shared.projection import ProjectionRunner
from tests.support.kafka import read_all

pytestmark = pytest.mark.integration

SECRET = "test-webhook-secret-0123456789"
GRID = "changtai/wuan/c01/g01"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mailbox:
    """An aiosmtpd handler keeping every message it accepted."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 Message accepted for delivery"

    def deduped(self) -> dict[str, email.message.EmailMessage]:
        """What a receiver that dedupes on Message-ID keeps."""
        return {m["Message-ID"]: m for m in self.messages}


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


class Receiver:
    """A webhook receiver on loopback that fails the first `fail_first` requests with `fail_status`."""

    def __init__(self) -> None:
        self.fail_first = 0
        self.fail_status = 503
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.accepted: list[tuple[dict[str, str], bytes]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        item = (dict(request.headers), body)
        self.requests.append(item)
        if len(self.requests) <= self.fail_first:
            return web.Response(status=self.fail_status, text="not now")
        self.accepted.append(item)
        return web.json_response({"ok": True})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/hooks/wenming"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


def config(smtp_port: int, **kw: Any) -> NotifyConfig:
    base: dict[str, Any] = dict(
        smtp_servers=[f"127.0.0.1:{smtp_port}"],
        retry_base_s=0.05,
        retry_cap_s=0.2,
        max_attempts=6,
        webhook_secret="unused-default-secret",
        idle_poll_s=0.1,
        smtp_timeout_s=5,
        http_timeout_s=5,
    )
    base.update(kw)
    return NotifyConfig(**base)


def dispatcher(settings: Any, pool: Any, cfg: NotifyConfig, **kw: Any) -> Dispatcher:
    policy = RetryPolicy(cfg.retry_base_s, cfg.retry_cap_s, cfg.max_attempts)
    return Dispatcher(settings, pool, cfg, Channels(cfg), policy=policy, **kw)


def tag() -> str:
    return uuid4().hex[:8]


async def register(pool: Any, r: Recipient, secret: str | None = None) -> None:
    async with pool.acquire() as conn:
        await upsert_recipient(conn, r, secret)


async def assign(pool: Any, settings: Any, owner: str, unit: str, deadline: datetime, at: datetime) -> UUID:
    """An issue found and assigned, appended to the store (the outbox takes it to Kafka)."""
    store = EventStore(pool, settings)
    found = IssueFound(
        issue_id=uuid4(),
        grid_path=GRID,
        method="unannounced",
        category="sanitation",
        case_type="event",
        severity="minor",
        description="沿街垃圾未及时清运",
        found_at=at,
        standards_version=1,
        deadline_hours=24,
    )
    meta = EventMeta(source="inspection-team-1", actor="张三", grid_path=GRID, occurred_at=at)
    assigned = IssueAssigned(issue_id=found.issue_id, responsible_unit=unit, owner=owner, deadline=deadline)
    meta2 = EventMeta(source="wuan-office", actor="李主任", grid_path=meta.grid_path, occurred_at=at)
    await store.append(f"issue-{found.issue_id}", 0, [(found, meta), (assigned, meta2)])
    return found.issue_id


async def close(pool: Any, settings: Any, issue_id: UUID, unit: str, deadline: datetime, at: datetime) -> None:
    store = EventStore(pool, settings)
    closed = RectificationClosed(issue_id=issue_id, responsible_unit=unit, deadline=deadline, on_time=True)
    meta = EventMeta(source="campaign-office", actor="核查员", grid_path=GRID, occurred_at=at)
    await store.append(f"issue-{issue_id}", 2, [(closed, meta)])


async def relay(settings: Any, pool: Any) -> None:
    r = OutboxRelay(settings)
    task = asyncio.create_task(r.run())
    try:
        async with pool.acquire() as conn:
            await wait_until_drained(conn, timeout=30)
    finally:
        r.stop()
        await task


async def to_ledger(settings: Any, pool: Any) -> None:
    """Outbox -> Kafka -> the notify projection (rules -> ledger rows)."""
    await relay(settings, pool)
    await ProjectionRunner(settings, pool, NotifyProjection(settings)).catch_up()


async def ledger(pool: Any, recipient_id: str) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT * FROM notify_deliveries WHERE recipient_id = $1 ORDER BY channel, created_at", recipient_id
        )
    return [dict(r) for r in rows]


async def settle(d: Dispatcher, pool: Any, recipient_id: str, timeout: float = 15) -> list[dict[str, Any]]:
    """Dispatch until none of the recipient's deliveries is waiting or in flight."""
    deadline = time.monotonic() + timeout
    while True:
        await d.dispatch_once()
        rows = await ledger(pool, recipient_id)
        if rows and all(r["status"] in ("sent", "dead", "unconfirmed", "digested") for r in rows):
            return rows
        assert time.monotonic() < deadline, f"deliveries did not settle: {[(r['channel'], r['status']) for r in rows]}"
        await asyncio.sleep(0.03)


async def inbox(pool: Any, recipient_id: str) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        return [dict(r) for r in await conn.fetch("SELECT * FROM notify_inbox WHERE recipient_id = $1", recipient_id)]


def person(t: str, receiver_url: str | None, **kw: Any) -> Recipient:
    base: dict[str, Any] = dict(
        recipient_id=f"owner-{t}",
        name=f"王磊{t}",
        grid_path="changtai/wuan/c01",
        role="owner",
        unit=f"unit-{t}",
        channels=["inbox", "email", "webhook"] if receiver_url else ["inbox", "email"],
        email=f"wang-{t}@example.org",
        webhook_url=receiver_url,
    )
    base.update(kw)
    return Recipient(**base)


async def test_an_assignment_reaches_inbox_email_and_webhook_once_each(settings, pool, smtp, receiver):
    box, port = smtp
    t = tag()
    owner = person(t, receiver.url)
    await register(pool, owner, SECRET)
    now = datetime.now(UTC)
    issue_id = await assign(pool, settings, owner.name, owner.unit or "", now + timedelta(hours=48), now)
    await to_ledger(settings, pool)
    await to_ledger(settings, pool)  # a replay plans nothing new
    d = dispatcher(settings, pool, config(port))
    rows = await settle(d, pool, owner.recipient_id)
    await d.channels.aclose()

    assert Counter(r["channel"] for r in rows) == {"inbox": 1, "email": 1, "webhook": 1}
    assert {r["status"] for r in rows} == {"sent"}
    ids = {r["channel"]: r["delivery_id"] for r in rows}

    messages = await inbox(pool, owner.recipient_id)
    assert [m["message_id"] for m in messages] == [ids["inbox"]]
    assert "请于" in messages[0]["subject"] and "文泉社区01网格" in messages[0]["subject"]

    mails = [m for m in box.messages if m["To"] == owner.email]
    assert len(mails) == 1
    assert mails[0]["Message-ID"] == f"<{ids['email']}@wenming.notify>"
    assert mails[0]["X-Wenming-Delivery-Id"] == str(ids["email"])
    assert "沿街垃圾未及时清运" in mails[0].get_content()

    assert len(receiver.accepted) == 1
    headers, body = receiver.accepted[0]
    assert headers["X-Wenming-Delivery-Id"] == str(ids["webhook"])
    assert verify(SECRET, headers["X-Wenming-Timestamp"], body, headers["X-Wenming-Signature"], now=time.time())
    assert not verify(
        "wrong-secret", headers["X-Wenming-Timestamp"], body, headers["X-Wenming-Signature"], now=time.time()
    )
    assert orjson.loads(body)["event_id"] == str(rows[0]["event_id"])
    assert orjson.loads(body)["event_type"] == "IssueAssigned"

    # NotificationSent on the documented topic, once per delivery.
    await relay(settings, pool)
    records = await read_all(settings, settings.topic("notify.delivery"))
    sent = [registry.decode(r.value)[1] for r in records if r.key.decode() in {stream_of(i) for i in ids.values()}]
    assert sorted(s.channel for s in sent) == ["email", "inbox", "webhook"]  # type: ignore[attr-defined]
    assert {s.event_type for s in sent} == {"NotificationSent"}
    assert all(s.source_event_type == "IssueAssigned" for s in sent)  # type: ignore[attr-defined]
    assert issue_id  # the issue the deliveries came from


async def test_webhook_failing_three_times_then_succeeding_gets_the_message_once(settings, pool, smtp, receiver):
    _box, port = smtp
    receiver.fail_first = 3
    t = tag()
    owner = person(t, receiver.url, channels=["webhook"])
    await register(pool, owner, SECRET)
    now = datetime.now(UTC)
    await assign(pool, settings, owner.name, owner.unit or "", now + timedelta(hours=48), now)
    await to_ledger(settings, pool)
    d = dispatcher(settings, pool, config(port))
    [row] = await settle(d, pool, owner.recipient_id)
    await d.channels.aclose()

    assert row["status"] == "sent" and row["attempts"] == 4
    assert len(receiver.requests) == 4
    assert len(receiver.accepted) == 1
    assert {h["X-Wenming-Delivery-Id"] for h, _ in receiver.requests} == {str(row["delivery_id"])}


async def test_permanent_refusal_is_dead_lettered_with_its_reason_and_can_be_redriven(settings, pool, smtp, receiver):
    _box, port = smtp
    receiver.fail_first, receiver.fail_status = 1, 410
    t = tag()
    owner = person(t, receiver.url, channels=["webhook"])
    await register(pool, owner, SECRET)
    now = datetime.now(UTC)
    await assign(pool, settings, owner.name, owner.unit or "", now + timedelta(hours=48), now)
    await to_ledger(settings, pool)
    d = dispatcher(settings, pool, config(port))
    [row] = await settle(d, pool, owner.recipient_id)
    assert row["status"] == "dead" and row["attempts"] == 1
    assert "HTTP 410" in row["last_error"]
    async with pool.acquire() as conn:
        assert await redrive(conn, row["delivery_id"], datetime.now(UTC)) == [row["delivery_id"]]
    [row] = await settle(d, pool, owner.recipient_id)
    await d.channels.aclose()
    assert row["status"] == "sent"
    assert len(receiver.accepted) == 1
    events = [e.type for e in await EventStore(pool, settings).load(stream_of(row["delivery_id"]))]
    assert events == ["NotificationFailed", "NotificationSent"]


class Crash(Exception):
    """The worker dies between the send and the ledger write."""


async def test_worker_stopped_between_send_and_ledger_write_does_not_send_twice(settings, pool, smtp):
    box, port = smtp
    t = tag()
    owner = person(t, None)
    await register(pool, owner)
    now = datetime.now(UTC)
    await assign(pool, settings, owner.name, owner.unit or "", now + timedelta(hours=48), now)
    await to_ledger(settings, pool)

    async def crash(_: object) -> None:
        raise Crash()

    first = dispatcher(settings, pool, config(port), after_send=crash)
    with pytest.raises(Crash):
        await first.dispatch_once()
    await first.channels.aclose()
    rows = await ledger(pool, owner.recipient_id)
    assert {r["status"] for r in rows} == {"claimed"}  # sent (e-mail) or written (inbox), not confirmed
    assert len([m for m in box.messages if m["To"] == owner.email]) == 1
    assert await inbox(pool, owner.recipient_id) == []  # rolled back with the ledger write

    restarted = dispatcher(settings, pool, config(port))
    assert await restarted.recover() >= 2
    rows = await settle(restarted, pool, owner.recipient_id)
    await restarted.channels.aclose()
    assert {r["channel"]: r["status"] for r in rows} == {"inbox": "sent", "email": "unconfirmed"}
    assert len(await inbox(pool, owner.recipient_id)) == 1
    # Never sent twice: the SMTP server got the e-mail once; the operator sees it as unconfirmed.
    assert len([m for m in box.messages if m["To"] == owner.email]) == 1
    email = next(r for r in rows if r["channel"] == "email")
    assert "not sent again" in email["last_error"]
    async with pool.acquire() as conn:
        events = await conn.fetchval(
            "SELECT count(*) FROM events WHERE stream_id = ANY($1)", [stream_of(r["delivery_id"]) for r in rows]
        )
    assert events == 1  # NotificationSent for the inbox; the e-mail awaits an operator
    # The operator, told the owner never got it, re-drives it: now it goes out again, on purpose.
    async with pool.acquire() as conn:
        assert await redrive(conn, email["delivery_id"], datetime.now(UTC)) == [email["delivery_id"]]
    again = dispatcher(settings, pool, config(port))
    rows = await settle(again, pool, owner.recipient_id)
    await again.channels.aclose()
    assert {r["channel"]: r["status"] for r in rows} == {"inbox": "sent", "email": "sent"}
    assert len([m for m in box.messages if m["To"] == owner.email]) == 2


async def test_second_smtp_server_takes_over_when_the_first_is_down(settings, pool, smtp):
    box, port = smtp
    t = tag()
    owner = person(t, None, channels=["email"])
    await register(pool, owner)
    now = datetime.now(UTC)
    await assign(pool, settings, owner.name, owner.unit or "", now + timedelta(hours=48), now)
    await to_ledger(settings, pool)
    dead_port = free_port()  # nothing listens there
    d = dispatcher(settings, pool, config(port, smtp_servers=[f"127.0.0.1:{dead_port}", f"127.0.0.1:{port}"]))
    [row] = await settle(d, pool, owner.recipient_id)
    await d.channels.aclose()
    assert row["status"] == "sent" and row["attempts"] == 1
    assert row["provider"] == f"smtp://127.0.0.1:{port}"
    assert len([m for m in box.messages if m["To"] == owner.email]) == 1


async def test_the_24h_reminder_fires_once_and_not_at_all_for_an_issue_closed_before_it(settings, pool, smtp):
    _box, port = smtp
    t = tag()
    owner = person(t, None, channels=["inbox"])
    await register(pool, owner)
    now = datetime.now(UTC).replace(microsecond=0)
    deadline = now + timedelta(hours=30)
    open_issue = await assign(pool, settings, owner.name, owner.unit or "", deadline, now)
    closed_issue = await assign(pool, settings, owner.name, owner.unit or "", deadline, now)
    await close(pool, settings, closed_issue, owner.unit or "", deadline, now + timedelta(hours=1))
    await to_ledger(settings, pool)

    scheduler = ReminderScheduler(settings, pool)
    before_due = deadline - timedelta(hours=24) - timedelta(seconds=1)
    await scheduler.tick(before_due)
    reminders = [r for r in await ledger(pool, owner.recipient_id) if r["event_type"] == "DeadlineReminder"]
    assert reminders == []
    after_due = deadline - timedelta(hours=24) + timedelta(seconds=1)
    await scheduler.tick(after_due)
    await scheduler.tick(after_due + timedelta(minutes=5))
    reminders = [r for r in await ledger(pool, owner.recipient_id) if r["event_type"] == "DeadlineReminder"]
    assert len(reminders) == 1

    async with pool.acquire() as conn:
        states = {
            (r["issue_id"], r["before_hours"]): (r["fired_at"] is not None, r["cancelled_at"] is not None)
            for r in await conn.fetch(
                "SELECT * FROM notify_reminders WHERE issue_id = ANY($1)", [open_issue, closed_issue]
            )
        }
    assert states == {
        (open_issue, 24): (True, False),
        (open_issue, 2): (False, False),
        (closed_issue, 24): (False, True),
        (closed_issue, 2): (False, True),
    }
    d = dispatcher(settings, pool, config(port), clock=lambda: datetime.now(UTC) + timedelta(hours=7))
    await settle(d, pool, owner.recipient_id)
    await d.channels.aclose()
    subjects = [m["subject"] for m in await inbox(pool, owner.recipient_id) if m["event_type"] == "DeadlineReminder"]
    assert len(subjects) == 1 and "24小时" in subjects[0]


def postfix_bounce(original: email.message.EmailMessage, action: str = "failed", status: str = "5.1.1") -> bytes:
    """What Postfix sends back when the recipient's server refuses: the DSN plus the original's headers."""
    headers = "".join(f"{k}: {v}\n" for k, v in original.items())
    return (
        "From: MAILER-DAEMON@mail.example.org (Mail Delivery System)\n"
        "Subject: Undelivered Mail Returned to Sender\nTo: notify@wenming.local\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        "--B\nContent-Type: text/plain; charset=us-ascii\n\nYour message could not be delivered.\n\n"
        "--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mail.example.org\n\n"
        f"Final-Recipient: rfc822; {original['To']}\nAction: {action}\nStatus: {status}\n"
        "Diagnostic-Code: smtp; 550 5.1.1 User unknown in local recipient table\n\n"
        f"--B\nContent-Type: text/rfc822-headers\n\n{headers}\n--B--\n"
    ).encode()


async def test_a_bounce_email_turns_the_sent_email_into_failed_once(settings, pool, smtp):
    box, port = smtp
    t = tag()
    owner = person(t, None, channels=["email"])
    await register(pool, owner)
    now = datetime.now(UTC)
    await assign(pool, settings, owner.name, owner.unit or "", now + timedelta(hours=48), now)
    await to_ledger(settings, pool)
    d = dispatcher(settings, pool, config(port))
    [row] = await settle(d, pool, owner.recipient_id)
    await d.channels.aclose()
    assert row["status"] == "sent"
    [mail] = [m for m in box.messages if m["To"] == owner.email]

    offices = [
        {"code": f"{town}-{t}", "name": town, "kind": "township_office", "area": f"changtai/{town}"}
        | {"scopes": ["notify:admin"]}
        for town in ("wuan", "yanxi")
    ]
    async with pool.acquire() as conn:
        await upsert_departments(conn, offices)
        wuan = {"Authorization": f"Bearer {await issue_token(conn, f'wuan-{t}', 'bounces')}"}
        yanxi = {"Authorization": f"Bearer {await issue_token(conn, f'yanxi-{t}', 'bounces')}"}
    app = build_app(settings, config(port), workers=False)
    rfc822 = {"Content-Type": "message/rfc822"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):

        async def post(raw: bytes, who: dict[str, str]) -> httpx.Response:
            return await client.post("/v1/bounces", content=raw, headers={**rfc822, **who})

        delayed = await post(postfix_bounce(mail, action="delayed", status="4.4.1"), wuan)
        assert delayed.json()["reports"][0]["outcome"] == "unchanged: delayed"
        assert (await post(postfix_bounce(mail), yanxi)).status_code == 403  # not in yanxi's area
        assert (await post(postfix_bounce(mail), {})).status_code == 401
        not_ours = await post(b"From: a@b\nSubject: out of office\n\nback Monday\n", wuan)
        assert not_ours.status_code == 422 and "multipart/report" in not_ours.json()["detail"]
        [after_checks] = await ledger(pool, owner.recipient_id)
        assert after_checks["status"] == "sent"  # nothing above changed it

        bounced = await post(postfix_bounce(mail), wuan)
        assert bounced.status_code == 200
        assert bounced.json() == {
            "reports": [
                {"delivery_id": str(row["delivery_id"]), "action": "failed", "status": "5.1.1", "outcome": "failed"}
            ]
        }
        again = await post(postfix_bounce(mail), wuan)
        assert again.json()["reports"][0]["outcome"] == "already failed"

    [failed] = await ledger(pool, owner.recipient_id)
    assert failed["status"] == "dead"
    assert failed["last_error"] == (
        f"bounced: 5.1.1 failed for {owner.email} (550 5.1.1 User unknown in local recipient table)"
    )
    events = await EventStore(pool, settings).load(stream_of(row["delivery_id"]))
    assert [e.type for e in events] == ["NotificationSent", "NotificationFailed"]


async def test_a_digest_reader_gets_one_message_a_day_carrying_every_held_one(settings, pool, smtp):
    box, port = smtp
    t = tag()
    reader = person(t, None, digest_at="18:00")
    await register(pool, reader)
    now = datetime.now(UTC)
    for _ in range(3):
        await assign(pool, settings, reader.name, reader.unit or "", now + timedelta(hours=48), now)
    await to_ledger(settings, pool)
    held = await ledger(pool, reader.recipient_id)
    due = next_local("18:00", now)
    assert Counter((r["channel"], r["status"]) for r in held) == {("inbox", "held"): 3, ("email", "held"): 3}
    assert {r["next_attempt_at"] for r in held} == {due}
    d = dispatcher(settings, pool, config(port), clock=lambda: due)  # it is 18:00
    await d.dispatch_once()
    assert {r["status"] for r in await ledger(pool, reader.recipient_id)} == {"held"}  # not sent one by one

    async def digests_made() -> int:
        return sum(1 for r in await ledger(pool, reader.recipient_id) if r["event_type"] == "PersonalDigest")

    # Other tests' digest readers share this database, so count this reader's digests, not the tick's.
    digester = Digester(pool)
    await digester.tick(due - timedelta(seconds=1))
    assert await digests_made() == 0  # not yet
    await digester.tick(due)
    assert await digests_made() == 2  # one per channel
    await digester.tick(due)
    assert await digests_made() == 2  # and only once
    rows = await settle(d, pool, reader.recipient_id)
    first_digests = {r["delivery_id"] for r in rows if r["event_type"] == "PersonalDigest"}
    digests = [r for r in rows if r["event_type"] == "PersonalDigest"]
    assert Counter((r["channel"], r["status"]) for r in digests) == {("inbox", "sent"): 1, ("email", "sent"): 1}
    by_channel = {r["channel"]: r["delivery_id"] for r in digests}
    members = [r for r in rows if r["event_type"] == "IssueAssigned"]
    assert {(r["status"], r["digest_id"] == by_channel[r["channel"]]) for r in members} == {("digested", True)}

    [message] = await inbox(pool, reader.recipient_id)
    assert message["subject"].endswith("共3条") and message["body"].count("【创城交办】") == 3
    [mail] = [m for m in box.messages if m["To"] == reader.email]
    assert mail["Message-ID"] == f"<{by_channel['email']}@wenming.notify>"
    assert mail.get_content().count("【创城交办】") == 3

    # A message held for the same digest time but committed after the digest was made is not lost:
    # it goes out in a digest of its own.
    await assign(pool, settings, reader.name, reader.unit or "", now + timedelta(hours=48), now)
    await to_ledger(settings, pool)
    await digester.tick(due)
    assert await digests_made() == 4
    rows = await settle(d, pool, reader.recipient_id)
    await d.channels.aclose()
    late = [r for r in rows if r["event_type"] == "PersonalDigest" and r["delivery_id"] not in first_digests]
    assert Counter((r["channel"], r["status"]) for r in late) == {("inbox", "sent"): 1, ("email", "sent"): 1}
    assert sorted(m["subject"][-3:] for m in await inbox(pool, reader.recipient_id)) == ["共1条", "共3条"]
    assert len([m for m in box.messages if m["To"] == reader.email]) == 2
