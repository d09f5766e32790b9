"""``client.tunnels.ipsec``: IPsec tunnels of an account."""

from __future__ import annotations

from magicwan._transport import Transport
from magicwan.resources.psk import IPsecPSK

__all__ = ["IPsecTunnels"]


class IPsecTunnels:
    """IPsec tunnels. Their pre-shared keys live under ``psk``."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self.psk = IPsecPSK(transport)
