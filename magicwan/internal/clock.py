"""The injected notion of time: a clock to read and a sleep to await."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

__all__ = ["Clock", "Sleep"]

#: Reads the time in seconds (``time.monotonic`` in production, a fake in tests).
Clock = Callable[[], float]
#: Waits that many seconds (``asyncio.sleep`` in production, a fake in tests).
Sleep = Callable[[float], Awaitable[None]]
