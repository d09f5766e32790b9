"""What a call returns when its caller asks how it went: :class:`Reply`."""

from __future__ import annotations

from typing import Generic, TypeVar

import attrs

__all__ = ["Reply"]

T = TypeVar("T")


@attrs.frozen
class Reply(Generic[T]):
    """A call's result and how it was obtained.

    ``attempts`` counts the requests sent (retries included). ``uncertain`` is true when
    an earlier attempt failed with an unknown outcome, so the server may have acted on a
    request whose answer nobody saw (for a PSK generation: stored a PSK that was never
    received). ``ray_id`` is the ``cf-ray`` id of the answer that was used.
    """

    value: T
    attempts: int
    uncertain: bool
    ray_id: str | None = None
