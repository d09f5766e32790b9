"""A server that echoes a secret (the API token, a PSK sent or received) in an error body, a
header, a refusal reason or a key, in any case, or a read-back error quoting the PSK the client
holds: the secret never reaches an error, a log line or the command's output. Tiny servers on
127.0.0.1, or the emulator behind a middleware."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from magicwan import MagicWAN, MagicWANError, cli, new_psk
from magicwan.emulator import run
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


class _EchoHeldPSK:
    """In front of the emulator: a tunnel's first ``psk_generate`` is a 500 (so the PSK
    that the retry receives is in doubt and is read back), and every read-back of the
    tunnel is a 500 whose message quotes the PSK the client now holds (a buggy backend
    dumping the record it failed on)."""

    def __init__(self) -> None:
        self.generated: list[str] = []
        self.failed_once: set[str] = set()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        parts = request.path.rstrip("/").split("/")
        if parts[-1] == "psk_generate":
            tunnel = parts[-2]
            if tunnel not in self.failed_once:
                self.failed_once.add(tunnel)
                return _failure(500, 10001, "internal error")
            response: web.StreamResponse = await handler(request)
            assert isinstance(response, web.Response)
            assert isinstance(response.body, bytes)
            self.generated.append(json.loads(response.body)["result"]["psk"])
            return response
        if request.method == "GET" and parts[-2] == "ipsec_tunnels" and self.generated:
            return _failure(500, 10001, f"cannot load tunnel: psk={self.generated[-1]} corrupt")
        answer: web.StreamResponse = await handler(request)
        return answer


def _failure(status: int, code: int, message: str) -> web.Response:
    body = {"success": False, "errors": [{"code": code, "message": message}], "messages": []}
    return web.json_response({**body, "result": None}, status=status)


async def test_a_read_back_error_quoting_the_held_psk_never_shows_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # rotate() (generate): the first request is a 500, the retry answers PSK P (in doubt),
    # and the read-back after the settle window fails with a 500 whose message quotes P.
    # The engine wrote "read-back failed: InternalServerError: ... psk=P ..." into a
    # WARNING log line, the outcome's error and (CLI) the JSON line and summary: the SDK
    # holds P, knows it is a secret, and showed it. Expected: P (and every PSK received)
    # is scrubbed from everything the read-back failure puts into text.
    echo = _EchoHeldPSK()
    caplog.set_level(logging.DEBUG, logger="magicwan")
    async with run(tunnels=1, rate_limit=None, middlewares=[echo.middleware]) as emu:
        client = MagicWAN(api_token=emu.api_token, base_url=emu.base_url, environ={}, max_retries=1)
        async with client:
            rotation = client.tunnels.ipsec.psk.rotate(
                emu.account_id, emu.tunnel_ids, settle_window=0.01
            )
            async with rotation:
                outcomes = [outcome async for outcome in rotation]
    assert echo.generated, "the scenario did not run"
    shown = caplog.text + "".join(f"{o.error!s} {o.error!r} {o.unverified}" for o in outcomes)
    for psk in echo.generated:
        assert psk not in shown


class _FoldsCaseInReasons:
    """A bulk set answered with every tunnel refused, the reason quoting the PSK sent
    in upper case (a backend that normalizes what it echoes)."""

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method == "POST" and request.path.endswith("/ipsec_tunnels/psk"):
            sent = (await request.json())["psks"]
            reasons = {item["id"]: f"PSK {item['psk'].upper()} is weak" for item in sent}
            result = {"successfully_applied_psks": {}, "unapplied_psks": reasons}
            body = {"success": True, "errors": [], "messages": [], "result": result}
            return web.json_response(body)
        answer: web.StreamResponse = await handler(request)
        return answer


async def test_a_bulk_set_reason_quoting_the_psk_in_another_case_never_shows_it() -> None:
    # psk.set(): the server refuses the tunnel with a reason that quotes the PSK sent,
    # upper-cased. The answer's keys are scrubbed in any case (the resource's own comment:
    # "a server may fold a key's case"), but a reason only verbatim: result.unapplied and
    # the NotAppliedError of a rotation carried the PSK (folded, which leaves a search of
    # 2**letters: about 2**26 for a 32-character new_psk()). Expected: scrubbed in any case.
    async with run(
        tunnels=1, rate_limit=None, middlewares=[_FoldsCaseInReasons().middleware]
    ) as emu:
        tunnel = emu.tunnel_ids[0]
        psk = new_psk()
        async with MagicWAN(api_token=emu.api_token, base_url=emu.base_url, environ={}) as client:
            result = await client.tunnels.ipsec.psk.set(emu.account_id, {tunnel: psk})
    assert tunnel in result.unapplied
    assert psk.upper() not in result.unapplied[tunnel]


class _FoldsCaseInErrors:
    """A bulk set refused with a 400 whose error message quotes the PSK sent, upper-cased."""

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method == "POST" and request.path.endswith("/ipsec_tunnels/psk"):
            sent = (await request.json())["psks"]
            return _failure(400, 1004, "malformed: " + ",".join(i["psk"].upper() for i in sent))
        answer: web.StreamResponse = await handler(request)
        return answer


async def test_a_bulk_set_error_quoting_the_psk_in_another_case_never_shows_it() -> None:
    # psk.set(): a 400 whose errors[].message quotes the PSK sent, upper-cased: the
    # BadRequestError's text carried it (envelope errors are scrubbed verbatim only).
    async with run(
        tunnels=1, rate_limit=None, middlewares=[_FoldsCaseInErrors().middleware]
    ) as emu:
        psk = new_psk()
        async with MagicWAN(api_token=emu.api_token, base_url=emu.base_url, environ={}) as client:
            with pytest.raises(MagicWANError) as raised:
                await client.tunnels.ipsec.psk.set(emu.account_id, {emu.tunnel_ids[0]: psk})
    assert psk.upper() not in f"{raised.value!s} {raised.value!r}"


class _RefusesQuotingHeldPSK(_EchoHeldPSK):
    """As :class:`_EchoHeldPSK`, and the regeneration that follows the failed read-back is
    refused with a 400 that quotes the PSK the client holds."""

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.endswith("/psk_generate") and len(self.generated) == 1:
            return _failure(400, 1001, f"psk {self.generated[0]} still active: not replaced")
        return await super().middleware(request, handler)


async def test_a_regeneration_error_quoting_the_held_psk_never_shows_it(tmp_path: Path) -> None:
    # rotate() (generate) with a journal: the retry's PSK P is in doubt, the read-back
    # fails, so the engine generates again; that request is refused with a 400 quoting P.
    # The tunnel fails carrying P (right), and str(outcome.error), the journal's `failed`
    # line and `journal show` quote P too. Expected: the PSKs the tunnel may hold are
    # scrubbed from the error texts of its later requests, as a bulk set's are.
    echo = _RefusesQuotingHeldPSK()
    journal = tmp_path / "j.jsonl"
    async with run(tunnels=1, rate_limit=None, middlewares=[echo.middleware]) as emu:
        client = MagicWAN(api_token=emu.api_token, base_url=emu.base_url, environ={}, max_retries=1)
        async with client:
            rotation = client.tunnels.ipsec.psk.rotate(
                emu.account_id, emu.tunnel_ids, settle_window=0.01, journal=journal
            )
            async with rotation:
                (outcome,) = [outcome async for outcome in rotation]
    shown = io.StringIO()
    await cli.amain(["journal", "show", str(journal)], stdout=shown, stderr=shown)
    (held,) = echo.generated
    assert outcome.psk == held  # carried, as it must be
    assert held not in f"{outcome.error!s} {shown.getvalue()}"
