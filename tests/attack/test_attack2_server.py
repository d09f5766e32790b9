"""Second review: a hostile or broken server. Small aiohttp servers on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web

from tests.attack.attack_support import client_of, envelope, tiny_server
from tests.support.constants import ACCOUNT, TUNNEL

pytestmark = pytest.mark.asyncio


async def test_a_set_answer_applying_another_psk_keeps_the_psk_received(tmp_path: Path) -> None:
    # method="set". The server answers 200 "successfully applied" for the tunnel, but with a
    # PSK other than the one sent (a server that makes its own key for weak input, a
    # gateway mixing up two requests, a version that normalises the value). The SDK sees
    # the mismatch, raises UnexpectedResponseError inside the converter, retries, and in
    # the end hands over a failure carrying the PSK it SENT; the PSK it RECEIVED, which
    # the server says the tunnel now holds, is in no outcome and no journal line.
    # README: "never drops a PSK it received, whatever fails next".
    theirs = "server-chosen-psk-0123456789abcd"

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        applied = {
            item["id"]: {
                "ipsec_tunnel_id": item["id"],
                "psk": theirs,
                "psk_metadata": {"last_generated_on": "2030-01-01T00:00:00.123456Z"},
            }
            for item in body["psks"]
        }
        result = {"successfully_applied_psks": applied, "unapplied_psks": {}}
        return web.Response(body=envelope(result), content_type="application/json")

    path = tmp_path / "j.jsonl"
    async with tiny_server(handler) as base, client_of(base, max_retries=1) as client:
        rotation = client.tunnels.ipsec.psk.rotate(ACCOUNT, [TUNNEL], method="set", journal=path)
        async with rotation:
            [outcome] = [o async for o in rotation]
    assert not outcome.ok
    held = [outcome.psk]
    assert theirs in held or theirs in path.read_text(), (
        f"{type(outcome.error).__name__}: the server applied a PSK the SDK received, and it "
        "is in no outcome and no journal line"
    )
