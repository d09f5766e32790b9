"""``client.tunnels.ipsec``: IPsec tunnels of an account."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from magicwan._converter import structure, structure_member  # private: resources structure results
from magicwan._routes import (  # private: resources compile routes
    CREATE_IPSEC_TUNNEL,
    DELETE_IPSEC_TUNNEL,
    GET_IPSEC_TUNNEL,
    LIST_IPSEC_TUNNELS,
    UPDATE_IPSEC_TUNNEL,
)
from magicwan._transport import Transport  # private: resources send requests
from magicwan.errors import UnexpectedResponseError
from magicwan.internal.redaction import shown_id
from magicwan.internal.validation import check_psk, is_id
from magicwan.models.tunnels import IPsecTunnel, IPsecTunnelParams
from magicwan.reply import Reply
from magicwan.resources._params import tunnel_body
from magicwan.resources.psk import IPsecPSK

__all__ = ["IPsecTunnels", "IPsecTunnelsWithReply"]


def _tunnels(result: Any) -> list[IPsecTunnel]:
    tunnels: list[IPsecTunnel] = structure_member(result, "ipsec_tunnels", list[IPsecTunnel])
    for index, tunnel in enumerate(tunnels):
        # An id no request can name is the server's error, not one the caller made later
        # (by passing the list on to rotate()).
        if not is_id(tunnel.id):
            raise UnexpectedResponseError(
                f"the tunnel list holds an id no request can name: "
                f"result.ipsec_tunnels[{index}].id is {shown_id(tunnel.id)}"
            )
    return tunnels


def _same(tunnel: IPsecTunnel, tunnel_id: str) -> IPsecTunnel:
    # Cloudflare ids are hex: a differently cased echo is the same tunnel.
    if tunnel.id.lower() != tunnel_id.lower():
        raise UnexpectedResponseError(
            f"answer is for {shown_id(tunnel.id, 'tunnel', quoted=True)}, "
            f"not {shown_id(tunnel_id, quoted=True)}"
        )
    return tunnel


def _created(result: Any) -> IPsecTunnel:
    # The tunnel itself; an older form wraps it: {"ipsec_tunnels": [tunnel]}.
    if isinstance(result, dict) and "id" not in result and "ipsec_tunnels" in result:
        tunnels = structure_member(result, "ipsec_tunnels", list[IPsecTunnel])
        if len(tunnels) != 1:
            raise UnexpectedResponseError(f"a create answered {len(tunnels)} tunnels, not 1")
        return tunnels[0]  # type: ignore[no-any-return]
    return structure(result, IPsecTunnel)


def _member(key: str, tunnel_id: str) -> Callable[[Any], IPsecTunnel]:
    def convert(result: Any) -> IPsecTunnel:
        return _same(structure_member(result, key, IPsecTunnel), tunnel_id)

    return convert


def _body(params: IPsecTunnelParams) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The request body and the secrets it carries (the PSK, checked)."""
    if not isinstance(params, IPsecTunnelParams):
        raise TypeError(f"params must be IPsecTunnelParams, got {type(params).__name__}")
    if params.psk is None:
        return tunnel_body(params), ()
    return tunnel_body(params), (check_psk(params.psk, "psk"),)


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
        return await self._transport.request(route, _member("ipsec_tunnel", tunnel_id))

    async def create(self, account_id: str, params: IPsecTunnelParams) -> Reply[IPsecTunnel]:
        body, secrets = _body(params)
        route = CREATE_IPSEC_TUNNEL.compile(account_id=account_id)
        return await self._transport.request(route, _created, json=body, secrets=secrets)

    async def update(
        self, account_id: str, tunnel_id: str, params: IPsecTunnelParams
    ) -> Reply[IPsecTunnel]:
        body, secrets = _body(params)
        route = UPDATE_IPSEC_TUNNEL.compile(account_id=account_id, tunnel_id=tunnel_id)
        convert = _member("modified_ipsec_tunnel", tunnel_id)
        return await self._transport.request(route, convert, json=body, secrets=secrets)

    async def delete(self, account_id: str, tunnel_id: str) -> Reply[IPsecTunnel]:
        route = DELETE_IPSEC_TUNNEL.compile(account_id=account_id, tunnel_id=tunnel_id)
        return await self._transport.request(route, _member("deleted_ipsec_tunnel", tunnel_id))


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

    async def create(self, account_id: str, params: IPsecTunnelParams) -> IPsecTunnel:
        """Create an IPsec tunnel and return it. A ``params.psk`` becomes its PSK (record it
        first: Cloudflare never shows it again); without one, give it a PSK later with
        ``psk.generate`` or ``psk.set``. An unknown outcome is retried as the client's
        ``retry_unknown_outcome`` says; names are unique per account, so a retry cannot
        make a second tunnel, but may be refused as a duplicate name with
        ``outcome_unknown`` set: the lost attempt created it (list the tunnels)."""
        return (await self.with_reply.create(account_id, params)).value

    async def update(
        self, account_id: str, tunnel_id: str, params: IPsecTunnelParams
    ) -> IPsecTunnel:
        """Replace a tunnel's settings with ``params`` (fields left None are not sent) and
        return the tunnel as modified. A ``params.psk`` replaces its PSK."""
        return (await self.with_reply.update(account_id, tunnel_id, params)).value

    async def delete(self, account_id: str, tunnel_id: str) -> IPsecTunnel:
        """Delete a tunnel and return it as it was. An unknown tunnel is a
        :class:`~magicwan.NotFoundError` (with ``outcome_unknown`` set when an earlier
        attempt of this call, whose answer was lost, may have deleted it)."""
        return (await self.with_reply.delete(account_id, tunnel_id)).value
