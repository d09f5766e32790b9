"""Helpers of the attack suite: a one-handler aiohttp server on loopback, and a client of it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from magicwan import MagicWAN

__all__ = ["Handler", "client_of", "envelope", "tiny_server"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def tiny_server(handler: Handler) -> AsyncIterator[str]:
    """One handler for every path; yields the base URL (``.../client/v4``)."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/client/v4"
    finally:
        await runner.cleanup()


def envelope(result: Any) -> bytes:
    return json.dumps({"success": True, "errors": [], "messages": [], "result": result}).encode()


def client_of(base_url: str, **kwargs: Any) -> MagicWAN:
    kwargs.setdefault("rate_limit", None)
    return MagicWAN(api_token="tok-attack-0123456789", base_url=base_url, environ={}, **kwargs)
