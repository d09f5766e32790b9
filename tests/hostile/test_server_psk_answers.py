"""A server whose answer about a PSK is odd: another PSK than the one sent, a tunnel left out,
validate_only ignored, a late store, a body coded oddly, metadata of the wrong type. Every PSK
the tunnel may now hold is kept (in an outcome or the journal) and never reported as settled
when it is not. Tiny servers on 127.0.0.1, and the emulator behind a middleware or with an
unlucky clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from magicwan import MagicWAN
from magicwan.emulator import EmulatorState, Faults, run
from magicwan.journal import read_journal
from magicwan.rotation import Validated
from tests.support.constants import ACCOUNT, TUNNEL
from tests.support.emulator import drops_the_query
from tests.support.loopback import make_client
from tests.support.tiny_server import (
    THEIRS,
    Handler,
    applies_its_own_psk,
    client_of,
    envelope,
    tiny_server,
)

pytestmark = pytest.mark.asyncio

# --- a read-back whose stamps happen to fall on a whole second -------------------------------


@pytest.mark.parametrize("micro", [0, 500_000], ids=["whole_second", "whole_millisecond"])
async def test_a_late_store_after_a_round_stamp_is_not_taken_for_the_held_psk(
    tmp_path: Path, micro: int
) -> None:
    # The emulator is honest: microsecond stamps, strictly increasing per tunnel. Only its
    # clock is unlucky: the retry's PSK is stamped 12:00:00.500000 (or 12:00:00.000000), and
    # the first request's late store one microsecond later. A stamp that merely looks like
    # a whole second (or millisecond) must not make the two compare equal: the read-back
    # must not report ok=True, verified=True while the edge holds the late PSK.
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
    # A generated PSK holding a newline, handed to a delivery program that reads one line
    # from stdin: the program installs the first half and exits 0. The rotation must not
    # say delivered=True while the router and the edge hold different keys.
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


# --- a bulk set answer that leaves a tunnel out ------------------------------------------------


async def test_a_tunnel_left_out_of_a_bulk_set_answer_carries_the_psk_it_may_hold(
    tmp_path: Path,
) -> None:
    # The emulator applies the whole batch; a gateway (or a paginated, cut or partial answer)
    # drops one tunnel from successfully_applied_psks. The edge runs on the PSK that was
    # sent: the tunnel's failure carries that PSK, or says its outcome is unknown (a rerun
    # settles it), never "certainly refused" with no PSK.
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


async def test_validate_only_set_through_a_server_that_applies_it_loses_no_psk() -> None:
    # rotate(method="set", validate_only=True): the client makes real PSKs and sends them,
    # with no journal ("nothing changes"). The server applies them anyway and says so. A
    # tunnel reported ok must carry the PSK now live at its edge.
    state = EmulatorState(tunnels=3, seed=9, rate_limit=None)
    async with run(state=state, middlewares=[drops_the_query]) as emu, make_client(emu) as client:
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


# --- a bulk set answer with another PSK than the one sent ---------------------------------------

#: What a gateway (or an API that hides secrets in its answers) echoes instead of the PSK.
MASKED = "*" * 32


@web.middleware
async def masks_applied_psks(request: web.Request, handler: Any) -> web.StreamResponse:
    """The emulator applies the PSKs sent; the answer shows each as ``MASKED``."""
    response: web.StreamResponse = await handler(request)
    if not (request.path.endswith("/ipsec_tunnels/psk") and response.status == 200):
        return response
    assert isinstance(response, web.Response)
    assert isinstance(response.body, bytes)
    body = json.loads(response.body)
    for item in body["result"]["successfully_applied_psks"].values():
        item["psk"] = MASKED
    return web.json_response(body)


async def test_a_set_answer_echoing_another_psk_never_loses_the_psk_sent(tmp_path: Path) -> None:
    # rotate(method="set", journal=J). The server applies the PSK sent (S) but its answer
    # echoes another one (here a mask), with the stamp of the set that applied S. S is kept
    # (in an outcome, or as the journal's pending PSK), and a resume resolves the doubt
    # (it resends) instead of verifying the echo: no run hands over an ok outcome with a
    # PSK the edge does not hold.
    path = tmp_path / "set.jsonl"
    async with run(tunnels=2, rate_limit=None, middlewares=[masks_applied_psks]) as emu:
        tunnel = emu.tunnel_ids[0]
        client = MagicWAN(api_token=emu.api_token, base_url=emu.base_url, environ={})
        async with client:
            psk = client.tunnels.ipsec.psk
            first = psk.rotate(emu.account_id, [tunnel], method="set", journal=path)
            async with first:
                run_one = [outcome async for outcome in first]
            second = psk.rotate(
                emu.account_id, [tunnel], method="set", journal=path, resume=True, settle_window=0
            )
            async with second:
                run_two = [outcome async for outcome in second]
        edge = emu.state.current_psk(emu.account_id, tunnel)
    assert edge is not None
    assert edge != MASKED
    record = read_journal(path)[(emu.account_id.lower(), tunnel.lower())]
    wrong = [o for o in run_two if o.ok and o.psk != edge]
    assert not wrong, (
        f"the resume hands over {wrong[0].state.value} (ok, verified="
        f"{getattr(wrong[0], 'verified', None)}) with a PSK the edge does not hold"
    )
    kept = {o.psk for o in run_one + run_two} | {record.psk, record.pending_psk}
    assert edge in kept, "the PSK the edge holds is in no outcome and nowhere a rerun reads"


async def test_a_set_answer_applying_another_psk_keeps_the_psk_received(tmp_path: Path) -> None:
    # method="set". The server answers 200 "successfully applied" for the tunnel, but with a
    # PSK other than the one sent (a server that makes its own key for weak input, a
    # gateway mixing up two requests, a version that normalises the value). The tunnel
    # fails, and the PSK the server says it now holds is kept, in the outcome or the
    # journal (README: "never drops a PSK it received, whatever fails next").
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


# --- an answer coded oddly, or with metadata of the wrong type -----------------------------------


async def test_a_raw_deflate_answer_carrying_a_new_psk_is_decoded() -> None:
    # The client asks for `Accept-Encoding: gzip, deflate`. Many servers and proxies answer
    # `Content-Encoding: deflate` with a RAW deflate stream (no zlib header: the historic
    # IIS / PHP mistake). The answer to psk_generate carries a new, live PSK: it is decoded,
    # not thrown away as an unknown outcome and retried (each retry would make and drop
    # another PSK).
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
    # its last_generated_on cannot be read". That holds for psk_metadata itself flattened
    # to the stamp string, and for ipsec_id (a fact the SDK only passes on) given as a list,
    # as much as for an odd stamp inside psk_metadata.
    psk = "metadata-psk-0123456789abcdefgh"
    body = envelope({"ipsec_tunnel_id": TUNNEL, "psk": psk, **extra})

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.Response(body=body, content_type="application/json")

    async with tiny_server(handler) as base, client_of(base, max_retries=0) as client:
        result = await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    assert result.psk == psk


# --- a server (or a gateway) that applies a validate_only set with its own PSK -----------------


async def test_validate_only_set_answered_with_another_psk_keeps_the_psk_received(
    tmp_path: Path,
) -> None:
    # rotate(method="set", validate_only=True, journal=...). The server answers "applied"
    # with a PSK other than the one sent. As without validate_only, the PSK the server says
    # the tunnel now holds is kept (in the outcome or the journal), and the tunnel is not
    # reported "validated" (SECURITY.md, "Validation that was not").
    path = tmp_path / "j.jsonl"
    async with tiny_server(applies_its_own_psk) as base, client_of(base) as client:
        rotation = client.tunnels.ipsec.psk.rotate(
            ACCOUNT, [TUNNEL], method="set", validate_only=True, journal=path
        )
        async with rotation:
            [outcome] = [o async for o in rotation]
    journalled = path.read_text() if path.exists() else ""
    carried = outcome.result.psk if outcome.result is not None else None
    assert carried == THEIRS or THEIRS in journalled, (
        f"{type(outcome).__name__} carries the PSK sent; the PSK the server says it applied "
        "is in no outcome and no journal line"
    )
    assert not isinstance(outcome, Validated), "'validated' although the server applied a PSK"
