"""``client.tunnels.ipsec``: IPsec tunnels of an account."""

from __future__ import annotations

from typing import Any

from magicwan._converter import structure_member
from magicwan._transport import Transport
from magicwan._validation import check_id
from magicwan.models.tunnels import IPsecTunnel
from magicwan.resources.psk import IPsecPSK

__all__ = ["IPsecTunnels"]


def _tunnels(result: Any) -> list[IPsecTunnel]:
    tunnels: list[IPsecTunnel] = structure_member(result, "ipsec_tunnels", list[IPsecTunnel])
    return tunnels


def _tunnel(result: Any) -> IPsecTunnel:
    tunnel: IPsecTunnel = structure_member(result, "ipsec_tunnel", IPsecTunnel)
    return tunnel


class IPsecTunnels:
    """IPsec tunnels. Their pre-shared keys live under ``psk``."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self.psk = IPsecPSK(transport, self)

    async def list(self, account_id: str) -> list[IPsecTunnel]:
        """Every IPsec tunnel of the account."""
        check_id(account_id, "account_id")
        reply = await self._transport.request(
            "GET", f"/accounts/{account_id}/magic/ipsec_tunnels", _tunnels, idempotent=True
        )
        return reply.value

    async def get(self, account_id: str, tunnel_id: str) -> IPsecTunnel:
        """One IPsec tunnel, with ``psk_metadata.last_generated_on`` (never the PSK)."""
        check_id(account_id, "account_id")
        check_id(tunnel_id, "tunnel_id")
        reply = await self._transport.request(
            "GET",
            f"/accounts/{account_id}/magic/ipsec_tunnels/{tunnel_id}",
            _tunnel,
            idempotent=True,
        )
        return reply.value
