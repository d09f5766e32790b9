"""Second review: a careless deliverer (the caller's own code)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from magicwan import Delivery, MagicWANError
from tests.support.constants import ACCOUNT, TUNNEL
from tests.support.tiny_server import client_of, envelope, tiny_server

pytestmark = pytest.mark.asyncio


class RouterError(Exception):
    """A deliverer's own error type whose __str__ expects attributes set by its usual
    constructor: raised the short way, printing it raises AttributeError."""

    def __str__(self) -> str:
        return f"router {self.router} refused the key"  # type: ignore[attr-defined]


async def test_a_deliverer_error_that_cannot_be_printed_does_not_drop_the_psk() -> None:
    # method="generate" needs no journal. The deliverer raises its own exception type, whose
    # __str__ fails (AttributeError). _deliver() catches the exception, then calls
    # _describe(last, psk) -> str(last) OUTSIDE any try: the AttributeError escapes
    # _deliver, _released() drops the tunnel from _holding, _guard() records it as a crash,
    # and the iteration ends with a raw AttributeError (not an SDK error). The tunnel's new
    # PSK, live at Cloudflare and in no journal, is in no outcome and not in unclaimed.
    psk = "generated-psk-0123456789abcdefgh"

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        result = {
            "ipsec_tunnel_id": TUNNEL,
            "psk": psk,
            "psk_metadata": {"last_generated_on": "2030-01-01T00:00:00.123456Z"},
        }
        return web.Response(body=envelope(result), content_type="application/json")

    async def deliver(delivery: Delivery) -> None:
        raise RouterError()

    seen: list[Any] = []
    raised: BaseException | None = None
    async with tiny_server(handler) as base, client_of(base) as client:
        rotation = client.tunnels.ipsec.psk.rotate(
            ACCOUNT, [TUNNEL], deliver=deliver, deliver_retries=0
        )
        try:
            async with rotation:
                async for outcome in rotation:
                    seen.append(outcome)
        except Exception as exc:  # what escapes is the point
            raised = exc
        seen += rotation.unclaimed
    held = [o.psk for o in seen]
    assert psk in held, "the PSK generated is in no outcome and in no journal"
    assert raised is None or isinstance(raised, MagicWANError), f"raw {raised!r}"
