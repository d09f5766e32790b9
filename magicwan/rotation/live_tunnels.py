"""The tunnels one client's live rotations hold, so that two never rotate one tunnel."""

from __future__ import annotations

from collections.abc import Collection

from magicwan.errors import InvalidInputError
from magicwan.internal.redaction import shown_id

__all__ = ["LiveTunnels"]

_NAMED = 3


class LiveTunnels:
    """The tunnels the live rotations of one client are rotating.

    Two rotations of one tunnel would each hand over a PSK as the tunnel's current one, and
    one of them is already replaced (an outage, once delivered). A rotation holds its
    tunnels from when it starts until it ends; a rotation that would share one
    is refused before it sends anything. Rotations of separate clients, or separate
    processes, are not seen: their journals' locks are what keeps those apart.
    """

    def __init__(self) -> None:
        self._held: set[tuple[str, str]] = set()

    def hold(self, account_id: str, tunnel_ids: Collection[str]) -> None:
        """Hold every tunnel of ``tunnel_ids``, or none (``InvalidInputError``) when another
        rotation holds one."""
        wanted = {(account_id.lower(), tunnel.lower()) for tunnel in tunnel_ids}
        taken = sorted(tunnel for _, tunnel in wanted & self._held)
        if taken:
            named = ", ".join(shown_id(tunnel) for tunnel in taken[:_NAMED]) + (
                ", ..." if len(taken) > _NAMED else ""
            )
            raise InvalidInputError(
                f"{len(taken)} of the {len(wanted)} selected tunnels are being rotated by "
                f"another rotation of this client ({named}): let it finish, or leave them out"
            )
        self._held |= wanted

    def let_go(self, account_id: str, tunnel_ids: Collection[str]) -> None:
        """Let go of ``tunnel_ids`` (those not held are ignored)."""
        self._held -= {(account_id.lower(), tunnel.lower()) for tunnel in tunnel_ids}

    def __len__(self) -> int:
        return len(self._held)
