"""Helpers for the integration tests.

``serve()`` is ``magicwan.emulator.run()`` serving a given state, optionally with an outer
middleware (a :class:`Tracker`) that sees every request the emulator serves, so a test can
measure at the server how many requests were in flight at once, per tunnel and in total, and
when each arrived. Everything else (state, app, handlers, faults, limiter) is the shipped
emulator.

``FastTime`` speeds up the *client's* clock and sleep (both injectable by design): backoff and
``Retry-After`` cooldowns then take a fraction of a real second, so a rotation through thousands
of injected faults runs in seconds. Requests, sockets and the emulator stay real.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from magicwan import MagicWAN
from magicwan.emulator import Emulator, EmulatorState, run

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Tracker:
    """Counts requests in flight at the emulator (total and per tunnel) and their arrivals."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.max_in_flight = 0
        self.per_tunnel: Counter[str] = Counter()
        self.max_per_tunnel: Counter[str] = Counter()
        #: (monotonic arrival time, method, path) of every API request.
        self.arrivals: list[tuple[float, str, str]] = []
        #: (monotonic time, status) of every answer that left the handler.
        self.answers: list[tuple[float, int]] = []

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    @web.middleware
    async def middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        if not request.path.startswith("/client/v4/"):
            return await handler(request)
        parts = request.path.split("/")
        tunnel = parts[7] if len(parts) > 7 else ""
        self.arrivals.append((time.monotonic(), request.method, request.path))
        self.in_flight += 1
        self.per_tunnel[tunnel] += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.max_per_tunnel[tunnel] = max(self.max_per_tunnel[tunnel], self.per_tunnel[tunnel])
        try:
            resp = await handler(request)
            self.answers.append((time.monotonic(), resp.status))
            return resp
        finally:
            self.in_flight -= 1
            self.per_tunnel[tunnel] -= 1


@asynccontextmanager
async def serve(state: EmulatorState, *, tracker: Tracker | None = None) -> AsyncIterator[Emulator]:
    """Serve ``state`` on a free loopback port with ``magicwan.emulator.run()``."""
    middlewares = [tracker.middleware] if tracker is not None else []  # outermost: sees all
    async with run(state=state, middlewares=middlewares, shutdown_timeout=1.0) as emulator:
        yield emulator


class FastTime:
    """A client clock and sleep running ``factor`` times faster than real time."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def clock(self) -> float:
        return time.monotonic() * self.factor

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds / self.factor)


def make_client(
    emu: Emulator,
    *,
    auth: str = "token",
    fast: float | None = None,
    **kwargs: Any,
) -> MagicWAN:
    """A real client of ``emu``; client-side rate limiting off unless ``rate_limit`` is given."""
    kwargs.setdefault("rate_limit", None)
    if fast is not None:
        fast_time = FastTime(fast)
        kwargs.setdefault("clock", fast_time.clock)
        kwargs.setdefault("sleep", fast_time.sleep)
    if auth == "token":
        return MagicWAN(api_token=emu.api_token, base_url=emu.base_url, **kwargs)
    return MagicWAN(api_email=emu.api_email, api_key=emu.api_key, base_url=emu.base_url, **kwargs)


def journal_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a journal, parsed (fails on a line that is not JSON)."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [line for line in lines if line.get("event") != "journal"]  # not the header


def ray_recorder() -> tuple[aiohttp.TraceConfig, list[str | None]]:
    """A TraceConfig that records the ``cf-ray`` header of every response, in order."""
    rays: list[str | None] = []

    async def on_end(
        session: aiohttp.ClientSession,
        ctx: Any,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        rays.append(params.response.headers.get("cf-ray"))

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_end)
    return trace, rays


def rotation_tasks() -> list[asyncio.Task[Any]]:
    """Pending tasks running magicwan's rotation, transport or journal code."""
    found = []
    for task in asyncio.all_tasks():
        if task is asyncio.current_task() or task.done():
            continue
        code = getattr(task.get_coro(), "cr_code", None)
        parts = Path(code.co_filename).parts if code is not None else ()
        # The package's own folders, not the checkout's (which may be named anything).
        if "magicwan" in parts and "emulator" not in parts[parts.index("magicwan") :]:
            found.append(task)
    return found
