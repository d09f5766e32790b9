"""StrongSwan's templates and check() against real charon daemons whose connections are not
named like the Cloudflare tunnels (as on a real router: ``cf-<tunnel id>``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from magicwan import IPsecTunnel
from magicwan.delivery import (
    Checkable,
    Delivery,
    DeliveryError,
    DeliveryTarget,
    StrongSwan,
    limit_deliveries,
)
from tests.support.leaks import shown_in
from tests.support.strongswan import IKELab, TunnelEnds, ike_lab, require_strongswan

from .conftest import TUNNELS

ACCOUNT = "023e105f4ecef8ad9ca31a8372d0c353"
NEW = "nEwPSKnEwPSKnEwPSKnEwPSKnEwPSK02"
TEMPLATE = "cf-{tunnel_id}"


def ends(tunnel: IPsecTunnel) -> TunnelEnds:
    assert tunnel.ipsec_id is not None
    assert tunnel.cloudflare_endpoint is not None
    return TunnelEnds(
        conn=f"cf-{tunnel.id}", ipsec_id=tunnel.ipsec_id, edge_id=tunnel.cloudflare_endpoint
    )


@pytest_asyncio.fixture
async def router(tmp_path: Path) -> AsyncIterator[IKELab]:
    """Edge and router whose connections are named ``cf-<tunnel id>``, not like the tunnels."""
    require_strongswan()
    async with ike_lab([ends(t) for t in TUNNELS], keep_logs=tmp_path / "charon") as running:
        yield running


def target(tunnel: IPsecTunnel) -> DeliveryTarget:
    return DeliveryTarget(account_id=ACCOUNT, tunnel_id=tunnel.id, tunnel=tunnel)


def delivery(tunnel: IPsecTunnel, psk: str) -> Delivery:
    return Delivery(account_id=ACCOUNT, tunnel_id=tunnel.id, psk=psk, tunnel=tunnel)


@pytest.mark.asyncio
async def test_a_connection_template_reaches_the_routers_own_connection(router: IKELab) -> None:
    tunnel = TUNNELS[0]
    assert tunnel.ipsec_id is not None
    await router.load_edge_psk(tunnel.ipsec_id, NEW)
    deliverer = StrongSwan(
        router.router_socket,
        reauth=True,
        connection=TEMPLATE,
        local_id="{ipsec_id}",
        remote_id="{cloudflare_endpoint}",
    )
    await deliverer(delivery(tunnel, NEW))
    assert await router.sa_state(f"cf-{tunnel.id}") == "ESTABLISHED"
    assert await router.sa_state(f"cf-{tunnel.id}", side="edge") == "ESTABLISHED"


@pytest.mark.asyncio
async def test_without_the_template_the_error_is_permanent_and_names_swanctl(
    router: IKELab,
) -> None:
    tunnel = TUNNELS[0]
    with pytest.raises(DeliveryError) as caught:
        await StrongSwan(router.router_socket, reauth=True)(delivery(tunnel, NEW))
    error = caught.value
    assert (error.reason, error.permanent) == ("misconfigured", True)
    assert f"connection {tunnel.name!r}" in str(error)
    assert "not found" in str(error)  # charon's own words
    assert "'swanctl --list-conns' lists the connections charon has loaded" in str(error)
    assert shown_in(NEW, error) == []


@pytest.mark.asyncio
async def test_check_finds_each_connection_and_loads_nothing(router: IKELab) -> None:
    deliverer = limit_deliveries(StrongSwan(router.router_socket, connection=TEMPLATE), 1)
    assert isinstance(deliverer, Checkable)
    for tunnel in TUNNELS:
        await deliverer.check(target(tunnel))
    assert await router.shared_ids() == []
    assert await router.sa_state(f"cf-{TUNNELS[0].id}") is None


@pytest.mark.asyncio
async def test_check_of_a_missing_connection_is_permanent(router: IKELab) -> None:
    with pytest.raises(DeliveryError) as caught:
        await StrongSwan(router.router_socket).check(target(TUNNELS[1]))
    error = caught.value
    assert (error.reason, error.permanent, error.tunnel_id) == (
        "misconfigured",
        True,
        TUNNELS[1].id,
    )
    assert f"connection {TUNNELS[1].name!r}" in str(error)
    assert "'swanctl --list-conns'" in str(error)


@pytest.mark.asyncio
async def test_check_of_a_stopped_charon_may_be_retried(router: IKELab) -> None:
    await router.stop("router")
    with pytest.raises(DeliveryError) as caught:
        await StrongSwan(router.router_socket, connection=TEMPLATE).check(target(TUNNELS[0]))
    assert (caught.value.reason, caught.value.permanent) == ("unreachable", False)
    assert "is charon running?" in str(caught.value)
