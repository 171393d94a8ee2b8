"""A service's background workers (projection runners, dispatchers, watchers): started with the
app, stopped with it, and never allowed to die in silence.

A worker whose task ends on its own, by an exception its own retry loop did not expect or by
returning while nobody asked it to stop, is a broken process: its HTTP side would go on answering
while its events pile up unread. So the failure is logged with its traceback, `/healthz` answers 503,
and, in a process started by `shared.service.serve`, the process shuts down cleanly and exits with
code 70 so its supervisor (the demo, systemd, Kubernetes) starts it again from the stored offsets
and ledgers, exactly as after a kill -9.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from shared.db import DB_ERRORS

log = logging.getLogger(__name__)

EXIT_WORKER_FAILED = 70
"""The exit code of a service process whose worker died (EX_SOFTWARE)."""

FailureHook = Callable[[str], None]
_on_failure: FailureHook | None = None


def on_worker_failure(hook: FailureHook | None) -> None:
    """Set what the process does when a worker dies (`serve` sets: shut down and exit 70)."""
    global _on_failure
    _on_failure = hook


class Worker(Protocol):
    """Anything with a `run()` loop and a `stop()` that makes that loop return."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...


class Periodic(ABC):
    """A worker that calls `tick()` every `every_s` seconds until stopped. A database or network
    error is logged and the next tick tries again; anything else ends the worker (see `Workers`)."""

    name = "periodic worker"

    def __init__(self, every_s: float):
        self.every_s = every_s
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.tick()
            except DB_ERRORS as exc:
                log.warning("%s: %s", self.name, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.every_s)

    @abstractmethod
    async def tick(self, now: datetime | None = None) -> int:
        """Do what is due by `now` (default: the clock); returns how much was done."""


@dataclass
class _Running:
    task: asyncio.Task[None]
    stop: Callable[[], None]


class Workers:
    """The running workers of one service, by name."""

    def __init__(self) -> None:
        self._running: dict[str, _Running] = {}
        self._stopping = False
        self._asked_to_stop: set[str] = set()
        self.failed: dict[str, str] = {}
        """Name -> what ended it, for every worker that died."""

    def start(self, name: str, worker: Worker) -> None:
        self.start_coroutine(name, worker.run(), worker.stop)

    def start_coroutine(self, name: str, run: Coroutine[Any, Any, None], stop: Callable[[], None]) -> None:
        if name in self._running:
            raise ValueError(f"worker {name} already started")
        task = asyncio.create_task(run, name=name)
        self._running[name] = _Running(task, stop)
        task.add_done_callback(lambda t: self._ended(name, t))

    def task(self, name: str) -> asyncio.Task[None]:
        return self._running[name].task

    def _ended(self, name: str, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()  # retrieved in every case, so asyncio never warns it was not
        if self._stopping or name in self._asked_to_stop:
            if exc is not None:
                log.warning("worker %s ended with %s while stopping", name, exc.__class__.__name__)
            return
        what = f"{exc.__class__.__name__}: {exc}" if exc is not None else "returned without being stopped"
        self.failed[name] = what
        log.critical("worker %s died (%s); the service is unhealthy", name, what, exc_info=exc)
        if _on_failure is not None:
            _on_failure(name)

    def status(self) -> dict[str, str]:
        """Each worker's state: running, stopped, or failed with what ended it."""
        out = {}
        for name, r in self._running.items():
            if name in self.failed:
                out[name] = f"failed: {self.failed[name]}"
            else:
                out[name] = "stopped" if r.task.done() else "running"
        return out

    async def stop(self, timeout: float = 30) -> None:
        """Ask every worker to stop, wait for each (up to `timeout`), cancel the ones that do not."""
        self._stopping = True
        for r in self._running.values():
            r.stop()
        for name in self._running:
            await self._wait_stopped(name, timeout)

    async def stop_one(self, name: str, timeout: float = 30) -> None:
        """Stop one worker (e.g. a projection runner before its rebuild); the others go on."""
        self._asked_to_stop.add(name)
        self._running[name].stop()
        await self._wait_stopped(name, timeout)

    async def _wait_stopped(self, name: str, timeout: float) -> None:
        task = self._running[name].task
        if task.done():
            return
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            log.warning("worker %s did not stop within %.0f s; cancelled", name, timeout)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
