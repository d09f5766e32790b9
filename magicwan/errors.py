"""The magicwan error hierarchy.

Every error the SDK raises is a :class:`MagicWANError`. Errors that come from an
HTTP answer are :class:`APIError` subclasses carrying the status, Cloudflare's
``errors`` and ``messages`` and the ``cf-ray`` id. No error message ever holds a
secret: bodies are cut short and PSK values are redacted before they are stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import attrs

__all__ = [
    "PERMANENT_FAILURES",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "DeliveryError",
    "DeliveryFailure",
    "ErrorDetail",
    "InternalServerError",
    "InvalidInputError",
    "MagicWANError",
    "NotAppliedError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestAbandonedError",
    "RotationHaltedError",
    "UnexpectedResponseError",
    "UnprocessableEntityError",
]


@attrs.frozen
class ErrorDetail:
    """One item of Cloudflare's ``errors`` or ``messages`` list."""

    code: int | None
    message: str

    def __str__(self) -> str:
        return self.message if self.code is None else f"{self.code}: {self.message}"


#: Statuses whose outcome is unknown: the server may have acted before failing.
UNKNOWN_OUTCOME_STATUSES = frozenset({408, 409})


class MagicWANError(Exception):
    """The root of every error raised by magicwan.

    ``outcome_unknown`` is true when the request may have been acted on although no
    usable answer came back: for a PSK generation, Cloudflare may now hold a PSK that
    nobody received. A call that retried after such a failure keeps saying so even if
    its last attempt failed in a way that is certain on its own.
    """

    _call_outcome_unknown = False

    @property
    def outcome_unknown(self) -> bool:
        """Whether the server may have acted on the request (see the class docstring)."""
        return self._call_outcome_unknown or self._own_outcome_unknown()

    def _own_outcome_unknown(self) -> bool:
        return False


def mark_outcome_unknown(exc: MagicWANError) -> None:
    """Record that an earlier attempt of the call that raised ``exc`` had an unknown outcome."""
    exc._call_outcome_unknown = True


class InvalidInputError(MagicWANError, ValueError):
    """An argument was refused before any request was sent."""


#: Why a delivery failed, for programs that act on it:
#:
#: - ``"unreachable"``: the target (charon's VICI socket) could not be reached;
#: - ``"timeout"``: the target or the program did not finish in time;
#: - ``"authentication_failed"``: the key was loaded but IKE authentication with it failed;
#: - ``"rejected"``: the target refused a request (charon answered an error);
#: - ``"misconfigured"``: a fact the deliverer needs (an identity, a connection name) is unknown;
#: - ``"not_started"``: the program could not be started;
#: - ``"exit_status"``: the program exited with a non-zero status or was killed;
#: - ``"error"``: a deliverer raised something other than a DeliveryError;
#: - ``"stopped"``: the rotation stopped before the delivery could be made.
DeliveryFailure = Literal[
    "unreachable",
    "timeout",
    "authentication_failed",
    "rejected",
    "misconfigured",
    "not_started",
    "exit_status",
    "error",
    "stopped",
]


#: The reasons a delivery fails the same way however often it is tried again: the
#: default of :attr:`DeliveryError.permanent`. ``"authentication_failed"`` is not one:
#: the peer may not hold the new PSK yet.
PERMANENT_FAILURES: frozenset[DeliveryFailure] = frozenset(
    {"misconfigured", "rejected", "not_started"}
)


class DeliveryError(MagicWANError):
    """A PSK could not be delivered (or proven) at the tunnel's other end.

    ``reason`` says why (see :data:`DeliveryFailure`); ``tunnel_id`` names the tunnel.
    ``permanent`` is true when trying again cannot help (a connection charon does not
    have, a program that does not exist): a retry loop should stop at once. It defaults
    to whether ``reason`` is in :data:`PERMANENT_FAILURES`; a deliverer may say otherwise.
    The message never holds the PSK: what a target or a program wrote is cut short,
    scrubbed of the PSK and of control characters before it is kept.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: DeliveryFailure,
        tunnel_id: str | None = None,
        permanent: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason: DeliveryFailure = reason
        self.tunnel_id = tunnel_id
        self.permanent: bool = reason in PERMANENT_FAILURES if permanent is None else permanent

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, reason={self.reason!r}, "
            f"permanent={self.permanent!r})"
        )


class NotAppliedError(MagicWANError):
    """Cloudflare answered a bulk PSK set but did not apply this tunnel's PSK.

    ``reason`` is Cloudflare's reason, as it came.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"Cloudflare did not apply the PSK: {reason}")
        self.reason = reason


class RotationHaltedError(MagicWANError):
    """The tunnel was never attempted: the rotation stopped starting new tunnels first."""


class APIConnectionError(MagicWANError):
    """The request could not be completed at the connection level.

    ``request_sent`` tells whether the request may have reached Cloudflare: when it
    is true, the outcome of a PSK generation is unknown. ``retryable`` is false when
    another try cannot help (a certificate that fails verification).
    """

    def __init__(self, message: str, *, request_sent: bool = True, retryable: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.request_sent = request_sent
        self.retryable = retryable

    def _own_outcome_unknown(self) -> bool:
        return self.request_sent


class APITimeoutError(APIConnectionError):
    """The request timed out."""


class RequestAbandonedError(APIConnectionError):
    """The rotation stopped (cancelled, or its drain timed out) while this tunnel's request
    was in flight: whether Cloudflare acted on it is unknown."""


class UnexpectedResponseError(MagicWANError):
    """The server answered with something that is not a usable Cloudflare envelope."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        ray_id: str | None = None,
        body_excerpt: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.ray_id = ray_id
        self.body_excerpt = body_excerpt

    def _own_outcome_unknown(self) -> bool:
        # A 4xx refused the request whatever its body; a 3xx was never followed.
        status = self.status
        return status is None or not 300 <= status < 500 or status in UNKNOWN_OUTCOME_STATUSES

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.insert(0, f"HTTP {self.status}")
        if self.ray_id:
            parts.append(f"(cf-ray {self.ray_id})")
        text = " ".join(parts)
        if self.body_excerpt:
            text += f"; body: {self.body_excerpt!r}"
        return text


class APIError(MagicWANError):
    """Cloudflare answered with an error envelope."""

    def __init__(
        self,
        status: int,
        errors: Sequence[ErrorDetail] = (),
        messages: Sequence[ErrorDetail] = (),
        ray_id: str | None = None,
    ) -> None:
        self.status = status
        self.errors: tuple[ErrorDetail, ...] = tuple(errors)
        self.messages: tuple[ErrorDetail, ...] = tuple(messages)
        self.ray_id = ray_id
        super().__init__(str(self))

    def _own_outcome_unknown(self) -> bool:
        # A 5xx may come after the server acted; so may ``success: false`` on a 2xx.
        status = self.status
        return status >= 500 or status in UNKNOWN_OUTCOME_STATUSES or 200 <= status < 300

    @property
    def codes(self) -> tuple[int, ...]:
        """Cloudflare's error codes, in the order they came."""
        return tuple(e.code for e in self.errors if e.code is not None)

    def __str__(self) -> str:
        text = f"HTTP {self.status}"
        if self.errors:
            text += ": " + "; ".join(str(e) for e in self.errors)
        if self.messages:
            text += " [messages: " + "; ".join(str(m) for m in self.messages) + "]"
        if self.ray_id:
            text += f" (cf-ray {self.ray_id})"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self})"


class BadRequestError(APIError):
    """HTTP 400."""


class AuthenticationError(APIError):
    """HTTP 401."""


class PermissionDeniedError(APIError):
    """HTTP 403."""


class NotFoundError(APIError):
    """HTTP 404."""


class ConflictError(APIError):
    """HTTP 409."""


class UnprocessableEntityError(APIError):
    """HTTP 422."""


class RateLimitError(APIError):
    """HTTP 429. ``retry_after`` is the server's wait in seconds, when it gave one."""

    def __init__(
        self,
        status: int,
        errors: Sequence[ErrorDetail] = (),
        messages: Sequence[ErrorDetail] = (),
        ray_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(status, errors, messages, ray_id)

    def _own_outcome_unknown(self) -> bool:
        return False  # a 429 is refused before anything happens

    def __str__(self) -> str:
        text = super().__str__()
        if self.retry_after is not None:
            text += f" (retry after {self.retry_after:g}s)"
        return text


class InternalServerError(APIError):
    """HTTP 5xx."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def error_class_for(status: int) -> type[APIError]:
    """The :class:`APIError` subclass for an HTTP status."""
    if status >= 500:
        return InternalServerError
    return _BY_STATUS.get(status, APIError)
