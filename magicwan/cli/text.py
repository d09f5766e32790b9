"""Text for terminals: shown escaped, written whatever the stream's encoding.

Every line for people goes through :func:`escape`, so nothing a server wrote (an error
message, a tunnel name) can drive the terminal.
"""

from __future__ import annotations

from typing import TextIO

from magicwan.internal.redaction import printable

__all__ = ["escape", "write_text"]


#: ``text`` with every non-printable character shown as an escape (``\\x1b``, ``\\r``,
#: ``\\u202e``); printable text, spaces included, is unchanged.
escape = printable


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
