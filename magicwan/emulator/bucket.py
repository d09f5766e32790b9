"""The emulator's per-user token bucket: how the fake server counts Cloudflare's budget.

This is the *server's* side of the budget. It is not :class:`magicwan.RateLimiter`, the client's
pacer: this one decides, per user, whether a request that arrived is allowed, and what the
``Ratelimit`` headers say.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import attrs

__all__ = ["RateDecision", "TokenBucket"]


@attrs.frozen
class RateDecision:
    """The bucket's answer: allowed or not, whole tokens left, seconds until full, retry wait."""

    allowed: bool
    remaining: int
    reset: int
    retry_after: int = 0


class TokenBucket:
    """Per-key token bucket: capacity ``limit``, refilled continuously at ``limit/window`` per
    second, starting full (the GCRA Cloudflare's budget behaves like).

    With a fresh bucket, N requests paced at the limit take ``(N - limit) * window / limit``
    seconds. ``clock`` returns seconds (default ``time.monotonic``); inject one to test without
    sleeping.
    """

    __slots__ = ("_buckets", "_rate", "clock", "limit", "window")

    _EPSILON = 1e-9

    def __init__(
        self, limit: int, window: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 1 or not window > 0:
            raise ValueError(f"rate limit needs limit >= 1 and window > 0, got {limit}/{window}")
        self.limit = int(limit)
        self.window = float(window)
        self.clock = clock
        self._rate = self.limit / self.window
        self._buckets: dict[str, list[float]] = {}

    def _tokens(self, key: str, now: float) -> list[float]:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [float(self.limit), now]
            return bucket
        tokens, updated = bucket
        if now > updated:
            bucket[0] = min(float(self.limit), tokens + (now - updated) * self._rate)
            bucket[1] = now
        return bucket

    def _decision(self, tokens: float, allowed: bool) -> RateDecision:
        missing = self.limit - tokens
        reset = math.ceil(missing / self._rate - self._EPSILON) if missing > self._EPSILON else 0
        retry_after = 0
        if not allowed:
            retry_after = max(1, math.ceil((1.0 - tokens) / self._rate - self._EPSILON))
        remaining = max(0, math.floor(tokens + self._EPSILON))
        return RateDecision(allowed, remaining, max(reset, 0), retry_after)

    def acquire(self, key: str) -> RateDecision:
        """Take one token for ``key`` if there is one; a refused request takes nothing."""
        bucket = self._tokens(key, self.clock())
        if bucket[0] >= 1.0 - self._EPSILON:
            bucket[0] = max(0.0, bucket[0] - 1.0)
            return self._decision(bucket[0], True)
        return self._decision(bucket[0], False)

    def peek(self, key: str) -> RateDecision:
        """The state of ``key``'s bucket without taking a token."""
        bucket = self._tokens(key, self.clock())
        return self._decision(bucket[0], bucket[0] >= 1.0 - self._EPSILON)

    def policy_header(self) -> str:
        """The ``Ratelimit-Policy`` header value: ``"default";q=<limit>;w=<window>``."""
        window = int(self.window) if self.window.is_integer() else self.window
        return f'"default";q={self.limit};w={window}'

    def reset(self) -> None:
        """Refill every bucket."""
        self._buckets.clear()
