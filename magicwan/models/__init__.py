"""Frozen attrs models of Magic WAN resources. They hold data, never parsing code."""

from magicwan.models.gre import GRETunnel, GRETunnelParams
from magicwan.models.psk import AppliedPSK, PSKGenerateResult, PSKMetadata, PSKSetResult
from magicwan.models.tunnels import (
    BGP,
    BGPStatus,
    CustomRemoteIdentities,
    HealthCheck,
    HealthCheckTarget,
    IPsecTunnel,
    IPsecTunnelParams,
)

__all__ = [
    "BGP",
    "AppliedPSK",
    "BGPStatus",
    "CustomRemoteIdentities",
    "GRETunnel",
    "GRETunnelParams",
    "HealthCheck",
    "HealthCheckTarget",
    "IPsecTunnel",
    "IPsecTunnelParams",
    "PSKGenerateResult",
    "PSKMetadata",
    "PSKSetResult",
]
