"""pytest plugin: the ``magicwan_emulator`` fixture.

Registered through the ``pytest11`` entry point, so any test suite that has ``magicwan`` installed
can request the fixture::

    async def test_generate(magicwan_emulator):
        ...  # magicwan_emulator is a running magicwan.emulator.Emulator

The fixture needs pytest-asyncio. Without it this plugin defines nothing and stays harmless.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from magicwan.emulator import Emulator

__all__ = ["magicwan_emulator"]

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - exercised only without pytest-asyncio
    pytest_asyncio = None  # type: ignore[assignment]

if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def magicwan_emulator() -> AsyncIterator[Emulator]:
        """A running emulator: 10 IPsec and 3 GRE tunnels, rate limiting off, no faults
        (function-scoped)."""
        from magicwan.emulator import run  # imported here: keeps loading the plugin cheap

        async with run(tunnels=10, rate_limit=None) as emulator:
            yield emulator
