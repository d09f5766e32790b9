"""The ``env`` fixture of the psk command group's tests: the emulator with :data:`TUNNELS`
tunnels, its variables set for the command line, and the answers a test may script."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from magicwan.emulator import Emulator
from tests.support.cli import TUNNELS, Answers, cli_emulator


@pytest_asyncio.fixture
async def env(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Emulator, Answers]]:
    async with cli_emulator(monkeypatch, tunnels=TUNNELS) as pair:
        yield pair
