"""Models of Magic WAN IPsec tunnels (as listed and read back; never with a PSK)."""

from __future__ import annotations

from datetime import datetime

import attrs

from magicwan.models.psk import PSKMetadata

__all__ = [
    "BGP",
    "BGPStatus",
    "CustomRemoteIdentities",
    "HealthCheck",
    "HealthCheckTarget",
    "IPsecTunnel",
    "IPsecTunnelParams",
]


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
class CustomRemoteIdentities:
    """Extra IKE identities the tunnel accepts (``fqdn_id``)."""

    fqdn_id: str | None = None


@attrs.frozen(kw_only=True)
class BGP:
    """A tunnel's BGP session settings. ``md5_key`` is not a secret by Cloudflare's own
    description, but it is still kept out of ``repr``."""

    customer_asn: int | None = None
    extra_prefixes: list[str] | None = None
    md5_key: str | None = attrs.field(default=None, repr=False)
    export_filter_id: str | None = None
    import_filter_id: str | None = None


@attrs.frozen(kw_only=True)
class BGPStatus:
    """The state of a tunnel's BGP session."""

    state: str | None = None
    tcp_established: bool | None = None
    updated_at: datetime | None = None
    bgp_state: str | None = None
    cf_speaker_ip: str | None = None
    cf_speaker_port: int | None = None
    customer_speaker_ip: str | None = None
    customer_speaker_port: int | None = None


@attrs.frozen(kw_only=True)
class IPsecTunnel:
    """An IPsec tunnel of a Magic WAN account.

    ``ipsec_id`` is the IKE identity the customer's device presents for the tunnel
    (present in the emulator's answers; None when the API gives none).
    """

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
    automatic_return_routing: bool | None = None
    health_check: HealthCheck | None = None
    custom_remote_identities: CustomRemoteIdentities | None = None
    bgp: BGP | None = None
    bgp_status: BGPStatus | None = None
    #: The IKE identity the customer's device presents (an FQDN such as
    #: ``<tunnel_id>.<account_id>.ipsec.cloudflare.com``).
    ipsec_id: str | None = None


@attrs.frozen(kw_only=True)
class IPsecTunnelParams:
    """The fields of an IPsec tunnel to create, or to update (what is given replaces the
    tunnel's; what is None is not sent).

    ``name``, ``cloudflare_endpoint`` and ``interface_address`` (an IPv4 ``/31``) are
    required by Cloudflare. ``interface_address6`` is an IPv6 ``/127``. ``psk`` is the
    caller's pre-shared key for the tunnel (16 to 128 printable ASCII characters, no space):
    never in ``repr``, never logged, scrubbed from errors. ``health_check.target`` is sent as
    its ``saved`` address (the plain string form).
    """

    name: str
    cloudflare_endpoint: str
    interface_address: str
    customer_endpoint: str | None = None
    description: str | None = None
    interface_address6: str | None = None
    health_check: HealthCheck | None = None
    bgp: BGP | None = None
    custom_remote_identities: CustomRemoteIdentities | None = None
    replay_protection: bool | None = None
    automatic_return_routing: bool | None = None
    psk: str | None = attrs.field(default=None, repr=False)
