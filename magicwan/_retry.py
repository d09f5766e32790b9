"""Retry policy as data: a pure decision and a capped, jittered backoff.

Why an "outcome unknown" failure of a PSK generation is retried by default: a 5xx,
a timeout or a reset after the request was sent may mean Cloudflare stored a new
PSK that we never saw. The tunnel then runs on a secret nobody holds. Generating
again supersedes that unseen PSK, so after a successful retry the caller holds the
tunnel's current PSK. Not retrying would leave the caller with an error and a
tunnel whose PSK is unknown. ``retry_unknown_outcome=False`` turns this off for
callers who prefer to decide themselves.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs

from magicwan.errors import APIConnectionError, MagicWANError, RateLimitError

__all__ = ["RetryPolicy", "default_jitter", "should_retry"]


def default_jitter() -> float:
    """A random factor in [0, 1) for backoff jitter; tests replace it."""
    return random.random()  # noqa: S311 - jitter, not a secret


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How a client retries. ``max_retries`` counts retries after the first try."""

    max_retries: int = 2
    retry_unknown_outcome: bool = True
    max_retry_after: float = 60.0
    backoff_initial: float = 0.5
    backoff_max: float = 8.0
    jitter: Callable[[], float] = default_jitter

    def backoff(self, retry_number: int) -> float:
        """Seconds before retry ``retry_number`` (1-based): exponential, capped, jittered.

        "Equal jitter": half the delay is fixed, half random, so retries spread out
        but never come back at once.
        """
        # The exponent is bounded: 2 ** 1100 would overflow a float (max_retries is unbounded).
        exponent = min(max(retry_number - 1, 0), 64)
        delay = min(self.backoff_max, self.backoff_initial * 2.0**exponent)
        return float(delay / 2 + delay / 2 * self.jitter())


def should_retry(exc: BaseException, policy: RetryPolicy, *, idempotent: bool) -> bool:
    """Whether a failed attempt is worth another try under ``policy``."""
    if isinstance(exc, RateLimitError):
        return exc.retry_after is None or exc.retry_after <= policy.max_retry_after
    if isinstance(exc, APIConnectionError) and not exc.retryable:
        return False
    if isinstance(exc, APIConnectionError) and not exc.request_sent:
        return True
    if isinstance(exc, MagicWANError) and exc.outcome_unknown:
        return idempotent or policy.retry_unknown_outcome
    return False
