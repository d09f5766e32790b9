"""The emulator's answers read by Cloudflare's official SDK (``cloudflare``, the bench extra).

Every object is validated with the SDK's own pydantic models, and every field the emulator sends
must be one the model knows (``ipsec_id`` on an IPsec tunnel is the one documented addition).
The SDK's ``psk_set`` runs unchanged against the emulator.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import aiohttp
import pydantic
import pytest

cloudflare = pytest.importorskip(
    "cloudflare", reason="Cloudflare's official SDK is not installed (pip install -e '.[bench]')"
)

from cloudflare.types.magic_transit import ipsec_tunnel_get_response as ipsec_get  # noqa: E402
from cloudflare.types.magic_transit.gre_tunnel_get_response import (  # noqa: E402
    GRETunnel,
    GRETunnelBGP,
    GRETunnelBGPStatus,
    GRETunnelGetResponse,
    GRETunnelHealthCheck,
)
from cloudflare.types.magic_transit.gre_tunnel_list_response import (  # noqa: E402
    GRETunnelListResponse,
)
from cloudflare.types.magic_transit.ipsec_tunnel_list_response import (  # noqa: E402
    IPSECTunnelListResponse,
)
from cloudflare.types.magic_transit.ipsec_tunnel_psk_generate_response import (  # noqa: E402
    IPSECTunnelPSKGenerateResponse,
)
from cloudflare.types.magic_transit.ipsec_tunnel_psk_set_response import (  # noqa: E402
    IPSECTunnelPSKSetResponse,
)

from magicwan.emulator import Emulator, run  # noqa: E402
from tests.support.emulator import (  # noqa: E402
    a_psk,
    call,
    generate,
    gre_url,
    set_psks,
    token_headers,
    tunnels_url,
)

pytestmark = pytest.mark.asyncio

#: Fields the emulator adds to an IPsec tunnel beyond the official model (ARCH.md).
IPSEC_EXTRAS = frozenset({"ipsec_id"})


def _known(
    data: dict[str, Any], model: type[pydantic.BaseModel], extras: frozenset[str] = frozenset()
) -> None:
    unknown = set(data) - set(model.model_fields) - extras
    assert not unknown, f"{model.__name__} does not know {sorted(unknown)}"


def _check_ipsec(tunnel: dict[str, Any], account_id: str) -> None:
    _known(tunnel, ipsec_get.IPSECTunnel, IPSEC_EXTRAS)
    _known(tunnel["health_check"], ipsec_get.IPSECTunnelHealthCheck)
    assert tunnel["ipsec_id"] == f"{tunnel['id']}.{account_id}.ipsec.cloudflare.com"
    network = ipaddress.ip_network(tunnel["interface_address6"])
    assert network.prefixlen == 127
    assert ipaddress.ip_interface(tunnel["interface_address6"]).ip == network[0]
    assert ipaddress.ip_network(tunnel["interface_address"]).prefixlen == 31
    if "bgp" in tunnel:
        _known(tunnel["bgp"], ipsec_get.IPSECTunnelBGP)
        _known(tunnel["bgp_status"], ipsec_get.IPSECTunnelBGPStatus)
        assert 64512 <= tunnel["bgp"]["customer_asn"] <= 65534  # a private ASN
        assert "md5_key" not in tunnel["bgp"]
    if "custom_remote_identities" in tunnel:
        _known(tunnel["custom_remote_identities"], ipsec_get.IPSECTunnelCustomRemoteIdentities)
        fqdn = tunnel["custom_remote_identities"]["fqdn_id"]
        assert fqdn.endswith(f".{account_id}.custom.ipsec.cloudflare.com")


async def test_ipsec_tunnels_are_what_the_official_models_read(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    await generate(session, emu)
    _, _, body = await call(session, "GET", tunnels_url(emu), headers=token_headers(emu))
    listing = IPSECTunnelListResponse.model_validate(body["result"])
    assert listing.ipsec_tunnels is not None
    assert [t.id for t in listing.ipsec_tunnels] == emu.tunnel_ids

    seen: set[str] = set()
    for raw in body["result"]["ipsec_tunnels"]:
        _check_ipsec(raw, emu.account_id)
        seen |= set(raw)
        _, _, one = await call(
            session, "GET", f"{tunnels_url(emu)}/{raw['id']}", headers=token_headers(emu)
        )
        model = ipsec_get.IPSECTunnelGetResponse.model_validate(one["result"]).ipsec_tunnel
        assert model is not None
        assert model.id == raw["id"]
        assert model.model_extra == {"ipsec_id": raw["ipsec_id"]}
    # Over the three tunnels, every field of the official model appears at least once.
    assert set(ipsec_get.IPSECTunnel.model_fields) | IPSEC_EXTRAS == seen

    with_bgp = ipsec_get.IPSECTunnelGetResponse.model_validate(
        {"ipsec_tunnel": body["result"]["ipsec_tunnels"][1]}
    ).ipsec_tunnel
    assert with_bgp is not None
    assert with_bgp.bgp is not None
    assert with_bgp.bgp_status is not None
    assert with_bgp.bgp_status.state == "BGP_UP"
    assert with_bgp.bgp_status.tcp_established is True
    assert with_bgp.psk_metadata is None  # never generated
    first = listing.ipsec_tunnels[0]
    assert first.psk_metadata is not None
    assert first.psk_metadata.last_generated_on is not None


async def test_gre_tunnels_are_what_the_official_models_read(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    _, _, body = await call(session, "GET", gre_url(emu), headers=token_headers(emu))
    listing = GRETunnelListResponse.model_validate(body["result"])
    assert listing.gre_tunnels is not None
    assert [t.id for t in listing.gre_tunnels] == emu.gre_tunnel_ids
    assert len(emu.gre_tunnel_ids) == 3

    seen: set[str] = set()
    for raw in body["result"]["gre_tunnels"]:
        _known(raw, GRETunnel)
        _known(raw["health_check"], GRETunnelHealthCheck)
        if "bgp" in raw:
            _known(raw["bgp"], GRETunnelBGP)
            _known(raw["bgp_status"], GRETunnelBGPStatus)
        seen |= set(raw)
        _, _, one = await call(session, "GET", gre_url(emu, raw["id"]), headers=token_headers(emu))
        model = GRETunnelGetResponse.model_validate(one["result"]).gre_tunnel
        assert model is not None
        assert model.id == raw["id"]
        assert not model.model_extra
        assert (model.mtu, model.ttl) == (1476, 64)
    assert set(GRETunnel.model_fields) == seen


async def test_psk_answers_are_what_the_official_models_read(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    tunnel_id = emu.tunnel_ids[0]
    _, _, generated = await generate(session, emu)
    model = IPSECTunnelPSKGenerateResponse.model_validate(generated["result"])
    assert model.ipsec_tunnel_id == tunnel_id
    assert model.psk == emu.state.current_psk(emu.account_id, tunnel_id)
    assert model.psk_metadata is not None
    assert model.model_extra == {"ipsec_id": generated["result"]["ipsec_id"]}

    psk = a_psk()
    for params in ({"validate_only": "true"}, {}):
        _, _, body = await set_psks(
            session,
            emu,
            [{"id": tunnel_id, "psk": psk}, {"id": "0" * 32, "psk": psk}],
            params=params,
        )
        answer = IPSECTunnelPSKSetResponse.model_validate(body["result"])
        assert answer.successfully_applied_psks is not None
        applied = answer.successfully_applied_psks[tunnel_id]
        assert (applied.ipsec_tunnel_id, applied.psk) == (tunnel_id, psk)
        assert applied.ipsec_id == f"{tunnel_id}.{emu.account_id}.ipsec.cloudflare.com"
        assert answer.unapplied_psks == {"0" * 32: "ipsec_tunnel not found"}
    assert emu.state.current_psk(emu.account_id, tunnel_id) == psk


async def test_the_official_sdk_runs_unchanged_against_the_emulator() -> None:
    async with run(tunnels=4, rate_limit=None) as emu:
        psks = {tunnel_id: a_psk() for tunnel_id in emu.tunnel_ids[:3]}
        async with cloudflare.AsyncCloudflare(
            api_token=emu.api_token, base_url=emu.base_url, max_retries=0
        ) as cf:
            tunnels = cf.magic_transit.ipsec_tunnels
            checked = await tunnels.psk_set(
                account_id=emu.account_id,
                psks=[{"id": k, "psk": v} for k, v in psks.items()],
                validate_only=True,
            )
            assert checked.successfully_applied_psks is not None
            assert set(checked.successfully_applied_psks) == set(psks)
            assert emu.state.total_generations() == 0

            result = await tunnels.psk_set(
                account_id=emu.account_id, psks=[{"id": k, "psk": v} for k, v in psks.items()]
            )
            listed = await tunnels.list(account_id=emu.account_id)
            one = await tunnels.get(emu.tunnel_ids[1], account_id=emu.account_id)
            gre = await cf.magic_transit.gre_tunnels.list(account_id=emu.account_id)

        assert result.successfully_applied_psks is not None
        assert {k: v.psk for k, v in result.successfully_applied_psks.items()} == psks
        assert result.unapplied_psks == {}
        for tunnel_id, psk in psks.items():
            assert emu.state.current_psk(emu.account_id, tunnel_id) == psk
        assert emu.state.current_psk(emu.account_id, emu.tunnel_ids[3]) is None
        assert listed.ipsec_tunnels is not None
        assert len(listed.ipsec_tunnels) == 4
        assert one.ipsec_tunnel is not None
        assert one.ipsec_tunnel.bgp is not None
        assert gre.gre_tunnels is not None
        assert [t.id for t in gre.gre_tunnels] == emu.gre_tunnel_ids
        assert emu.state.requests.by_route == {
            "psk_set": 2,
            "list_ipsec_tunnels": 1,
            "get_ipsec_tunnel": 1,
            "list_gre_tunnels": 1,
        }


async def test_the_official_sdks_lifecycle_calls_run_unchanged() -> None:
    """psk_generate (a zero-byte JSON body since 5.7.0), create, update, delete, and the
    object form of the health-check target, through the installed official SDK."""
    async with run(tunnels=1, gre_tunnels=0, rate_limit=None) as emu:
        async with cloudflare.AsyncCloudflare(
            api_token=emu.api_token, base_url=emu.base_url, max_retries=0
        ) as cf:
            tunnels = cf.magic_transit.ipsec_tunnels
            account = emu.account_id
            generated = await tunnels.psk_generate(emu.tunnel_ids[0], account_id=account)
            created = await tunnels.create(
                account_id=account,
                name="site_1",
                cloudflare_endpoint="203.0.113.1",
                interface_address="10.9.0.0/31",
                health_check={"target": {"saved": "198.51.100.1"}},
                x_magic_new_hc_target=True,
            )
            updated = await tunnels.update(
                created.id,
                account_id=account,
                name="site_1",
                cloudflare_endpoint="203.0.113.1",
                interface_address="10.9.0.0/31",
                description="renamed ISP",
            )
            one = await tunnels.get(created.id, account_id=account, x_magic_new_hc_target=True)
            deleted = await tunnels.delete(created.id, account_id=account)
            gre = await cf.magic_transit.gre_tunnels.create(
                account_id=account,
                name="gre_1",
                cloudflare_gre_endpoint="203.0.113.2",
                customer_gre_endpoint="198.51.100.2",
                interface_address="10.9.0.2/31",
            )
        assert generated.psk == emu.state.current_psk(account, emu.tunnel_ids[0])
        assert created.health_check is not None
        target = created.health_check.target
        assert not isinstance(target, str)
        assert target is not None
        assert (target.effective, target.saved) == ("198.51.100.1", "198.51.100.1")
        assert updated.modified_ipsec_tunnel is not None
        assert updated.modified_ipsec_tunnel.description == "renamed ISP"
        assert one.ipsec_tunnel is not None
        assert one.ipsec_tunnel.health_check is not None
        assert not isinstance(one.ipsec_tunnel.health_check.target, str)
        assert deleted.deleted is True
        assert emu.tunnel_ids == emu.tunnel_ids[:1]
        assert gre.id in emu.gre_tunnel_ids
