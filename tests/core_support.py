"""Test doubles shared by the core SDK tests: virtual time, captured samples, constants.

The constants repeat those of ``tests/conftest.py`` on purpose: several directories
hold a ``conftest.py``, so ``from conftest import ...`` may pick up the wrong one.
"""

from __future__ import annotations

import asyncio
import heapq
import json
from pathlib import Path
from typing import Any

ACCOUNT = "023e105f4ecef8ad9ca31a8372d0c353"
TUNNEL = "c4a7362d577a6c3019a474fd6f485823"
TOKEN = "tok-SECRET-0123456789abcdef"
KEY = "key-SECRET-0123456789abcdef"
BASE = "https://api.cloudflare.com/client/v4"
PSK_URL = f"{BASE}/accounts/{ACCOUNT}/magic/ipsec_tunnels/{TUNNEL}/psk_generate"
PSK = "O3bwKSjnaoCxDoUxjcq4Rk8ZKkezQUiy"  # the spec's example

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
