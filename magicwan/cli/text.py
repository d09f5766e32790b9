"""Text for terminals: shown escaped, written whatever the stream's encoding.

Every line for people goes through :func:`escape`, so nothing a server wrote (an error
message, a tunnel name) can drive the terminal.
"""

from __future__ import annotations

from typing import TextIO

__all__ = ["escape", "write_text"]


def escape(text: str) -> str:
    """``text`` with every non-printable character shown as an escape (``\\x1b``, ``\\r``,
    ``\\u202e``); printable text, spaces included, is unchanged."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def write_text(stream: TextIO, text: str) -> None:
    """Write ``text`` on ``stream``, escaping (``\\xfc``) what its encoding cannot hold: a
    tunnel named ``filiale-zürich`` on an ASCII stdout (``PYTHONIOENCODING=ascii``, a C
    locale) is shown, not a ``UnicodeEncodeError``."""
    try:
        stream.write(text)
    except UnicodeEncodeError:
        # A text stream encodes the whole string before writing any of it.
        encoding = getattr(stream, "encoding", None) or "ascii"
        stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
