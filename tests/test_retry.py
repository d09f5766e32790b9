"""The retry decision table and the backoff."""

from __future__ import annotations

import pytest

from magicwan._retry import RetryPolicy, default_jitter, should_retry
from magicwan.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    InvalidInputError,
    MagicWANError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    UnexpectedResponseError,
    UnprocessableEntityError,
)

DEFAULT = RetryPolicy()
CAUTIOUS = RetryPolicy(retry_unknown_outcome=False)

# (error, retried for a generate by default, retried with retry_unknown_outcome=False,
#  retried for an idempotent call with retry_unknown_outcome=False)
TABLE: list[tuple[BaseException, bool, bool, bool]] = [
    (BadRequestError(400), False, False, False),
    (AuthenticationError(401), False, False, False),
    (PermissionDeniedError(403), False, False, False),
    (NotFoundError(404), False, False, False),
    (APIError(405), False, False, False),
    (APIError(408), True, False, True),
    (ConflictError(409), True, False, True),
    (UnprocessableEntityError(422), False, False, False),
    (APIError(451), False, False, False),
    (InternalServerError(500), True, False, True),
    (InternalServerError(502), True, False, True),
    (InternalServerError(503), True, False, True),
    (InternalServerError(504), True, False, True),
    (RateLimitError(429, retry_after=None), True, True, True),
    (RateLimitError(429, retry_after=0.0), True, True, True),
    (RateLimitError(429, retry_after=60.0), True, True, True),  # == the cap
    (RateLimitError(429, retry_after=60.5), False, False, False),
    (RateLimitError(429, retry_after=3600.0), False, False, False),
    (APIConnectionError("refused", request_sent=False), True, True, True),
    (APITimeoutError("connect timeout", request_sent=False), True, True, True),
    (APIConnectionError("reset", request_sent=True), True, False, True),
    (APITimeoutError("read timeout", request_sent=True), True, False, True),
    (UnexpectedResponseError("html", status=502), True, False, True),
    (UnexpectedResponseError("truncated", status=200), True, False, True),
    (UnexpectedResponseError("no psk"), True, False, True),
    (UnexpectedResponseError("html", status=408), True, False, True),
    (UnexpectedResponseError("redirect", status=301), False, False, False),
    (UnexpectedResponseError("redirect", status=302), False, False, False),
    (UnexpectedResponseError("redirect", status=307), False, False, False),
    (UnexpectedResponseError("redirect", status=308), False, False, False),
    (UnexpectedResponseError("waf page", status=403), False, False, False),
    (UnexpectedResponseError("html 404", status=404), False, False, False),
    (InvalidInputError("bad id"), False, False, False),
    (MagicWANError("the client is closed"), False, False, False),
    (ValueError("not ours"), False, False, False),
]


@pytest.mark.parametrize(
    ("exc", "default", "cautious", "cautious_idempotent"),
    TABLE,
    ids=[f"{type(row[0]).__name__}-{i}" for i, row in enumerate(TABLE)],
)
def test_should_retry_table(
    exc: BaseException, default: bool, cautious: bool, cautious_idempotent: bool
) -> None:
    assert should_retry(exc, DEFAULT, idempotent=False) is default
    assert should_retry(exc, DEFAULT, idempotent=True) is default
    assert should_retry(exc, CAUTIOUS, idempotent=False) is cautious
    assert should_retry(exc, CAUTIOUS, idempotent=True) is cautious_idempotent


def test_cap_is_the_policys_max_retry_after() -> None:
    exc = RateLimitError(429, retry_after=100.0)
    assert not should_retry(exc, RetryPolicy(max_retry_after=99.0), idempotent=True)
    assert should_retry(exc, RetryPolicy(max_retry_after=100.0), idempotent=False)


def test_backoff_is_exponential_capped_and_jittered() -> None:
    lo = RetryPolicy(backoff_initial=0.5, backoff_max=8.0, jitter=lambda: 0.0)
    hi = RetryPolicy(backoff_initial=0.5, backoff_max=8.0, jitter=lambda: 1.0)
    assert [lo.backoff(n) for n in range(1, 8)] == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert [hi.backoff(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    mid = RetryPolicy(jitter=lambda: 0.5)
    assert mid.backoff(1) == pytest.approx(0.375)


def test_backoff_never_exceeds_the_cap_even_for_huge_retry_numbers() -> None:
    policy = RetryPolicy(backoff_max=8.0, jitter=lambda: 0.999)
    assert policy.backoff(10_000) <= 8.0


def test_default_jitter_is_in_unit_interval() -> None:
    values = [default_jitter() for _ in range(200)]
    assert all(0.0 <= v < 1.0 for v in values)
    assert len(set(values)) > 1


def test_policy_defaults() -> None:
    assert DEFAULT.max_retries == 2
    assert DEFAULT.retry_unknown_outcome is True
    assert DEFAULT.max_retry_after == 60.0


@pytest.mark.parametrize("request_sent", [False, True])
@pytest.mark.parametrize("idempotent", [False, True])
def test_a_connection_error_marked_not_retryable_is_never_retried(
    request_sent: bool, idempotent: bool
) -> None:
    exc = APIConnectionError("certificate failed", request_sent=request_sent, retryable=False)
    assert not should_retry(exc, DEFAULT, idempotent=idempotent)
