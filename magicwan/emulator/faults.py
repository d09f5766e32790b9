"""Seeded, reproducible fault injection for the emulator (pure Python, no aiohttp).

Each API request (not the admin routes) draws at most one *outcome* fault: the outcome
probabilities partition ``[0, 1)``, so ``Faults(server_error=0.1, reset_after_store=0.2)`` gives a
500-class answer to exactly 10% of requests and a dropped connection after the PSK was stored to
exactly 20%. Latency is drawn independently and adds to any outcome. With the same seed and the
same sequence of requests, the same requests fail the same way.
"""

from __future__ import annotations

import enum
import math
import random

import attrs

__all__ = ["FaultDraw", "FaultInjector", "FaultKind", "Faults"]


class FaultKind(enum.Enum):
    """The outcome faults, in the order their probability ranges are laid out on ``[0, 1)``."""

    SERVER_ERROR = "server_error"
    RATE_LIMITED = "rate_limited"
    RESET_BEFORE_STORE = "reset_before_store"
    RESET_AFTER_STORE = "reset_after_store"
    HTML_502 = "html_502"
    TRUNCATED_JSON = "truncated_json"
    LATE_STORE = "late_store"


def _probability(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"Faults.{attribute.name} must be a probability in [0, 1], got {value!r}")


def _non_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"Faults.{attribute.name} must be >= 0 seconds, got {value!r}")


@attrs.frozen(kw_only=True)
class Faults:
    """Fault probabilities (each 0..1, default 0) and added latency for API requests.

    ``server_error``: a 500, 502 or 503 Cloudflare failure envelope (code 10001).
    ``rate_limited``: a spurious 429 (code 971, ``Retry-After: 1``), not charged to the budget.
    ``reset_before_store``: the connection is dropped before anything changes.
    ``reset_after_store``: the request takes effect (a PSK is generated and stored), then the
    connection is dropped with no response.
    ``html_502``: a proxy's HTML "502 Bad Gateway" page, no envelope.
    ``truncated_json``: status 200 and the first half of the real body (the request took effect).
    ``late_store``: the server reads the request, stalls ``late_store_delay`` seconds (past a
    client's timeout), then the request takes effect whether or not the client is still
    connected (a PSK generated or set), and the answer goes out if the client is still there.
    ``latency`` seconds are added to a request with probability ``latency_probability``; they
    are slept before the body is read, and nothing is stored for a client that left.
    The outcome probabilities must sum to at most 1.
    """

    server_error: float = attrs.field(default=0.0, converter=float, validator=_probability)
    rate_limited: float = attrs.field(default=0.0, converter=float, validator=_probability)
    reset_before_store: float = attrs.field(default=0.0, converter=float, validator=_probability)
    reset_after_store: float = attrs.field(default=0.0, converter=float, validator=_probability)
    html_502: float = attrs.field(default=0.0, converter=float, validator=_probability)
    truncated_json: float = attrs.field(default=0.0, converter=float, validator=_probability)
    late_store: float = attrs.field(default=0.0, converter=float, validator=_probability)
    late_store_delay: float = attrs.field(default=2.0, converter=float, validator=_non_negative)
    latency: float = attrs.field(default=0.0, converter=float, validator=_non_negative)
    latency_probability: float = attrs.field(default=0.0, converter=float, validator=_probability)

    def __attrs_post_init__(self) -> None:
        total = sum(getattr(self, kind.value) for kind in FaultKind)
        if total > 1.0 + 1e-9:
            raise ValueError(f"the outcome fault probabilities sum to {total:g}, more than 1")

    @classmethod
    def none(cls) -> Faults:
        """No faults at all."""
        return cls()

    @property
    def active(self) -> bool:
        """Whether any fault can happen."""
        if any(getattr(self, kind.value) > 0 for kind in FaultKind):
            return True
        return self.latency > 0 and self.latency_probability > 0

    def to_dict(self) -> dict[str, float]:
        """The fields as a plain dict (for JSON)."""
        return attrs.asdict(self)


_NO_FAULTS = Faults()


@attrs.frozen
class FaultDraw:
    """What one request gets: an outcome fault or None, a delay, and a status for server_error."""

    kind: FaultKind | None
    delay: float = 0.0
    status: int = 500


_NOTHING = FaultDraw(None)
_SERVER_ERROR_STATUSES = (500, 502, 503)


class FaultInjector:
    """Draws faults from ``random.Random(seed)``; reproducible for a given sequence of requests."""

    __slots__ = ("_rng", "faults", "seed")

    def __init__(self, faults: Faults | None = None, *, seed: int = 0) -> None:
        self.faults = faults if faults is not None else _NO_FAULTS
        self.seed = seed
        self._rng = random.Random(seed)  # noqa: S311 - reproducible fault schedule, not crypto

    def configure(self, faults: Faults, *, seed: int | None = None) -> None:
        """Switch to new faults; with ``seed``, also restart the random sequence from it."""
        self.faults = faults
        if seed is not None:
            self.reseed(seed)

    def reseed(self, seed: int | None = None) -> None:
        """Restart the random sequence (from ``seed``, or from the current seed)."""
        if seed is not None:
            self.seed = seed
        self._rng.seed(self.seed)

    def draw(self) -> FaultDraw:
        """Draw the faults for one API request (two random numbers when any fault is active)."""
        faults = self.faults
        if faults is _NO_FAULTS or not faults.active:
            return _NOTHING
        rng = self._rng
        delay = faults.latency if rng.random() < faults.latency_probability else 0.0
        u = rng.random()
        edge = 0.0
        for kind in FaultKind:
            edge += getattr(faults, kind.value)
            if u < edge:
                status = 500
                if kind is FaultKind.SERVER_ERROR:
                    status = _SERVER_ERROR_STATUSES[int(rng.random() * 3)]
                return FaultDraw(kind, delay, status)
        return FaultDraw(None, delay) if delay else _NOTHING
