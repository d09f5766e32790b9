"""Test doubles shared by the core SDK tests: virtual time and captured samples."""

from __future__ import annotations

import asyncio
import heapq
import json
from pathlib import Path
from typing import Any

SAMPLES = Path(__file__).parent / "samples" / "envelope"

#: How many event-loop turns the virtual clock lets pass before it jumps ahead:
#: enough for every runnable task (mocked HTTP included) to reach its next sleep.
_SETTLE_TURNS = 50


def load_sample(name: str) -> tuple[int, dict[str, str], bytes]:
    """``(status, headers, body)`` of ``samples/envelope/<name>.json``."""
    raw = json.loads((SAMPLES / f"{name}.json").read_text())
    return raw["status"], raw["headers"], raw["body"].encode()


def sample_names() -> list[str]:
    return sorted(p.stem for p in SAMPLES.glob("*.json"))


class FakeTime:
    """A virtual clock and an ``asyncio.sleep`` stand-in that never waits for real.

    Sleepers are woken in (wake time, call order) order; before each jump the loop is
    allowed to settle, so concurrent tasks see time advance as they would for real.
    ``sleeps`` records every requested delay.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.start = start
        self.sleeps: list[float] = []
        self._queue: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0
        self._driver: asyncio.Task[None] | None = None

    def clock(self) -> float:
        return self.now

    @property
    def elapsed(self) -> float:
        return self.now - self.start

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        if delay <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._seq += 1
        heapq.heappush(self._queue, (self.now + delay, self._seq, fut))
        if self._driver is None or self._driver.done():
            self._driver = loop.create_task(self._drive())
        await fut

    async def _drive(self) -> None:
        while self._queue:
            for _ in range(_SETTLE_TURNS):
                await asyncio.sleep(0)
            when, _, fut = heapq.heappop(self._queue)
            self.now = max(self.now, when)
            if not fut.done():
                fut.set_result(None)


def envelope(result: Any = None, *, success: bool = True, errors: Any = ()) -> dict[str, Any]:
    return {"result": result, "success": success, "errors": list(errors), "messages": []}
