"""The /__emulator__ admin routes: no auth, no rate limit, no faults, not counted."""

from __future__ import annotations

import aiohttp
import pytest

from magicwan.emulator import Emulator, Faults
from tests.support.emulator import (
    PSK_RE,
    RAY_RE,
    call,
    generate,
    gre_url,
    token_headers,
    tunnels_url,
)

pytestmark = pytest.mark.asyncio


async def test_state_exposes_psks_and_counters(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    _, _, generated = await generate(session, emu)
    emu.set_faults(Faults(server_error=1.0))  # admin routes are never faulted
    status, headers, body = await call(session, "GET", f"{emu.admin_url}/state")
    assert status == 200
    assert RAY_RE.fullmatch(headers["cf-ray"])
    assert "Ratelimit" not in headers
    tunnel = body["accounts"][emu.account_id]["tunnels"][emu.tunnel_ids[0]]
    assert tunnel["generation"] == 1
    assert tunnel["psk"] == generated["result"]["psk"]
    assert tunnel["history"][0]["psk"] == tunnel["psk"]
    assert tunnel["psk_metadata"] == generated["result"]["psk_metadata"]
    assert body["requests"]["total"] == 1
    assert body["requests"]["by_status"] == {"200": 1}
    assert body["users"][0]["api_tokens"] == [emu.api_token]
    assert body["rate_limit"] == [1200, 300.0]


async def test_reset(emu: Emulator, session: aiohttp.ClientSession) -> None:
    await generate(session, emu)
    status, _, body = await call(session, "POST", f"{emu.admin_url}/reset")
    assert status == 200
    assert body == {"ok": True}
    assert emu.state.total_generations() == 0
    assert emu.state.requests.total == 0
    assert emu.state.current_psk(emu.account_id, emu.tunnel_ids[0]) is None


async def test_add_tunnels(emu: Emulator, session: aiohttp.ClientSession) -> None:
    status, _, body = await call(session, "POST", f"{emu.admin_url}/tunnels", json={"count": 2})
    assert status == 201
    assert body["account_id"] == emu.account_id
    assert len(body["tunnel_ids"]) == 2
    assert emu.tunnel_ids[-2:] == body["tunnel_ids"]
    wanted = "023e105f4ecef8ad9ca31a8372d0c353"
    status, _, body = await call(
        session, "POST", f"{emu.admin_url}/tunnels", json={"ids": [wanted]}
    )
    assert status == 201
    assert body["tunnel_ids"] == [wanted]
    status, _, listing = await call(session, "GET", tunnels_url(emu), headers=token_headers(emu))
    assert len(listing["result"]["ipsec_tunnels"]) == 6
    status, _, body = await generate(session, emu, wanted)
    assert status == 200
    assert PSK_RE.fullmatch(body["result"]["psk"])

    for payload, expected in (
        ({"ids": ["../x"]}, 400),
        ({"ids": [wanted]}, 400),  # exists already
        ({"count": "2"}, 400),
        ({"account_id": "f" * 32}, 404),
    ):
        status, _, body = await call(session, "POST", f"{emu.admin_url}/tunnels", json=payload)
        assert status == expected
        assert "error" in body
    status, _, body = await call(session, "POST", f"{emu.admin_url}/tunnels", data=b"[1]")
    assert status == 400


async def test_add_gre_tunnels_by_id_and_count(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    wanted = "023e105f4ecef8ad9ca31a8372d0c353"
    url = f"{emu.admin_url}/tunnels"
    status, _, body = await call(session, "POST", url, json={"kind": "gre", "ids": [wanted]})
    assert status == 201
    assert body == {"account_id": emu.account_id, "kind": "gre", "tunnel_ids": [wanted]}
    status, _, body = await call(session, "POST", url, json={"kind": "gre", "count": 2})
    assert status == 201
    assert emu.gre_tunnel_ids[-3:] == [wanted, *body["tunnel_ids"]]
    assert len(emu.tunnel_ids) == 3  # no IPsec tunnel added
    status, _, one = await call(session, "GET", gre_url(emu, wanted), headers=token_headers(emu))
    assert status == 200
    assert one["result"]["gre_tunnel"]["id"] == wanted
    for payload in (
        {"kind": "gre", "ids": [wanted]},
        {"kind": "vxlan"},
        {"kind": "gre", "ids": ["x"]},
    ):
        status, _, body = await call(session, "POST", url, json=payload)
        assert status == 400
        assert "error" in body


async def test_checkpoint_and_restore(emu: Emulator, session: aiohttp.ClientSession) -> None:
    first = emu.tunnel_ids[0]
    await generate(session, emu, first)
    psk = emu.state.current_psk(emu.account_id, first)
    status, _, _ = await call(session, "POST", f"{emu.admin_url}/checkpoint")
    assert status == 200
    await call(session, "DELETE", f"{tunnels_url(emu)}/{first}", headers=token_headers(emu))
    await call(session, "DELETE", gre_url(emu, emu.gre_tunnel_ids[0]), headers=token_headers(emu))
    await generate(session, emu, emu.tunnel_ids[0])
    await call(session, "POST", f"{emu.admin_url}/tunnels", json={"count": 1})
    assert first not in emu.tunnel_ids
    status, _, _ = await call(session, "POST", f"{emu.admin_url}/restore")
    assert status == 200
    assert len(emu.tunnel_ids) == 3
    assert emu.tunnel_ids[0] == first
    assert len(emu.gre_tunnel_ids) == 3
    assert emu.state.current_psk(emu.account_id, first) == psk
    assert emu.state.tunnel(emu.account_id, emu.tunnel_ids[1]).generation == 0
    # A restore copies the checkpoint: changing what it gave back never changes it.
    emu.state.tunnel(emu.account_id, first).name = "changed"
    emu.state.restore()
    assert emu.state.tunnel(emu.account_id, first).name == "emu_tunnel_00001"


async def test_faults_and_rate_limit_over_http(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    url = f"{emu.admin_url}/faults"
    status, _, body = await call(session, "POST", url, json={"html_502": 1, "seed": 5})
    assert status == 200
    assert body["faults"]["html_502"] == 1.0
    assert body["seed"] == 5
    assert emu.faults == Faults(html_502=1.0)
    status, _, body = await call(session, "POST", url, json={"html_502": 2})
    assert status == 400
    status, _, body = await call(session, "POST", url, json={"bogus": 1})
    assert status == 400
    status, _, body = await call(session, "POST", url, json={})
    assert status == 200
    assert emu.faults == Faults.none()

    url = f"{emu.admin_url}/rate_limit"
    status, _, body = await call(session, "POST", url, json={"limit": 10, "window": 60})
    assert status == 200
    assert body == {"limit": 10, "window": 60.0}
    assert emu.state.rate_limit == (10, 60.0)
    status, _, body = await call(session, "POST", url, json={"limit": None})
    assert body == {"limit": None}
    assert emu.state.rate_limit is None
    status, _, body = await call(session, "POST", url, json={"limit": "x"})
    assert status == 400
    status, _, body = await call(session, "GET", url)
    assert status == 200
    assert body == {"limit": None}


async def test_unknown_admin_route(emu: Emulator, session: aiohttp.ClientSession) -> None:
    status, headers, body = await call(session, "GET", f"{emu.admin_url}/nope")
    assert status == 404
    assert "error" in body
    assert RAY_RE.fullmatch(headers["cf-ray"])
    status, _, body = await call(session, "GET", f"{emu.admin_url}/reset")
    assert status == 405
    assert emu.state.requests.total == 0


async def test_late_store_faults_over_http(emu: Emulator, session: aiohttp.ClientSession) -> None:
    url = f"{emu.admin_url}/faults"
    status, _, body = await call(
        session, "POST", url, json={"late_store": 0.5, "late_store_delay": 0.25}
    )
    assert status == 200
    assert body["faults"]["late_store"] == 0.5
    assert body["faults"]["late_store_delay"] == 0.25
    assert emu.faults == Faults(late_store=0.5, late_store_delay=0.25)
    status, _, body = await call(session, "POST", url, json={"late_store_delay": -1})
    assert status == 400
    assert "late_store_delay" in body["error"]
    assert emu.faults == Faults(late_store=0.5, late_store_delay=0.25)


@pytest.mark.parametrize("suffix", ["", "/"])
async def test_the_admin_url_the_banner_prints_answers_with_an_index_of_the_routes(
    emu: Emulator, session: aiohttp.ClientSession, suffix: str
) -> None:
    emu.set_faults(Faults(server_error=1.0))  # like every admin route: never faulted
    status, headers, body = await call(session, "GET", emu.admin_url + suffix)

    assert status == 200, body
    assert RAY_RE.fullmatch(headers["cf-ray"])
    routes = {(route["method"], route["path"]) for route in body["routes"]}
    assert routes >= {
        ("GET", "/__emulator__/state"),
        ("POST", "/__emulator__/reset"),
        ("POST", "/__emulator__/tunnels"),
        ("GET|POST", "/__emulator__/faults"),
    }
    assert all(route["does"] for route in body["routes"])
    for method, path in routes:  # each one it lists is served
        if "GET" in method.split("|"):
            root = emu.admin_url.removesuffix("/__emulator__")
            listed_status, _, _ = await call(session, "GET", root + path)
            assert listed_status == 200, path
    assert emu.state.snapshot()["requests"]["total"] == 0  # not counted
