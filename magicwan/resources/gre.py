"""``client.tunnels.gre``: GRE tunnels of an account."""

from __future__ import annotations

from typing import Any

from magicwan._converter import structure_member
from magicwan._routes import GET_GRE_TUNNEL, LIST_GRE_TUNNELS
from magicwan._transport import Reply, Transport
from magicwan.models.gre import GRETunnel

__all__ = ["GRETunnels", "GRETunnelsWithReply"]


def _tunnels(result: Any) -> list[GRETunnel]:
    tunnels: list[GRETunnel] = structure_member(result, "gre_tunnels", list[GRETunnel])
    return tunnels


def _tunnel(result: Any) -> GRETunnel:
    tunnel: GRETunnel = structure_member(result, "gre_tunnel", GRETunnel)
    return tunnel


class GRETunnelsWithReply:
    """The GRE tunnel calls, each returning a :class:`~magicwan.Reply`."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def list(self, account_id: str) -> Reply[list[GRETunnel]]:
        return await self._transport.request(
            LIST_GRE_TUNNELS.compile(account_id=account_id), _tunnels
        )

    async def get(self, account_id: str, tunnel_id: str) -> Reply[GRETunnel]:
        route = GET_GRE_TUNNEL.compile(account_id=account_id, tunnel_id=tunnel_id)
        return await self._transport.request(route, _tunnel)


class GRETunnels:
    """GRE tunnels."""

    def __init__(self, transport: Transport) -> None:
        self.with_reply = GRETunnelsWithReply(transport)

    async def list(self, account_id: str) -> list[GRETunnel]:
        """Every GRE tunnel of the account."""
        return (await self.with_reply.list(account_id)).value

    async def get(self, account_id: str, tunnel_id: str) -> GRETunnel:
        """One GRE tunnel."""
        return (await self.with_reply.get(account_id, tunnel_id)).value
