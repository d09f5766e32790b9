"""Second review: a hostile or broken server. Small aiohttp servers on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web

from tests.support.constants import ACCOUNT, TUNNEL
from tests.support.tiny_server import client_of, envelope, tiny_server

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


async def test_a_raw_deflate_answer_carrying_a_new_psk_is_decoded() -> None:
    # The client asks for `Accept-Encoding: gzip, deflate`. Many servers and proxies answer
    # `Content-Encoding: deflate` with a RAW deflate stream (no zlib header: the historic
    # IIS / PHP mistake). aiohttp's own decoder accepts it (http_parser.DeflateBuffer falls
    # back to raw deflate when the first byte is not a zlib header); the SDK now decodes
    # bodies itself (_http._read, zlib.MAX_WBITS only) and calls that body "a deflate body
    # that does not decompress". On psk_generate, the answer that carries the new PSK is
    # thrown away as an unknown outcome: retried (each retry makes and drops another PSK),
    # then a failure, while the tunnel holds a PSK that reached the client and was dropped.
    import zlib

    psk = "deflated-psk-0123456789abcdefgh"
    body = envelope(
        {
            "ipsec_tunnel_id": TUNNEL,
            "psk": psk,
            "psk_metadata": {"last_generated_on": "2030-01-01T00:00:00.123456Z"},
        }
    )
    squeezer = zlib.compressobj(wbits=-zlib.MAX_WBITS)  # raw deflate
    raw = squeezer.compress(body) + squeezer.flush()

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.Response(
            body=raw, headers={"Content-Encoding": "deflate", "Content-Type": "application/json"}
        )

    async with tiny_server(handler) as base, client_of(base, max_retries=0) as client:
        result = await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    assert result.psk == psk


@pytest.mark.parametrize(
    "extra",
    [{"psk_metadata": "2030-01-01T00:00:00Z"}, {"ipsec_id": ["a.example"]}],
    ids=["metadata_flattened_to_a_stamp", "ipsec_id_a_list"],
)
async def test_metadata_of_the_wrong_type_never_costs_the_psk(extra: dict[str, object]) -> None:
    # README: "Metadata never costs a PSK. An answer that carries a PSK is returned even when
    # its last_generated_on cannot be read". That holds for an odd stamp INSIDE psk_metadata;
    # but psk_metadata itself flattened to the stamp string (or ipsec_id, a fact the SDK only
    # passes on, given as a list) fails the whole result's structuring: the answer carrying
    # the new, live PSK is an UnexpectedResponseError, retried as an unknown outcome (every
    # retry makes and drops another PSK), then a failure. The PSK is lost.
    psk = "metadata-psk-0123456789abcdefgh"
    body = envelope({"ipsec_tunnel_id": TUNNEL, "psk": psk, **extra})

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.Response(body=body, content_type="application/json")

    async with tiny_server(handler) as base, client_of(base, max_retries=0) as client:
        result = await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    assert result.psk == psk
