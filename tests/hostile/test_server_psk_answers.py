"""Attacks by a hostile or merely unlucky server: small aiohttp servers on 127.0.0.1, and the
emulator itself with a controlled clock."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from magicwan import MagicWANError, UnexpectedResponseError
from magicwan._http import MAX_RESPONSE_BYTES
from magicwan.emulator import EmulatorState, Faults, run
from tests.integration.integration_support import make_client
from tests.support.constants import ACCOUNT, TUNNEL
from tests.support.secrets import assert_no_secret, exception_texts, log_texts
from tests.support.tiny_server import Handler, client_of, envelope, tiny_server

pytestmark = pytest.mark.asyncio

# --- a bulk set refused with a reason that quotes the PSK ----------------------------------


async def test_a_bulk_set_refusal_reason_quoting_the_psk_is_scrubbed(tmp_path: Path) -> None:
    # The SDK knows every PSK it sent in a bulk set (it scrubs them from error envelopes),
    # yet Cloudflare's reason for not applying one ("psk 'abc...' is too weak", a
    # validation message echoing its input) goes verbatim into NotAppliedError's text:
    # outcome.error, the journal's failed line, the CLI's stderr.
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


# --- a compressed body: the 4 MiB limit measured before decompression -----------------------


async def test_a_gzip_bomb_is_refused_like_any_body_over_the_limit() -> None:
    # SECURITY.md: "A response body larger than 4 MiB is refused." The limit is checked
    # against Content-Length, which for a gzip body is the *compressed* size: 40 KiB on the
    # wire inflate to 40 MiB in memory (4 MiB on the wire would be 4 GiB: the process dies).
    pad = "x" * (10 * MAX_RESPONSE_BYTES)
    body = envelope({"ipsec_tunnel_id": TUNNEL, "psk": "A" * 32, "pad": pad})
    squeezed = gzip.compress(body, compresslevel=9)
    assert len(squeezed) < MAX_RESPONSE_BYTES // 50

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.Response(
            body=squeezed,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    async with tiny_server(handler) as base, client_of(base, max_retries=0) as client:
        with pytest.raises(UnexpectedResponseError):
            await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)


# --- a read-back whose stamps happen to fall on a whole second -------------------------------


@pytest.mark.parametrize("micro", [0, 500_000], ids=["whole_second", "whole_millisecond"])
async def test_a_late_store_after_a_round_stamp_is_not_taken_for_the_held_psk(
    tmp_path: Path, micro: int
) -> None:
    # The emulator is honest: microsecond stamps, strictly increasing per tunnel. Only its
    # clock is unlucky: the retry's PSK is stamped 12:00:00.500000 (or 12:00:00.000000).
    # compare_stamps infers a stamp's precision from its *value* (microseconds divisible by
    # 1000 -> "milliseconds", 0 -> "seconds"), so the late store stamped one microsecond
    # later compares equal, and the rotation reports ok=True, verified=True while the edge
    # holds the late PSK that nobody received. With microsecond stamps that is 1 doubtful
    # tunnel in 1,000 (the same test with 12:00:00.500123 regenerates, as it should).
    whole = datetime(2030, 1, 1, 12, 0, 0, micro, tzinfo=UTC)
    now = [whole - timedelta(days=1)]
    state = EmulatorState(tunnels=1, seed=3, rate_limit=None, utcnow=lambda: now[0])
    generates = 0

    @web.middleware
    async def first_one_is_late(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal generates
        if request.path.endswith("/psk_generate"):
            generates += 1
            late = generates == 1
            state.set_faults(Faults(late_store=1.0, late_store_delay=1.2) if late else Faults())
        return await handler(request)

    now[0] = whole
    async with run(state=state, middlewares=[first_one_is_late], shutdown_timeout=2.0) as emu:
        tunnel = emu.tunnel_ids[0]
        async with make_client(emu, timeout=0.2, max_retries=3) as client:
            rotation = client.tunnels.ipsec.psk.rotate(
                emu.account_id, [tunnel], journal=tmp_path / "j.jsonl", settle_window=1.5
            )
            async with rotation:
                [outcome] = [o async for o in rotation]
        edge = emu.state.current_psk(emu.account_id, tunnel)
        stores = len(emu.state.history(emu.account_id, tunnel))
    assert stores >= 2  # the retry's PSK, then the late one
    if outcome.ok:
        assert outcome.psk == edge, (
            f"ok=True, verified={outcome.verified}, but the edge holds the late PSK"
        )


# --- a PSK with a control character, delivered by a program -----------------------------------


async def test_a_psk_with_a_newline_is_not_reported_delivered_when_the_router_got_half(
    tmp_path: Path,
) -> None:
    # The SDK checks every PSK it *sends* (16-128 printable ASCII, no space) but none it
    # *receives*. A generated PSK holding a newline is journalled and handed to the
    # --deliver-exec program as "PSK\n" on stdin: the program reads one line, installs
    # the first half, exits 0, and the rotation says ok=True, delivered=True although the
    # router and the edge now hold different keys.
    from magicwan.delivery import Command

    psk = "first-half-0123456789\nsecond-half-0123456789"
    router = tmp_path / "router"

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        result = {
            "ipsec_tunnel_id": TUNNEL,
            "psk": psk,
            "psk_metadata": {"last_generated_on": "2030-01-01T00:00:00.123456Z"},
        }
        return web.Response(body=envelope(result), content_type="application/json")

    install = Command(["sh", "-c", 'IFS= read -r psk; printf %s "$psk" > "$1"', "sh", str(router)])
    async with tiny_server(handler) as base, client_of(base) as client:
        rotation = client.tunnels.ipsec.psk.rotate(
            ACCOUNT, [TUNNEL], journal=tmp_path / "j.jsonl", deliver=install
        )
        async with rotation:
            [outcome] = [o async for o in rotation]
    if outcome.ok and outcome.delivered:
        assert router.read_text() == outcome.psk, "delivered=True, but the router got half"


# --- a secret echoed in the cf-ray header --------------------------------------------------------


async def test_a_cf_ray_header_echoing_the_token_is_scrubbed_from_the_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # SECURITY.md: "The client's own token or API key is also replaced wherever it appears"
    # (in error messages). The body is scrubbed; the cf-ray header is not: a gateway that
    # reflects request headers into its answer's (here: Authorization into cf-ray) puts the
    # token into str(error), the failed journal line, the CLI's stderr and every DEBUG log
    # line of the request.
    import logging

    token = "tok-attack-0123456789"

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


# --- a bulk set answer that leaves a tunnel out ------------------------------------------------


async def test_a_tunnel_left_out_of_a_bulk_set_answer_carries_the_psk_it_may_hold(
    tmp_path: Path,
) -> None:
    # The emulator applies the whole batch; a gateway (or a paginated, cut or partial answer)
    # drops one tunnel from successfully_applied_psks. The SDK turns "absent from Cloudflare's
    # answer" into NotAppliedError: a *certain* failure (outcome_unknown False, "a rerun
    # cannot fix it"), carrying no PSK (or the tunnel's previous one, from a journal). The
    # edge runs on the PSK that was sent; the outcome does not carry it, and the CLI says
    # "Cloudflare refused this tunnel's PSK" and offers no rerun.
    state = EmulatorState(tunnels=3, seed=5, rate_limit=None)
    left_out = state.tunnel_ids[0]

    @web.middleware
    async def drop_one(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if request.method == "POST" and request.path.endswith("/ipsec_tunnels/psk"):
            assert isinstance(response, web.Response)
            assert response.body is not None
            data = json.loads(bytes(response.body))  # type: ignore[arg-type]
            data["result"]["successfully_applied_psks"].pop(left_out, None)
            response.body = json.dumps(data).encode()
        return response

    async with run(state=state, middlewares=[drop_one]) as emu, make_client(emu) as client:
        path = tmp_path / "j.jsonl"
        rotation = client.tunnels.ipsec.psk.rotate(
            emu.account_id, emu.tunnel_ids, method="set", journal=path
        )
        async with rotation:
            outcomes = {o.tunnel_id: o async for o in rotation}
        edge = emu.state.current_psk(emu.account_id, left_out)
    outcome = outcomes[left_out]
    assert not outcome.ok
    assert outcome.psk == edge or outcome.outcome_unknown, (
        f"{type(outcome.error).__name__}: the edge holds the PSK that was sent, the outcome "
        "carries another (or none), and nothing says the outcome is unknown"
    )


# --- a server (or a gateway) that drops ?validate_only=true ------------------------------------


@web.middleware
async def _drop_the_query(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A gateway that normalises URLs by dropping their query string (or a server version
    that ignores an unknown parameter): validate_only never reaches the emulator."""
    return await handler(request.clone(rel_url=request.rel_url.with_query(None)))


async def test_validate_only_set_through_a_server_that_applies_it_loses_no_psk() -> None:
    # rotate(method="set", validate_only=True): the client makes real PSKs and sends them;
    # no journal is opened ("nothing changes"). The server applies them anyway and says so
    # (successfully_applied_psks, with the PSKs). The SDK turns each into Validated with
    # psk=None: the caller is told nothing changed, and the PSKs now live at the edge are
    # in no journal and no outcome.
    state = EmulatorState(tunnels=3, seed=9, rate_limit=None)
    async with run(state=state, middlewares=[_drop_the_query]) as emu, make_client(emu) as client:
        rotation = client.tunnels.ipsec.psk.rotate(
            emu.account_id, emu.tunnel_ids, method="set", validate_only=True
        )
        async with rotation:
            outcomes = [o async for o in rotation]
        live = {t: emu.state.current_psk(emu.account_id, t) for t in emu.tunnel_ids}
    held = {o.tunnel_id: o.result.psk for o in outcomes if o.result is not None}
    changed = [t for t, psk in live.items() if psk is not None]
    assert changed  # the server really applied them
    for tunnel in changed:
        assert held.get(tunnel) == live[tunnel] or not outcomes_ok(outcomes, tunnel), (
            "validated (ok=True, 'nothing changed'), yet the edge holds a PSK nobody has"
        )


def outcomes_ok(outcomes: list[Any], tunnel: str) -> bool:
    return any(o.ok for o in outcomes if o.tunnel_id == tunnel)


async def test_cli_validate_only_through_a_server_that_generates_does_not_exit_0(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `magicwan psk rotate --all --validate-only` (no journal: "changes nothing"). Every
    # answer carries a psk, which a validate_only answer never does: the server generated.
    # The command prints "validated", exits 0, and the new PSKs were shown and recorded
    # nowhere: every tunnel is down.
    from tests.support.cli import magicwan

    state = EmulatorState(tunnels=3, seed=9, rate_limit=None)
    async with run(state=state, middlewares=[_drop_the_query]) as emu:
        for name, value in emu.env().items():
            monkeypatch.setenv(name, value)
        result = await magicwan("psk", "rotate", "--all", "--validate-only", "--json")
        generated = state.total_generations()
    assert generated == 3  # the server really generated
    assert result.code != 0, "exit 0: 'validated, nothing changed', yet 3 PSKs are lost"
