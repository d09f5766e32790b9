"""Pure decoding of Cloudflare's response envelope: no I/O, no aiohttp.

``decode_envelope(status, headers, body)`` returns the envelope's ``result`` or raises
the typed error that fits what came back.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import re
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any

import attrs

from magicwan.errors import (
    APIError,
    ErrorDetail,
    RateLimitError,
    UnexpectedResponseError,
    error_class_for,
)

__all__ = [
    "RateLimitInfo",
    "decode_envelope",
    "excerpt",
    "header",
    "parse_ratelimit",
    "parse_retry_after",
    "printable",
    "ray_id",
    "redact",
]

logger = logging.getLogger("magicwan")

EXCERPT_CHARS = 200
_REDACTED = "[REDACTED]"
# A "psk" member, including one cut short by a truncated body.
_PSK_VALUE = re.compile(r'("psk"\s*:\s*")(?:[^"\\]|\\.)*(?:\\$)?("|$)')
# The same inside JSON that was itself encoded as a JSON string (a gateway echoing a body):
# ``\\"psk\\":\\"...\\"``. The look-behind keeps a long run of backslashes linear.
_PSK_ESCAPED = re.compile(r'((?<!\\)(\\+)"psk\2"\s*:\s*\2")(?:[^"\\]|\\.)*?(?:\\$)?(\2"|$)')
_MAX_RETRY_AFTER = 86_400.0 * 366


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Look up a header by its lower-case name in any mapping, case-insensitively."""
    value = headers.get(name)
    if value is None and not hasattr(headers, "getall"):
        for key, candidate in headers.items():
            if key.lower() == name:
                return candidate
    return value


_RAY = re.compile(r"[0-9A-Za-z-]{1,64}")


def ray_id(headers: Mapping[str, str]) -> str | None:
    """The ``cf-ray`` id, if it looks like one. A proxy that reflects request headers into
    it (an ``Authorization``, say) must not put a credential into errors and logs."""
    value = header(headers, "cf-ray")
    return value if value is not None and _RAY.fullmatch(value) else None


def printable(text: str) -> str:
    """``text`` with every non-printable character escaped (``\\x1b``, ``\\r``, ``\\n``): safe
    on a terminal and in a log line, whatever a server wrote."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def redact(text: str, secrets: Collection[str] = ()) -> str:
    """Replace PSK values and the given secrets (in any case) in ``text``."""
    text = _PSK_VALUE.sub(lambda m: m.group(1) + _REDACTED + m.group(2), text)
    text = _PSK_ESCAPED.sub(lambda m: m.group(1) + _REDACTED + m.group(3), text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, _REDACTED)
    # A server may fold the case of what it echoes: a folded PSK is still one.
    folded = text.lower()
    for secret in secrets:
        if secret and secret.lower() in folded:
            text = re.sub(re.escape(secret), _REDACTED, text, flags=re.IGNORECASE)
            folded = text.lower()
    return text


def excerpt(body: bytes, secrets: Collection[str] = (), limit: int = EXCERPT_CHARS) -> str:
    """A short, redacted, printable excerpt of a response body."""
    # Redact before the final cut, so a secret can never be cut in half and half-shown.
    window = limit * 8
    text = body[:window].decode("utf-8", errors="replace")
    text = redact(text, secrets)
    if len(body) > window:
        # The window may have cut a secret in two: its head, at the very end, matched
        # nothing. Drop as much of the end as the longest secret could fill.
        longest = max((len(secret) for secret in secrets), default=0)
        text = text[: max(0, len(text) - longest)]
        return text[:limit] + "..."
    if len(text) > limit:
        return text[:limit] + "..."
    return text


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP date).

    Returns None for a missing, negative, non-finite or unparseable value.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
        return min(max(seconds, 0.0), _MAX_RETRY_AFTER)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, _MAX_RETRY_AFTER)


@attrs.frozen
class RateLimitInfo:
    """What the ``Ratelimit`` / ``Ratelimit-Policy`` headers said."""

    remaining: int
    reset: float
    quota: int | None = None
    window: float | None = None


_SF_PARAM = re.compile(r";\s*([a-z]+)\s*=\s*([0-9]{1,15}(?:\.[0-9]{1,9})?)(?![0-9.eE])")
#: Numbers above this in a rate-limit header are not believed (and never overflow).
_MAX_HEADER_NUMBER = 1e12


def _sf_items(value: str) -> list[dict[str, float]]:
    items = []
    for item in value.split(","):
        params = {key: float(num) for key, num in _SF_PARAM.findall(item)}
        if params and all(0 <= v <= _MAX_HEADER_NUMBER for v in params.values()):
            items.append(params)
    return items


def parse_ratelimit(headers: Mapping[str, str]) -> RateLimitInfo | None:
    """Parse ``Ratelimit: "default";r=50;t=30`` (and ``Ratelimit-Policy``) if present.

    With several limit items, the one with the fewest remaining requests wins. Anything
    that cannot be parsed sensibly (junk, a window of 0, absurdly large numbers) gives
    None or drops the policy: a malformed header never raises, it is ignored.
    """
    try:
        raw = header(headers, "ratelimit")
        if not raw:
            return None
        items = [i for i in _sf_items(raw) if "r" in i]
        if not items:
            _log_ignored("Ratelimit", raw)
            return None
        tightest = min(items, key=lambda i: i["r"])
        quota = window = None
        policy = header(headers, "ratelimit-policy")
        if policy:
            policies = [p for p in _sf_items(policy) if p.get("q", 0) >= 1 and p.get("w", 0) > 0]
            if policies:
                smallest = min(policies, key=lambda p: p["q"] / p["w"])
                quota, window = int(smallest["q"]), smallest["w"]
            else:
                _log_ignored("Ratelimit-Policy", policy)
        return RateLimitInfo(
            remaining=int(tightest["r"]), reset=tightest.get("t", 0.0), quota=quota, window=window
        )
    except (ValueError, ArithmeticError, TypeError):  # pragma: no cover - defensive
        return None


def _log_ignored(name: str, value: str) -> None:
    # Its length only: a proxy may echo anything into a header, a secret included.
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("ignoring a %s header that cannot be parsed (%d characters)", name, len(value))


def _details(raw: object, secrets: Collection[str]) -> list[ErrorDetail]:
    if not isinstance(raw, list):
        return []
    details = []
    for item in raw:
        if isinstance(item, Mapping):
            code = item.get("code")
            if isinstance(code, bool) or not isinstance(code, int):
                try:
                    code = int(str(code)) if code is not None else None
                except ValueError:
                    code = None
            message = item.get("message")
            if isinstance(message, str) or message is None:
                text = message or ""
            else:
                # JSON, not Python's repr: the redaction knows "psk": "..." members only.
                text = json.dumps(message, default=str, ensure_ascii=False)
        else:
            code, text = None, str(item)
        # Redact before cutting, so a secret cut in half is never half-shown.
        details.append(ErrorDetail(code, redact(text, secrets)[:EXCERPT_CHARS]))
    return details


def decode_envelope(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    secrets: Collection[str] = (),
    now: datetime | None = None,
) -> Any:
    """Return the ``result`` of a Cloudflare envelope, or raise the fitting error.

    - a 3xx is an :class:`UnexpectedResponseError` (redirects are never followed);
    - a 4xx/5xx envelope is the :class:`APIError` subclass for its status; a 429 is a
      :class:`RateLimitError` with ``retry_after`` even if its body is not an envelope;
    - ``success: false`` on a 2xx is a plain :class:`APIError` with Cloudflare's errors;
    - a body that is not an envelope (HTML, truncated JSON, wrong types) is an
      :class:`UnexpectedResponseError`.

    ``secrets`` are scrubbed from anything the error keeps.
    """
    ray = ray_id(headers)
    if 300 <= status < 400:
        raise UnexpectedResponseError(
            "unexpected redirect (not followed)", status=status, ray_id=ray
        )
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    envelope_ok = (
        isinstance(data, dict)
        and isinstance(data.get("success"), bool)
        and isinstance(data.get("errors", []), list)
        and isinstance(data.get("messages", []), list)
    )
    if status == 429 or (status >= 400 and envelope_ok):
        errors = _details(data.get("errors"), secrets) if envelope_ok else []
        messages = _details(data.get("messages"), secrets) if envelope_ok else []
        cls = error_class_for(status)
        if cls is RateLimitError:
            retry_after = parse_retry_after(header(headers, "retry-after"), now)
            raise RateLimitError(status, errors, messages, ray, retry_after)
        raise cls(status, errors, messages, ray)
    if not envelope_ok:
        what = "body is not a Cloudflare envelope"
        if data is None:
            what = "body is not valid JSON" if body else "body is empty"
        raise UnexpectedResponseError(
            what, status=status, ray_id=ray, body_excerpt=excerpt(body, secrets)
        )
    assert isinstance(data, dict)
    if not 200 <= status < 300:
        raise UnexpectedResponseError(
            "unexpected status", status=status, ray_id=ray, body_excerpt=excerpt(body, secrets)
        )
    if data["success"] is not True:
        # Cloudflare said it failed, with a 2xx: keep its errors structured (``codes``).
        # Whether it acted first is unknown (``outcome_unknown`` is true for a 2xx).
        errors = _details(data.get("errors"), secrets)
        messages = _details(data.get("messages"), secrets)
        raise APIError(status, errors, messages, ray)
    return data.get("result")
