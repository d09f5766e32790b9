"""Fixtures for the integration tests: the real emulator over loopback, real clients."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from magicwan.emulator import Emulator, EmulatorState
from tests.support.loopback import Tracker, serve


@pytest_asyncio.fixture
async def emu() -> AsyncIterator[Emulator]:
    """Ten tunnels, no rate limit, no faults."""
    async with serve(EmulatorState(tunnels=10, seed=1, rate_limit=None)) as emulator:
        yield emulator


@pytest_asyncio.fixture
async def tracked() -> AsyncIterator[tuple[Emulator, Tracker]]:
    """An emulator (200 tunnels, no limit, no faults) that records every request it serves."""
    tracker = Tracker()
    state = EmulatorState(tunnels=200, seed=2, rate_limit=None)
    async with serve(state, tracker=tracker) as emulator:
        yield emulator, tracker
