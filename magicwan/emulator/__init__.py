"""A local emulator of Cloudflare's Magic WAN API, for tests, examples and benchmarks.

Start it in-process::

    from magicwan.emulator import Faults, run

    async with run(tunnels=100, faults=Faults(reset_after_store=0.1)) as emu:
        ...  # emu.base_url ends in /client/v4; emu.account_id, emu.tunnel_ids, emu.api_token
        assert emu.state.tunnel(emu.account_id, emu.tunnel_ids[0]).generation == 1

or as a process: ``python -m magicwan.emulator --port 8787 --tunnels 100``. In pytest, request
the ``magicwan_emulator`` fixture (registered by the installed plugin).
"""

from magicwan.emulator._server import Emulator, run
from magicwan.emulator.app import ERROR_CODES, create_app
from magicwan.emulator.faults import Faults
from magicwan.emulator.state import (
    DEFAULT_API_EMAIL,
    DEFAULT_API_KEY,
    DEFAULT_API_TOKEN,
    DEFAULT_RATE_LIMIT,
    EmulatorState,
    PSKRecord,
    RateLimiter,
    Tunnel,
)

__all__ = [
    "DEFAULT_API_EMAIL",
    "DEFAULT_API_KEY",
    "DEFAULT_API_TOKEN",
    "DEFAULT_RATE_LIMIT",
    "ERROR_CODES",
    "Emulator",
    "EmulatorState",
    "Faults",
    "PSKRecord",
    "RateLimiter",
    "Tunnel",
    "create_app",
    "run",
]
