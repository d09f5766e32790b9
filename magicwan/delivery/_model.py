"""What a deliverer is handed: one tunnel's new PSK and the facts needed to place it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs

from magicwan.models.tunnels import IPsecTunnel

__all__ = ["Deliverer", "Delivery"]


def _ipsec_id_of_tunnel(delivery: Delivery) -> str | None:
    return delivery.tunnel.ipsec_id if delivery.tunnel is not None else None


@attrs.frozen(kw_only=True)
class Delivery:
    """A new PSK for one tunnel, on its way to the tunnel's other end (the customer's device).

    ``ipsec_id`` is the IKE identity that device presents; when it is not given it is
    read from ``tunnel``. ``tunnel`` is the tunnel as last read from Cloudflare, when
    the caller has it. The PSK is left out of ``repr``.
    """

    account_id: str = attrs.field(validator=attrs.validators.instance_of(str))
    tunnel_id: str = attrs.field(validator=attrs.validators.instance_of(str))
    psk: str = attrs.field(repr=False, validator=attrs.validators.instance_of(str))
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


#: ``async def deliver(delivery: Delivery) -> None``: raise to fail the delivery.
Deliverer = Callable[[Delivery], Awaitable[None]]
