"""Input checks that run before any request is sent: one function per rule, and
:func:`argtype`, which makes an argparse ``type=`` of a rule, so a command line refuses a
value in the library's words. Messages never echo secrets.

A rule is ``check_x(value, name) -> value``: it returns the value (converted where the
rule says so) or raises :class:`~magicwan.errors.InvalidInputError` saying
``"<name> must be <what it expected>"``.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from magicwan.errors import InvalidInputError
from magicwan.internal.budget import parse_rate_limit
from magicwan.internal.keygen import MAX_PSK_LENGTH, MIN_PSK_LENGTH
from magicwan.internal.redaction import shown_id

__all__ = [
    "MAX_DURATION",
    "MAX_ID_LENGTH",
    "MAX_PSK_LENGTH",
    "MIN_PSK_LENGTH",
    "argtype",
    "check_bool",
    "check_credential",
    "check_duration",
    "check_id",
    "check_non_negative_int",
    "check_non_negative_seconds",
    "check_positive_int",
    "check_psk",
    "check_rate_limit",
    "check_seconds",
    "is_id",
    "is_printable_psk",
    "normalize_base_url",
    "read_seconds",
    "read_whole",
]

T = TypeVar("T")

MAX_ID_LENGTH = 32
_ID = re.compile(r"[A-Za-z0-9]{1,32}")
# Printable ASCII without spaces: what an API token, key or e-mail header may hold.
_CREDENTIAL = re.compile(r"[\x21-\x7e]{1,4096}")
_PSK = re.compile(r"[\x21-\x7e]+")


def is_id(value: object) -> bool:
    """``value`` is a Cloudflare identifier: 1 to 32 ASCII letters and digits."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def check_id(value: object, name: str) -> str:
    """A Cloudflare identifier: 1 to 32 ASCII letters and digits, nothing else. A refused
    value is not echoed (:func:`~magicwan.internal.redaction.shown_id`): it may be a secret
    given in the wrong place."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{name} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidInputError(f"{name} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidInputError(f"{name} is longer than {MAX_ID_LENGTH} characters")
    if _ID.fullmatch(value) is None:
        raise InvalidInputError(f"{name} may hold only ASCII letters and digits: {shown_id(value)}")
    return value


def check_bool(value: object, name: str) -> bool:
    """A real bool, not a truthy stand-in."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_credential(value: object, name: str) -> str:
    """A credential that can travel in an HTTP header. The value is never echoed."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{name} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidInputError(f"{name} must not be empty")
    if _CREDENTIAL.fullmatch(value) is None:
        raise InvalidInputError(
            f"{name} holds whitespace, control or non-ASCII characters (value not shown)"
        )
    return value


def is_printable_psk(value: str) -> bool:
    """``value`` is printable ASCII without spaces, and not empty: what a device takes."""
    return _PSK.fullmatch(value) is not None


def check_psk(value: object, name: str) -> str:
    """A PSK to send: printable ASCII without spaces, within the documented length
    bounds. The value is never echoed."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{name} must be a string, got {type(value).__name__}")
    if not MIN_PSK_LENGTH <= len(value) <= MAX_PSK_LENGTH:
        raise InvalidInputError(
            f"{name} must be {MIN_PSK_LENGTH} to {MAX_PSK_LENGTH} characters long, "
            f"got {len(value)} (value not shown)"
        )
    if not is_printable_psk(value):
        raise InvalidInputError(
            f"{name} may hold only printable ASCII without spaces (value not shown)"
        )
    return value


def _seconds(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"{name} must be a number of seconds, got {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float
        seconds = math.inf
    if not math.isfinite(seconds):
        raise InvalidInputError(f"{name} must be a finite number of seconds")
    return seconds


def check_seconds(value: object, name: str) -> float:
    """A finite number of seconds > 0."""
    seconds = _seconds(value, name)
    if seconds <= 0:
        raise InvalidInputError(f"{name} must be a number of seconds > 0")
    return seconds


def check_non_negative_seconds(value: object, name: str) -> float:
    """A finite number of seconds >= 0."""
    seconds = _seconds(value, name)
    if seconds < 0:
        raise InvalidInputError(f"{name} must be a number of seconds >= 0")
    return seconds


_DURATION = re.compile(r"([0-9]{1,9})([dhms])")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
#: The longest duration taken: a century, far past any PSK policy, far from overflow.
MAX_DURATION = timedelta(days=36500)


def check_duration(value: object, name: str) -> timedelta:
    """A positive duration written as a whole number and one unit: ``90d``, ``12h``,
    ``30m``, ``45s`` (days, hours, minutes, seconds), at most ``36500d``."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{name} must be a string like 90d, got {type(value).__name__}")
    match = _DURATION.fullmatch(value.strip())
    if match is None:
        raise InvalidInputError(
            f"{name} must be a whole number and a unit, d, h, m or s (90d, 12h, 30m, 45s), "
            f"got {value!r}"
        )
    seconds = int(match[1]) * _UNIT_SECONDS[match[2]]
    if seconds <= 0:
        raise InvalidInputError(f"{name} must be longer than 0, got {value!r}")
    duration = timedelta(seconds=seconds)
    if duration > MAX_DURATION:
        raise InvalidInputError(f"{name} must be at most 36500d, got {value!r}")
    return duration


def check_non_negative_int(value: object, name: str) -> int:
    """A whole number >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(f"{name} must be a whole number >= 0")
    return value


def check_positive_int(value: object, name: str) -> int:
    """A whole number >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be a whole number >= 1")
    return value


def check_rate_limit(value: object, name: str) -> tuple[int, float] | None:
    """``(requests, seconds)``, or None for no limit: what a client's limiter can pace."""
    if value is None:
        return None
    if not isinstance(value, tuple) or len(value) != 2:
        raise InvalidInputError(f"{name} must be (requests, seconds) or None")
    requests = check_positive_int(value[0], f"{name} requests")
    seconds = check_seconds(value[1], f"{name} seconds")
    try:
        interval = seconds / requests
    except OverflowError:  # requests too large for a float
        interval = 0.0
    if not interval > 0:  # the limiter divides by it
        raise InvalidInputError(f"{name} is too fine: seconds / requests must be above zero")
    return requests, seconds


def _is_loopback(host: str) -> bool:
    # Only "localhost" itself: "*.localhost" names depend on the resolver, and plain http
    # to a name that DNS maps elsewhere would send credentials in the clear.
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalize_base_url(value: object) -> str:
    """An https base URL (http only for loopback emulators), without a trailing slash."""
    if not isinstance(value, str):
        raise InvalidInputError(f"base_url must be a string, got {type(value).__name__}")
    if not value.isascii() or any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in value):
        raise InvalidInputError("base_url holds whitespace, control or non-ASCII characters")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise InvalidInputError(f"base_url is not a valid URL: {exc}") from None
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host:
        raise InvalidInputError("base_url must be an absolute https:// URL")
    if parts.scheme == "http" and not _is_loopback(host):
        raise InvalidInputError(
            "base_url must use https; plain http is allowed only for loopback hosts (emulators)"
        )
    if parts.username is not None or parts.password is not None:
        raise InvalidInputError("base_url must not hold credentials")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise InvalidInputError("base_url must not have a query or fragment")
    if port == 0:
        raise InvalidInputError("base_url has an invalid port")
    return value.rstrip("/")


# -- the command line: reading text, and the adapter that makes an argparse type of a rule --


def read_whole(text: str) -> int:
    """``text`` as a whole number (ValueError naming what was expected)."""
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None


def read_seconds(text: str) -> float:
    """``text`` as a number of seconds (ValueError naming what was expected)."""
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {text!r}") from None


#: How the text of a flag checked by a rule is read, when :func:`argtype` is not told.
_READERS: dict[Callable[[Any, str], Any], Callable[[str], Any]] = {
    check_positive_int: read_whole,
    check_non_negative_int: read_whole,
    check_seconds: read_seconds,
    check_non_negative_seconds: read_seconds,
    check_rate_limit: parse_rate_limit,
}


def argtype(
    rule: Callable[[Any, str], T],
    read: Callable[[str], Any] | None = None,
    *,
    name: str | None = None,
    off: bool = False,
) -> Callable[[str], T | None]:
    """An argparse ``type=`` of ``rule``: ``read`` the text, then check it by ``rule``.

    ``read`` defaults to the rule's own reader (a whole number for ``check_positive_int``,
    seconds for ``check_seconds``, ``N/SECONDS`` or ``off`` for ``check_rate_limit``), else
    the text itself. A refusal is an :class:`argparse.ArgumentTypeError` in the rule's
    words: ``"<name> must be ..."`` with ``name``, else ``"expected ..., got <text>"``.
    ``read`` may raise ValueError with its own message (what it could not read). With
    ``off``, the word ``off`` (any case) is None; a value read as None skips the rule.
    """
    reader = read if read is not None else _READERS.get(rule, str)

    def convert(text: str) -> T | None:
        if off and text.strip().lower() == "off":
            return None
        try:
            value = reader(text)
            return None if value is None else rule(value, name or "")
        except ValueError as exc:  # InvalidInputError is one too
            message = str(exc)
            if name is None:  # the rule said " must be ...": no name before it
                message = message.strip()
                if message.startswith("must be "):
                    either = " or off" if off else ""
                    message = f"expected {message.removeprefix('must be ')}{either}, got {text}"
            raise argparse.ArgumentTypeError(message) from None

    convert.__name__ = getattr(rule, "__name__", "value").removeprefix("check_")
    return convert
