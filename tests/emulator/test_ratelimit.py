"""Per-user rate limiting over HTTP with an injected clock (no sleeping)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from magicwan.emulator import Emulator, Faults, run
from tests.support.clock import FakeClock
from tests.support.emulator import (
    assert_failure,
    call,
    generate,
    key_headers,
    token_headers,
    tunnels_url,
)

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def small(clock: FakeClock) -> AsyncIterator[Emulator]:
    """A budget of 5 requests per 10 seconds: one token every 2 seconds."""
    async with run(tunnels=2, rate_limit=(5, 10), clock=clock) as emulator:
        yield emulator


def ratelimit(headers: object) -> tuple[int, int]:
    value = headers["Ratelimit"]  # type: ignore[index]
    name, r, t = value.split(";")
    assert name == '"default"'
    return int(r.removeprefix("r=")), int(t.removeprefix("t="))


async def test_exact_429_after_the_budget_with_retry_after(
    small: Emulator, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    seen = []
    for _ in range(5):
        status, headers, _ = await generate(session, small)
        assert status == 200
        assert headers["Ratelimit-Policy"] == '"default";q=5;w=10'
        seen.append(ratelimit(headers))
    assert seen == [(4, 2), (3, 4), (2, 6), (1, 8), (0, 10)]

    status, headers, body = await generate(session, small)
    assert status == 429
    assert_failure(body, 971, "Please wait and consider throttling your request speed")
    assert headers["Retry-After"] == "2"
    assert ratelimit(headers) == (0, 10)
    assert "cf-ray" in headers
    assert small.state.total_generations() == 5

    clock.advance(1.5)
    status, headers, _ = await generate(session, small)
    assert status == 429
    assert headers["Retry-After"] == "1"
    clock.advance(0.5)
    status, headers, _ = await generate(session, small)
    assert status == 200
    assert ratelimit(headers) == (0, 10)
    clock.advance(10)
    status, headers, _ = await generate(session, small)
    assert ratelimit(headers) == (4, 2)


async def test_cloudflare_default_budget(
    emu: Emulator, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    headers = token_headers(emu)
    for i in range(1200):
        status, response_headers, _ = await call(session, "GET", tunnels_url(emu), headers=headers)
        assert status == 200
        if i == 0:
            assert response_headers["Ratelimit-Policy"] == '"default";q=1200;w=300'
            assert ratelimit(response_headers) == (1199, 1)
    assert ratelimit(response_headers) == (0, 300)
    status, response_headers, _ = await call(session, "GET", tunnels_url(emu), headers=headers)
    assert status == 429
    assert response_headers["Retry-After"] == "1"
    clock.advance(0.25)
    status, response_headers, _ = await call(session, "GET", tunnels_url(emu), headers=headers)
    assert status == 200


async def test_key_and_token_share_one_budget(
    small: Emulator, session: aiohttp.ClientSession
) -> None:
    for i in range(5):
        headers = token_headers(small) if i % 2 else key_headers(small)
        status, _, _ = await call(session, "GET", tunnels_url(small), headers=headers)
        assert status == 200
    for headers in (token_headers(small), key_headers(small)):
        status, _, _ = await call(session, "GET", tunnels_url(small), headers=headers)
        assert status == 429
    # A second token of the same user draws from the same bucket too.
    small.state.add_token(small.state.user.id, "second-token")
    status, _, _ = await call(
        session, "GET", tunnels_url(small), headers={"Authorization": "Bearer second-token"}
    )
    assert status == 429
    # Another user has its own budget.
    small.state.add_user(email="b@example.com", api_key="k2", api_tokens=["other-user"])
    small.state.accounts[small.account_id].members.add(small.state.user_for_token("other-user").id)  # type: ignore[union-attr]
    status, _, _ = await call(
        session, "GET", tunnels_url(small), headers={"Authorization": "Bearer other-user"}
    )
    assert status == 200


async def test_auth_failures_and_429s_are_not_charged(
    small: Emulator, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    for _ in range(10):
        status, _, _ = await call(
            session, "GET", tunnels_url(small), headers={"Authorization": "Bearer nope"}
        )
        assert status == 403
    status, headers, _ = await generate(session, small)
    assert status == 200
    assert ratelimit(headers) == (4, 2)
    for _ in range(4):
        await generate(session, small)
    for _ in range(10):
        status, _, _ = await generate(session, small)
        assert status == 429
    clock.advance(2)  # exactly one token later, despite the ten refused requests
    status, _, _ = await generate(session, small)
    assert status == 200


async def test_errors_are_charged_and_route_errors_carry_headers(
    small: Emulator, session: aiohttp.ClientSession
) -> None:
    status, headers, _ = await call(
        session, "GET", f"{tunnels_url(small)}/{'0' * 32}", headers=token_headers(small)
    )
    assert status == 404
    assert ratelimit(headers) == (4, 2)
    status, headers, _ = await call(
        session, "GET", f"{small.base_url}/x", headers=key_headers(small)
    )
    assert status == 404
    assert ratelimit(headers) == (4, 2)


async def test_spurious_rate_limited_fault_is_not_charged(
    small: Emulator, session: aiohttp.ClientSession
) -> None:
    small.set_faults(Faults(rate_limited=1.0))
    status, headers, body = await generate(session, small)
    assert status == 429
    assert headers["Retry-After"] == "1"
    assert_failure(body, 971)
    assert ratelimit(headers) == (5, 0)
    small.set_faults(Faults.none())
    status, headers, _ = await generate(session, small)
    assert status == 200
    assert ratelimit(headers) == (4, 2)


async def test_rate_limit_can_be_off_or_changed_at_runtime(
    small: Emulator, session: aiohttp.ClientSession
) -> None:
    small.set_rate_limit(None)
    for _ in range(20):
        status, headers, _ = await generate(session, small)
        assert status == 200
        assert "Ratelimit" not in headers
        assert "Ratelimit-Policy" not in headers
    small.set_rate_limit((1, 60))
    assert (await generate(session, small))[0] == 200
    status, headers, _ = await generate(session, small)
    assert status == 429
    assert headers["Retry-After"] == "60"
