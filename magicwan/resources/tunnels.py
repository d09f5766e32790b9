"""``client.tunnels``: the Magic WAN tunnel families."""

from __future__ import annotations

from magicwan._transport import Transport  # private: resources send requests
from magicwan.resources.gre import GRETunnels
from magicwan.resources.ipsec import IPsecTunnels

__all__ = ["Tunnels"]


class Tunnels:
    """Tunnel namespaces: ``ipsec`` and ``gre``."""

    def __init__(self, transport: Transport) -> None:
        self.ipsec = IPsecTunnels(transport)
        self.gre = GRETunnels(transport)
