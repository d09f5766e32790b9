"""The pytest plugin's fixture (active through the installed pytest11 entry point)."""

from __future__ import annotations

import json
import subprocess
import sys

import aiohttp
import pytest

import magicwan.emulator
from magicwan.emulator import Emulator
from tests.support.emulator import generate


@pytest.mark.asyncio
async def test_fixture_yields_a_running_emulator(magicwan_emulator: Emulator) -> None:
    emu = magicwan_emulator
    assert isinstance(emu, Emulator)
    assert len(emu.tunnel_ids) == 10
    assert emu.state.rate_limit is None
    assert not emu.faults.active
    async with aiohttp.ClientSession() as session:
        status, headers, _ = await generate(session, emu)
    assert status == 200
    assert "Ratelimit" not in headers
    assert emu.state.total_generations() == 1


@pytest.mark.asyncio
async def test_fixture_is_fresh_per_test(magicwan_emulator: Emulator) -> None:
    assert magicwan_emulator.state.total_generations() == 0
    assert magicwan_emulator.state.requests.total == 0


def test_public_surface() -> None:
    assert sorted(magicwan.emulator.__all__) == [
        "DEFAULT_API_EMAIL",
        "DEFAULT_API_KEY",
        "DEFAULT_API_TOKEN",
        "ERROR_CODES",
        "Emulator",
        "EmulatorState",
        "FaultKind",
        "Faults",
        "GreTunnel",
        "PSKListener",
        "PSKRecord",
        "TokenBucket",
        "Tunnel",
        "TunnelRules",
        "create_app",
        "run",
    ]
    for name in magicwan.emulator.__all__:
        assert getattr(magicwan.emulator, name) is not None


def test_importing_the_emulator_needs_no_pytest() -> None:
    code = (
        "import sys, magicwan.emulator, magicwan.emulator.state;"
        "bad = {'pytest', 'pytest_asyncio', '_pytest'} & set(sys.modules);"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)  # noqa: S603 - our code


def test_plugin_loads_without_pytest_asyncio() -> None:
    code = (
        "import sys; sys.modules['pytest_asyncio'] = None;"
        "import magicwan.emulator.pytest_plugin as p;"
        "assert not hasattr(p, 'magicwan_emulator')"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)  # noqa: S603 - our code


def test_loading_the_plugin_loads_neither_the_client_nor_aiohttp() -> None:
    # What pytest pays for the entry point in every test suite that has magicwan installed.
    code = (
        "import json, sys, pytest_asyncio; before = set(sys.modules);"
        "import magicwan.emulator.pytest_plugin;"
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    done = subprocess.run(  # noqa: S603 - our code
        [sys.executable, "-c", code], check=True, timeout=30, capture_output=True, text=True
    )
    assert json.loads(done.stdout) == [
        "magicwan",
        "magicwan._version",
        "magicwan.emulator",
        "magicwan.emulator.pytest_plugin",
        "magicwan.internal",
        "magicwan.internal.lazy",
    ]
