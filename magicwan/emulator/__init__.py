"""A local emulator of Cloudflare's Magic WAN API, for tests, examples and benchmarks.

Start it in-process::

    from magicwan import MagicWAN
    from magicwan.emulator import run

    async with run(tunnels=100) as emu:  # emu.base_url ends in /client/v4
        account_id, tunnel_id = emu.account_id, emu.tunnel_ids[0]
        assert emu.state.tunnel(account_id, tunnel_id).generation == 0  # seeded, no PSK yet
        async with MagicWAN(api_token=emu.api_token, base_url=emu.base_url) as client:
            await client.tunnels.ipsec.psk.generate(account_id, tunnel_id)
        assert emu.state.tunnel(account_id, tunnel_id).generation == 1

or as a process: ``python -m magicwan.emulator --port 8787 --tunnels 100``, which prints three
``export`` lines to source in a shell. In pytest, request the ``magicwan_emulator`` fixture
(registered by the installed plugin). Faults are injected on request:
``run(faults=Faults(reset_after_store=0.1))`` loses one answer in ten after the PSK is
stored, so the client's retry generates again and ``generation`` counts both.

Modules: ``models`` (plain data), ``seeding`` (how seeded tunnels look), ``rules`` (how
tunnels clients create or update are checked), ``bucket`` (the
per-user token bucket), ``faults``, ``state`` (:class:`EmulatorState`), ``endpoints``
(Cloudflare's routes), ``app`` (the request pipeline), ``admin`` (the ``/__emulator__`` routes).
The names below are imported on first use, so loading the pytest plugin stays cheap.
The IKE lab (two real strongSwan daemons the emulator's PSKs can reach) is
:mod:`magicwan.ikelab`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from magicwan.internal.lazy import lazy_exports

if TYPE_CHECKING:
    from magicwan.emulator._server import Emulator, run
    from magicwan.emulator._wire import ERROR_CODES
    from magicwan.emulator.app import create_app
    from magicwan.emulator.bucket import TokenBucket
    from magicwan.emulator.faults import FaultKind, Faults
    from magicwan.emulator.models import GreTunnel, PSKRecord, Tunnel
    from magicwan.emulator.rules import TunnelRules
    from magicwan.emulator.state import (
        DEFAULT_API_EMAIL,
        DEFAULT_API_KEY,
        DEFAULT_API_TOKEN,
        EmulatorState,
        PSKListener,
    )

__all__ = [
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

#: Where each exported name is defined; the imports above say the same to a type checker.
_SOURCES: dict[str, str] = {
    "Emulator": "magicwan.emulator._server",
    "run": "magicwan.emulator._server",
    "ERROR_CODES": "magicwan.emulator._wire",
    "create_app": "magicwan.emulator.app",
    "TokenBucket": "magicwan.emulator.bucket",
    "FaultKind": "magicwan.emulator.faults",
    "Faults": "magicwan.emulator.faults",
    "GreTunnel": "magicwan.emulator.models",
    "PSKRecord": "magicwan.emulator.models",
    "Tunnel": "magicwan.emulator.models",
    "TunnelRules": "magicwan.emulator.rules",
    "DEFAULT_API_EMAIL": "magicwan.emulator.state",
    "DEFAULT_API_KEY": "magicwan.emulator.state",
    "DEFAULT_API_TOKEN": "magicwan.emulator.state",
    "EmulatorState": "magicwan.emulator.state",
    "PSKListener": "magicwan.emulator.state",
}

if not TYPE_CHECKING:  # a type checker sees the imports above, and no catch-all
    __getattr__, __dir__ = lazy_exports(__name__, _SOURCES, __all__)
