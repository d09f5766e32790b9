"""What the rest of a rotation waits for, for the progress bar's ETA: the requests of its
unfinished tunnels at the rate limiter's pace, a 429 cooldown, the read-backs' settle
windows."""

from __future__ import annotations

import math
from typing import Protocol

from magicwan.cli.progress import Outlook
from magicwan.ratelimit import RateLimiter

__all__ = ["limiter_wait", "outlook"]


class _WatchedRotation(Protocol):
    """What :func:`outlook` reads of a rotation (see :class:`~magicwan.rotation.Rotation`)."""

    @property
    def total(self) -> int: ...
    @property
    def waiting(self) -> dict[str, float]: ...


def limiter_wait(limiter: RateLimiter, requests: int, now: float) -> float:
    """Seconds until ``limiter`` lets ``requests`` more requests go: its 429 cooldown,
    then its pace (``now`` on the limiter's clock)."""
    cooldown = max(0.0, limiter.paused_until - now)
    if not limiter.limit or requests <= 0:
        return cooldown
    interval = limiter.period / limiter.limit
    if cooldown > 0:  # after a pause it resumes at its pace, one request per interval
        return cooldown + (requests - 1) * interval
    return max(0.0, (requests - limiter.available()) * interval)


def outlook(
    rotation: _WatchedRotation, *, done: int, unit: int, limiter: RateLimiter | None, now: float
) -> Outlook:
    """What the rest of ``rotation`` waits for, ``done`` of its tunnels finished: the
    requests of the tunnels not finished (``unit`` a request) and the read-backs, at the
    limiter's pace; the read-backs' settle windows; a 429 cooldown.

    The requests already sent and not answered are counted too (which ones passed the
    limiter is not known here): the estimate is at most ``concurrency`` requests long."""
    waiting = rotation.waiting
    unfinished = max(0, rotation.total - done - len(waiting))
    requests = math.ceil(unfinished / max(1, unit)) + len(waiting)
    if limiter is None:
        paced = cooldown = 0.0
    else:
        paced = limiter_wait(limiter, requests, now)
        cooldown = max(0.0, limiter.paused_until - now)
    return Outlook(
        requests=paced,
        cooldown=cooldown,
        reading=len(waiting),
        read_in=max(waiting.values(), default=0.0),
    )
