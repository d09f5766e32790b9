"""``client.tunnels.{ipsec,gre}.create/update/delete`` against the real emulator (loopback)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_asyncio

from magicwan import BadRequestError, InvalidInputError, MagicWAN, NotFoundError, OutcomeState
from magicwan.emulator import Emulator, run
from magicwan.errors import NotAppliedError
from magicwan.models import (
    BGP,
    CustomRemoteIdentities,
    GRETunnelParams,
    HealthCheck,
    HealthCheckTarget,
    IPsecTunnelParams,
)
from tests.support.emulator import a_psk

pytestmark = pytest.mark.asyncio

SITE = IPsecTunnelParams(
    name="site_a",
    cloudflare_endpoint="203.0.113.1",
    interface_address="10.200.0.0/31",
    customer_endpoint="198.51.100.7",
    description="branch A",
    interface_address6="2001:db8:1::/127",
)


@pytest_asyncio.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with run(tunnels=1, gre_tunnels=1, rate_limit=None) as emulator:
        yield emulator


@pytest_asyncio.fixture
async def client(emu: Emulator) -> AsyncIterator[MagicWAN]:
    async with MagicWAN(api_token=emu.api_token, base_url=emu.base_url, environ={}) as c:
        yield c


async def test_the_ipsec_lifecycle(emu: Emulator, client: MagicWAN) -> None:
    ipsec = client.tunnels.ipsec
    account = emu.account_id
    created = await ipsec.create(account, SITE)
    assert created.name == "site_a"
    assert created.interface_address6 == "2001:db8:1::/127"
    assert created.psk_metadata is None  # no PSK yet
    assert created.ipsec_id == f"{created.id}.{account}.ipsec.cloudflare.com"
    assert created.health_check is not None
    assert created.health_check.target == HealthCheckTarget(
        effective="198.51.100.7", saved="198.51.100.7"
    )
    assert [t.id for t in await ipsec.list(account)] == [*emu.tunnel_ids[:1], created.id]

    generated = await ipsec.psk.generate(account, created.id)
    assert generated.psk == emu.state.current_psk(account, created.id)

    changed = attrs.evolve(
        SITE,
        description="branch A, new ISP",
        health_check=HealthCheck(target=HealthCheckTarget(saved="198.51.100.9"), rate="low"),
        bgp=BGP(customer_asn=65001, extra_prefixes=["10.9.0.0/24"]),
    )
    updated = await ipsec.update(account, created.id, changed)
    assert updated.id == created.id
    assert updated.description == "branch A, new ISP"
    assert updated.health_check is not None
    assert updated.health_check.rate == "low"
    assert updated.health_check.target is not None
    assert updated.health_check.target.effective == "198.51.100.9"
    assert updated.bgp is not None
    assert updated.bgp.customer_asn == 65001
    assert emu.state.current_psk(account, created.id) == generated.psk  # untouched

    deleted = await ipsec.delete(account, created.id)
    assert deleted.id == created.id
    with pytest.raises(NotFoundError) as info:
        await ipsec.get(account, created.id)
    assert info.value.errors[0].code == 1002
    with pytest.raises(NotFoundError):
        await ipsec.delete(account, created.id)
    assert emu.state.requests.by_route["delete_ipsec_tunnel"] == 2


async def test_a_psk_given_to_create_or_update_is_set_and_never_shown(
    emu: Emulator, client: MagicWAN, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="magicwan")
    first, second = a_psk("create"), a_psk("update")
    params = attrs.evolve(SITE, psk=first)
    assert first not in repr(params)
    assert first not in str(params)
    tunnel = await client.tunnels.ipsec.create(emu.account_id, params)
    assert emu.state.current_psk(emu.account_id, tunnel.id) == first
    assert first not in repr(tunnel)

    await client.tunnels.ipsec.update(emu.account_id, tunnel.id, attrs.evolve(SITE, psk=second))
    assert emu.state.current_psk(emu.account_id, tunnel.id) == second
    assert [r.source for r in emu.state.history(emu.account_id, tunnel.id)] == ["set", "set"]

    # A refused create carrying a PSK: the error never holds it.
    with pytest.raises(BadRequestError) as info:
        await client.tunnels.ipsec.create(emu.account_id, attrs.evolve(SITE, psk=a_psk("x")))
    assert info.value.errors[0].code == 1008  # the name is taken
    for secret in (first, second):
        assert secret not in caplog.text
        assert secret not in str(info.value)

    # Out of bounds: refused before anything is sent, without the value.
    sent = emu.state.requests.total
    short = "s3cr3t-short"
    with pytest.raises(InvalidInputError) as bad:
        await client.tunnels.ipsec.create(emu.account_id, attrs.evolve(SITE, psk=short))
    assert short not in str(bad.value)
    assert emu.state.requests.total == sent


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        ({"interface_address": "10.0.0.0/30"}, 1007, "interface_address"),
        ({"interface_address": "10.0.0.300/31"}, 1007, "interface_address"),
        ({"interface_address6": "2001:db8::1/127"}, 1007, "interface_address6"),
        ({"cloudflare_endpoint": "cloudflare"}, 1007, "cloudflare_endpoint"),
        ({"name": "emu_tunnel_00001"}, 1008, "emu_tunnel_00001"),
        ({"automatic_return_routing": True}, 1007, "coupler_integration"),
        (
            {"custom_remote_identities": CustomRemoteIdentities(fqdn_id="x.example.com")},
            1007,
            "fqdn_id",
        ),
    ],
)
async def test_cloudflare_refusals_come_back_as_api_errors(
    emu: Emulator, client: MagicWAN, changes: dict[str, Any], code: int, field: str
) -> None:
    with pytest.raises(BadRequestError) as info:
        await client.tunnels.ipsec.create(emu.account_id, attrs.evolve(SITE, **changes))
    assert info.value.errors[0].code == code
    assert field in info.value.errors[0].message
    assert len(emu.tunnel_ids) == 1


async def test_the_gre_lifecycle(emu: Emulator, client: MagicWAN) -> None:
    gre = client.tunnels.gre
    params = GRETunnelParams(
        name="gre_b",
        cloudflare_gre_endpoint="203.0.113.2",
        customer_gre_endpoint="198.51.100.20",
        interface_address="172.31.0.0/31",
        mtu=1400,
    )
    created = await gre.create(emu.account_id, params)
    assert (created.name, created.mtu, created.ttl) == ("gre_b", 1400, 64)
    updated = await gre.update(emu.account_id, created.id, attrs.evolve(params, ttl=32))
    assert (updated.mtu, updated.ttl) == (1400, 32)
    with pytest.raises(BadRequestError) as info:
        await gre.update(emu.account_id, created.id, attrs.evolve(params, mtu=500))
    assert info.value.errors[0].code == 1007
    with pytest.raises(BadRequestError):  # GRE names: at most 15 characters
        await gre.create(emu.account_id, attrs.evolve(params, name="a_very_long_gre_name"))
    assert (await gre.delete(emu.account_id, created.id)).id == created.id
    assert emu.gre_tunnel_ids == emu.gre_tunnel_ids[:1]
    with pytest.raises(NotFoundError):
        await gre.get(emu.account_id, created.id)


async def test_params_of_the_other_family_are_refused(client: MagicWAN, emu: Emulator) -> None:
    gre_params = GRETunnelParams(
        name="g",
        cloudflare_gre_endpoint="203.0.113.2",
        customer_gre_endpoint="198.51.100.20",
        interface_address="172.31.0.0/31",
    )
    with pytest.raises(TypeError):
        await client.tunnels.ipsec.create(emu.account_id, gre_params)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await client.tunnels.gre.create(emu.account_id, SITE)  # type: ignore[arg-type]
    assert emu.state.requests.total == 0


# -- a rotation that meets a tunnel deleted since ------------------------------------------


async def test_rotating_a_deleted_tunnel_fails_with_not_found_and_a_resume_does_too(
    emu: Emulator, client: MagicWAN, tmp_path: Path
) -> None:
    """``generate``: a tunnel that no longer exists is ``failed`` with NotFoundError (404,
    code 1002), journalled as failed; a rerun with the journal tries it again and fails the
    same way, while a tunnel the journal has as rotated is skipped without a request."""
    ipsec = client.tunnels.ipsec
    account = emu.account_id
    kept = await ipsec.create(account, SITE)
    gone = await ipsec.create(account, attrs.evolve(SITE, name="site_gone"))
    journal = tmp_path / "rotation.jsonl"

    first = await ipsec.delete(account, gone.id)
    assert first.id == gone.id
    for run_number in (1, 2):
        async with ipsec.psk.rotate(
            account, [kept.id, gone.id], journal=journal, resume=True
        ) as rotation:
            outcomes = {o.tunnel_id: o async for o in rotation}
        failure = outcomes[gone.id]
        assert not failure.ok
        assert failure.state is OutcomeState.FAILED
        assert isinstance(failure.error, NotFoundError)
        assert failure.error.errors[0].code == 1002
        assert failure.psk is None
        expected = OutcomeState.ROTATED if run_number == 1 else OutcomeState.SKIPPED
        assert outcomes[kept.id].state is expected
    assert emu.state.requests.by_route["psk_generate"] == 3  # kept once, gone twice

    # Rotated, then deleted: the journal cannot know, and a rerun skips it (no request).
    await ipsec.delete(account, kept.id)
    async with ipsec.psk.rotate(account, [kept.id], journal=journal, resume=True) as rotation:
        (outcome,) = [o async for o in rotation]
    assert outcome.state is OutcomeState.SKIPPED
    assert emu.state.requests.by_route["psk_generate"] == 3


async def test_a_set_rotation_of_a_deleted_tunnel_is_not_applied(
    emu: Emulator, client: MagicWAN, tmp_path: Path
) -> None:
    """``set``: Cloudflare's answer leaves it unapplied ("ipsec_tunnel not found"): ``failed``
    with NotAppliedError; the PSK it was sent dies with the tunnel."""
    ipsec = client.tunnels.ipsec
    account = emu.account_id
    gone = await ipsec.create(account, SITE)
    await ipsec.delete(account, gone.id)
    rotation = ipsec.psk.rotate(
        account, [gone.id, emu.tunnel_ids[0]], method="set", journal=tmp_path / "set.jsonl"
    )
    async with rotation:
        outcomes = {o.tunnel_id: o async for o in rotation}
    failure = outcomes[gone.id]
    assert failure.state is OutcomeState.FAILED
    assert isinstance(failure.error, NotAppliedError)
    assert failure.error.reason == "ipsec_tunnel not found"
    assert outcomes[emu.tunnel_ids[0]].ok
