"""``client.tunnels.ipsec.psk``: generate an IPsec tunnel's pre-shared key."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from os import PathLike
from typing import TYPE_CHECKING, Any

from magicwan._converter import structure
from magicwan._transport import Reply, Transport
from magicwan._validation import check_bool, check_id
from magicwan.errors import UnexpectedResponseError
from magicwan.models.psk import PSKGenerateResult
from magicwan.rotation import DEFAULT_CONCURRENCY, RotationOutcome, rotate

if TYPE_CHECKING:
    from magicwan.resources.ipsec import IPsecTunnels

__all__ = ["IPsecPSK"]

_EMPTY_OBJECT = b"{}"


def psk_path(account_id: str, tunnel_id: str) -> str:
    return f"/accounts/{account_id}/magic/ipsec_tunnels/{tunnel_id}/psk_generate"


class IPsecPSK:
    """Pre-shared keys of IPsec tunnels."""

    def __init__(self, transport: Transport, tunnels: IPsecTunnels) -> None:
        self._transport = transport
        self._tunnels = tunnels

    async def generate(
        self, account_id: str, tunnel_id: str, validate_only: bool = False
    ) -> PSKGenerateResult:
        """Generate a new PSK for a tunnel and return it.

        Cloudflare stores the PSK at once and never shows it again: keep it safe
        before doing anything else. With ``validate_only=True`` nothing changes and
        the result has no ``psk``.
        """
        reply = await self._generate(account_id, tunnel_id, validate_only)
        return reply.value

    async def _generate(
        self, account_id: str, tunnel_id: str, validate_only: bool = False
    ) -> Reply[PSKGenerateResult]:
        check_id(account_id, "account_id")
        check_id(tunnel_id, "tunnel_id")
        check_bool(validate_only, "validate_only")

        def convert(result: Any) -> PSKGenerateResult:
            if validate_only and result is None:
                return PSKGenerateResult(ipsec_tunnel_id=tunnel_id)
            if isinstance(result, dict) and "ipsec_tunnel_id" not in result:
                result = {**result, "ipsec_tunnel_id": tunnel_id}  # the id is ours to fill in
            model = structure(result, PSKGenerateResult)
            # Cloudflare ids are hex: a differently cased echo is the same tunnel.
            if model.ipsec_tunnel_id.lower() != tunnel_id.lower():
                raise UnexpectedResponseError(
                    f"result is for tunnel {model.ipsec_tunnel_id!r}, not {tunnel_id!r}"
                )
            if not validate_only and not model.psk:
                raise UnexpectedResponseError("a successful psk_generate answer has no psk")
            return model

        return await self._transport.request(
            "POST",
            psk_path(account_id, tunnel_id),
            convert,
            query="validate_only=true" if validate_only else "",
            body=_EMPTY_OBJECT,
            idempotent=validate_only,
            exclusive_key=None if validate_only else f"psk:{account_id}/{tunnel_id}".lower(),
        )

    def rotate(
        self,
        account_id: str,
        tunnel_ids: Iterable[str],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        validate_only: bool = False,
        journal: str | PathLike[str] | None = None,
    ) -> AsyncIterator[RotationOutcome]:
        """Rotate many tunnels' PSKs; ``async for outcome in ...`` in completion order.

        One tunnel's failure never stops the others. With ``journal`` (a path), every
        new PSK is written and fsynced to that JSON Lines file (mode 0600) before its
        outcome is yielded, and a rerun with the same journal skips tunnels already
        rotated. Arguments are checked here, before anything is sent.
        """
        return rotate(
            self,
            self._tunnels,
            account_id,
            tunnel_ids,
            concurrency=concurrency,
            validate_only=validate_only,
            journal=journal,
        )
