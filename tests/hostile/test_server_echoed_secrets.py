"""A server that echoes a secret (the API token, a PSK sent or received) in an error body, a
header, a refusal reason or a key: the secret never reaches an error, a log line or the
command's output. Tiny servers on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import web

from magicwan import MagicWAN, MagicWANError
from magicwan.journal import read_journal
from tests.support.cli import magicwan
from tests.support.constants import ACCOUNT, TUNNEL
from tests.support.secrets import assert_no_secret, exception_texts, log_texts
from tests.support.tiny_server import TOKEN, client_of, envelope, tiny_server

pytestmark = pytest.mark.asyncio

#: A Cloudflare API token is 40 characters long.
TOKEN40 = "tokEXCERPTq1w2e3r4t5y6u7i8o9p0a1s2d3f4g5"


async def test_an_error_excerpt_never_shows_part_of_the_api_token() -> None:
    # A gateway answers a 502 page that is not an envelope: the error keeps a short excerpt
    # of the body. The body holds a long "psk" member (redaction shrinks it), then an echo
    # of the request headers whose token is cut by the excerpt's byte limit. Not even part
    # of the token may show (SECURITY.md: "The client's own token or API key is also
    # replaced wherever it appears"): half an API token in an error message, then in the
    # logs, the journal and the CLI's summary, is still a credential leak.
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
    # (the PSK it may just have stored). The PSK member is redacted whatever the message's
    # type (SECURITY.md: "every "psk": "..." member is replaced by [REDACTED]").
    psk = "pskSECRET-message-object-0123456789"

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


async def test_a_bulk_set_refusal_reason_quoting_the_psk_is_scrubbed(tmp_path: Path) -> None:
    # Cloudflare's reason for not applying a PSK may echo its input ("psk 'abc...' is too
    # weak"). The PSK sent never shows in the NotAppliedError, and so in neither the
    # journal's failed line nor the CLI's stderr.
    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        unapplied = {item["id"]: f"psk {item['psk']!r} is too weak" for item in body["psks"]}
        result = {"successfully_applied_psks": {}, "unapplied_psks": unapplied}
        return web.Response(body=envelope(result), content_type="application/json")

    async with tiny_server(handler) as base, client_of(base) as client:
        rotation = client.tunnels.ipsec.psk.rotate(
            ACCOUNT, [TUNNEL], method="set", journal=tmp_path / "j.jsonl"
        )
        async with rotation:
            outcomes = [o async for o in rotation]
    [outcome] = outcomes
    assert not outcome.ok
    sent = next(
        json.loads(line)["psk"]
        for line in (tmp_path / "j.jsonl").read_text().splitlines()
        if '"intent"' in line
    )
    assert_no_secret(exception_texts(outcome.error), [sent], "NotAppliedError")


async def test_a_cf_ray_header_echoing_the_token_is_scrubbed_from_the_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A gateway that reflects request headers into its answer's (here: Authorization into
    # cf-ray). SECURITY.md: "The client's own token or API key is also replaced wherever it
    # appears": in the error (which carries the cf-ray) and in every DEBUG log line.
    import logging

    token = TOKEN

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        echoed = request.headers.get("Authorization", "")
        body = json.dumps(
            {"success": False, "errors": [{"code": 10001, "message": "x"}], "messages": []}
        )
        return web.Response(
            body=body, status=503, content_type="application/json", headers={"cf-ray": echoed}
        )

    caplog.set_level(logging.DEBUG, logger="magicwan")
    async with tiny_server(handler) as base, client_of(base, max_retries=0) as client:
        with pytest.raises(MagicWANError) as caught:
            await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    assert_no_secret(exception_texts(caught.value), [token], "the error")
    assert_no_secret(log_texts(caplog.records), [token], "the log")


async def test_a_set_answer_keyed_by_the_psk_never_prints_the_psk(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # `magicwan psk set ACCOUNT TUNNEL --journal J` (no --show-psk) against a server whose
    # bulk-set answer keys its refusal by the offending value instead of the tunnel id:
    # `"unapplied_psks": {"<the PSK sent>": "invalid psk"}`. The answer is refused without
    # quoting its keys: the PSK sent is printed nowhere.
    async def keyed_by_psk(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        refused = {item["psk"]: "invalid psk" for item in body["psks"]}
        result = {"successfully_applied_psks": {}, "unapplied_psks": refused}
        return web.Response(body=envelope(result), content_type="application/json")

    path = tmp_path / "j.jsonl"
    async with tiny_server(keyed_by_psk) as base:
        monkeypatch.setenv("CLOUDFLARE_BASE_URL", base)
        monkeypatch.setenv("CLOUDFLARE_API_TOKEN", TOKEN)
        result = await magicwan("psk", "set", ACCOUNT, TUNNEL, "--journal", str(path))
    sent = {record.pending_psk for record in read_journal(path).values()} - {None}
    assert sent  # the intent line holds the PSK sent
    printed = [psk for psk in sent if psk is not None and psk in result.out + result.err]
    assert not printed, f"exit {result.code}: the PSK sent is printed: {result.err!r}"
