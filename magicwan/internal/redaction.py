"""Keeping secrets out of text meant for people: redacting PSKs and credentials, naming ids
only when they cannot be one, escaping what a terminal would interpret, cutting a response
body short."""

from __future__ import annotations

import re
from collections.abc import Collection

import attrs

from magicwan.errors import ErrorDetail
from magicwan.internal.keygen import MIN_PSK_LENGTH

__all__ = [
    "EXCERPT_CHARS",
    "REDACTED",
    "describe_error",
    "excerpt",
    "is_cloudflare_id",
    "may_be_secret",
    "printable",
    "redact",
    "scrub_error",
    "shown_id",
]

EXCERPT_CHARS = 200
#: What stands where a secret was.
REDACTED = "[REDACTED]"
# A "psk" member, including one cut short by a truncated body.
_PSK_VALUE = re.compile(r'("psk"\s*:\s*")(?:[^"\\]|\\.)*(?:\\$)?("|$)')
# The same inside JSON that was itself encoded as a JSON string (a gateway echoing a body):
# ``\\"psk\\":\\"...\\"``. The look-behind keeps a long run of backslashes linear.
_PSK_ESCAPED = re.compile(r'((?<!\\)(\\+)"psk\2"\s*:\s*\2")(?:[^"\\]|\\.)*?(?:\\$)?(\2"|$)')
# The ids Cloudflare gives out, and the emulator too: 32 lowercase hex characters.
_CLOUDFLARE_ID = re.compile(r"[0-9a-f]{32}")


def printable(text: str) -> str:
    """``text`` with every non-printable character escaped (``\\x1b``, ``\\r``, ``\\n``): safe
    on a terminal and in a log line, whatever a server wrote."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def is_cloudflare_id(value: object) -> bool:
    """``value`` has the shape of an id Cloudflare gives out: 32 lowercase hex characters."""
    return isinstance(value, str) and _CLOUDFLARE_ID.fullmatch(value) is not None


def may_be_secret(value: str) -> bool:
    """Whether an id a caller gave may be a secret: long enough to be a PSK and not in
    Cloudflare's form in any case (what a PSK of letters and digits, given where an id goes,
    looks like).
    Such an id is scrubbed from what the request's answer and its log lines say."""
    return len(value) >= MIN_PSK_LENGTH and not is_cloudflare_id(value.lower())


def shown_id(value: object, kind: str = "", *, quoted: bool = False) -> str:
    """How text meant for people names an id the SDK did not get from Cloudflare (one a
    caller gave, or an answer the SDK cannot use): ``"<kind> <id>"`` (``repr`` of the id
    when ``quoted``) when it has the shape of a Cloudflare id, else words that say what it
    is not, without it. A value given where an id goes may be a secret: a PSK of letters
    and digits is a well-formed id too, but (almost) never 32 lowercase hex characters."""
    if is_cloudflare_id(value):
        shown = repr(value) if quoted else str(value)
        return f"{kind} {shown}" if kind else shown
    what = f"Cloudflare {kind} id" if kind else "Cloudflare id"
    why = "32 lowercase hex characters; not shown: it may be a secret"
    return f"an id that is not a {what} ({why})"


def redact(text: str, secrets: Collection[str] = ()) -> str:
    """Replace PSK values and the given secrets (in any case) in ``text``."""
    text = _PSK_VALUE.sub(lambda m: m.group(1) + REDACTED + m.group(2), text)
    text = _PSK_ESCAPED.sub(lambda m: m.group(1) + REDACTED + m.group(3), text)
    for secret in secrets:
        # A server may fold the case of what it echoes: a folded PSK is still one.
        if secret and secret.lower() in text.lower():
            text = re.sub(re.escape(secret), REDACTED, text, flags=re.IGNORECASE)
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


def describe_error(exc: BaseException, secrets: Collection[str] = (), *, typed: bool = True) -> str:
    """``ErrorType: message`` (the message alone when not ``typed``), with PSK values and
    ``secrets`` redacted. An exception whose ``__str__`` fails is named by its type. Not
    escaped: whatever shows it escapes for its medium (:func:`printable`, JSON)."""
    try:
        text = f"{type(exc).__name__}: {exc}" if typed else str(exc)
    except Exception:  # a caller's exception class: its __str__ may fail too
        text = f"{type(exc).__name__} (its message cannot be printed)"
    return redact(text, secrets)


def scrub_error(exc: BaseException, secrets: Collection[str]) -> None:
    """Redact ``secrets`` (in any case) from every text ``exc`` keeps: its ``args``, its
    string attributes and its :class:`~magicwan.errors.ErrorDetail` lists, in place.

    For an error made by one call and not yet shown, whose server may have quoted a PSK the
    caller holds but the request never carried (so the decoder could not know it)."""
    secrets = [secret for secret in secrets if secret]
    if not secrets:
        return
    exc.args = tuple(redact(a, secrets) if isinstance(a, str) else a for a in exc.args)
    for name, value in vars(exc).items():
        if isinstance(value, str):
            setattr(exc, name, redact(value, secrets))
        elif isinstance(value, list | tuple) and value and isinstance(value[0], ErrorDetail):
            scrubbed = [
                attrs.evolve(d, message=redact(d.message, secrets))
                if isinstance(d, ErrorDetail)
                else d
                for d in value
            ]
            setattr(exc, name, type(value)(scrubbed))
