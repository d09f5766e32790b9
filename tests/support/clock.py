"""Time for tests: one virtual clock, and real time sped up for tests against real servers.

Everything in magicwan that waits takes its clock and sleep as arguments, so tests hand it one
of these instead of ``time.monotonic`` and ``asyncio.sleep``:

``FakeClock``
    Virtual time. It moves only when a test calls :meth:`~FakeClock.advance` or when a task
    sleeps on it: :meth:`~FakeClock.sleep` never waits for real. Sleepers wake in (wake time,
    call order) order, and before each jump the event loop is given a few turns, so concurrent
    tasks (mocked HTTP included) reach their next sleep and see time pass as they would for
    real. ``sleeps`` records every delay asked for.

``ManualClock``
    Virtual time that moves *only* when the test calls :meth:`~ManualClock.advance`, which wakes
    the sleepers due by then. For tests that act while sleepers wait (cancel them, count them):
    a ``FakeClock`` would jump ahead on its own once they all sleep.

``ScaledClock``
    Real time running ``factor`` times faster: a client's backoff and ``Retry-After``
    cooldowns then cost a fraction of a real second while its requests, sockets and the
    emulator stay real.

Both are callables returning the time (``clock()`` is the same), so either can be passed where a
plain ``Callable[[], float]`` clock is expected, and both have ``sleep`` and ``advance``.
"""

from __future__ import annotations

import asyncio
import heapq
import time

__all__ = ["SETTLE_TURNS", "FakeClock", "ManualClock", "ScaledClock"]

#: How many event-loop turns a :class:`FakeClock` lets pass before it jumps ahead: enough for
#: every runnable task (mocked HTTP included) to reach its next sleep.
SETTLE_TURNS = 50


class FakeClock:
    """A virtual monotonic clock with an ``asyncio.sleep`` stand-in that never waits for real."""

    def __init__(self, start: float = 1000.0) -> None:
        self.start = start
        self.now = start
        #: Every delay passed to :meth:`sleep`, in call order (zero and negative ones too).
        self.sleeps: list[float] = []
        self._queue: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0
        self._driver: asyncio.Task[None] | None = None

    def __call__(self) -> float:
        return self.now

    def clock(self) -> float:
        return self.now

    @property
    def elapsed(self) -> float:
        """Virtual seconds since the clock was made."""
        return self.now - self.start

    def advance(self, seconds: float) -> None:
        """Move the clock forward by hand (a sleeper due by then wakes at its next turn)."""
        if seconds < 0:
            raise ValueError("a monotonic clock never goes back")
        self.now += seconds

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
            for _ in range(SETTLE_TURNS):
                await asyncio.sleep(0)
            when, _, fut = heapq.heappop(self._queue)
            self.now = max(self.now, when)
            if not fut.done():
                fut.set_result(None)


class ManualClock:
    """A virtual monotonic clock that moves only by :meth:`advance` (never on its own)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.start = start
        self.now = start
        #: Every delay passed to :meth:`sleep`, in call order (zero and negative ones too).
        self.sleeps: list[float] = []
        self._queue: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0

    def __call__(self) -> float:
        return self.now

    def clock(self) -> float:
        return self.now

    @property
    def elapsed(self) -> float:
        """Virtual seconds since the clock was made."""
        return self.now - self.start

    @property
    def sleeping(self) -> int:
        """How many sleepers are waiting (neither woken nor cancelled)."""
        return sum(1 for _, _, fut in self._queue if not fut.done())

    def advance(self, seconds: float) -> None:
        """Move the clock forward and wake every sleeper due by then (at its next turn)."""
        if seconds < 0:
            raise ValueError("a monotonic clock never goes back")
        self.now += seconds
        while self._queue and self._queue[0][0] <= self.now:
            _, _, fut = heapq.heappop(self._queue)
            if not fut.done():
                fut.set_result(None)

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        if delay <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._queue, (self.now + delay, self._seq, fut))
        await fut


class ScaledClock:
    """Real monotonic time running ``factor`` times faster, with a matching sleep."""

    def __init__(self, factor: float) -> None:
        if not factor > 0:
            raise ValueError("factor must be above zero")
        self.factor = factor
        self.offset = 0.0
        #: Every delay passed to :meth:`sleep` (in scaled seconds), in call order.
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return time.monotonic() * self.factor + self.offset

    def clock(self) -> float:
        return self()

    def advance(self, seconds: float) -> None:
        """Jump ahead by ``seconds`` of scaled time, on top of the running clock."""
        if seconds < 0:
            raise ValueError("a monotonic clock never goes back")
        self.offset += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(max(seconds, 0.0) / self.factor)
