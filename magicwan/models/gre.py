"""Models of Magic WAN GRE tunnels."""

from __future__ import annotations

from datetime import datetime

import attrs

from magicwan.models.tunnels import BGP, BGPStatus, HealthCheck

__all__ = ["GRETunnel", "GRETunnelParams"]


@attrs.frozen(kw_only=True)
class GRETunnel:
    """A GRE tunnel of a Magic WAN account."""

    id: str
    name: str | None = None
    description: str | None = None
    cloudflare_gre_endpoint: str | None = None
    customer_gre_endpoint: str | None = None
    interface_address: str | None = None
    interface_address6: str | None = None
    created_on: datetime | None = None
    modified_on: datetime | None = None
    mtu: int | None = None
    ttl: int | None = None
    automatic_return_routing: bool | None = None
    health_check: HealthCheck | None = None
    bgp: BGP | None = None
    bgp_status: BGPStatus | None = None


@attrs.frozen(kw_only=True)
class GRETunnelParams:
    """The fields of a GRE tunnel to create, or to update (what is given replaces the
    tunnel's; what is None is not sent).

    ``name`` (at most 15 letters, digits or underscores), ``cloudflare_gre_endpoint``,
    ``customer_gre_endpoint`` and ``interface_address`` (an IPv4 ``/31``) are required by
    Cloudflare; ``mtu`` is at least 576.
    """

    name: str
    cloudflare_gre_endpoint: str
    customer_gre_endpoint: str
    interface_address: str
    description: str | None = None
    interface_address6: str | None = None
    mtu: int | None = None
    ttl: int | None = None
    health_check: HealthCheck | None = None
    bgp: BGP | None = None
    automatic_return_routing: bool | None = None
