"""Attacks by a careless caller of the Python API, against the real emulator."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from magicwan import MagicWAN, MagicWANError
from magicwan.emulator import Emulator, run


@pytest.fixture
def emulator_in_a_thread() -> Iterator[Emulator]:
    """An emulator serving from its own thread and loop, so the test may run loops of its own."""
    ready: list[Emulator] = []
    stop = threading.Event()
    started = threading.Event()

    async def serve() -> None:
        async with run(tunnels=2, rate_limit=None) as emu:
            ready.append(emu)
            started.set()
            while not stop.is_set():
                await asyncio.sleep(0.02)

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield ready[0]
    finally:
        stop.set()
        thread.join(10)


def test_one_client_used_from_two_event_loops_fails_with_an_sdk_error(
    emulator_in_a_thread: Emulator,
) -> None:
    # A script that calls asyncio.run() once per command (a CLI built on the SDK, a
    # Jupyter cell, a sync wrapper) with one module-level client. The second loop gets
    # aiohttp's bare RuntimeError("Event loop is closed"): not a MagicWANError, and
    # without outcome_unknown the caller cannot tell whether a PSK was generated.
    emu = emulator_in_a_thread
    client = MagicWAN(api_token=emu.api_token, base_url=emu.base_url, environ={}, rate_limit=None)

    async def generate() -> None:
        await client.tunnels.ipsec.psk.generate(emu.account_id, emu.tunnel_ids[0])

    asyncio.run(generate())
    try:
        asyncio.run(generate())
    except MagicWANError:
        pass  # refused in the SDK's own words: fine
    except RuntimeError as exc:
        pytest.fail(f"a raw {type(exc).__name__} from the SDK: {exc}")
    finally:
        asyncio.run(client.aclose())
