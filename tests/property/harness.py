"""Runs a sequence of commands through a decider the way the service does, checking at each step.

What a service does per command: load the stream (JSON from PostgreSQL), fold it, decide, append.
So the state it decides on is always `fold(decode(encode(history)))`. The harness keeps the state
it gets by evolving step by step, and after every accepted command checks that folding the stored
form of the whole history from the initial state gives the same state. A refused command
(DomainError) must emit nothing and must leave the state it was shown untouched.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson

from shared.decider import Decider, DomainError
from shared.events.envelope import DomainEvent, EventEnvelope
from shared.events.registry import registry

EXAMPLES = int(os.environ.get("WENMING_PROPERTY_EXAMPLES", "200"))
"""Examples per property; raise it for a deeper search (e.g. WENMING_PROPERTY_EXAMPLES=20000)."""

C = TypeVar("C")
S = TypeVar("S")


def stored(events: Iterable[DomainEvent]) -> list[DomainEvent]:
    """The events as the event store gives them back: JSON payloads, decoded (and upcast) by type."""
    out = []
    for e in events:
        data = orjson.loads(orjson.dumps(e.model_dump(mode="json")))
        env = EventEnvelope.model_construct(type=e.event_type, schema_version=e.schema_version, payload=data)  # type: ignore[call-arg]
        out.append(registry.payload(env))
    return out


@dataclass
class Run(Generic[S]):
    state: S
    history: list[DomainEvent] = field(default_factory=list)
    accepted: int = 0
    refused: int = 0
    states: list[S] = field(default_factory=list)
    """The state after each accepted command."""


def play(
    decider: Decider[C, S],
    commands: Sequence[C],
    *,
    prepare: Callable[[C, S], C] | None = None,
) -> Run[S]:
    """Decide every command in turn; `prepare` may fill a command in from the current state
    (as a handler does with what it looked up)."""
    run: Run[S] = Run(decider.initial)
    for raw in commands:
        cmd = prepare(raw, run.state) if prepare is not None else raw
        before = copy.deepcopy(run.state)
        try:
            new = list(decider.decide(cmd, run.state))
        except DomainError:
            run.refused += 1
            assert run.state == before, f"refused {cmd!r} changed the state"
            continue
        assert run.state == before, f"deciding {cmd!r} mutated the state"
        run.accepted += 1
        run.state = decider.fold(new, run.state)
        run.history += new
        run.states.append(run.state)
        replayed = decider.fold(stored(run.history))
        assert replayed == run.state, f"replaying {len(run.history)} stored events differs after {cmd!r}"
    return run


def types(events: Iterable[Any]) -> list[str]:
    return [type(e).__name__ for e in events]
