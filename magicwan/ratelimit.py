"""A client-side rate limiter for Cloudflare's per-user API budget.

Cloudflare allows 1,200 requests per 5 minutes per user. The limiter is a GCRA
(a token bucket of ``limit`` requests refilled at ``limit / period`` per second,
starting full), so a fresh client may burst ``limit`` requests and then paces
itself at the budget's rate: N requests take ``(N - limit) * period / limit`` seconds.

It keeps one request of headroom (``headroom``) against the server's count, so in
practice the burst is ``limit - 1`` and N requests take one interval longer.

It also holds the client's cooldown: after a 429 every call of the client waits
until ``Retry-After`` has passed, but never longer than ``max_cooldown`` (300 s,
Cloudflare's window, by default): a hostile or broken ``Retry-After: 999999999`` cannot
stop a client for a year. Clock and sleep are injected, so tests never wait.
"""

from __future__ import annotations

import asyncio
import math
import time

from magicwan._envelope import RateLimitInfo
from magicwan.errors import MagicWANError
from magicwan.internal.budget import CLOUDFLARE_BUDGET, parse_rate_limit
from magicwan.internal.clock import Clock, Sleep
from magicwan.internal.validation import (
    check_non_negative_seconds,
    check_positive_int,
    check_seconds,
)

__all__ = [
    "CLOUDFLARE_BUDGET",
    "MAX_COOLDOWN",
    "Clock",
    "CooldownTooLong",
    "RateLimiter",
    "Sleep",
    "parse_rate_limit",
]

#: The longest client-side cooldown a 429 can impose, whatever its ``Retry-After``.
MAX_COOLDOWN = 300.0
#: The limiter's time margin: this fraction of the window, at most this many seconds.
_HEADROOM_FRACTION = 0.01
_MAX_HEADROOM_SECONDS = 1.0


class CooldownTooLong(MagicWANError):
    """Raised by :meth:`RateLimiter.acquire` when the cooldown exceeds ``max_wait``."""

    def __init__(self, remaining: float) -> None:
        super().__init__(f"rate-limit cooldown has {remaining:.1f}s left")
        self.remaining = remaining


class RateLimiter:
    """Paces requests to ``limit`` per ``period`` seconds and holds the 429 cooldown.

    ``limit=None`` turns pacing off; the cooldown still applies. ``headroom`` is the
    number of requests of the budget left unused as a safety margin; by default one
    request, and at least 1% of the window's time (at most one second): 4 requests at
    Cloudflare's budget. :attr:`headroom` is the margin in force, in requests.
    """

    def __init__(
        self,
        limit: int | None = CLOUDFLARE_BUDGET[0],
        period: float = CLOUDFLARE_BUDGET[1],
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        headroom: float | None = None,
        max_cooldown: float = MAX_COOLDOWN,
    ) -> None:
        if headroom is not None and not (
            isinstance(headroom, int | float) and math.isfinite(headroom) and headroom >= 0
        ):
            raise ValueError("headroom must be a non-negative number of requests")
        if limit is not None:
            limit = check_positive_int(limit, "rate limit")
            period = check_seconds(period, "rate limit period")
        max_cooldown = check_non_negative_seconds(max_cooldown, "max_cooldown")
        self.limit = limit
        self.period = float(period)
        self.max_cooldown = float(max_cooldown)
        self._clock = clock
        self._sleep = sleep
        self._interval = self.period / limit if limit else 0.0
        # Keep some of the budget unused: the server counts a request when it arrives,
        # later than we send it, and its bucket starts when our FIRST request arrives,
        # which may be the slowest of all (DNS, TCP and TLS handshakes). Without headroom
        # a paced request can reach it a few milliseconds early and cost a whole
        # Retry-After. One request of margin is one interval (250 ms at Cloudflare's
        # budget); a first handshake can take longer, so the margin is also at least 1%
        # of the window, up to one second (4 requests at Cloudflare's budget).
        if headroom is None:
            margin = min(_MAX_HEADROOM_SECONDS, self.period * _HEADROOM_FRACTION)
            headroom = max(1.0, margin / self._interval) if limit else 0.0
        #: The margin in force, in requests of the budget.
        self.headroom = float(headroom)
        self._tolerance = max(0.0, self.period - self._interval * (1 + self.headroom))
        self._tat = clock()  # GCRA "theoretical arrival time": a full bucket
        self._burst_started: float | None = None  # when a burst from a full bucket began
        self._paused_until = -math.inf

    @property
    def paused_until(self) -> float:
        """Clock time until which every call waits (a 429 cooldown)."""
        return self._paused_until

    def available(self) -> float:
        """How many requests could go right now (may be fractional)."""
        if not self.limit:
            return math.inf
        now = self._clock()
        return max(0.0, (now + self._tolerance - max(self._tat, now)) / self._interval + 1)

    def reserve(self) -> float:
        """Take the next slot; return how long to wait before using it."""
        now = self._clock()
        wait = self._paused_until - now
        if self.limit:
            if self._tat <= now and self._burst_started is None:
                self._burst_started = now  # a full bucket: a new burst begins here
            tat = max(self._tat, now)
            wait = max(wait, tat - self._tolerance - now)
            self._tat = tat + self._interval
        return max(wait, 0.0)

    def answered(self) -> None:
        """An answer arrived. After the first answer of a burst, the schedule moves back by
        the time that answer took: the server's count began when the burst's first request
        ARRIVED, which may have been well after we sent it (connection and TLS setup), and a
        paced request must never reach it before its bucket allows."""
        started = self._burst_started
        if started is not None:
            self._burst_started = None
            self._tat += max(0.0, self._clock() - started)

    async def acquire(self, max_wait: float = math.inf) -> float:
        """Wait for a slot; return the seconds waited.

        Raises :class:`CooldownTooLong` without waiting when a 429 cooldown would
        keep the caller more than ``max_wait`` seconds.
        """
        self._check_cooldown(max_wait)
        waited = 0.0
        wait = self.reserve()
        try:
            while wait > 0:
                await self._sleep(wait)
                waited += wait
                # A 429 seen by another call while we slept extends everybody's wait; the
                # slot taken before it is void, so queue again behind the cooldown: the
                # sleepers resume at the limiter's pace, not all at once.
                wait = 0.0
                if self._paused_until > self._clock():
                    self._check_cooldown(max_wait)
                    wait = self.reserve()
        except BaseException:
            self._give_back()  # a cancelled waiter never sends: its slot is free again
            raise
        return waited

    def _give_back(self) -> None:
        if self.limit:
            self._tat = max(self._tat - self._interval, self._clock())

    def _check_cooldown(self, max_wait: float) -> None:
        remaining = self._paused_until - self._clock()
        if remaining > max_wait:
            raise CooldownTooLong(remaining)

    def pause(self, seconds: float) -> float:
        """Hold every call for ``seconds`` from now (after a 429), at most
        ``max_cooldown``; return the pause applied."""
        now = self._clock()
        seconds = min(max(seconds, 0.0), self.max_cooldown)
        until = now + seconds
        self._paused_until = max(self._paused_until, until)
        if self.limit:
            # The server's budget is spent: resume at its pace, not with a burst.
            self._tat = max(self._tat, until + self._tolerance)
        return seconds

    def observe(self, info: RateLimitInfo) -> None:
        """Stay in step with the server's count from its ``Ratelimit`` header.

        The limiter only ever tightens: when the server reports at least one whole
        request fewer than the limiter believes is left (another process of the same
        user is spending the budget), it adopts the server's count.
        """
        if not self.limit:
            return
        if info.remaining < self.available() - 1:
            now = self._clock()
            self._tat = max(
                self._tat, now + self._tolerance - (info.remaining - 1) * self._interval
            )
