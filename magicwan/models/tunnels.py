"""Models of Magic WAN IPsec tunnels (as listed and read back; never with a PSK)."""

from __future__ import annotations

from datetime import datetime

import attrs

from magicwan.models.psk import PSKMetadata

__all__ = ["HealthCheck", "HealthCheckTarget", "IPsecTunnel"]


@attrs.frozen(kw_only=True)
class HealthCheckTarget:
    """Where health checks go: the address in effect and the one saved."""

    effective: str | None = None
    saved: str | None = None


@attrs.frozen(kw_only=True)
class HealthCheck:
    """A tunnel's health check settings."""

    enabled: bool | None = None
    target: HealthCheckTarget | None = None
    type: str | None = None
    rate: str | None = None
    direction: str | None = None


@attrs.frozen(kw_only=True)
class IPsecTunnel:
    """An IPsec tunnel of a Magic WAN account."""

    id: str
    name: str | None = None
    description: str | None = None
    cloudflare_endpoint: str | None = None
    customer_endpoint: str | None = None
    interface_address: str | None = None
    interface_address6: str | None = None
    created_on: datetime | None = None
    modified_on: datetime | None = None
    psk_metadata: PSKMetadata | None = None
    replay_protection: bool | None = None
    allow_null_cipher: bool | None = None
    health_check: HealthCheck | None = None
    #: The IKE identity the customer's device presents (an FQDN such as
    #: ``<tunnel_id>.<account_id>.ipsec.cloudflare.com``).
    ipsec_id: str | None = None
