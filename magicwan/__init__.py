"""magicwan: an async Python SDK for Cloudflare Magic WAN."""

from magicwan._psk import new_psk
from magicwan._transport import Reply
from magicwan._version import __version__
from magicwan.client import DEFAULT_BASE_URL, MagicWAN
from magicwan.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ErrorDetail,
    InternalServerError,
    InvalidInputError,
    MagicWANError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    UnexpectedResponseError,
    UnprocessableEntityError,
)
from magicwan.journal import JournalError, read_journal
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
from magicwan.rotation import RotationOutcome

__all__ = [
    "DEFAULT_BASE_URL",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AppliedPSK",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "ErrorDetail",
    "GRETunnel",
    "HealthCheck",
    "HealthCheckTarget",
    "IPsecTunnel",
    "InternalServerError",
    "InvalidInputError",
    "JournalError",
    "MagicWAN",
    "MagicWANError",
    "NotFoundError",
    "PSKGenerateResult",
    "PSKMetadata",
    "PSKSetResult",
    "PermissionDeniedError",
    "RateLimitError",
    "RateLimiter",
    "Reply",
    "RotationOutcome",
    "UnexpectedResponseError",
    "UnprocessableEntityError",
    "__version__",
    "new_psk",
    "read_journal",
]
