"""The emulator shares no code with the client: it imitates Cloudflare, so a bug in the client
must not be able to hide in it."""

from __future__ import annotations

import json
import subprocess
import sys

#: The client's own code (and cattrs, which only the client uses).
CLIENT = (
    "cattrs",
    "magicwan._converter",
    "magicwan._envelope",
    "magicwan._http",
    "magicwan._retry",
    "magicwan._transport",
    "magicwan.cli",
    "magicwan.client",
    "magicwan.delivery",
    "magicwan.journal",
    "magicwan.ratelimit",
    "magicwan.resources",
    "magicwan.rotation",
)

_LOAD_EVERYTHING = """
import importlib, json, pkgutil, sys
import magicwan.emulator as emulator
for module in pkgutil.walk_packages(emulator.__path__, "magicwan.emulator."):
    importlib.import_module(module.name)
for name in emulator.__all__:
    getattr(emulator, name)
print(json.dumps(sorted(sys.modules)))
"""


def test_no_module_of_the_emulator_loads_client_code() -> None:
    done = subprocess.run(  # noqa: S603 - our code
        [sys.executable, "-c", _LOAD_EVERYTHING],
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    )
    loaded = json.loads(done.stdout)
    assert "magicwan.emulator.app" in loaded  # the walk did import the emulator
    client = [m for m in loaded if m in CLIENT or m.startswith(tuple(c + "." for c in CLIENT))]
    assert client == []
