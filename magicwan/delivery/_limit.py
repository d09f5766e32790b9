"""Bound how many deliveries run at once: overall, and one at a time per device."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager

from magicwan.delivery._model import Checkable, Deliverer, Delivery, DeliveryTarget
from magicwan.internal.validation import check_positive_int

__all__ = ["GROUP_KEYS", "LimitedDeliverer", "group_key", "limit_deliveries"]

#: A group key function: deliveries with the same key run one at a time.
GroupKey = Callable[[DeliveryTarget], str]


def _by_customer_endpoint(target: DeliveryTarget) -> str:
    """The customer's device; a tunnel whose endpoint is unknown is a group of its own."""
    endpoint = target.customer_endpoint
    if not endpoint:
        return f"tunnel_id={target.tunnel_id}"
    try:  # one device, however its address is spelled (2001:DB8::1, 2001:db8:0::1)
        endpoint = str(ipaddress.ip_address(endpoint.strip()))
    except ValueError:
        endpoint = endpoint.strip().lower()
    return f"customer_endpoint={endpoint}"


#: The group keys by name (the values of ``--deliver-group-by``).
GROUP_KEYS: Mapping[str, GroupKey] = {"customer_endpoint": _by_customer_endpoint}


def group_key(name: str) -> GroupKey:
    """The group key function named ``name`` (a key of :data:`GROUP_KEYS`).

    ``"customer_endpoint"`` groups the tunnels that end at the same customer device (its
    address, normalized); a target without a tunnel, or whose tunnel has no customer
    endpoint, is a group of its own (by tunnel id). ValueError for an unknown name.
    """
    try:
        return GROUP_KEYS[name]
    except KeyError:
        choices = ", ".join(sorted(GROUP_KEYS))
        raise ValueError(f"unknown delivery group {name!r}; choose from: {choices}") from None


class LimitedDeliverer:
    """A deliverer that runs at most ``concurrency`` deliveries of ``deliverer`` at once,
    and at most one at a time per ``group_by`` key. Made by :func:`limit_deliveries`."""

    def __init__(
        self, deliverer: Deliverer, concurrency: int, group_by: GroupKey | None = None
    ) -> None:
        check_positive_int(concurrency, "concurrency")
        self.deliverer = deliverer
        self.concurrency = concurrency
        self.group_by = group_by
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(concurrency)
        # key -> (its lock, how many deliveries hold or wait for it); dropped at zero.
        self._groups: dict[str, tuple[asyncio.Lock, int]] = {}
        self._running = 0

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.deliverer!r}, concurrency={self.concurrency!r}, "
            f"group_by={self.group_by!r})"
        )

    @property
    def running(self) -> int:
        """How many deliveries (or checks) run now."""
        return self._running

    async def __call__(self, delivery: Delivery) -> None:
        """Deliver through the wrapped deliverer once a slot (and the group) is free."""
        async with self._turn(delivery):
            await self.deliverer(delivery)

    @asynccontextmanager
    async def _turn(self, target: DeliveryTarget) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # asyncio primitives belong to one loop
            self._loop = loop
            self._slots = asyncio.Semaphore(self.concurrency)
            self._groups = {}
        if self.group_by is None:
            async with self._slots:
                with self._counted():
                    yield
            return
        key = self.group_by(target)
        lock, users = self._groups.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._groups[key] = (lock, users + 1)
        try:
            # The group first: a delivery waiting for its device holds no overall slot.
            async with lock, self._slots:
                with self._counted():
                    yield
        finally:
            lock, users = self._groups[key]
            if users == 1:
                del self._groups[key]
            else:
                self._groups[key] = (lock, users - 1)

    @contextmanager
    def _counted(self) -> Iterator[None]:
        self._running += 1
        try:
            yield
        finally:
            self._running -= 1


class _CheckableLimited(LimitedDeliverer):
    """A :class:`LimitedDeliverer` of a :class:`Checkable` deliverer: checks are limited
    the same way, since they talk to the same devices."""

    async def check(self, target: DeliveryTarget) -> None:
        """Check ``target`` through the wrapped deliverer once a slot (and the group) is free."""
        checkable = self.deliverer
        assert isinstance(checkable, Checkable)
        async with self._turn(target):
            await checkable.check(target)


def limit_deliveries(
    deliverer: Deliverer, concurrency: int, group_by: GroupKey | None = None
) -> LimitedDeliverer:
    """``deliverer``, limited to ``concurrency`` deliveries at once overall and to one at a
    time per ``group_by(target)`` key (for instance :func:`group_key`
    ``("customer_endpoint")``: one delivery at a time per device, for routers that carry
    several tunnels).

    Waiters are served first come, first served. The result is
    :class:`~magicwan.delivery.Checkable` when ``deliverer`` is, and limits checks too.
    A deadline around a call also counts the time spent waiting for a turn.
    """
    if isinstance(deliverer, Checkable):
        return _CheckableLimited(deliverer, concurrency, group_by)
    return LimitedDeliverer(deliverer, concurrency, group_by)
