"""The client-side limiter, on virtual time: nothing here waits for real."""

from __future__ import annotations

import asyncio
import math

import pytest

from magicwan._envelope import RateLimitInfo  # private: what the limiter reads from headers
from magicwan.ratelimit import (
    CLOUDFLARE_BUDGET,
    MAX_COOLDOWN,
    CooldownTooLong,
    RateLimiter,
    parse_rate_limit,
)
from tests.support.clock import FakeClock, ManualClock


def _limiter(
    fake: FakeClock, limit: int | None = 10, period: float = 5.0, headroom: float = 0.0
) -> RateLimiter:
    # Exact GCRA arithmetic by default; the headroom tests below set it.
    return RateLimiter(limit, period, clock=fake.clock, sleep=fake.sleep, headroom=headroom)


@pytest.mark.asyncio
async def test_default_headroom_keeps_one_request_in_reserve() -> None:
    fake = FakeClock()
    limiter = RateLimiter(10, 5.0, clock=fake.clock, sleep=fake.sleep)
    times = []
    for _ in range(13):
        await limiter.acquire()
        times.append(fake.elapsed)
    assert times[:9] == [0.0] * 9
    assert times[9:] == pytest.approx([0.5, 1.0, 1.5, 2.0])


@pytest.mark.asyncio
@pytest.mark.parametrize(("headroom", "burst"), [(0, 10), (1, 9), (3, 7), (0.5, 9)])
async def test_headroom_shrinks_the_burst(headroom: float, burst: int) -> None:
    fake = FakeClock()
    limiter = _limiter(fake, limit=10, period=5.0, headroom=headroom)
    immediate = 0
    for _ in range(12):
        await limiter.acquire()
        immediate += fake.elapsed == 0.0
    assert immediate == burst


@pytest.mark.parametrize("headroom", [-1, math.nan, math.inf, "1"])
def test_invalid_headroom(headroom: object) -> None:
    with pytest.raises(ValueError, match="headroom"):
        RateLimiter(10, 5.0, headroom=headroom)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_burst_of_limit_then_paced() -> None:
    fake = FakeClock()
    limiter = _limiter(fake, limit=10, period=5.0)
    times = []
    for _ in range(14):
        await limiter.acquire()
        times.append(fake.elapsed)
    assert times[:10] == [0.0] * 10
    assert times[10:] == pytest.approx([0.5, 1.0, 1.5, 2.0])


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("limit", "period", "n"), [(10, 5.0, 30), (1200, 300.0, 1500), (3, 1.0, 3)]
)
async def test_n_requests_take_exactly_the_budget(limit: int, period: float, n: int) -> None:
    fake = FakeClock()
    limiter = _limiter(fake, limit=limit, period=period)
    for _ in range(n):
        await limiter.acquire()
    assert fake.elapsed == pytest.approx(max(0, n - limit) * period / limit)


@pytest.mark.asyncio
async def test_concurrent_callers_are_paced_in_arrival_order() -> None:
    fake = FakeClock()
    limiter = _limiter(fake, limit=2, period=2.0)
    order: list[tuple[int, float]] = []

    async def call(i: int) -> None:
        await limiter.acquire()
        order.append((i, fake.elapsed))

    await asyncio.gather(*(call(i) for i in range(6)))
    assert [i for i, _ in order] == list(range(6))
    assert [t for _, t in order] == pytest.approx([0.0, 0.0, 1.0, 2.0, 3.0, 4.0])


@pytest.mark.asyncio
async def test_bucket_refills_while_idle() -> None:
    fake = FakeClock()
    limiter = _limiter(fake, limit=4, period=4.0)
    for _ in range(4):
        await limiter.acquire()
    assert limiter.available() == pytest.approx(0.0)
    fake.now += 2.0
    assert limiter.available() == pytest.approx(2.0)
    fake.now += 100.0
    assert limiter.available() == pytest.approx(4.0)  # never more than a full bucket
    for _ in range(4):
        assert await limiter.acquire() == 0.0


@pytest.mark.asyncio
async def test_pause_holds_new_callers() -> None:
    fake = FakeClock()
    limiter = _limiter(fake, limit=None)
    limiter.pause(30.0)
    assert limiter.paused_until == fake.now + 30.0
    waited = await limiter.acquire()
    assert waited == pytest.approx(30.0)
    assert fake.elapsed == pytest.approx(30.0)
    assert await limiter.acquire() == 0.0


@pytest.mark.asyncio
async def test_pause_holds_callers_already_sleeping_and_resumes_them_in_order() -> None:
    fake = FakeClock()
    limiter = _limiter(fake, limit=2, period=2.0)  # one request a second after the burst
    for _ in range(2):
        await limiter.acquire()
    released: list[tuple[int, float]] = []

    async def call(i: int) -> None:
        await limiter.acquire()
        released.append((i, fake.elapsed))

    tasks = [asyncio.create_task(call(i)) for i in range(4)]  # slots at 1, 2, 3, 4
    while len(fake.sleeps) < 4:
        await asyncio.sleep(0)
    limiter.pause(10.0)  # a 429 while they all sleep
    await asyncio.gather(*tasks)
    assert [i for i, _ in released] == [0, 1, 2, 3]
    times = [t for _, t in released]
    assert times[0] >= 10.0  # nobody went during the cooldown
    # ... and they come back at the limiter's pace, not as a herd.
    assert times == pytest.approx([10.0, 11.0, 12.0, 13.0])


@pytest.mark.asyncio
async def test_pause_without_pacing_releases_sleepers_after_the_cooldown() -> None:
    fake = FakeClock()
    limiter = _limiter(fake, limit=None)
    limiter.pause(5.0)
    released: list[float] = []

    async def call() -> None:
        await limiter.acquire()
        released.append(fake.elapsed)

    tasks = [asyncio.create_task(call()) for _ in range(3)]
    while len(fake.sleeps) < 3:
        await asyncio.sleep(0)
    limiter.pause(20.0)  # extended while they sleep
    await asyncio.gather(*tasks)
    assert released == pytest.approx([20.0, 20.0, 20.0])


@pytest.mark.asyncio
async def test_pause_only_extends() -> None:
    fake = FakeClock()
    limiter = _limiter(fake)
    limiter.pause(30.0)
    limiter.pause(5.0)
    limiter.pause(-3.0)
    assert limiter.paused_until == fake.now + 30.0


@pytest.mark.asyncio
async def test_resumes_at_pace_after_a_pause_not_with_a_burst() -> None:
    fake = FakeClock()
    limiter = _limiter(fake, limit=10, period=10.0)
    limiter.pause(3.0)
    times = []
    for _ in range(3):
        await limiter.acquire()
        times.append(fake.elapsed)
    assert times == pytest.approx([3.0, 4.0, 5.0])


@pytest.mark.asyncio
async def test_cooldown_too_long_raises_without_waiting() -> None:
    fake = FakeClock()
    limiter = _limiter(fake)
    limiter.pause(120.0)
    with pytest.raises(CooldownTooLong) as info:
        await limiter.acquire(max_wait=60.0)
    assert info.value.remaining == pytest.approx(120.0)
    assert fake.sleeps == []
    assert await limiter.acquire(max_wait=120.0) == pytest.approx(120.0)


@pytest.mark.asyncio
async def test_cooldown_extended_beyond_max_wait_while_sleeping_raises() -> None:
    fake = FakeClock()
    limiter = _limiter(fake, limit=None)
    limiter.pause(10.0)
    task = asyncio.create_task(limiter.acquire(max_wait=30.0))
    while not fake.sleeps:
        await asyncio.sleep(0)
    limiter.pause(100.0)
    with pytest.raises(CooldownTooLong):
        await task
    assert fake.elapsed == pytest.approx(10.0)


@pytest.mark.asyncio
@pytest.mark.parametrize("retry_after", [999_999_999.0, 86_400.0 * 366, math.inf])
async def test_a_cooldown_lasts_at_most_max_cooldown(retry_after: float) -> None:
    # "Retry-After: 999999999" must not make the client refuse every call for 366 days.
    fake = FakeClock()
    limiter = _limiter(fake, limit=10, period=10.0)
    assert limiter.pause(retry_after) == MAX_COOLDOWN
    assert limiter.paused_until == fake.now + MAX_COOLDOWN
    with pytest.raises(CooldownTooLong) as info:
        await limiter.acquire(max_wait=60.0)
    assert info.value.remaining == pytest.approx(MAX_COOLDOWN)
    assert await limiter.acquire() == pytest.approx(MAX_COOLDOWN)  # and then it goes
    assert fake.elapsed == pytest.approx(MAX_COOLDOWN)


def test_max_cooldown_is_cloudflares_window() -> None:
    assert MAX_COOLDOWN == 300.0
    assert RateLimiter().max_cooldown == MAX_COOLDOWN


# --- cancelled waiters ------------------------------------------------------------------


async def _turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_cancelled_waiters_give_their_slots_back() -> None:
    # The numbers: budget 10/10 s, 10 requests sent, then 31 waiters cancelled; the
    # next call waited 31.5 s. It must wait at most one interval (1 s).
    clock = ManualClock()
    limiter = RateLimiter(10, 10.0, clock=clock, sleep=clock.sleep)
    sent: list[float] = []

    async def call() -> None:
        await limiter.acquire()
        sent.append(clock.elapsed)

    first = [asyncio.create_task(call()) for _ in range(10)]
    await _turns()
    clock.advance(1.0)  # 9 went at once (one request of headroom), the 10th a second later
    await asyncio.gather(*first)
    assert sent == [0.0] * 9 + [1.0]

    waiters = [asyncio.create_task(call()) for _ in range(31)]
    await _turns()
    assert clock.sleeping == 31
    clock.advance(0.5)
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert all(w.cancelled() for w in waiters)
    assert len(sent) == 10  # no cancelled waiter sent anything

    after = asyncio.create_task(call())
    await _turns()
    wait = clock.sleeps[-1] if clock.sleeping else 0.0
    assert wait <= 1.0, f"the next call waits {wait:g}s after 31 cancelled waiters"
    clock.advance(1.0)
    await after
    assert len(sent) == 11


@pytest.mark.asyncio
async def test_cancelled_gather_at_the_default_budget_leaves_no_backlog() -> None:
    # The numbers: 2,000 gathered calls cancelled after 0.1 s at the default budget
    # left the next request waiting 200 s. It must wait at most one interval (0.25 s).
    clock = ManualClock()
    limiter = RateLimiter(*CLOUDFLARE_BUDGET, clock=clock, sleep=clock.sleep)
    interval = CLOUDFLARE_BUDGET[1] / CLOUDFLARE_BUDGET[0]
    sent = 0

    async def call() -> None:
        nonlocal sent
        await limiter.acquire()
        sent += 1

    batch = asyncio.gather(*(call() for _ in range(2000)))
    await _turns()
    burst = sent
    assert burst == CLOUDFLARE_BUDGET[0] - limiter.headroom  # the burst, less the headroom
    assert clock.sleeping == 2000 - burst
    clock.advance(0.1)
    batch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await batch
    assert sent == burst

    after = asyncio.create_task(call())
    await _turns()
    wait = clock.sleeps[-1] if clock.sleeping else 0.0
    assert wait <= interval, f"the next call waits {wait:g}s after a cancelled gather"
    clock.advance(interval)
    await after
    assert sent == burst + 1


@pytest.mark.asyncio
async def test_a_cancelled_waiter_never_lets_the_others_burst() -> None:
    # Giving a slot back must not hand out more than the budget: with waiters still queued,
    # the pace of those left is unchanged, and cancelling every waiter only returns the
    # bucket to where it stood before they came.
    clock = ManualClock()
    limiter = RateLimiter(10, 10.0, clock=clock, sleep=clock.sleep, headroom=0)
    for _ in range(10):
        assert await limiter.acquire() == 0.0  # the bucket is empty now
    times: list[float] = []

    async def call() -> None:
        await limiter.acquire()
        times.append(clock.elapsed)

    tasks = [asyncio.create_task(call()) for _ in range(6)]
    await _turns()
    tasks[2].cancel()
    tasks[3].cancel()
    await _turns()
    for _ in range(8):
        clock.advance(1.0)
        await _turns()
    assert sorted(times) == [1.0, 2.0, 5.0, 6.0]  # the others keep their slots
    # 8 s refilled 8 requests and 4 were used: exactly what the budget allows, no more.
    assert limiter.available() == pytest.approx(4.0)
    for _ in range(4):
        assert await limiter.acquire() == 0.0
    assert limiter.available() == pytest.approx(0.0)


@pytest.mark.asyncio
async def test_no_pacing_when_limit_is_none() -> None:
    fake = FakeClock()
    limiter = _limiter(fake, limit=None)
    for _ in range(10_000):
        await limiter.acquire()
    assert fake.elapsed == 0.0
    assert fake.sleeps == []
    assert limiter.available() == math.inf
    limiter.observe(RateLimitInfo(remaining=0, reset=300.0))  # nothing to tighten
    assert await limiter.acquire() == 0.0


@pytest.mark.asyncio
async def test_observe_tightens_to_the_servers_count() -> None:
    fake = FakeClock()
    limiter = _limiter(fake, limit=10, period=10.0)
    limiter.observe(RateLimitInfo(remaining=3, reset=10.0))
    assert limiter.available() == pytest.approx(3.0)
    times = []
    for _ in range(5):
        await limiter.acquire()
        times.append(fake.elapsed)
    assert times == pytest.approx([0.0, 0.0, 0.0, 1.0, 2.0])


@pytest.mark.asyncio
async def test_observe_never_loosens() -> None:
    fake = FakeClock()
    limiter = _limiter(fake, limit=10, period=10.0)
    for _ in range(10):
        await limiter.acquire()
    limiter.observe(RateLimitInfo(remaining=1000, reset=10.0))
    assert limiter.available() == pytest.approx(0.0)
    await limiter.acquire()
    assert fake.elapsed == pytest.approx(1.0)


@pytest.mark.asyncio
async def test_observe_ignores_rounding_differences() -> None:
    fake = FakeClock()
    limiter = _limiter(fake, limit=10, period=10.0)
    await limiter.acquire()
    limiter.observe(RateLimitInfo(remaining=8, reset=10.0))  # we think 9 are left
    assert limiter.available() == pytest.approx(9.0)


def test_real_clock_and_sleep_by_default() -> None:
    limiter = RateLimiter()
    assert limiter.limit == 1200
    assert limiter.period == 300.0
    # Headroom at Cloudflare's budget: 1% of the window, at most a second: 4 requests.
    assert limiter.headroom == pytest.approx(4.0)
    assert limiter.available() == pytest.approx(1196.0)


@pytest.mark.parametrize(
    ("limit", "period"),
    [
        (0, 300.0),
        (-1, 300.0),
        (1.5, 300.0),
        (True, 300.0),
        ("10", 300.0),
        (10, 0.0),
        (10, -1.0),
        (10, math.inf),
        (10, math.nan),
        (10, "300"),
    ],
)
def test_invalid_constructor_arguments(limit: object, period: object) -> None:
    with pytest.raises(ValueError, match="rate limit"):
        RateLimiter(limit, period)  # type: ignore[arg-type]


def test_cloudflare_budget() -> None:
    assert CLOUDFLARE_BUDGET == (1200, 300.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1200/300", (1200, 300.0)),
        ("10/0.5", (10, 0.5)),
        (" 5 / .5 ", (5, 0.5)),
        ("off", None),
        ("OFF", None),
    ],
)
def test_parse_rate_limit(text: str, expected: tuple[int, float] | None) -> None:
    assert parse_rate_limit(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "0",
        "none",
        "None",
        "",
        "1200",
        "a/b",
        "0/10",
        "5/0",
        "-1/5",
        "5/-1",
        "1e3/5",
        "5/inf",
        "5/nan",
        "1/" + "9" * 400,
        "9" * 5000 + "/1",
    ],
)
def test_parse_rate_limit_refuses_everything_else(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected REQUESTS/SECONDS .* or off") as info:
        parse_rate_limit(text)
    assert len(str(info.value)) < 200  # a huge input is cut short in the message


@pytest.mark.parametrize(
    ("limit", "period", "headroom"),
    [
        (1200, 300.0, 4.0),  # Cloudflare's: 1 s of margin (a slow first TLS handshake)
        (120, 3.0, 1.2),  # 1% of the window, more than one interval
        (20, 1.0, 1.0),  # one request is more than 1% of the window
        (10, 5.0, 1.0),
        (100_000, 3600.0, 27.777777),  # at most one second
    ],
)
def test_default_headroom_is_a_request_and_at_least_a_little_time(
    limit: int, period: float, headroom: float
) -> None:
    # The server's bucket starts when our first request arrives, which may be the slowest
    # of all: one interval of margin alone let a paced request arrive early (a 429).
    limiter = RateLimiter(limit, period)
    assert limiter.headroom == pytest.approx(headroom)
    assert RateLimiter(limit, period, headroom=0).headroom == 0.0  # explicit: exactly that


def test_the_first_answer_of_a_burst_moves_the_schedule_back() -> None:
    # The server's bucket starts when the burst's first request ARRIVES. If that took
    # longer than an interval (a slow first handshake), the next paced request would
    # reach the server early and cost a whole Retry-After: the schedule moves back by the
    # time the first answer took.
    fake = FakeClock()
    limiter = RateLimiter(4, 1.0, clock=fake.clock, sleep=fake.sleep, headroom=0)
    assert [limiter.reserve() for _ in range(4)] == [0.0] * 4  # the burst, at t=0
    fake.advance(0.3)  # its first answer comes 0.3 s later
    limiter.answered()
    assert limiter.reserve() == pytest.approx(0.25)  # one interval from now, not at once
    fake.advance(0.3)
    limiter.answered()  # later answers of the same burst move nothing
    assert limiter.reserve() == pytest.approx(0.2)
