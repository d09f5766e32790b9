"""What a deliverer is handed: one tunnel's new PSK and the facts needed to place it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

import attrs

from magicwan.models.tunnels import IPsecTunnel

__all__ = ["Checkable", "Deliverer", "Delivery", "DeliveryTarget"]


def _ipsec_id_of_tunnel(target: DeliveryTarget) -> str | None:
    return target.tunnel.ipsec_id if target.tunnel is not None else None


@attrs.frozen(kw_only=True)
class DeliveryTarget:
    """One tunnel's other end (the customer's device), and the facts needed to reach it.

    ``ipsec_id`` is the IKE identity that device presents; when it is not given it is
    read from ``tunnel``. ``tunnel`` is the tunnel as last read from Cloudflare, when
    the caller has it. A :class:`Delivery` is a target with a PSK; a
    :class:`Checkable` deliverer checks a bare target.
    """

    account_id: str = attrs.field(validator=attrs.validators.instance_of(str))
    tunnel_id: str = attrs.field(validator=attrs.validators.instance_of(str))
    tunnel: IPsecTunnel | None = None
    ipsec_id: str | None = attrs.field(default=attrs.Factory(_ipsec_id_of_tunnel, takes_self=True))

    @property
    def name(self) -> str | None:
        """The tunnel's name, if ``tunnel`` is known."""
        return self.tunnel.name if self.tunnel is not None else None

    @property
    def cloudflare_endpoint(self) -> str | None:
        """Cloudflare's end of the tunnel (its IP address), if ``tunnel`` is known."""
        return self.tunnel.cloudflare_endpoint if self.tunnel is not None else None

    @property
    def customer_endpoint(self) -> str | None:
        """The customer's end of the tunnel, if ``tunnel`` is known."""
        return self.tunnel.customer_endpoint if self.tunnel is not None else None


@attrs.frozen(kw_only=True)
class Delivery(DeliveryTarget):
    """A new PSK for one tunnel, on its way to the tunnel's other end (the customer's device).

    The facts of :class:`DeliveryTarget`, and ``psk``, which is left out of ``repr``.
    """

    psk: str = attrs.field(repr=False, validator=attrs.validators.instance_of(str))


#: ``async def deliver(delivery: Delivery) -> None``: raise to fail the delivery.
Deliverer = Callable[[Delivery], Awaitable[None]]


@runtime_checkable
class Checkable(Protocol):
    """A deliverer that can try a tunnel's other end without a new PSK (``--deliver-check``).

    ``await deliverer.check(target)`` returns when a delivery to ``target`` could be
    made (the strongSwan connection exists, the program is there and, if asked, says
    yes) and raises :class:`~magicwan.delivery.DeliveryError` saying why not. It changes
    nothing at the other end. Test for it with ``isinstance(deliverer, Checkable)``.
    """

    async def check(self, target: DeliveryTarget) -> None: ...
