"""What a deliverer is given: one tunnel's new PSK and the facts to place it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs

from magicwan.models.tunnels import IPsecTunnel

__all__ = ["Deliverer", "Delivery"]


@attrs.frozen(kw_only=True)
class Delivery:
    """One tunnel's new PSK, to be placed on the tunnel's other end.

    ``tunnel`` is the :class:`~magicwan.IPsecTunnel` when the rotation was given tunnel
    objects (from ``list()``), else None. ``psk`` is left out of ``repr``.
    """

    account_id: str
    tunnel_id: str
    psk: str = attrs.field(repr=False)
    ipsec_id: str | None = None
    tunnel: IPsecTunnel | None = None

    @property
    def name(self) -> str | None:
        """The tunnel's name, when the tunnel object is known."""
        return self.tunnel.name if self.tunnel is not None else None

    @property
    def cloudflare_endpoint(self) -> str | None:
        """Cloudflare's end of the tunnel, when the tunnel object is known."""
        return self.tunnel.cloudflare_endpoint if self.tunnel is not None else None

    @property
    def customer_endpoint(self) -> str | None:
        """The customer's end of the tunnel, when the tunnel object is known."""
        return self.tunnel.customer_endpoint if self.tunnel is not None else None


#: ``async def deliver(delivery: Delivery) -> None``: raise to fail the delivery.
Deliverer = Callable[[Delivery], Awaitable[None]]
