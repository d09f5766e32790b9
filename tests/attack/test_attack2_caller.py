"""Second review: a careless caller of the Python API."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from magicwan import APIConnectionError
from tests.support.constants import ACCOUNT, TUNNEL
from tests.support.tiny_server import client_of, envelope, tiny_server


async def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()


def test_a_session_of_another_event_loop_fails_with_an_sdk_error() -> None:
    # The first review made "one client used from two event loops" an APIConnectionError
    # (request_sent=False). README: "Session ownership is explicit: a session you pass is
    # never closed by the client". A caller who keeps one aiohttp session for the process
    # (made in a first asyncio.run(), a startup hook, another thread's loop) and passes it
    # to a client used in the next loop gets aiohttp's bare RuntimeError ("Timeout context
    # manager should be used inside a task") out of psk.generate: not a MagicWANError, no
    # outcome_unknown / request_sent, so the caller cannot tell whether a PSK was generated.
    # _check_loop() only compares loops the SDK itself saw, never the session's own loop.
    requests = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal requests
        requests += 1
        await request.read()
        result = {"ipsec_tunnel_id": TUNNEL, "psk": "psk-0123456789abcdefghij"}
        return web.Response(body=envelope(result), content_type="application/json")

    async def generate(session: aiohttp.ClientSession) -> BaseException | None:
        async with tiny_server(handler) as base:
            client = client_of(base, session=session, max_retries=0)
            try:
                await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
            except BaseException as exc:  # what escapes is the point
                return exc
            finally:
                await client.aclose()
        return None

    first = asyncio.new_event_loop()
    session = first.run_until_complete(_session())
    try:
        raised = asyncio.run(generate(session))
    finally:
        first.run_until_complete(session.close())
        first.close()
    assert isinstance(raised, APIConnectionError), f"raw {type(raised).__name__}: {raised}"
    assert requests == 0 or raised.outcome_unknown
