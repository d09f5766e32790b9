"""Frozen attrs models of Magic WAN resources. They hold data, never parsing code."""

from magicwan.models.psk import PSKGenerateResult, PSKMetadata
from magicwan.models.tunnels import HealthCheck, HealthCheckTarget, IPsecTunnel

__all__ = ["HealthCheck", "HealthCheckTarget", "IPsecTunnel", "PSKGenerateResult", "PSKMetadata"]
