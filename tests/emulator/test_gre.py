"""GRE tunnels: ``GET .../magic/gre_tunnels`` and ``GET .../magic/gre_tunnels/{id}``."""

from __future__ import annotations

import aiohttp
import pytest

from magicwan.emulator import Emulator, EmulatorState, Faults, run
from tests.support.emulator import (
    ENVELOPE,
    RAY_RE,
    assert_failure,
    call,
    gre_url,
    key_headers,
    token_headers,
)

UNKNOWN = "0" * 32


@pytest.mark.asyncio
async def test_list_and_get(emu: Emulator, session: aiohttp.ClientSession) -> None:
    status, headers, body = await call(session, "GET", gre_url(emu), headers=token_headers(emu))
    assert status == 200
    ENVELOPE.validate(body)
    assert RAY_RE.fullmatch(headers["cf-ray"])
    assert headers["Ratelimit"] == '"default";r=1199;t=1'
    tunnels = body["result"]["gre_tunnels"]
    assert [t["id"] for t in tunnels] == emu.gre_tunnel_ids
    assert len(tunnels) == 3

    status, _, one = await call(
        session, "GET", gre_url(emu, emu.gre_tunnel_ids[1]), headers=key_headers(emu)
    )
    assert status == 200
    ENVELOPE.validate(one)
    tunnel = one["result"]["gre_tunnel"]
    assert tunnel == tunnels[1]
    assert tunnel["name"] == "emu_gre_00002"
    assert tunnel["cloudflare_gre_endpoint"] == "203.0.113.2"
    assert tunnel["customer_gre_endpoint"] == "198.51.100.2"
    assert tunnel["interface_address"] == "172.16.0.2/31"
    assert tunnel["interface_address6"] == "2001:db8:4d58::2/127"
    assert (tunnel["mtu"], tunnel["ttl"]) == (1476, 64)
    assert tunnel["bgp"] == {"customer_asn": 64513, "extra_prefixes": []}
    assert tunnel["bgp_status"]["state"] == "BGP_UP"
    assert "bgp" not in tunnels[0]
    assert emu.state.requests.by_route == {"list_gre_tunnels": 1, "get_gre_tunnel": 1}


@pytest.mark.asyncio
async def test_unknown_tunnel_is_404_code_1002_and_unknown_account_7003(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    auth = token_headers(emu)
    for tunnel_id in (UNKNOWN, emu.tunnel_ids[0], "not-an-id"):  # an IPsec id is not a GRE id
        status, _, body = await call(session, "GET", gre_url(emu, tunnel_id), headers=auth)
        assert status == 404
        assert_failure(body, 1002, "gre_tunnel not found")
    status, _, body = await call(session, "GET", gre_url(emu, account_id=UNKNOWN), headers=auth)
    assert status == 404
    assert_failure(body, 7003)
    status, _, body = await call(session, "GET", gre_url(emu))
    assert status == 400
    assert_failure(body, 9106)
    status, _, body = await call(session, "PATCH", gre_url(emu), headers=auth)
    assert status == 405
    assert_failure(body, 7001)
    assert emu.state.requests.by_route == {
        "get_gre_tunnel": 3,
        "list_gre_tunnels": 2,
        "unmatched": 1,
    }


@pytest.mark.asyncio
async def test_faults_apply_to_gre_routes(emu: Emulator, session: aiohttp.ClientSession) -> None:
    emu.set_faults(Faults(html_502=1.0))
    async with session.get(gre_url(emu), headers=token_headers(emu)) as resp:
        assert resp.status == 502
        assert resp.content_type == "text/html"
    emu.set_faults(Faults(late_store=1.0, late_store_delay=0.05))  # on a GET: a late answer
    status, _, body = await call(session, "GET", gre_url(emu), headers=token_headers(emu))
    assert status == 200
    assert len(body["result"]["gre_tunnels"]) == 3
    assert emu.state.requests.faults == {"html_502": 1, "late_store": 1}


@pytest.mark.asyncio
async def test_no_gre_tunnels_is_an_empty_list(session: aiohttp.ClientSession) -> None:
    async with run(tunnels=1, gre_tunnels=0) as emu:
        status, _, body = await call(session, "GET", gre_url(emu), headers=token_headers(emu))
    assert status == 200
    assert body["result"] == {"gre_tunnels": []}


def test_gre_ids_are_seeded_and_do_not_shift_ipsec_ids() -> None:
    a = EmulatorState(tunnels=3, gre_tunnels=4, seed=5)
    b = EmulatorState(tunnels=3, gre_tunnels=4, seed=5)
    assert a.gre_tunnel_ids == b.gre_tunnel_ids
    assert len(set(a.gre_tunnel_ids)) == 4
    assert not set(a.gre_tunnel_ids) & set(a.tunnel_ids)
    assert EmulatorState(tunnels=3, gre_tunnels=0, seed=5).tunnel_ids == a.tunnel_ids
    assert EmulatorState(tunnels=3, gre_tunnels=4, seed=6).gre_tunnel_ids != a.gre_tunnel_ids
    added = a.add_gre_tunnel(tunnel_id="023e105f4ecef8ad9ca31a8372d0c353", name="hq")
    assert a.gre_tunnel(a.account_id, added.id) is added
    assert a.gre_tunnel_ids[-1] == added.id
    with pytest.raises(ValueError, match="already exists"):
        a.add_gre_tunnel(tunnel_id=added.id)
    with pytest.raises(ValueError, match="32 lowercase hex"):
        a.add_gre_tunnel(tunnel_id="../x")
    assert a.snapshot()["accounts"][a.account_id]["gre_tunnels"][added.id] == {"name": "hq"}
