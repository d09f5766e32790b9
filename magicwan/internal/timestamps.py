"""RFC 3339 timestamps, read and written the way Cloudflare writes them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

__all__ = ["Stamp", "format_datetime", "parse_datetime"]

# RFC 3339 ``date-time`` in full: ``T`` or ``t`` (or a space, as RFC 3339 allows),
# any number of fractional digits, ``Z``, ``z`` or a numeric offset. No offset at all
# is read as UTC (Cloudflare always sends one; an emulator or proxy may not).
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))?"
)


class Stamp(datetime):
    """A datetime read from text, which remembers how many fractional digits the text had
    (``digits``, 0 to 6): ``.500000`` is a microsecond stamp, ``.5`` a tenth of a second.
    Comparing two stamps of different precision needs it; the value alone cannot tell."""

    digits: int

    def __new__(cls, *args: Any, digits: int = 6, **kwargs: Any) -> Stamp:
        self = super().__new__(cls, *args, **kwargs)
        self.digits = digits
        return self


def parse_datetime(value: object) -> datetime:
    """An RFC 3339 timestamp as a timezone-aware datetime (naive ones are UTC): a
    :class:`Stamp` that remembers its text's precision.

    Fractions beyond microseconds are cut (Python keeps six digits); a leap second
    (``:60``) becomes the last microsecond of its minute.
    """
    if not isinstance(value, str):
        raise TypeError(f"expected an RFC 3339 timestamp string, got {type(value).__name__}")
    match = _RFC3339.fullmatch(value.strip())
    if match is None:
        raise ValueError("not an RFC 3339 timestamp")
    year, month, day, hour, minute, second, fraction, _z, sign, off_h, off_m = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    sec = int(second)
    if sec == 60:  # a leap second: datetime cannot hold it
        sec, micro = 59, 999_999
    tz = UTC
    if sign is not None:
        hours, minutes = int(off_h), int(off_m)
        if hours > 23 or minutes > 59:
            raise ValueError("not an RFC 3339 timestamp")
        delta = timedelta(hours=hours, minutes=minutes)
        tz = timezone(-delta if sign == "-" else delta)
    digits = min(len(fraction or ""), 6)
    try:
        return Stamp(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            sec,
            micro,
            tzinfo=tz,
            digits=digits,
        )
    except ValueError:
        raise ValueError("not an RFC 3339 timestamp") from None


_TIMESPEC = {0: "seconds", 1: "milliseconds", 2: "milliseconds", 3: "milliseconds"}


def format_datetime(value: datetime) -> str:
    """RFC 3339 with ``Z`` for UTC, as Cloudflare writes its timestamps; a :class:`Stamp`
    keeps its precision (so a journal written and read back compares as it came)."""
    digits = getattr(value, "digits", None)
    text = (
        value.isoformat()
        if digits is None
        else value.isoformat(timespec=_TIMESPEC.get(digits, "microseconds"))
    )
    return text.replace("+00:00", "Z")
