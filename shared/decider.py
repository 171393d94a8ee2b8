"""The decider pattern: pure `decide(command, state) -> events` and `evolve(state, event) -> state`,
and the one way a service runs a command against the event store."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from shared.events.envelope import DomainEvent
from shared.eventstore import AppendResult, EventMeta, EventStore

C = TypeVar("C")
S = TypeVar("S")


class DomainError(Exception):
    """A command the campaign's rules refuse (HTTP 409); the message says why."""


@dataclass(frozen=True)
class Decider(Generic[C, S]):
    initial: S
    decide: Callable[[C, S], Sequence[DomainEvent]]
    evolve: Callable[[S, DomainEvent], S]

    def fold(self, events: Iterable[DomainEvent], state: S | None = None) -> S:
        s = self.initial if state is None else state
        for e in events:
            s = self.evolve(s, e)
        return s


@dataclass(frozen=True)
class Outcome(Generic[S]):
    result: AppendResult
    state: S
    version: int


async def execute(
    store: EventStore,
    decider: Decider[C, S],
    stream_id: str,
    command: C,
    meta: EventMeta | Callable[[S], EventMeta],
    idempotency_key: str | None = None,
    guard: Callable[[S], None] | None = None,
) -> Outcome[S]:
    """Load the stream, decide, append with the expected version. A repeated idempotency key
    returns the first outcome without deciding again; a concurrent change raises ConcurrencyError.
    `guard` sees the loaded state first (e.g. to refuse a caller outside the aggregate's area);
    `meta` may be made from the loaded state (e.g. the aggregate's grid path)."""
    if idempotency_key is not None:
        first = await store.by_idempotency_key(idempotency_key)
        if first is not None:
            # The first command's stream, which may differ from this one (a retried create that
            # drew a fresh id).
            first_stream = first.envelopes[0].stream_id if first.envelopes else stream_id
            events, version = await store.load_typed(first_stream)
            return Outcome(first, decider.fold(events), version)
    history, version = await store.load_typed(stream_id)
    state = decider.fold(history)
    if guard is not None:
        guard(state)
    new = decider.decide(command, state)
    if not new:
        return Outcome(AppendResult([], duplicate=False), state, version)
    m = meta(state) if callable(meta) else meta
    result = await store.append(stream_id, version, [(e, m) for e in new], idempotency_key)
    if result.duplicate:
        events, version = await store.load_typed(stream_id)
        return Outcome(result, decider.fold(events), version)
    return Outcome(result, decider.fold(new, state), version + len(new))
