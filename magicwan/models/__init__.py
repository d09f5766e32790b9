"""Frozen attrs models of Magic WAN resources. They hold data, never parsing code."""

from magicwan.models.psk import AppliedPSK, PSKGenerateResult, PSKMetadata, PSKSetResult
from magicwan.models.tunnels import (
    BGP,
    BGPStatus,
    CustomRemoteIdentities,
    HealthCheck,
    HealthCheckTarget,
    IPsecTunnel,
)

__all__ = [
    "BGP",
    "AppliedPSK",
    "BGPStatus",
    "CustomRemoteIdentities",
    "HealthCheck",
    "HealthCheckTarget",
    "IPsecTunnel",
    "PSKGenerateResult",
    "PSKMetadata",
    "PSKSetResult",
]
