"""Issue 12's proof: PSK rotation end to end, with two real charon daemons.

The emulator stands in for Cloudflare's API; the lab's *edge* charon holds, through the
bridge, exactly the PSK the emulator holds for each tunnel. The *router* charon gets its
PSKs only from the rotation's deliverer, ``magicwan.delivery.StrongSwan(reauth=True)``:
each delivered PSK is proven by a new IKE SA that the router initiates. For a few
tunnels the new PSK is *lost* on its way (:class:`Router`): the router re-authenticates
with the PSK it still holds, and the edge, which holds the new one, refuses it
(AUTHENTICATION_FAILED). Those tunnels come back undelivered, with their PSK, and a rerun
on the same journal delivers them without generating anything.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
import pytest
from aiohttp import web

from magicwan import IPsecTunnel
from magicwan.delivery import Delivery, DeliveryError, StrongSwan
from magicwan.errors import RotationHaltedError
from magicwan.journal import Delivered, Intent, Rotated, Undelivered, iter_events, read_journal
from magicwan.rotation import (
    Method,
    OutcomeState,
    RotationFailure,
    RotationOutcome,
    RotationSuccess,
)
from tests.support.disk import DurableBytes
from tests.support.strongswan import EmulatedLab, IKELabError, emulated_lab, require_strongswan

#: Tunnels, each its own IKE connection on both daemons (issue 12: at least 20).
N = 24
#: Indexes (in the emulator's order) of the tunnels whose new PSK is lost on its way to
#: the router; 2 is one of the tunnels with a custom FQDN identity besides its ipsec_id.
LOST = (2, 7, 13, 19)


class Router:
    """The router's side of delivery: ``StrongSwan(reauth=True)`` on the lab's router.

    For a tunnel in ``lost`` the new PSK never arrives: the router re-authenticates with
    the PSK it holds (as a router whose delivery went astray would), which IKE refuses.
    ``holds`` is what the router holds per tunnel id; ``calls`` the tunnel ids it was
    handed, in order.
    """

    def __init__(self, world: EmulatedLab, *, lost: frozenset[str] = frozenset()) -> None:
        self.strongswan = StrongSwan(world.lab.router_socket, reauth=True)
        self.lost = lost
        self.holds: dict[str, str] = {}
        self.calls: list[str] = []

    async def __call__(self, delivery: Delivery) -> None:
        self.calls.append(delivery.tunnel_id)
        if delivery.tunnel_id in self.lost:
            held = self.holds[delivery.tunnel_id]
            await self.strongswan(attrs.evolve(delivery, psk=held))
            return  # the old PSK authenticated: the test's assertions will say so
        await self.strongswan(delivery)
        self.holds[delivery.tunnel_id] = delivery.psk


async def rotate_all(
    world: EmulatedLab, journal: Path, router: Router, *, method: Method = "generate"
) -> list[RotationOutcome]:
    """Rotate every tunnel once, delivering through ``router``, each delivery tried once."""
    rotation = world.client.tunnels.ipsec.psk.rotate(
        world.account_id,
        world.tunnels,
        method=method,
        journal=journal,
        resume=True,
        deliver=router,
        deliver_retries=0,
        halt_after=None,
    )
    async with rotation:
        return [outcome async for outcome in rotation]


def conn(tunnel: IPsecTunnel) -> str:
    assert tunnel.name is not None
    return tunnel.name


async def establish(world: EmulatedLab, tmp_path: Path) -> Router:
    """Give every tunnel a first PSK, on both ends: the router holds an ESTABLISHED IKE SA
    per tunnel, which the rotation must re-authenticate with the new PSK."""
    router = Router(world)
    outcomes = await rotate_all(world, tmp_path / "first.jsonl", router)
    assert [o.state for o in outcomes] == [OutcomeState.ROTATED] * N
    assert all(o.delivered for o in outcomes)
    assert await world.lab.sa_states() == {conn(t): "ESTABLISHED" for t in world.tunnels}
    assert router.holds == {t.id: world.current_psk(t) for t in world.tunnels}
    return router


@pytest.mark.parametrize("method", ["generate", "set"])
@pytest.mark.asyncio
async def test_rotated_psks_reach_the_router_and_ike_proves_them(
    tmp_path: Path, method: Method
) -> None:
    require_strongswan()
    async with emulated_lab(N, keep_logs=tmp_path / "charon") as world:
        tunnels = world.tunnels
        lost = [tunnels[i] for i in LOST]
        lost_ids = frozenset(t.id for t in lost)
        delivered = [t for t in tunnels if t.id not in lost_ids]

        first = await establish(world, tmp_path)
        before = {t.id: (await world.lab.ike_sas(conn(t)))[-1]["uniqueid"] for t in tunnels}
        old = dict(first.holds)

        router = Router(world, lost=lost_ids)
        router.holds = dict(first.holds)
        journal = tmp_path / "rotation.jsonl"
        outcomes = await rotate_all(world, journal, router, method=method)

        by_id = {o.tunnel_id: o for o in outcomes}
        assert sorted(by_id) == sorted(t.id for t in tunnels)  # one outcome each
        assert sorted(router.calls) == sorted(by_id)  # one delivery each (no retries)
        for tunnel in tunnels:
            assert world.generation(tunnel) == 2  # exactly one new PSK per tunnel
            assert world.current_psk(tunnel) != old[tunnel.id]

        # Delivered: the router's new IKE SA authenticated with the emulator's new PSK.
        for tunnel in delivered:
            outcome = by_id[tunnel.id]
            assert isinstance(outcome, RotationSuccess)
            assert outcome.state is OutcomeState.ROTATED
            assert outcome.delivered is True
            assert outcome.psk == world.current_psk(tunnel) == router.holds[tunnel.id]
            [sa] = await world.lab.ike_sas(conn(tunnel))
            assert sa["state"] == "ESTABLISHED"
            assert sa["initiator"] == "yes"  # the router initiated it
            assert sa["uniqueid"] != before[tunnel.id]  # re-authenticated, not the old SA
            assert (sa["local-id"], sa["remote-id"]) == (
                tunnel.ipsec_id,
                tunnel.cloudflare_endpoint,
            )
            assert await world.lab.sa_state(conn(tunnel), side="edge") == "ESTABLISHED"

        # Lost: IKE_AUTH failed, the outcome says undelivered and carries the live PSK.
        for tunnel in lost:
            outcome = by_id[tunnel.id]
            assert isinstance(outcome, RotationFailure)
            assert outcome.state is OutcomeState.UNDELIVERED
            assert outcome.delivered is False
            assert outcome.psk is not None
            assert outcome.psk == world.current_psk(tunnel)
            assert isinstance(outcome.error, DeliveryError)
            assert outcome.error.reason == "authentication_failed"
            assert outcome.error.tunnel_id == tunnel.id
            assert isinstance(outcome.delivery_error, DeliveryError)
            assert "received AUTHENTICATION_FAILED notify error" in str(outcome.delivery_error)
            assert outcome.psk not in str(outcome.error)
            assert router.holds[tunnel.id] == old[tunnel.id]  # the router kept its old PSK
            assert await world.lab.sa_state(conn(tunnel)) is None
            # ... and initiating it from the router fails the same way.
            with pytest.raises(IKELabError) as caught:
                await world.lab.initiate(conn(tunnel))
            assert "received AUTHENTICATION_FAILED notify error" in caught.value.log

        # The journal: every tunnel's PSK is the emulator's; delivered only where it was.
        events = list(iter_events(journal))
        for tunnel in tunnels:
            mine = [e for e in events if e.tunnel_id == tunnel.id]
            rotated = [e for e in mine if isinstance(e, Rotated)]
            assert [e.psk for e in rotated] == [world.current_psk(tunnel)]
            assert all(e.method == method for e in mine if isinstance(e, Intent | Rotated))
            kinds = [type(e) for e in mine if isinstance(e, Delivered | Undelivered)]
            assert kinds == [Undelivered if tunnel.id in lost_ids else Delivered]
        records = read_journal(journal)
        for tunnel in tunnels:
            record = records[(world.account_id, tunnel.id)]
            assert record.rotated
            assert record.psk == world.current_psk(tunnel)
            assert record.delivered is (tunnel.id not in lost_ids)

        # A rerun on the same journal with a router that gets every PSK: only the lost
        # tunnels are delivered, nothing is generated or sent to the API.
        generations = world.emu.state.total_generations()
        requests = world.emu.state.requests.total
        rerun = Router(world)
        rerun.holds = dict(router.holds)
        again = await rotate_all(world, journal, rerun, method=method)
        assert world.emu.state.total_generations() == generations
        assert world.emu.state.requests.total == requests
        assert sorted(rerun.calls) == sorted(lost_ids)
        assert sorted(o.tunnel_id for o in again) == sorted(by_id)
        for outcome in again:
            assert isinstance(outcome, RotationSuccess)
            assert outcome.state is OutcomeState.SKIPPED
            assert outcome.delivered is True
            assert outcome.psk == world.emu.state.current_psk(world.account_id, outcome.tunnel_id)
        records = read_journal(journal)
        assert all(records[(world.account_id, t.id)].delivered for t in tunnels)

        # Afterwards every tunnel's IKE SA, initiated from the router, is ESTABLISHED.
        assert await world.lab.sa_states() == {conn(t): "ESTABLISHED" for t in tunnels}
        assert rerun.holds == {t.id: world.current_psk(t) for t in tunnels}
        assert world.bridge.failures == []


@pytest.mark.asyncio
async def test_a_halted_rotation_sends_nothing_for_the_tunnels_it_never_started(
    tmp_path: Path,
) -> None:
    """halt_after=2, with the first two deliveries failing: the rotation stops starting
    tunnels; those come back NOT_ATTEMPTED, no request was sent for them, and their
    IKE SAs are untouched. A rerun on the journal finishes the job."""
    require_strongswan()
    posted: list[str] = []

    @web.middleware
    async def witness(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.method == "POST":
            posted.append(request.path)
        return await handler(request)

    async with emulated_lab(N, keep_logs=tmp_path / "charon", middlewares=[witness]) as world:
        tunnels = world.tunnels
        first = await establish(world, tmp_path)
        before = {t.id: (await world.lab.ike_sas(conn(t)))[-1]["uniqueid"] for t in tunnels}
        posted.clear()

        lost_ids = frozenset(t.id for t in tunnels[:2])  # the first two started fail
        router = Router(world, lost=lost_ids)
        router.holds = dict(first.holds)
        journal = tmp_path / "rotation.jsonl"
        rotation = world.client.tunnels.ipsec.psk.rotate(
            world.account_id,
            tunnels,
            journal=journal,
            resume=True,
            deliver=router,
            deliver_retries=0,
            concurrency=1,  # tunnels start one after another, in order
            halt_after=2,
        )
        async with rotation:
            outcomes = [outcome async for outcome in rotation]
        assert rotation.halted

        by_id = {o.tunnel_id: o for o in outcomes}
        assert sorted(by_id) == sorted(t.id for t in tunnels)
        never = [t for t in tunnels if by_id[t.id].state is OutcomeState.NOT_ATTEMPTED]
        started = [t for t in tunnels if by_id[t.id].state is not OutcomeState.NOT_ATTEMPTED]
        assert never  # the halt left tunnels unstarted
        assert [t.id for t in started] == [t.id for t in tunnels[: len(started)]]
        assert len(started) <= 3  # the two that failed, and at most the one started meanwhile

        for tunnel in tunnels[:2]:
            outcome = by_id[tunnel.id]
            assert outcome.state is OutcomeState.UNDELIVERED
            assert outcome.psk == world.current_psk(tunnel)
            assert isinstance(outcome.error, DeliveryError)
            assert outcome.error.reason == "authentication_failed"
        for tunnel in started[2:]:
            outcome = by_id[tunnel.id]
            assert outcome.state is OutcomeState.ROTATED
            assert outcome.delivered is True
            assert await world.lab.sa_state(conn(tunnel)) == "ESTABLISHED"

        sent_for = {path.split("/")[-2] for path in posted}
        assert sent_for == {t.id for t in started}
        assert len(posted) == len(started)
        events = list(iter_events(journal))
        for tunnel in never:
            outcome = by_id[tunnel.id]
            assert isinstance(outcome, RotationFailure)
            assert isinstance(outcome.error, RotationHaltedError)
            assert outcome.psk is None
            assert outcome.delivered is None
            assert world.generation(tunnel) == 1  # only the first PSK
            assert world.current_psk(tunnel) == first.holds[tunnel.id]
            assert not [e for e in events if e.tunnel_id == tunnel.id]
            assert tunnel.id not in router.calls
            [sa] = await world.lab.ike_sas(conn(tunnel))
            assert sa["state"] == "ESTABLISHED"
            assert sa["uniqueid"] == before[tunnel.id]  # untouched

        # A rerun with a router that gets every PSK: the never-started tunnels are rotated
        # now, the undelivered ones delivered without a new PSK.
        rerun = Router(world)
        rerun.holds = dict(router.holds)
        again = {o.tunnel_id: o for o in await rotate_all(world, journal, rerun)}
        for tunnel in tunnels:
            expected = OutcomeState.ROTATED if tunnel in never else OutcomeState.SKIPPED
            assert again[tunnel.id].state is expected
            assert again[tunnel.id].delivered is True
            assert world.generation(tunnel) == 2
        assert sorted(rerun.calls) == sorted([t.id for t in never] + [t.id for t in tunnels[:2]])
        assert await world.lab.sa_states() == {conn(t): "ESTABLISHED" for t in tunnels}


@pytest.mark.asyncio
async def test_a_delivered_line_is_on_disk_when_its_outcome_is_handed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a crash, a delivered tunnel whose ``delivered`` line was lost is delivered again
    by the rerun: with ``reauth=True`` one more outage of its IKE SA. The journal's promise
    (lines it must not lose are fsynced before anything is handed over) should cover it."""
    require_strongswan()
    durable = DurableBytes(monkeypatch)  # how much of the journal the last fsync covered
    async with emulated_lab(3, keep_logs=tmp_path / "charon") as world:
        journal = tmp_path / "rotation.jsonl"
        rotation = world.client.tunnels.ipsec.psk.rotate(
            world.account_id,
            world.tunnels,
            journal=journal,
            resume=True,
            deliver=Router(world),
            concurrency=1,
        )
        async with rotation:
            async for outcome in rotation:
                assert outcome.delivered is True
                written = journal.read_bytes()
                ends, end = [], 0
                for line in written.splitlines(keepends=True):
                    end += len(line)
                    event = json.loads(line)
                    if event["event"] == "delivered" and event["tunnel_id"] == outcome.tunnel_id:
                        ends.append(end)
                assert ends, "no delivered line for a delivered tunnel"
                assert ends[-1] <= durable.bytes, "its delivered line is not on disk yet"
