"""Running a program of examples/ as an operator would: a child of the test's event loop
(which serves the emulator), with the emulator's ``CLOUDFLARE_*`` variables as its only
credentials; and what to check of what it printed and wrote."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import attrs

from magicwan.emulator import Emulator

__all__ = ["EXAMPLES", "Done", "assert_only_ids", "clean_environment", "read_secret", "run_example"]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# A PSK is 32 letters and digits; ids are 32 lowercase hex digits.
_TOKEN = re.compile(r"\b[A-Za-z0-9]{32}\b")
_HEX_ID = re.compile(r"[0-9a-f]{32}")


@attrs.frozen
class Done:
    """How an example ended, and what it printed."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def clean_environment() -> dict[str, str]:
    """This process's environment without a way to reach real Cloudflare."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("CLOUDFLARE_", "MAGICWAN_"))}


async def run_example(
    name: str,
    *args: str,
    emulator: Emulator | None,
    cwd: Path,
    env: Mapping[str, str] | None = None,
) -> Done:
    """``python examples/<name> ARGS`` in ``cwd``, against ``emulator`` and nothing else
    (``None``: without any ``CLOUDFLARE_*`` variable), with ``env`` added."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / name),
        *args,
        cwd=cwd,
        env={**clean_environment(), **(emulator.env() if emulator else {}), **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return Done(proc.returncode, out.decode(), err.decode())


def assert_only_ids(text: str) -> None:
    """Every 32-character token printed is an id, none is a PSK."""
    for token in _TOKEN.findall(text):
        assert _HEX_ID.fullmatch(token), "a PSK-like token was printed"


def read_secret(path: Path) -> str:
    """A PSK file an example wrote: owner-only, one line."""
    assert path.stat().st_mode & 0o777 == 0o600, path
    return path.read_text().removesuffix("\n")
