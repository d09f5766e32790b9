"""magicwan: an async Python SDK for Cloudflare Magic WAN.

The names below are imported on first use (PEP 562): ``from magicwan import MagicWAN`` loads
the client, while importing a part that needs none of it (the emulator, its pytest plugin)
does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from magicwan._version import __version__
from magicwan.internal.lazy import lazy_exports

if TYPE_CHECKING:
    from magicwan.client import DEFAULT_BASE_URL, MagicWAN
    from magicwan.delivery import Deliverer, Delivery
    from magicwan.errors import (
        APIConnectionError,
        APIError,
        APITimeoutError,
        AuthenticationError,
        BadRequestError,
        ConflictError,
        DeliveryError,
        ErrorDetail,
        InternalServerError,
        InvalidInputError,
        MagicWANError,
        NotAppliedError,
        NotFoundError,
        PermissionDeniedError,
        RateLimitError,
        RequestAbandonedError,
        RotationHaltedError,
        UnexpectedResponseError,
        UnprocessableEntityError,
    )
    from magicwan.internal.keygen import new_psk
    from magicwan.journal import JournalError, JournalRecord, read_journal
    from magicwan.models import (
        AppliedPSK,
        GRETunnel,
        HealthCheck,
        HealthCheckTarget,
        IPsecTunnel,
        PSKGenerateResult,
        PSKMetadata,
        PSKSetResult,
    )
    from magicwan.ratelimit import RateLimiter
    from magicwan.reply import Reply
    from magicwan.rotation import (
        OutcomeState,
        RolloutWindow,
        Rotation,
        RotationFailure,
        RotationOptions,
        RotationOutcome,
        RotationSuccess,
        Validated,
        ValidationOutcome,
    )

__all__ = [
    "DEFAULT_BASE_URL",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AppliedPSK",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "Deliverer",
    "Delivery",
    "DeliveryError",
    "ErrorDetail",
    "GRETunnel",
    "HealthCheck",
    "HealthCheckTarget",
    "IPsecTunnel",
    "InternalServerError",
    "InvalidInputError",
    "JournalError",
    "JournalRecord",
    "MagicWAN",
    "MagicWANError",
    "NotAppliedError",
    "NotFoundError",
    "OutcomeState",
    "PSKGenerateResult",
    "PSKMetadata",
    "PSKSetResult",
    "PermissionDeniedError",
    "RateLimitError",
    "RateLimiter",
    "Reply",
    "RequestAbandonedError",
    "RolloutWindow",
    "Rotation",
    "RotationFailure",
    "RotationHaltedError",
    "RotationOptions",
    "RotationOutcome",
    "RotationSuccess",
    "UnexpectedResponseError",
    "UnprocessableEntityError",
    "Validated",
    "ValidationOutcome",
    "__version__",
    "new_psk",
    "read_journal",
]

#: Where each exported name is defined; the imports above say the same to a type checker
#: (tests/test_exports.py holds the two equal).
_SOURCES: dict[str, str] = {
    "new_psk": "magicwan.internal.keygen",
    "Reply": "magicwan.reply",
    "DEFAULT_BASE_URL": "magicwan.client",
    "MagicWAN": "magicwan.client",
    "Deliverer": "magicwan.delivery",
    "Delivery": "magicwan.delivery",
    "APIConnectionError": "magicwan.errors",
    "APIError": "magicwan.errors",
    "APITimeoutError": "magicwan.errors",
    "AuthenticationError": "magicwan.errors",
    "BadRequestError": "magicwan.errors",
    "ConflictError": "magicwan.errors",
    "DeliveryError": "magicwan.errors",
    "ErrorDetail": "magicwan.errors",
    "InternalServerError": "magicwan.errors",
    "InvalidInputError": "magicwan.errors",
    "MagicWANError": "magicwan.errors",
    "NotAppliedError": "magicwan.errors",
    "NotFoundError": "magicwan.errors",
    "PermissionDeniedError": "magicwan.errors",
    "RateLimitError": "magicwan.errors",
    "RequestAbandonedError": "magicwan.errors",
    "RotationHaltedError": "magicwan.errors",
    "UnexpectedResponseError": "magicwan.errors",
    "UnprocessableEntityError": "magicwan.errors",
    "JournalError": "magicwan.journal",
    "JournalRecord": "magicwan.journal",
    "read_journal": "magicwan.journal",
    "AppliedPSK": "magicwan.models",
    "GRETunnel": "magicwan.models",
    "HealthCheck": "magicwan.models",
    "HealthCheckTarget": "magicwan.models",
    "IPsecTunnel": "magicwan.models",
    "PSKGenerateResult": "magicwan.models",
    "PSKMetadata": "magicwan.models",
    "PSKSetResult": "magicwan.models",
    "RateLimiter": "magicwan.ratelimit",
    "OutcomeState": "magicwan.rotation",
    "RolloutWindow": "magicwan.rotation",
    "Rotation": "magicwan.rotation",
    "RotationFailure": "magicwan.rotation",
    "RotationOptions": "magicwan.rotation",
    "RotationOutcome": "magicwan.rotation",
    "RotationSuccess": "magicwan.rotation",
    "Validated": "magicwan.rotation",
    "ValidationOutcome": "magicwan.rotation",
}

if not TYPE_CHECKING:  # a type checker sees the imports above, and no catch-all
    __getattr__, __dir__ = lazy_exports(__name__, _SOURCES, __all__)
