"""Fixtures for the emulator tests: a fake clock, a client session, a running emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from magicwan.emulator import Emulator, run
from tests.support.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest_asyncio.fixture
async def emu(clock: FakeClock) -> AsyncIterator[Emulator]:
    """Three tunnels, Cloudflare's default budget on a fake clock, no faults."""
    async with run(tunnels=3, clock=clock) as emulator:
        yield emulator
