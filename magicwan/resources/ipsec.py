"""``client.tunnels.ipsec``: IPsec tunnels of an account."""

from __future__ import annotations

from typing import Any

from magicwan._converter import structure_member
from magicwan._routes import GET_IPSEC_TUNNEL, LIST_IPSEC_TUNNELS
from magicwan._transport import Reply, Transport
from magicwan.errors import UnexpectedResponseError
from magicwan.models.tunnels import IPsecTunnel
from magicwan.resources.psk import IPsecPSK

__all__ = ["IPsecTunnels", "IPsecTunnelsWithReply"]


def _tunnels(result: Any) -> list[IPsecTunnel]:
    tunnels: list[IPsecTunnel] = structure_member(result, "ipsec_tunnels", list[IPsecTunnel])
    return tunnels


class IPsecTunnelsWithReply:
    """The IPsec tunnel calls, each returning a :class:`~magicwan.Reply`."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def list(self, account_id: str) -> Reply[list[IPsecTunnel]]:
        return await self._transport.request(
            LIST_IPSEC_TUNNELS.compile(account_id=account_id), _tunnels
        )

    async def get(self, account_id: str, tunnel_id: str) -> Reply[IPsecTunnel]:
        route = GET_IPSEC_TUNNEL.compile(account_id=account_id, tunnel_id=tunnel_id)

        def convert(result: Any) -> IPsecTunnel:
            tunnel: IPsecTunnel = structure_member(result, "ipsec_tunnel", IPsecTunnel)
            # Cloudflare ids are hex: a differently cased echo is the same tunnel.
            if tunnel.id.lower() != tunnel_id.lower():
                raise UnexpectedResponseError(
                    f"answer is for tunnel {tunnel.id!r}, not {tunnel_id!r}"
                )
            return tunnel

        return await self._transport.request(route, convert)


class IPsecTunnels:
    """IPsec tunnels. Their pre-shared keys live under ``psk``."""

    def __init__(self, transport: Transport) -> None:
        self.with_reply = IPsecTunnelsWithReply(transport)
        self.psk = IPsecPSK(transport, read_back=self.with_reply.get)

    async def list(self, account_id: str) -> list[IPsecTunnel]:
        """Every IPsec tunnel of the account."""
        return (await self.with_reply.list(account_id)).value

    async def get(self, account_id: str, tunnel_id: str) -> IPsecTunnel:
        """One IPsec tunnel, with ``psk_metadata.last_generated_on`` (never the PSK)."""
        return (await self.with_reply.get(account_id, tunnel_id)).value
