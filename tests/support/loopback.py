"""The emulator served on loopback with a request tracker, and a client of it on a fast clock.

``serve()`` is ``magicwan.emulator.run()`` serving a given state, optionally with an outer
middleware (a :class:`Tracker`) that sees every request the emulator serves, so a test can
measure at the server how many requests were in flight at once, per tunnel and in total, and
when each arrived. Everything else (state, app, handlers, faults, limiter) is the shipped
emulator.

``make_client(emu, fast=F)`` runs the *client's* clock and sleep F times faster (a
``tests.support.clock.ScaledClock``): backoff and ``Retry-After`` cooldowns then take a fraction
of a real second, so a rotation through thousands of injected faults runs in seconds. Requests,
sockets and the emulator stay real. Helpers that watch the client from outside are in
``tests.support.probes``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from magicwan import MagicWAN
from magicwan.emulator import Emulator, EmulatorState, run
from tests.support.clock import ScaledClock

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
        scaled = ScaledClock(fast)
        kwargs.setdefault("clock", scaled)
        kwargs.setdefault("sleep", scaled.sleep)
    if auth == "token":
        return MagicWAN(api_token=emu.api_token, base_url=emu.base_url, **kwargs)
    return MagicWAN(api_email=emu.api_email, api_key=emu.api_key, base_url=emu.base_url, **kwargs)
