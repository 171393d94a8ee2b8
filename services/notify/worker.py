"""The dispatcher (ledger rows out to channels) and the reminder scheduler.

Delivery protocol, per ledger row (one per event, recipient and channel):

1. **Claim** (`pending`/`failed` -> `claimed`, attempts + 1) in its own committed statement.
2. **Send** on the channel.
3. **Confirm** (`claimed` -> `sent`, plus a `NotificationSent` event through the event store's
   outbox) in one transaction; or record the failure: `failed` with the next attempt at an
   exponential backoff with jitter, or `dead` with the reason (and `NotificationFailed`) once
   the attempts are spent or the failure is permanent (a bounce, a 4xx refusal).

In-app inbox: step 2 is an INSERT in the same transaction as step 3, so it happens exactly once.

A crash between 2 and 3 leaves the row `claimed`. On restart `recover()` puts such rows back to
`pending`: an inbox row has then provably not been written (its transaction rolled back); an
e-mail, webhook or SMS row is sent again **with the same delivery id** — the e-mail's
`Message-ID: <delivery-id@wenming.notify>` and every request's `X-Wenming-Delivery-Id` header.
Receivers must dedupe on that id; that is the only window in which a message can arrive twice.

One dispatcher runs at a time (a PostgreSQL advisory lock), so recovery never races a live sender.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg

from services.notify.channels import Channels, Deferred, DeliveryError, Outgoing
from services.notify.config import NotifyConfig
from services.notify.domain import (
    DIGEST_EVENT_TYPE,
    DueReminder,
    Held,
    Planned,
    RetryPolicy,
    RuleBook,
    Templates,
    compose_digest,
    default_rules,
    default_templates,
    digest_id,
    plan,
    release_at,
    reminder_occurrence,
)
from services.notify.ledger import WAKE_CHANNEL, insert_planned, load_directory, recipient_from_row
from services.notify.projections import load_issue, place_namer
from shared.campaign_time import utcnow
from shared.db import DB_ERRORS, Conn, connect
from shared.events.notify import NotificationFailed, NotificationSent
from shared.eventstore import EventMeta, EventStore, StreamAppend
from shared.settings import Settings
from shared.workers import Periodic

log = logging.getLogger(__name__)

DISPATCH_LOCK = 7_305_104
AfterSend = Callable[[Outgoing], Awaitable[None]]

_CLAIM = (
    "UPDATE notify_deliveries d SET status = 'claimed', claimed_at = $1, attempts = d.attempts + 1"
    " WHERE d.delivery_id IN (SELECT delivery_id FROM notify_deliveries WHERE status IN ('pending', 'failed')"
    " AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING d.*"
)


def stream_of(delivery_id: UUID) -> str:
    return f"notification-{delivery_id}"


async def _append(
    store: EventStore, conn: Conn, row: asyncpg.Record, event: NotificationSent | NotificationFailed, at: datetime
) -> None:
    """Bump the row's stream version and append the delivery event in the caller's transaction."""
    version = await conn.fetchval(
        "UPDATE notify_deliveries SET stream_version = stream_version + 1 WHERE delivery_id = $1"
        " RETURNING stream_version",
        row["delivery_id"],
    )
    meta = EventMeta(
        source="notify",
        actor="notify-dispatcher",
        grid_path=row["grid_path"],
        occurred_at=at,
        causation_id=row["event_id"],
    )
    await store.append_many([StreamAppend(stream_of(row["delivery_id"]), version - 1, [(event, meta)])], conn=conn)


def failed_event(row: asyncpg.Record, reason: str, permanent: bool, at: datetime) -> NotificationFailed:
    return NotificationFailed(
        delivery_id=row["delivery_id"],
        source_event_id=row["event_id"],
        source_event_type=row["event_type"],
        rule=row["rule"],
        recipient_id=row["recipient_id"],
        channel=row["channel"],
        attempts=row["attempts"],
        permanent=permanent,
        reason=reason[:1000] or "unknown",
        failed_at=at,
    )


class Dispatcher:
    """Sends due ledger rows on their channels; see the module docstring for the protocol."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        config: NotifyConfig | None = None,
        channels: Channels | None = None,
        *,
        policy: RetryPolicy | None = None,
        clock: Callable[[], datetime] = utcnow,
        after_send: AfterSend | None = None,
    ):
        self.settings = settings
        self.pool = pool
        self.config = config or NotifyConfig()
        self.channels = channels or Channels(self.config)
        self.policy = policy or RetryPolicy(self.config.retry_base_s, self.config.retry_cap_s, self.config.max_attempts)
        self.clock = clock
        self.after_send = after_send
        """Test hook: runs after a send and before its confirmation is written."""
        self.store = EventStore(pool, settings)
        self.sent = 0
        self.is_leader = False
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._sem = asyncio.Semaphore(self.config.concurrency)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Hold the dispatcher lock, recover in-doubt rows, then dispatch until stopped."""
        while not self._stop.is_set():
            try:
                await self._run_once()
            except DB_ERRORS as exc:
                if self._stop.is_set():
                    break
                log.warning("notify dispatcher: %s; retrying in 1s", exc)
                await asyncio.sleep(1)

    async def _run_once(self) -> None:
        conn = await connect(self.settings)
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", DISPATCH_LOCK):
                if self._stop.is_set():
                    return
                await asyncio.sleep(1)
            self.is_leader = True
            await conn.add_listener(WAKE_CHANNEL, lambda *_: self._wake.set())
            recovered = await self.recover()
            if recovered:
                log.info("notify dispatcher: %d in-doubt deliveries put back to pending", recovered)
            while not self._stop.is_set():
                if await self.dispatch_once() == 0:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), await self._idle_wait())
        finally:
            self.is_leader = False
            await conn.close(timeout=5)

    async def _idle_wait(self) -> float:
        async with self.pool.acquire() as conn:
            nxt = await conn.fetchval(
                "SELECT min(next_attempt_at) FROM notify_deliveries WHERE status IN ('pending', 'failed')"
            )
        if nxt is None:
            return self.config.idle_poll_s
        wait: float = (nxt - self.clock()).total_seconds()
        return min(self.config.idle_poll_s, max(0.01, wait))

    async def recover(self) -> int:
        """Rows claimed but never confirmed (a crash between send and confirm).

        Inbox: its write rolled back with the confirmation, so it goes back to pending and is
        written once. E-mail: the SMTP server may already have accepted it, and SMTP cannot be
        asked, so it is never sent twice: it becomes 'unconfirmed' for an operator to re-drive if
        the recipient did not get it. Webhook and SMS: sent again with the same delivery id
        (X-Wenming-Delivery-Id), which receivers must dedupe on.
        Call only while holding the dispatcher lock (or with no dispatcher running)."""
        async with self.pool.acquire() as conn:
            status = await conn.execute(
                "UPDATE notify_deliveries SET"
                " status = CASE WHEN channel = 'email' THEN 'unconfirmed' ELSE 'pending' END,"
                " next_attempt_at = $1,"
                " last_error = CASE channel"
                "  WHEN 'inbox' THEN 'in doubt after restart: not written, written now'"
                "  WHEN 'email' THEN 'in doubt after restart: the SMTP server may have accepted it; not sent again"
                " (re-drive if it did not arrive)'"
                "  ELSE 'in doubt after restart: sent again with the same delivery id' END"
                " WHERE status = 'claimed'",
                self.clock(),
            )
        return int(status.split()[-1])

    async def dispatch_once(self) -> int:
        """Claim the due rows (up to a batch) and deliver them; returns how many were claimed."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(_CLAIM, self.clock(), self.config.claim_batch)
            if not rows:
                return 0
            hooks = [r["recipient_id"] for r in rows if r["channel"] == "webhook"]
            secrets = {
                s["recipient_id"]: s["webhook_secret"]
                for s in await conn.fetch(
                    "SELECT recipient_id, webhook_secret FROM notify_recipients WHERE recipient_id = ANY($1)", hooks
                )
            }
        results = await asyncio.gather(
            *(self._deliver(r, secrets.get(r["recipient_id"])) for r in rows), return_exceptions=True
        )
        for res in results:  # every send finished (none orphaned); now let the first failure through
            if isinstance(res, BaseException):
                raise res
        return len(rows)

    async def _deliver(self, row: asyncpg.Record, secret: str | None) -> None:
        out = Outgoing(
            delivery_id=row["delivery_id"],
            event_id=row["event_id"],
            event_type=row["event_type"],
            recipient_id=row["recipient_id"],
            channel=row["channel"],
            address=row["address"],
            subject=row["subject"],
            body=row["body"],
            language=row["language"],
            urgent=row["urgent"],
            secret=secret,
        )
        async with self._sem:
            if out.channel == "inbox":
                await self._deliver_inbox(row, out)
                return
            try:
                provider = await self.channels.send(out)
            except Deferred as exc:
                await self._defer(row, exc)
                return
            except DeliveryError as exc:
                await self._failed(row, exc.reason, exc.permanent)
                return
            except Exception as exc:  # a bug in a provider must not stop the others
                log.exception("notify: unexpected error delivering %s", out.delivery_id)
                await self._failed(row, f"{exc.__class__.__name__}: {exc}", False)
                return
            if self.after_send is not None:
                await self.after_send(out)
            async with self.pool.acquire() as conn, conn.transaction():
                await self._confirm(conn, row, provider)

    async def _deliver_inbox(self, row: asyncpg.Record, out: Outgoing) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO notify_inbox (message_id, recipient_id, event_type, subject, body, urgent, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                out.delivery_id,
                out.recipient_id,
                out.event_type,
                out.subject,
                out.body,
                out.urgent,
                self.clock(),
            )
            if self.after_send is not None:
                await self.after_send(out)
            await self._confirm(conn, row, "inbox")

    async def _confirm(self, conn: Conn, row: asyncpg.Record, provider: str) -> None:
        now = self.clock()
        done = await conn.fetchval(
            "UPDATE notify_deliveries SET status = 'sent', sent_at = $2, provider = $3, last_error = NULL"
            " WHERE delivery_id = $1 AND status = 'claimed' RETURNING true",
            row["delivery_id"],
            now,
            provider,
        )
        if not done:
            return
        event = NotificationSent(
            delivery_id=row["delivery_id"],
            source_event_id=row["event_id"],
            source_event_type=row["event_type"],
            rule=row["rule"],
            recipient_id=row["recipient_id"],
            channel=row["channel"],
            provider=provider,
            attempts=row["attempts"],
            urgent=row["urgent"],
            sent_at=now,
        )
        await _append(self.store, conn, row, event, now)
        self.sent += 1

    async def _defer(self, row: asyncpg.Record, exc: Deferred) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(
                "UPDATE notify_deliveries SET status = 'failed', attempts = attempts - 1, next_attempt_at = $2,"
                " last_error = $3 WHERE delivery_id = $1 AND status = 'claimed'",
                row["delivery_id"],
                self.clock() + timedelta(seconds=exc.retry_in_s),
                exc.reason,
            )

    async def _failed(self, row: asyncpg.Record, reason: str, permanent: bool) -> None:
        now = self.clock()
        async with self.pool.acquire() as conn, conn.transaction():
            if permanent or self.policy.gives_up(row["attempts"]):
                done = await conn.fetchval(
                    "UPDATE notify_deliveries SET status = 'dead', last_error = $2"
                    " WHERE delivery_id = $1 AND status = 'claimed' RETURNING true",
                    row["delivery_id"],
                    reason,
                )
                if done:
                    await _append(self.store, conn, row, failed_event(row, reason, permanent, now), now)
                log.warning("notify: delivery %s dead-lettered: %s", row["delivery_id"], reason)
            else:
                await conn.execute(
                    "UPDATE notify_deliveries SET status = 'failed', last_error = $2, next_attempt_at = $3"
                    " WHERE delivery_id = $1 AND status = 'claimed'",
                    row["delivery_id"],
                    reason,
                    now + self.policy.delay(row["attempts"]),
                )


async def redrive(conn: Conn, delivery_id: UUID | None, now: datetime) -> list[UUID]:
    """Dead-lettered deliveries (one, or all if None), or one unconfirmed e-mail, back to pending."""
    rows = await conn.fetch(
        "UPDATE notify_deliveries SET status = 'pending', attempts = 0, next_attempt_at = $2,"
        " last_error = 're-driven after: ' || coalesce(last_error, '')"
        " WHERE (status = 'dead' AND ($1::uuid IS NULL OR delivery_id = $1))"
        " OR (status = 'unconfirmed' AND delivery_id = $1) RETURNING delivery_id",
        delivery_id,
        now,
    )
    if rows:
        await conn.execute("SELECT pg_notify($1, '')", WAKE_CHANNEL)
    return [r["delivery_id"] for r in rows]


async def report_bounce(store: EventStore, conn: Conn, delivery_id: UUID, reason: str, now: datetime) -> bool:
    """A bounce or a gateway's failure report after the send: the delivery is failed, not sent.
    An `unconfirmed` e-mail (in doubt after a crash) that bounces was sent after all, and failed."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "UPDATE notify_deliveries SET status = 'dead', last_error = $2"
            " WHERE delivery_id = $1 AND status IN ('sent', 'unconfirmed') RETURNING *",
            delivery_id,
            f"bounced: {reason}",
        )
        if row is None:
            return False
        await _append(store, conn, row, failed_event(row, f"bounced: {reason}", True, now), now)
    return True


class ReminderScheduler(Periodic):
    """Fires due deadline reminders into the ledger: once each, never for a closed issue."""

    name = "reminder scheduler"

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        *,
        book: RuleBook | None = None,
        templates: Templates | None = None,
        clock: Callable[[], datetime] = utcnow,
        poll_s: float = 30.0,
    ):
        super().__init__(poll_s)
        self.pool = pool
        self.book = book or default_rules()
        self.templates = templates or default_templates()
        self.clock = clock
        self.place_name = place_namer(settings)

    async def tick(self, now: datetime | None = None) -> int:
        """Fire every reminder due by `now`; returns how many fired (cancelled ones do not count)."""
        now = now or self.clock()
        fired = 0
        async with self.pool.acquire() as conn, conn.transaction():
            due = await conn.fetch(
                "SELECT issue_id, before_hours, deadline, due_at FROM notify_reminders"
                " WHERE fired_at IS NULL AND cancelled_at IS NULL AND due_at <= $1"
                " ORDER BY due_at LIMIT 500 FOR UPDATE SKIP LOCKED",
                now,
            )
            if not due:
                return 0
            directory = await load_directory(conn)
            for r in due:
                key = (r["issue_id"], r["before_hours"], r["deadline"])
                issue = await load_issue(conn, r["issue_id"])
                if issue is None or issue.closed or issue.deadline != r["deadline"] or now >= r["deadline"]:
                    await conn.execute(
                        "UPDATE notify_reminders SET cancelled_at = $4"
                        " WHERE issue_id = $1 AND before_hours = $2 AND deadline = $3",
                        *key,
                        now,
                    )
                    continue
                occ = reminder_occurrence(
                    self.book, DueReminder(r["issue_id"], r["before_hours"], r["deadline"], r["due_at"]), issue
                )
                planned = plan(
                    self.book, self.templates, occ, directory[0], directory[1], now=now, place_name=self.place_name
                )
                await insert_planned(conn, planned)
                await conn.execute(
                    "UPDATE notify_reminders SET fired_at = $4"
                    " WHERE issue_id = $1 AND before_hours = $2 AND deadline = $3",
                    *key,
                    now,
                )
                fired += 1
        return fired


class Digester(Periodic):
    """Gathers each recipient's held messages into one digest delivery when their digest time comes.

    Per (recipient, channel, digest time), in one transaction: the held rows, locked, become
    `digested` (pointing at the digest) and one digest delivery is added as `pending`, its id made
    from what it carries, so a crash or a second digester can neither lose a message nor send a
    digest twice, and a message held late goes out in a digest of its own.
    """

    name = "digester"

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        book: RuleBook | None = None,
        templates: Templates | None = None,
        clock: Callable[[], datetime] = utcnow,
        poll_s: float = 30.0,
    ):
        super().__init__(poll_s)
        self.pool = pool
        self.book = book or default_rules()
        self.templates = templates or default_templates()
        self.clock = clock

    async def tick(self, now: datetime | None = None) -> int:
        """Compose every digest due by `now`; returns how many digests were added."""
        now = now or self.clock()
        made = 0
        async with self.pool.acquire() as conn:
            due = await conn.fetch(
                "SELECT DISTINCT recipient_id, channel, next_attempt_at FROM notify_deliveries"
                " WHERE status = 'held' AND next_attempt_at <= $1 LIMIT 500",
                now,
            )
        for group in due:
            async with self.pool.acquire() as conn, conn.transaction():
                made += await self._compose(
                    conn, group["recipient_id"], group["channel"], group["next_attempt_at"], now
                )
        return made

    async def _compose(self, conn: Conn, rid: str, channel: str, due_at: datetime, now: datetime) -> int:
        """One digest from every message held for (recipient, channel, digest time), locked whole so
        a second digester finds them gone; 0 if there were none left."""
        rows = await conn.fetch(
            "SELECT delivery_id, address, subject, body, created_at FROM notify_deliveries"
            " WHERE status = 'held' AND recipient_id = $1 AND channel = $2 AND next_attempt_at = $3"
            " ORDER BY created_at FOR UPDATE",
            rid,
            channel,
            due_at,
        )
        if not rows:
            return 0
        members = [r["delivery_id"] for r in rows]
        row = await conn.fetchrow("SELECT * FROM notify_recipients WHERE recipient_id = $1", rid)
        if row is None:  # removed since: its held messages go out one by one
            await conn.execute("UPDATE notify_deliveries SET status = 'pending' WHERE delivery_id = ANY($1)", members)
            return 0
        recipient = recipient_from_row(row)
        did = digest_id(rid, channel, due_at, members)
        msg = compose_digest(
            self.templates, recipient, [Held(r["subject"], r["body"], r["created_at"]) for r in rows], due_at
        )
        digest = Planned(
            delivery_id=did,
            event_id=did,
            event_type=DIGEST_EVENT_TYPE,
            rule="personal-digest",
            rules_version=self.book.version,
            recipient_id=rid,
            channel=channel,  # type: ignore[arg-type]
            address=rows[-1]["address"],
            language=recipient.language,
            subject=msg.subject,
            body=msg.body,
            urgent=False,
            not_before=release_at(recipient, now, urgent=False),
            grid_path=recipient.grid_path,
        )
        await conn.execute(
            "UPDATE notify_deliveries SET status = 'digested', digest_id = $2 WHERE delivery_id = ANY($1)", members, did
        )
        await insert_planned(conn, [digest])
        return 1
