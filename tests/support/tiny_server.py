"""A one-handler aiohttp server on loopback, and a client of it: for the answers no real
server (nor the emulator) gives, a PSK other than the one sent, a body coded oddly, an error
that quotes a secret."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from magicwan import MagicWAN

__all__ = [
    "THEIRS",
    "TOKEN",
    "Handler",
    "applies_its_own_psk",
    "client_of",
    "envelope",
    "tiny_server",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The API token :func:`client_of` sends.
TOKEN = "tok-loopback-0123456789"


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
    return MagicWAN(api_token=TOKEN, base_url=base_url, environ={}, **kwargs)


#: The PSK a hostile bulk set says it applied, whatever was sent.
THEIRS = "server-chosen-psk-0123456789abcd"


async def applies_its_own_psk(request: web.Request) -> web.StreamResponse:
    """A bulk set that says "applied", with :data:`THEIRS` instead of the PSK sent (and
    that ignores ?validate_only=true, as behind a gateway that drops the query)."""
    body = await request.json()
    applied = {
        item["id"]: {
            "ipsec_tunnel_id": item["id"],
            "psk": THEIRS,
            "psk_metadata": {"last_generated_on": "2030-01-01T00:00:00.123456Z"},
        }
        for item in body["psks"]
    }
    result = {"successfully_applied_psks": applied, "unapplied_psks": {}}
    return web.Response(body=envelope(result), content_type="application/json")
