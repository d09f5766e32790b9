"""The error tree: which failures leave the outcome of a request unknown."""

from __future__ import annotations

import pytest

from magicwan.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    ConflictError,
    InternalServerError,
    MagicWANError,
    NotFoundError,
    RateLimitError,
    UnexpectedResponseError,
    mark_outcome_unknown,
)


@pytest.mark.parametrize(
    ("exc", "unknown"),
    [
        (APIConnectionError("x", request_sent=True), True),
        (APIConnectionError("x", request_sent=False), False),
        (APITimeoutError("x", request_sent=True), True),
        (RateLimitError(429), False),
        (InternalServerError(500), True),
        (ConflictError(409), True),
        (APIError(408), True),
        (APIError(200), True),  # success: false on a 2xx: the server may have acted
        (NotFoundError(404), False),
        (UnexpectedResponseError("x"), True),
        (UnexpectedResponseError("x", status=200), True),
        (UnexpectedResponseError("x", status=503), True),
        (UnexpectedResponseError("x", status=301), False),
        (UnexpectedResponseError("x", status=400), False),
        (MagicWANError("x"), False),
    ],
)
def test_outcome_unknown(exc: MagicWANError, unknown: bool) -> None:
    assert exc.outcome_unknown is unknown


def test_a_call_marked_uncertain_stays_unknown_whatever_its_last_error() -> None:
    # Attempt 1 timed out after sending; attempt 2 got a 404: the tunnel may still hold
    # a PSK from attempt 1, so the call's error must say the outcome is unknown.
    exc = NotFoundError(404)
    assert not exc.outcome_unknown
    mark_outcome_unknown(exc)
    assert exc.outcome_unknown
    assert not NotFoundError(404).outcome_unknown  # per instance, not per class
