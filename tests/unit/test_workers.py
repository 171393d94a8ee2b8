"""Background workers never die in silence: a dead worker shows in the status, and a process run
by `serve` exits with code 70 so its supervisor restarts it."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap

import pytest

from shared.settings import ROOT
from shared.workers import EXIT_WORKER_FAILED, Workers, on_worker_failure


class Loop:
    """A worker that loops until stopped, or fails after `fail_after` seconds."""

    def __init__(self, fail_after: float | None = None, returns: bool = False):
        self.fail_after = fail_after
        self.returns = returns
        self._stop = asyncio.Event()

    async def run(self) -> None:
        if self.fail_after is not None:
            await asyncio.sleep(self.fail_after)
            if self.returns:
                return
            raise RuntimeError("cursor is closed")
        await self._stop.wait()

    def stop(self) -> None:
        self._stop.set()


async def test_a_worker_that_raises_is_reported_failed_and_the_hook_runs() -> None:
    died: list[str] = []
    on_worker_failure(died.append)
    try:
        workers = Workers()
        workers.start("steady", Loop())
        workers.start("broken", Loop(fail_after=0.01))
        await asyncio.sleep(0.1)
        assert died == ["broken"]
        assert workers.status() == {"steady": "running", "broken": "failed: RuntimeError: cursor is closed"}
        await workers.stop(timeout=5)
        assert workers.status()["steady"] == "stopped"
    finally:
        on_worker_failure(None)


async def test_a_worker_that_returns_unasked_is_failed_but_one_asked_to_stop_is_not() -> None:
    workers = Workers()
    workers.start("quitter", Loop(fail_after=0.01, returns=True))
    workers.start("asked", Loop())
    await workers.stop_one("asked", timeout=5)
    await asyncio.sleep(0.1)
    assert workers.failed == {"quitter": "returned without being stopped"}
    assert workers.status()["asked"] == "stopped"
    await workers.stop(timeout=5)
    assert set(workers.failed) == {"quitter"}


async def test_a_worker_that_ignores_stop_is_cancelled_after_the_timeout() -> None:
    class Deaf:
        async def run(self) -> None:
            await asyncio.sleep(3600)

        def stop(self) -> None:
            pass

    workers = Workers()
    workers.start("deaf", Deaf())
    await workers.stop(timeout=0.1)
    assert workers.task("deaf").cancelled()
    assert workers.failed == {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(60)
def test_a_served_process_whose_worker_dies_exits_70() -> None:
    script = textwrap.dedent(
        f"""
        import asyncio
        from contextlib import asynccontextmanager
        from fastapi import FastAPI
        from shared.service import serve
        from shared.workers import Workers

        class Broken:
            async def run(self):
                await asyncio.sleep(0.5)
                raise ConnectionAbortedError("broker gone")
            def stop(self):
                pass

        @asynccontextmanager
        async def lifespan(app):
            workers = Workers()
            workers.start("broken", Broken())
            yield
            await workers.stop(timeout=5)

        serve(FastAPI(lifespan=lifespan), {_free_port()}, "127.0.0.1")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert proc.returncode == EXIT_WORKER_FAILED, proc.stderr
    assert "worker broken died (ConnectionAbortedError: broker gone)" in proc.stderr
