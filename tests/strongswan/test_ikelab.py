"""The IKE lab (magicwan.ikelab) itself: isolation, teardown, skip-or-fail, the emulator's
tunnels as IKE connections, and the bridge that keeps the edge's PSKs equal to the emulator's."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

import tests.support.strongswan as harness
from magicwan import IPsecTunnel, MagicWAN, new_psk
from magicwan.delivery import Delivery, DeliveryError, StrongSwan
from magicwan.emulator import run
from magicwan.ikelab import ike_missing
from tests.support.strongswan import (
    Bridge,
    EmulatedLab,
    IKELab,
    IKELabError,
    bridge,
    emulated_lab,
    ike_lab,
    make_tunnels,
    require_strongswan,
)


def namespace(pid: int | str, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


@pytest.mark.asyncio
async def test_the_daemons_share_a_private_network_each_with_its_own_run(
    lab: IKELab,
) -> None:
    edge, router = lab.pid("edge"), lab.pid("router")
    assert namespace(edge, "net") == namespace(router, "net") != namespace("self", "net")
    assert len({namespace(edge, "mnt"), namespace(router, "mnt"), namespace("self", "mnt")}) == 3
    assert Path(lab.router_socket).is_socket()
    assert Path(lab.edge_socket).is_socket()
    assert not Path(lab.router_socket).is_relative_to("/run")


@pytest.mark.asyncio
async def test_everything_is_torn_down_even_when_the_test_fails(tmp_path: Path) -> None:
    require_strongswan()
    started: list[IKELab] = []

    async def a_failing_test() -> None:
        async with ike_lab(make_tunnels(1), keep_logs=tmp_path / "logs") as lab:
            started.append(lab)
            raise RuntimeError("the test failed")

    with pytest.raises(RuntimeError, match="the test failed"):
        await a_failing_test()
    [lab] = started
    pids = [lab.pid("edge"), lab.pid("router")]
    assert not lab.directory.exists()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert "charon" in (tmp_path / "logs" / "edge.log").read_text()  # logs kept for debugging


def test_missing_prerequisites_skip_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "strongswan_missing", lambda **_: "needs a unicorn")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs a unicorn"):
        require_strongswan()


def test_missing_prerequisites_fail_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "strongswan_missing", lambda **_: "needs a unicorn")
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match=r"must run under CI.*needs a unicorn"):
        require_strongswan()


def test_present_prerequisites_neither_skip_nor_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "strongswan_missing", lambda **_: None)
    monkeypatch.setenv("CI", "1")
    require_strongswan()


# -- the emulator's tunnels in the lab, and the bridge ------------------------------------


def conn(tunnel: IPsecTunnel) -> str:
    assert tunnel.name is not None
    return tunnel.name


def delivery(world: EmulatedLab, tunnel: IPsecTunnel, psk: str) -> Delivery:
    return Delivery(account_id=world.account_id, tunnel_id=tunnel.id, psk=psk, tunnel=tunnel)


@pytest.mark.asyncio
async def test_the_emulators_tunnels_are_ike_identities(tmp_path: Path) -> None:
    """The emulator's ipsec_id is the router's FQDN identity, its cloudflare_endpoint the
    edge's; every third tunnel has a custom FQDN identity besides, which changes nothing."""
    require_strongswan()
    async with emulated_lab(3, keep_logs=tmp_path / "charon") as world:
        assert [t.custom_remote_identities is not None for t in world.tunnels] == [
            False,
            False,
            True,
        ]
        deliver = StrongSwan(world.lab.router_socket, reauth=True)
        for tunnel in world.tunnels:
            result = await world.client.tunnels.ipsec.psk.generate(world.account_id, tunnel.id)
            assert result.psk is not None
            await deliver(delivery(world, tunnel, result.psk))
        assert await world.lab.sa_states() == {conn(t): "ESTABLISHED" for t in world.tunnels}
        for tunnel in world.tunnels:
            [router] = await world.lab.ike_sas(conn(tunnel))
            [edge] = await world.lab.ike_sas(conn(tunnel), side="edge")
            assert (router["local-id"], router["remote-id"]) == (
                tunnel.ipsec_id,
                tunnel.cloudflare_endpoint,
            )
            assert (edge["local-id"], edge["remote-id"]) == (
                tunnel.cloudflare_endpoint,
                tunnel.ipsec_id,
            )
        log = world.lab.log("edge")
        assert f"selected peer config '{conn(world.tunnels[2])}'" in log
        assert world.bridge.loaded == 3
        assert world.bridge.failures == []


@pytest.mark.asyncio
async def test_the_bridge_loads_each_psk_before_the_answer_leaves(tmp_path: Path) -> None:
    """An outer middleware sees how many PSKs the edge took when each answer leaves: the
    PSKs that request stored, every time (one per generate, all of a bulk set)."""
    require_strongswan()
    seen: list[int] = []
    link: list[Bridge] = []

    @web.middleware
    async def witness(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response = await handler(request)
        if request.method == "POST":
            seen.append(link[0].loaded)
        return response

    async with (
        run(tunnels=3, gre_tunnels=0, rate_limit=None, middlewares=[witness]) as emu,
        MagicWAN(api_token=emu.api_token, base_url=emu.base_url, environ={}) as client,
    ):
        tunnels = await client.tunnels.ipsec.list(emu.account_id)
        async with ike_lab(tunnels, keep_logs=tmp_path / "charon") as lab:
            with bridge(emu.state, lab) as opened:
                link.append(opened)
                for tunnel in tunnels:
                    await client.tunnels.ipsec.psk.generate(emu.account_id, tunnel.id)
                new = {t.id: new_psk() for t in tunnels}
                result = await client.tunnels.ipsec.psk.set(emu.account_id, new)
                assert sorted(result.applied) == sorted(new)
                assert seen == [1, 2, 3, 6]
                # And the edge holds the set PSKs: the router authenticates with each at once.
                deliver = StrongSwan(lab.router_socket, reauth=True)
                for tunnel in tunnels:
                    await deliver(
                        Delivery(
                            account_id=emu.account_id,
                            tunnel_id=tunnel.id,
                            psk=new[tunnel.id],
                            tunnel=tunnel,
                        )
                    )
                assert set((await lab.sa_states()).values()) == {"ESTABLISHED"}
                per_psk = opened.seconds_per_psk
                assert per_psk is not None
                assert per_psk > 0


@pytest.mark.asyncio
async def test_the_bridge_starts_with_the_psks_the_emulator_holds(tmp_path: Path) -> None:
    require_strongswan()
    async with run(tunnels=2, gre_tunnels=0, rate_limit=None) as emu:
        first, second = (emu.state.tunnel(emu.account_id, i) for i in emu.tunnel_ids)
        held = emu.state.generate_psk(first).psk  # before the bridge: only the sync loads it
        async with (
            MagicWAN(api_token=emu.api_token, base_url=emu.base_url, environ={}) as client,
        ):
            tunnels = await client.tunnels.ipsec.list(emu.account_id)
        async with ike_lab(tunnels, keep_logs=tmp_path / "charon") as lab:
            with bridge(emu.state, lab) as link:
                assert link.loaded == 1  # the second tunnel has no PSK yet
                assert await lab.shared_ids(side="edge") == [f"edge-{first.ipsec_id}"]
                await StrongSwan(lab.router_socket, reauth=True)(
                    Delivery(
                        account_id=emu.account_id, tunnel_id=first.id, psk=held, tunnel=tunnels[0]
                    )
                )
                assert await lab.sa_state(first.name) == "ESTABLISHED"
                assert await lab.sa_state(second.name) is None


@pytest.mark.asyncio
async def test_a_closed_bridge_loads_nothing_more(tmp_path: Path) -> None:
    require_strongswan()
    async with emulated_lab(1, keep_logs=tmp_path / "charon") as world:
        [tunnel] = world.tunnels
        deliver = StrongSwan(world.lab.router_socket, reauth=True)
        old = await world.client.tunnels.ipsec.psk.generate(world.account_id, tunnel.id)
        assert old.psk is not None
        world.bridge.close()
        world.bridge.close()  # twice is fine
        new = await world.client.tunnels.ipsec.psk.generate(world.account_id, tunnel.id)
        assert new.psk is not None
        assert world.bridge.loaded == 1
        with pytest.raises(DeliveryError) as caught:  # the edge still holds the old PSK
            await deliver(delivery(world, tunnel, new.psk))
        assert caught.value.reason == "authentication_failed"
        await deliver(delivery(world, tunnel, old.psk))
        assert await world.lab.sa_state(conn(tunnel)) == "ESTABLISHED"


@pytest.mark.asyncio
async def test_tunnels_outside_the_lab_are_not_bridged(tmp_path: Path) -> None:
    require_strongswan()
    async with (
        run(tunnels=2, gre_tunnels=0, rate_limit=None) as emu,
        MagicWAN(api_token=emu.api_token, base_url=emu.base_url, environ={}) as client,
    ):
        inside, outside = await client.tunnels.ipsec.list(emu.account_id)
        async with ike_lab([inside], keep_logs=tmp_path / "charon") as lab:
            with bridge(emu.state, lab) as link:
                await client.tunnels.ipsec.psk.generate(emu.account_id, outside.id)
                assert link.loaded == 0
                await client.tunnels.ipsec.psk.generate(emu.account_id, inside.id)
                assert link.loaded == 1
                assert await lab.shared_ids(side="edge") == [f"edge-{inside.ipsec_id}"]


@pytest.mark.asyncio
async def test_an_edge_that_is_down_fails_the_bridge_not_the_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    require_strongswan()
    async with emulated_lab(1, keep_logs=tmp_path / "charon") as world:
        [tunnel] = world.tunnels
        await world.lab.stop("edge")
        result = await world.client.tunnels.ipsec.psk.generate(world.account_id, tunnel.id)
        assert result.psk is not None
        assert result.psk == world.current_psk(tunnel)  # the emulator answered all the same
        assert world.bridge.loaded == 0
        [failure] = world.bridge.failures
        assert failure.startswith(f"tunnel {tunnel.id}: the edge did not take its PSK")
        assert result.psk not in failure
        [logged] = [r for r in caplog.records if "PSK listener failed" in r.getMessage()]
        assert logged.exc_info is not None
        assert "the edge did not take its PSK" in caplog.text  # with its traceback
        assert result.psk not in caplog.text


@pytest.mark.asyncio
async def test_a_failed_initiate_carries_charons_reason(tmp_path: Path) -> None:
    require_strongswan()
    [tunnel] = make_tunnels(1)
    assert tunnel.ipsec_id is not None
    async with ike_lab([tunnel], keep_logs=tmp_path / "charon") as lab:
        await lab.load_edge_psk(tunnel.ipsec_id, "the-edge-holds-this-one")
        await StrongSwan(lab.router_socket)(
            Delivery(
                account_id="0" * 32,
                tunnel_id=tunnel.id,
                psk="the-router-holds-another",
                tunnel=tunnel,
            )
        )
        with pytest.raises(IKELabError) as caught:
            await lab.initiate(conn(tunnel))
        assert "received AUTHENTICATION_FAILED notify error" in caught.value.log
        assert "AUTHENTICATION_FAILED" in str(caught.value)


@pytest.mark.parametrize(
    ("missing", "reason"),
    [
        ("root", "needs root (network and mount namespaces)"),
        ("nsenter", "needs nsenter (apt-get install util-linux)"),
        ("ip", "needs ip (apt-get install iproute2)"),
        ("charon", "needs charon at /usr/lib/ipsec/charon (apt-get install strongswan-charon)"),
        ("vici", "needs the vici package (pip install 'magicwan[strongswan]')"),
    ],
)
def test_the_lab_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, missing: str, reason: str
) -> None:
    """Everything present but one thing: ike_missing() names it, and what to install."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000 if missing == "root" else 0)
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool == missing else f"/bin/{tool}")
    monkeypatch.setattr(os, "access", lambda path, mode: missing != "charon")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "vici" and missing == "vici" else real_find_spec(name),
    )
    assert ike_missing() == reason
