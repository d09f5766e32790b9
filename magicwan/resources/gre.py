"""``client.tunnels.gre``: GRE tunnels of an account."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from magicwan._converter import structure, structure_member  # private: resources structure results
from magicwan._routes import (  # private: resources compile routes
    CREATE_GRE_TUNNEL,
    DELETE_GRE_TUNNEL,
    GET_GRE_TUNNEL,
    LIST_GRE_TUNNELS,
    UPDATE_GRE_TUNNEL,
)
from magicwan._transport import Transport  # private: resources send requests
from magicwan.errors import UnexpectedResponseError
from magicwan.internal.redaction import shown_id
from magicwan.models.gre import GRETunnel, GRETunnelParams
from magicwan.reply import Reply
from magicwan.resources._params import tunnel_body

__all__ = ["GRETunnels", "GRETunnelsWithReply"]


def _tunnels(result: Any) -> list[GRETunnel]:
    tunnels: list[GRETunnel] = structure_member(result, "gre_tunnels", list[GRETunnel])
    return tunnels


def _tunnel(result: Any) -> GRETunnel:
    tunnel: GRETunnel = structure_member(result, "gre_tunnel", GRETunnel)
    return tunnel


def _created(result: Any) -> GRETunnel:
    # The tunnel itself; an older form wraps it: {"gre_tunnels": [tunnel]}.
    if isinstance(result, dict) and "id" not in result and "gre_tunnels" in result:
        tunnels = _tunnels(result)
        if len(tunnels) != 1:
            raise UnexpectedResponseError(f"a create answered {len(tunnels)} tunnels, not 1")
        return tunnels[0]
    return structure(result, GRETunnel)


def _member(key: str, tunnel_id: str) -> Callable[[Any], GRETunnel]:
    def convert(result: Any) -> GRETunnel:
        tunnel: GRETunnel = structure_member(result, key, GRETunnel)
        # Cloudflare ids are hex: a differently cased echo is the same tunnel.
        if tunnel.id.lower() != tunnel_id.lower():
            raise UnexpectedResponseError(
                f"answer is for {shown_id(tunnel.id, 'tunnel', quoted=True)}, "
                f"not {shown_id(tunnel_id, quoted=True)}"
            )
        return tunnel

    return convert


def _body(params: GRETunnelParams) -> dict[str, Any]:
    if not isinstance(params, GRETunnelParams):
        raise TypeError(f"params must be GRETunnelParams, got {type(params).__name__}")
    return tunnel_body(params)


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

    async def create(self, account_id: str, params: GRETunnelParams) -> Reply[GRETunnel]:
        route = CREATE_GRE_TUNNEL.compile(account_id=account_id)
        return await self._transport.request(route, _created, json=_body(params))

    async def update(
        self, account_id: str, tunnel_id: str, params: GRETunnelParams
    ) -> Reply[GRETunnel]:
        route = UPDATE_GRE_TUNNEL.compile(account_id=account_id, tunnel_id=tunnel_id)
        convert = _member("modified_gre_tunnel", tunnel_id)
        return await self._transport.request(route, convert, json=_body(params))

    async def delete(self, account_id: str, tunnel_id: str) -> Reply[GRETunnel]:
        route = DELETE_GRE_TUNNEL.compile(account_id=account_id, tunnel_id=tunnel_id)
        return await self._transport.request(route, _member("deleted_gre_tunnel", tunnel_id))


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

    async def create(self, account_id: str, params: GRETunnelParams) -> GRETunnel:
        """Create a GRE tunnel and return it (an unknown outcome: as for IPsec ``create``)."""
        return (await self.with_reply.create(account_id, params)).value

    async def update(self, account_id: str, tunnel_id: str, params: GRETunnelParams) -> GRETunnel:
        """Replace a GRE tunnel's settings with ``params`` (fields left None are not sent)
        and return the tunnel as modified."""
        return (await self.with_reply.update(account_id, tunnel_id, params)).value

    async def delete(self, account_id: str, tunnel_id: str) -> GRETunnel:
        """Delete a GRE tunnel and return it as it was (unknown: NotFoundError)."""
        return (await self.with_reply.delete(account_id, tunnel_id)).value
