"""Many concurrent connections on one loop."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from magicwan.emulator import run
from tests.support.emulator import generate

pytestmark = pytest.mark.asyncio


async def test_a_thousand_concurrent_connections() -> None:
    async with run(tunnels=50, rate_limit=None) as emu:
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            results = await asyncio.gather(
                *(generate(session, emu, emu.tunnel_ids[i % 50]) for i in range(1000))
            )
    assert {status for status, _, _ in results} == {200}
    assert emu.state.total_generations() == 1000
    assert emu.state.requests.total == 1000
    assert all(t.generation == 20 for t in emu.state.accounts[emu.account_id].tunnels.values())
