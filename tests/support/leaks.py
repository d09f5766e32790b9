"""Does a secret show anywhere an error could be printed?"""

from __future__ import annotations

import traceback

__all__ = ["shown_in"]


def shown_in(secret: str, error: BaseException) -> list[str]:
    """Where ``secret`` shows: the error's text, its repr, or its traceback formatted with
    every frame's local variables (and the chained errors', as Python prints them)."""
    formatted = "".join(
        traceback.TracebackException.from_exception(error, capture_locals=True).format()
    )
    places = {"str": str(error), "repr": repr(error), "traceback with locals": formatted}
    return [place for place, text in places.items() if secret in text]
