"""Cloudflare's API budget and the one parser of a rate limit as people write it."""

from __future__ import annotations

import math
import re

__all__ = ["CLOUDFLARE_BUDGET", "parse_rate_limit"]

#: Cloudflare's API budget: 1200 requests per 300 seconds (5 minutes) per user.
CLOUDFLARE_BUDGET: tuple[int, float] = (1200, 300.0)

_RATE_LIMIT_RE = re.compile(r"\s*([0-9]+)\s*/\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*")
_RATE_LIMIT_FORMS = "REQUESTS/SECONDS with REQUESTS >= 1 and SECONDS > 0 (e.g. 1200/300), or off"


def parse_rate_limit(text: str) -> tuple[int, float] | None:
    """Read a rate limit as people write it: ``"1200/300"`` -> ``(1200, 300.0)``, ``"off"`` -> None.

    ``"off"`` (any case) is the only way to say "no limit"; ``"0"``, ``"none"``, negative or
    zero numbers and anything else raise ValueError naming the accepted forms. Command lines
    wrap that ValueError into their usage error.
    """
    if text.strip().lower() == "off":
        return None
    match = _RATE_LIMIT_RE.fullmatch(text)
    try:
        if match is None:
            raise ValueError
        requests, seconds = int(match[1]), float(match[2])
        # seconds / requests: the limiter's interval, which must be a usable positive float.
        if requests < 1 or not (math.isfinite(seconds) and seconds > 0 and seconds / requests > 0):
            raise ValueError
    except (ValueError, OverflowError):
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise ValueError(f"invalid rate limit {shown!r}: expected {_RATE_LIMIT_FORMS}") from None
    return requests, seconds
