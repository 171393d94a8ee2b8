"""The live feed: full panel snapshots in a numbered sequence per area, served as Server-Sent Events.

Design of the ids (what makes a resumed stream provably whole):
- Each feed (one grid area, with or without the stream-health panel) numbers its messages
  1, 2, 3 ... without gaps; a message is one panel's full snapshot, sent only when it changed.
  The SSE id is `<epoch>.<seq>`; the epoch is this process's random start tag.
- A new connection gets one `snapshot` event (every panel, id = the current seq), then every
  later `panel` event in order. The page checks `seq == last + 1` on each one: a gap is a missed
  update, a repeat a doubled one, and it counts both.
- A connection with Last-Event-ID `<epoch>.<n>` of this process, with n still in the feed's
  recent log, gets exactly the messages n+1 ... in order and nothing else. Any other id (an old
  process, a log that has moved on) gets a fresh `snapshot` whose `reason` says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from services.dashboard.health import StreamHealth
from services.dashboard.panels import INSPECTION_PANELS, SLOW_PANELS, Panel, PanelReader
from shared.campaign_time import utcnow

log = logging.getLogger(__name__)

MAX_LOG_ENTRIES = 600
MAX_LOG_BYTES = 16 * 1024 * 1024
IDLE_FEED_S = 600.0
"""A feed nobody watches is dropped after this long (a resume after that gets a snapshot)."""
HEARTBEAT_S = 15.0


@dataclass(frozen=True, slots=True)
class EventId:
    epoch: str
    seq: int

    def __str__(self) -> str:
        return f"{self.epoch}.{self.seq}"


def parse_event_id(raw: str | None) -> EventId | None:
    """`<epoch>.<seq>` or None if absent or malformed."""
    if not raw:
        return None
    epoch, _, seq = raw.strip().partition(".")
    if not epoch or not seq.isdigit() or len(seq) > 18:
        return None
    return EventId(epoch, int(seq))


def sse(event: str, event_id: str, data: bytes) -> bytes:
    """One SSE message (data is one line of JSON)."""
    return b"event: " + event.encode() + b"\nid: " + event_id.encode() + b"\ndata: " + data + b"\n\n"


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    panel: str
    data: bytes
    """The panel's snapshot as JSON."""
    message: bytes
    """The whole SSE message, ready to send."""


@dataclass
class Feed:
    """The numbered messages of one area: the recent log, each panel's latest snapshot, and a
    condition that wakes the connections when a message is added."""

    key: tuple[str, bool]
    epoch: str
    seq: int = 0
    log: deque[Entry] = field(default_factory=deque)
    log_bytes: int = 0
    latest: dict[str, Entry] = field(default_factory=dict)
    watchers: int = 0
    idle_since: float = field(default_factory=time.monotonic)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def area(self) -> str:
        return self.key[0]

    def event_id(self, seq: int) -> str:
        return str(EventId(self.epoch, seq))

    def offer(self, panel: str, snapshot: Panel) -> bool:
        """Add the panel's snapshot as the next message if it differs from the last one sent."""
        data = orjson.dumps(snapshot, option=orjson.OPT_SORT_KEYS)
        last = self.latest.get(panel)
        if last is not None and last.data == data:
            return False
        self.seq += 1
        body = b'{"panel":"' + panel.encode() + b'","seq":' + str(self.seq).encode() + b',"data":' + data + b"}"
        entry = Entry(self.seq, panel, data, sse("panel", self.event_id(self.seq), body))
        self.log.append(entry)
        self.log_bytes += len(entry.message)
        self.latest[panel] = entry
        while len(self.log) > MAX_LOG_ENTRIES or (self.log_bytes > MAX_LOG_BYTES and len(self.log) > 1):
            self.log_bytes -= len(self.log.popleft().message)
        return True

    def snapshot(self, reason: str) -> bytes:
        """Every panel's latest snapshot as one `snapshot` event with the current seq as its id."""
        panels = b",".join(b'"' + p.encode() + b'":' + e.data for p, e in sorted(self.latest.items()))
        body = (
            b'{"seq":' + str(self.seq).encode() + b',"epoch":"' + self.epoch.encode() + b'","reason":"'
            b"" + reason.encode() + b'","area":' + orjson.dumps(self.area) + b',"panels":{' + panels + b"}}"
        )
        return sse("snapshot", self.event_id(self.seq), body)

    def after(self, seq: int) -> list[Entry] | None:
        """The messages after `seq` in order, or None if some of them have left the log."""
        if seq >= self.seq:
            return []
        first = self.log[0].seq if self.log else self.seq + 1
        if seq < first - 1:
            return None
        return list(itertools.islice(self.log, seq - first + 1, None))

    def opening(self, last_event_id: str | None) -> tuple[list[bytes], int, str]:
        """What a connection gets first, the seq it has then reached, and how it started:
        `resumed` (exact replay after Last-Event-ID) or the reason for a fresh snapshot."""
        last = parse_event_id(last_event_id)
        if last is None:
            reason = "fresh"
        elif last.epoch != self.epoch:
            reason = "restarted"
        elif last.seq > self.seq:
            reason = "unknown-id"
        else:
            replay = self.after(last.seq)
            if replay is not None:
                return [e.message for e in replay], self.seq, "resumed"
            reason = "expired"
        return [self.snapshot(reason)], self.seq, reason

    async def wait_beyond(self, seq: int, timeout: float) -> bool:
        """Wait until a message after `seq` exists; False on timeout."""
        async with self.changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait_for(lambda: self.seq > seq), timeout)
        return self.seq > seq

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()


class FeedHub:
    """Keeps one feed per watched area fresh: the problem-list panels every `poll_s` (~300 ms),
    the scoring and volunteer panels about once a second, stream health as sampled."""

    def __init__(
        self,
        reader: PanelReader,
        health: StreamHealth | None,
        *,
        poll_s: float = 0.3,
        slow_every: int = 3,
        clock: Callable[[], datetime] = utcnow,
    ):
        self.reader = reader
        self.health = health
        self.poll_s = poll_s
        self.slow_every = max(1, slow_every)
        self.clock = clock
        self.epoch = secrets.token_hex(4)
        self.feeds: dict[tuple[str, bool], Feed] = {}
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._tick = 0

    def stop(self) -> None:
        self._stop.set()

    async def feed(self, area: str, with_health: bool) -> Feed:
        """The area's feed, created with its first snapshots if nobody watched it yet."""
        key = (area, with_health)
        async with self._lock:
            feed = self.feeds.get(key)
            if feed is None:
                feed = Feed(key, self.epoch)
                await self.refresh(feed, slow=True)
                self.feeds[key] = feed
            return feed

    async def refresh(self, feed: Feed, *, slow: bool) -> int:
        """Read the feed's panels and add those that changed; returns how many were added."""
        names = INSPECTION_PANELS + (SLOW_PANELS if slow else ())
        panels: dict[str, Any] = await self.reader.read(feed.area, names, self.clock())
        if feed.key[1] and self.health is not None:
            panels["health"] = self.health.latest
        added = sum(feed.offer(name, panel) for name, panel in panels.items())
        if added:
            await feed.notify()
        return added

    async def run(self) -> None:
        """Refresh every feed until stopped; drop feeds idle for longer than IDLE_FEED_S."""
        while not self._stop.is_set():
            started = time.monotonic()
            slow = self._tick % self.slow_every == 0
            self._tick += 1
            async with self._lock:
                for key, feed in list(self.feeds.items()):
                    if feed.watchers == 0 and started - feed.idle_since > IDLE_FEED_S:
                        del self.feeds[key]
                        continue
                    try:
                        await self.refresh(feed, slow=slow)
                    except Exception:
                        log.exception("dashboard feed %s: refresh failed", feed.area)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(0.0, self.poll_s - (time.monotonic() - started)))

    async def stream(self, feed: Feed, last_event_id: str | None) -> AsyncIterator[bytes]:
        """The SSE body for one connection: the opening, then each new message in order."""
        messages, seq, how = feed.opening(last_event_id)
        feed.watchers += 1
        try:
            yield b"retry: 1000\n\n"
            yield b": " + how.encode() + b"\n\n"
            for m in messages:
                yield m
            while not self._stop.is_set():
                if not await feed.wait_beyond(seq, HEARTBEAT_S):
                    yield b": ping\n\n"
                    continue
                batch = feed.after(seq)
                if batch is None:  # this connection fell behind the log: start it afresh
                    yield feed.snapshot("lagging")
                    seq = feed.seq
                    continue
                for entry in batch:
                    yield entry.message
                    seq = entry.seq
        finally:
            feed.watchers -= 1
            feed.idle_since = time.monotonic()
