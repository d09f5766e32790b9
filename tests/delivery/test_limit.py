"""magicwan.delivery.limit_deliveries: N deliveries at once, one at a time per device."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest

from magicwan import IPsecTunnel
from magicwan.delivery import (
    GROUP_KEYS,
    Checkable,
    Delivery,
    DeliveryTarget,
    LimitedDeliverer,
    group_key,
    limit_deliveries,
)

ACCOUNT = "023e105f4ecef8ad9ca31a8372d0c353"
PSK = "O3bwKSjnaoCxDoUxjcq4Rk8ZKkezQUiy"


def delivery(index: int, endpoint: str | None) -> Delivery:
    tunnel_id = f"{index:032x}"
    tunnel = IPsecTunnel(id=tunnel_id, name=f"t{index}", customer_endpoint=endpoint)
    return Delivery(account_id=ACCOUNT, tunnel_id=tunnel_id, psk=PSK, tunnel=tunnel)


class Gate:
    """A deliverer whose deliveries wait until released; it records who ran together."""

    def __init__(self) -> None:
        self.running: dict[str, int] = defaultdict(int)
        self.peak = 0
        self.group_peak: dict[str, int] = defaultdict(int)
        self.started: list[str] = []
        self.release = asyncio.Event()
        self.key = group_key("customer_endpoint")

    async def __call__(self, delivery: Delivery) -> None:
        await self.enter(delivery)

    async def enter(self, target: DeliveryTarget) -> None:
        key = self.key(target)
        self.started.append(target.tunnel_id)
        self.running[key] += 1
        self.peak = max(self.peak, sum(self.running.values()))
        self.group_peak[key] = max(self.group_peak[key], self.running[key])
        try:
            await self.release.wait()
        finally:
            self.running[key] -= 1

    @property
    def now(self) -> int:
        return sum(self.running.values())


class CheckableGate(Gate):
    async def check(self, target: DeliveryTarget) -> None:
        await self.enter(target)


async def settle() -> None:
    """Let every runnable task run until it blocks."""
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_at_most_concurrency_deliveries_run_at_once() -> None:
    gate = Gate()
    limited = limit_deliveries(gate, 3)
    tasks = [asyncio.ensure_future(limited(delivery(i, f"192.0.2.{i}"))) for i in range(10)]
    await settle()
    assert (gate.now, limited.running) == (3, 3)
    gate.release.set()
    await asyncio.gather(*tasks)
    assert (gate.peak, len(gate.started), limited.running) == (3, 10, 0)


@pytest.mark.asyncio
async def test_one_delivery_at_a_time_per_customer_endpoint() -> None:
    gate = Gate()
    limited = limit_deliveries(gate, 4, group_by=group_key("customer_endpoint"))
    # Six tunnels on one router, then three on three others.
    endpoints = ["203.0.113.7"] * 6 + ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
    tasks = [asyncio.ensure_future(limited(delivery(i, ep))) for i, ep in enumerate(endpoints)]
    await settle()
    # The router's first tunnel runs, and the other routers run beside it: the router's
    # waiting tunnels do not hold the slots the others need.
    assert gate.started == [f"{i:032x}" for i in (0, 6, 7, 8)]
    gate.release.set()
    await asyncio.gather(*tasks)
    assert max(gate.group_peak.values()) == 1
    assert len(gate.started) == 9
    assert limited._groups == {}  # nothing kept for groups that have gone


@pytest.mark.asyncio
async def test_the_same_router_spelled_two_ways_is_one_group() -> None:
    gate = Gate()
    limited = limit_deliveries(gate, 4, group_by=group_key("customer_endpoint"))
    tasks = [
        asyncio.ensure_future(limited(delivery(1, "2001:DB8::1"))),
        asyncio.ensure_future(limited(delivery(2, "2001:db8:0:0::1"))),
        asyncio.ensure_future(limited(delivery(3, "Router.Example"))),
        asyncio.ensure_future(limited(delivery(4, "router.example "))),
    ]
    await settle()
    assert gate.now == 2
    gate.release.set()
    await asyncio.gather(*tasks)


def test_a_target_without_a_known_endpoint_is_a_group_of_its_own() -> None:
    key = group_key("customer_endpoint")
    bare = DeliveryTarget(account_id=ACCOUNT, tunnel_id="t1")
    assert key(bare) == "tunnel_id=t1"
    assert key(delivery(5, None)) == f"tunnel_id={5:032x}"
    assert key(delivery(6, "")) == f"tunnel_id={6:032x}"
    assert key(delivery(7, "203.0.113.7")) == "customer_endpoint=203.0.113.7"
    assert key(DeliveryTarget(account_id=ACCOUNT, tunnel_id="203.0.113.7")) != key(
        delivery(7, "203.0.113.7")
    )


def test_group_keys_are_named_for_the_flag() -> None:
    assert set(GROUP_KEYS) == {"customer_endpoint"}
    for name, function in GROUP_KEYS.items():
        assert group_key(name) is function
    with pytest.raises(ValueError, match="choose from: customer_endpoint"):
        group_key("customer-endpoint")


@pytest.mark.parametrize("concurrency", [0, -1, True, 1.5])
def test_concurrency_must_be_a_positive_whole_number(concurrency: object) -> None:
    with pytest.raises(ValueError, match="concurrency"):
        limit_deliveries(Gate(), concurrency)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_checks_are_limited_like_deliveries_when_the_deliverer_checks() -> None:
    plain = limit_deliveries(Gate(), 2)
    assert isinstance(plain, LimitedDeliverer)
    assert not isinstance(plain, Checkable)
    gate = CheckableGate()
    limited = limit_deliveries(gate, 2, group_by=group_key("customer_endpoint"))
    assert isinstance(limited, Checkable)
    targets = [delivery(i, "203.0.113.7" if i < 3 else f"192.0.2.{i}") for i in range(6)]
    tasks = [asyncio.ensure_future(limited.check(target)) for target in targets]
    await settle()
    assert gate.now == 2
    assert gate.started == [f"{0:032x}", f"{3:032x}"]
    gate.release.set()
    await asyncio.gather(*tasks)
    assert max(gate.group_peak.values()) == 1


@pytest.mark.asyncio
async def test_a_cancelled_waiter_gives_its_turn_away() -> None:
    gate = Gate()
    limited = limit_deliveries(gate, 1, group_by=group_key("customer_endpoint"))
    first = asyncio.ensure_future(limited(delivery(1, "203.0.113.7")))
    waiting = asyncio.ensure_future(limited(delivery(2, "203.0.113.7")))
    other = asyncio.ensure_future(limited(delivery(3, "192.0.2.1")))
    await settle()
    waiting.cancel()
    first.cancel()
    await settle()
    assert gate.started == [f"{1:032x}", f"{3:032x}"]
    gate.release.set()
    await other
    assert (first.cancelled(), waiting.cancelled(), limited.running) == (True, True, 0)
    assert limited._groups == {}


@pytest.mark.asyncio
async def test_a_failing_delivery_frees_its_turn() -> None:
    calls: list[str] = []

    async def broken(delivery: Delivery) -> None:
        calls.append(delivery.tunnel_id)
        raise RuntimeError("router said no")

    limited = limit_deliveries(broken, 1, group_by=group_key("customer_endpoint"))
    for index in range(3):
        with pytest.raises(RuntimeError):
            await limited(delivery(index, "203.0.113.7"))
    assert len(calls) == 3
    assert limited.running == 0


def test_the_limit_serves_one_event_loop_after_another() -> None:
    gate = Gate()
    limited = limit_deliveries(gate, 1)

    async def one() -> None:
        gate.release = asyncio.Event()
        gate.release.set()
        await limited(delivery(1, "203.0.113.7"))

    asyncio.run(one())
    asyncio.run(one())
    assert len(gate.started) == 2
