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
from magicwan.models import PSKGenerateResult, PSKMetadata
from magicwan.ratelimit import RateLimiter

__all__ = [
    "DEFAULT_BASE_URL",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "ErrorDetail",
    "InternalServerError",
    "InvalidInputError",
    "MagicWAN",
    "MagicWANError",
    "NotFoundError",
    "PSKGenerateResult",
    "PSKMetadata",
    "PermissionDeniedError",
    "RateLimitError",
    "RateLimiter",
    "UnexpectedResponseError",
    "UnprocessableEntityError",
    "__version__",
]
