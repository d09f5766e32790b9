"""Fourth review: a hostile or broken server. Small aiohttp servers on 127.0.0.1."""

from __future__ import annotations

import pytest
from aiohttp import web

from magicwan import MagicWAN, MagicWANError
from tests.support.constants import ACCOUNT, TUNNEL
from tests.support.secrets import exception_texts
from tests.support.tiny_server import client_of, tiny_server

pytestmark = pytest.mark.asyncio

#: A Cloudflare API token is 40 characters long.
TOKEN40 = "tokATTACK4q1w2e3r4t5y6u7i8o9p0a1s2d3f4g5"


async def test_an_error_excerpt_never_shows_part_of_the_api_token() -> None:
    # A gateway answers a 502 page that is not an envelope: the error keeps an excerpt of
    # the body (at most 200 characters). excerpt() decodes the first 1,600 bytes, redacts,
    # then cuts at 200 characters. Redaction shrinks the text (a long "psk" member becomes
    # "[REDACTED]"), so a body whose first 1,600 bytes hold a long psk member followed by an
    # echo of the request headers ends, after redaction, well within 200 characters, and
    # the echo of the token cut at byte 1,600 is no longer the whole token: the
    # `text.replace(token)` misses it and its first 28 characters are shown. SECURITY.md:
    # "The client's own token or API key is also replaced wherever it appears." Half an
    # API token in an error message (then in logs, the journal's failed line, the CLI's
    # summary) is a credential leak.
    filler = '{"psk":"' + "x" * 1539 + '"}\n'
    echo = f"Authorization: Bearer {TOKEN40}\n"
    cut = 1600 - len(filler.encode()) - len("Authorization: Bearer ")  # token bytes kept
    assert 16 <= cut < len(TOKEN40)

    async def gateway(request: web.Request) -> web.StreamResponse:
        return web.Response(status=502, body=(filler + echo).encode(), content_type="text/html")

    async with (
        tiny_server(gateway) as base,
        MagicWAN(
            api_token=TOKEN40, base_url=base, environ={}, rate_limit=None, max_retries=0
        ) as client,
    ):
        with pytest.raises(MagicWANError) as caught:
            await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    shown = "\n".join([str(caught.value), repr(caught.value), *exception_texts(caught.value)])
    assert TOKEN40[:16] not in shown, f"part of the API token is in the error: {caught.value}"


async def test_an_error_message_that_is_an_object_never_shows_its_psk_member() -> None:
    # A server (or a gateway in front of it) answers a generate with success: false and an
    # error whose "message" is not a string but the object it acted on: {"psk": "..."}
    # (the PSK it may just have stored: a 2xx with success: false is outcome unknown).
    # _details() keeps a non-string message as str(message), the Python repr
    # {'psk': '...'}, and only then redacts: the "psk" pattern wants double quotes, so the
    # PSK goes through whole into str(error), and from there into the journal's failed
    # line, the logs and the CLI's summary. SECURITY.md: "every "psk": "..." member is
    # replaced by [REDACTED]".
    psk = "pskATTACK4-message-object-0123456789"

    async def echoes_the_result(request: web.Request) -> web.StreamResponse:
        body = {
            "success": False,
            "errors": [{"code": 1001, "message": {"ipsec_tunnel_id": TUNNEL, "psk": psk}}],
            "messages": [],
            "result": None,
        }
        return web.json_response(body, status=200)

    async with tiny_server(echoes_the_result) as base, client_of(base, max_retries=0) as client:
        with pytest.raises(MagicWANError) as caught:
            await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    shown = "\n".join([str(caught.value), repr(caught.value), *exception_texts(caught.value)])
    assert psk not in shown, f"the PSK is in the error: {caught.value}"
