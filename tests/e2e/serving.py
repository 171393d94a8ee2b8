"""Serving apps in-process on free ports, and reading Server-Sent Events, for the dashboard's tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import uvicorn
from fastapi import FastAPI


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """Run the app under uvicorn on a free port of 127.0.0.1; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server stopped before it started")
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 20)


@dataclass
class Event:
    event: str
    id: str
    data: dict[str, Any]

    @property
    def seq(self) -> int:
        return int(self.id.rsplit(".", 1)[1])


class EventReader:
    """Reads SSE events off a streaming httpx response into a queue (a background task), so a
    timed-out wait never breaks the stream."""

    def __init__(self, response: httpx.Response):
        self.response = response
        self.comments: list[str] = []
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        event, eid = "message", ""
        data: list[str] = []
        try:
            async for line in self.response.aiter_lines():
                if line == "":
                    if data:
                        await self._queue.put(Event(event, eid, orjson.loads("\n".join(data))))
                    event, eid, data = "message", "", []
                elif line.startswith(":"):
                    self.comments.append(line[1:].strip())
                else:
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "event":
                        event = value
                    elif name == "id":
                        eid = value
                    elif name == "data":
                        data.append(value)
        except (httpx.HTTPError, asyncio.CancelledError):
            pass
        finally:
            await self._queue.put(None)

    async def next(self, timeout: float = 5.0) -> Event:
        got = await asyncio.wait_for(self._queue.get(), timeout)
        if got is None:
            raise EOFError("stream ended")
        return got

    async def none_within(self, seconds: float) -> bool:
        """True if no event arrives within `seconds`."""
        try:
            await self.next(seconds)
        except TimeoutError:
            return True
        return False

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
