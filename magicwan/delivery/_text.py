"""Text from the other side (a program's stderr, charon's messages), made safe to show.

Safe means: the PSK is replaced by ``[REDACTED]`` before anything is cut (so a cut can
never leave part of a PSK showing), control and format characters are escaped (no
terminal escapes, no forged log lines), and the result is short.
"""

from __future__ import annotations

import unicodedata

from magicwan.internal.redaction import redact

__all__ = ["EXCERPT_CHARS", "scrub", "scrub_tail"]

EXCERPT_CHARS = 300
_ELLIPSIS = "..."
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(char: str) -> str:
    if unicodedata.category(char)[0] != "C":
        return char
    code = ord(char)
    if code < 0x100:
        return _NAMED.get(char, f"\\x{code:02x}")
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _fit(tokens: list[str], limit: int) -> tuple[list[str], bool]:
    """The leading tokens whose total length stays within ``limit``; and whether any was left."""
    size = 0
    for count, token in enumerate(tokens):
        size += len(token)
        if size > limit:
            return tokens[:count], True
    return tokens, False


def scrub(text: str, secret: str, *, limit: int = EXCERPT_CHARS) -> str:
    """The start of ``text``, without ``secret`` or control characters, at most ``limit`` long."""
    kept, cut = _fit([_escaped(c) for c in redact(text, (secret,))], limit)
    return "".join(kept) + (_ELLIPSIS if cut else "")


def scrub_tail(data: bytes, secret: str, *, head_cut: bool, limit: int = EXCERPT_CHARS) -> str:
    """The end of ``data`` (a program's output), scrubbed like :func:`scrub`.

    ``head_cut`` says that ``data`` does not start where the output started: then as
    many bytes as the secret has are dropped first, since they may be the end of a PSK
    whose beginning was already thrown away.
    """
    if head_cut:
        data = data[len(secret.encode()) :]
    text = redact(data.decode("utf-8", errors="replace"), (secret,))
    kept, cut = _fit([_escaped(c) for c in reversed(text)], limit)
    return (_ELLIPSIS if cut or head_cut else "") + "".join(reversed(kept))
