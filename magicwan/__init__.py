"""magicwan: an async Python SDK for Cloudflare Magic WAN."""

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
    HealthCheck,
    HealthCheckTarget,
    IPsecTunnel,
    PSKGenerateResult,
    PSKMetadata,
)
from magicwan.ratelimit import RateLimiter
from magicwan.rotation import RotationOutcome

__all__ = [
    "DEFAULT_BASE_URL",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "ErrorDetail",
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
    "PermissionDeniedError",
    "RateLimitError",
    "RateLimiter",
    "RotationOutcome",
    "UnexpectedResponseError",
    "UnprocessableEntityError",
    "__version__",
    "read_journal",
]
