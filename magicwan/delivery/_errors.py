"""The error a deliverer raises when a PSK did not reach the tunnel's other end."""

from __future__ import annotations

from typing import Literal

from magicwan.errors import MagicWANError

__all__ = ["DeliveryError", "DeliveryFailure"]

#: Why a delivery failed, for programs that act on it:
#:
#: - ``"unreachable"``: the target (charon's VICI socket) could not be reached;
#: - ``"timeout"``: the target or the program did not finish in time;
#: - ``"authentication_failed"``: the key was loaded but IKE authentication with it failed;
#: - ``"rejected"``: the target refused a request (charon answered an error);
#: - ``"misconfigured"``: a fact the deliverer needs (an identity, a connection name) is unknown;
#: - ``"not_started"``: the program could not be started;
#: - ``"exit_status"``: the program exited with a non-zero status or was killed.
DeliveryFailure = Literal[
    "unreachable",
    "timeout",
    "authentication_failed",
    "rejected",
    "misconfigured",
    "not_started",
    "exit_status",
]


class DeliveryError(MagicWANError):
    """A PSK could not be delivered (or proven) at the tunnel's other end.

    ``reason`` says why (see :data:`DeliveryFailure`); ``tunnel_id`` names the tunnel.
    The message never holds the PSK: what a target or a program wrote is cut short,
    scrubbed of the PSK and of control characters before it is kept.
    """

    def __init__(
        self, message: str, *, reason: DeliveryFailure, tunnel_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason: DeliveryFailure = reason
        self.tunnel_id = tunnel_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, reason={self.reason!r})"
