"""Models of Magic WAN GRE tunnels."""

from __future__ import annotations

from datetime import datetime

import attrs

from magicwan.models.tunnels import BGP, BGPStatus, HealthCheck

__all__ = ["GRETunnel"]


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
