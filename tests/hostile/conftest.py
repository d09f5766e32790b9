"""Fixtures of tests/hostile/: an emulator with distinctive secrets and a hostile server.

The helpers behind them live in ``tests/support/`` (``secrets.py``, ``hostile.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from magicwan.emulator import Emulator, run
from tests.support.hostile import HostileServer, hostile_server
from tests.support.secrets import SECRET_EMAIL, SECRET_KEY, SECRET_TOKEN


@pytest_asyncio.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """8 tunnels, no rate limit, no faults, and credentials the leak checks look for."""
    async with run(
        tunnels=8,
        rate_limit=None,
        seed=6,
        api_token=SECRET_TOKEN,
        api_email=SECRET_EMAIL,
        api_key=SECRET_KEY,
    ) as emu:
        yield emu


@pytest_asyncio.fixture
async def hostile() -> AsyncIterator[HostileServer]:
    """The hostile server, its witness and its raw TCP twin (see tests/support/hostile.py)."""
    async with hostile_server() as server:
        yield server
