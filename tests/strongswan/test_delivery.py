"""magicwan.delivery.StrongSwan against two real charon daemons.

The edge stands in for Cloudflare: the test loads each tunnel's PSK there, as
Cloudflare holds it after a rotation. The router gets its PSK only from the deliverer.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from magicwan import IPsecTunnel
from magicwan.delivery import Delivery, DeliveryError, StrongSwan
from tests.support.leaks import shown_in
from tests.support.strongswan import (
    IKELab,
    IKELabError,
    ike_lab,
    make_tunnels,
    require_strongswan,
)

from .conftest import TUNNELS

ACCOUNT = "023e105f4ecef8ad9ca31a8372d0c353"
OLD = "oLdPSKoLdPSKoLdPSKoLdPSKoLdPSK01"
NEW = "nEwPSKnEwPSKnEwPSKnEwPSKnEwPSK02"


def delivery(tunnel: IPsecTunnel, psk: str) -> Delivery:
    return Delivery(account_id=ACCOUNT, tunnel_id=tunnel.id, psk=psk, tunnel=tunnel)


def conn(tunnel: IPsecTunnel) -> str:
    assert tunnel.name is not None
    return tunnel.name


def ipsec_id(tunnel: IPsecTunnel) -> str:
    assert tunnel.ipsec_id is not None
    return tunnel.ipsec_id


@pytest.mark.asyncio
async def test_the_matching_psk_brings_the_tunnel_up(lab: IKELab) -> None:
    tunnel = TUNNELS[0]
    await lab.load_edge_psk(ipsec_id(tunnel), NEW)
    await StrongSwan(lab.router_socket, reauth=True)(delivery(tunnel, NEW))
    assert await lab.sa_state(conn(tunnel)) == "ESTABLISHED"
    assert await lab.sa_state(conn(tunnel), side="edge") == "ESTABLISHED"
    assert await lab.shared_ids() == [f"magicwan-{tunnel.id}"]
    assert await lab.sa_state(conn(TUNNELS[1])) is None  # the other tunnel is untouched


@pytest.mark.asyncio
async def test_a_psk_the_edge_does_not_hold_fails_authentication(lab: IKELab) -> None:
    tunnel = TUNNELS[0]
    await lab.load_edge_psk(ipsec_id(tunnel), OLD)
    with pytest.raises(DeliveryError) as caught:
        await StrongSwan(lab.router_socket, reauth=True)(delivery(tunnel, NEW))
    error = caught.value
    assert error.reason == "authentication_failed"
    assert error.tunnel_id == tunnel.id
    assert "IKE authentication with the new PSK failed" in str(error)
    assert "AUTHENTICATION_FAILED" in str(error)
    assert f"connection {conn(tunnel)!r}" in str(error)
    assert shown_in(NEW, error) == []
    assert shown_in(OLD, error) == []
    assert await lab.sa_state(conn(tunnel)) is None


@pytest.mark.asyncio
async def test_a_new_psk_replaces_the_old_key_and_reauthenticates(lab: IKELab) -> None:
    tunnel = TUNNELS[0]
    deliverer = StrongSwan(lab.router_socket, reauth=True)
    await lab.load_edge_psk(ipsec_id(tunnel), OLD)
    await deliverer(delivery(tunnel, OLD))
    [before] = await lab.ike_sas(conn(tunnel))

    await lab.load_edge_psk(ipsec_id(tunnel), NEW)  # Cloudflare rotated
    await deliverer(delivery(tunnel, NEW))
    [after] = await lab.ike_sas(conn(tunnel))
    assert after["state"] == "ESTABLISHED"
    assert after["uniqueid"] != before["uniqueid"]  # a new IKE SA, authenticated with NEW
    edge = await lab.ike_sas(conn(tunnel), side="edge")
    assert [sa["state"] for sa in edge] == ["ESTABLISHED"]  # the old one is gone there, too
    assert await lab.shared_ids() == [f"magicwan-{tunnel.id}"]  # replaced, not piled up

    # The router holds NEW and nothing else: with OLD back on the edge, IKE fails.
    await lab.load_edge_psk(ipsec_id(tunnel), OLD)
    with pytest.raises(DeliveryError, match="authentication"):
        await deliverer(delivery(tunnel, NEW))


@pytest.mark.asyncio
async def test_without_reauth_the_key_is_only_loaded(lab: IKELab) -> None:
    tunnel = TUNNELS[1]
    await lab.load_edge_psk(ipsec_id(tunnel), NEW)
    await StrongSwan(lab.router_socket)(delivery(tunnel, NEW))
    assert await lab.sa_state(conn(tunnel)) is None
    assert await lab.shared_ids() == [f"magicwan-{tunnel.id}"]
    await lab.initiate(conn(tunnel))  # the loaded key works
    assert await lab.sa_state(conn(tunnel)) == "ESTABLISHED"


@pytest.mark.asyncio
async def test_a_stopped_charon_is_a_clear_error(lab: IKELab) -> None:
    await lab.stop("router")
    with pytest.raises(DeliveryError) as caught:
        await StrongSwan(lab.router_socket, reauth=True)(delivery(TUNNELS[0], NEW))
    assert caught.value.reason == "unreachable"
    assert "Connection refused" in str(caught.value)
    assert "is charon running?" in str(caught.value)
    assert shown_in(NEW, caught.value) == []


@pytest.mark.asyncio
async def test_an_unknown_connection_is_a_configuration_error(lab: IKELab) -> None:
    deliverer = StrongSwan(lab.router_socket, reauth=True, connection="no-such-conn")
    with pytest.raises(DeliveryError) as caught:
        await deliverer(delivery(TUNNELS[0], NEW))
    assert caught.value.reason == "misconfigured"
    assert "no-such-conn" in str(caught.value)


@pytest.mark.asyncio
async def test_identities_that_own_no_key_are_explained(lab: IKELab) -> None:
    tunnel = TUNNELS[0]
    await lab.load_edge_psk(ipsec_id(tunnel), NEW)
    deliverer = StrongSwan(
        lab.router_socket, reauth=True, local_id="wrong.example", remote_id="192.0.2.1"
    )
    with pytest.raises(DeliveryError) as caught:
        await deliverer(delivery(tunnel, NEW))
    assert caught.value.reason == "authentication_failed"
    assert "charon found no shared key for the connection's identities" in str(caught.value)


@pytest.mark.asyncio
async def test_child_sas_come_back_after_reauthentication(tmp_path: Path) -> None:
    require_strongswan(child_sas=True)
    tunnel = make_tunnels(1)[0]
    async with ike_lab([tunnel], child_sas=True, keep_logs=tmp_path / "charon") as lab:
        await lab.load_edge_psk(ipsec_id(tunnel), OLD)
        await StrongSwan(lab.router_socket)(delivery(tunnel, OLD))
        await lab.initiate(conn(tunnel))
        assert await lab.child_states(conn(tunnel)) == ["INSTALLED"]
        [before] = await lab.ike_sas(conn(tunnel))

        await lab.load_edge_psk(ipsec_id(tunnel), NEW)
        await StrongSwan(lab.router_socket, reauth=True)(delivery(tunnel, NEW))
        [after] = await lab.ike_sas(conn(tunnel))
        assert after["uniqueid"] != before["uniqueid"]
        assert await lab.child_states(conn(tunnel)) == ["INSTALLED"]
        assert await lab.child_states(conn(tunnel), side="edge") == ["INSTALLED"]


@pytest.mark.asyncio
async def test_twenty_tunnels_at_once(tmp_path: Path) -> None:
    require_strongswan()
    tunnels = make_tunnels(20)
    async with ike_lab(tunnels, keep_logs=tmp_path / "charon") as lab:
        await lab.load_edge_psks({ipsec_id(t): f"{t.id}-new" for t in tunnels})
        deliverer = StrongSwan(lab.router_socket, reauth=True)
        for round_ in ("first", "again"):  # bring them up, then re-authenticate them all
            results = await asyncio.gather(
                *(deliverer(delivery(t, f"{t.id}-new")) for t in tunnels), return_exceptions=True
            )
            assert results == [None] * 20, round_
            states = [await lab.sa_state(conn(t)) for t in tunnels]
            assert states == ["ESTABLISHED"] * 20, round_
        assert await lab.shared_ids() == sorted(f"magicwan-{t.id}" for t in tunnels)
        with pytest.raises(IKELabError):  # and the harness itself reports failures
            await lab.initiate("no-such-conn")
