"""Rotations in child processes (``tests.integration._rotate_child``), for crashes, full disks
and concurrent writers: started against an emulator on the test's own loop, waited for without
blocking that loop (the emulator serves the child)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from magicwan.emulator import Emulator

__all__ = ["ROOT", "start_rotation_child", "wait_for_child"]

#: The child runs as a module from the repository root, so it can import ``tests.support``.
ROOT = Path(__file__).resolve().parents[2]
CHILD = "tests.integration._rotate_child"


def start_rotation_child(
    emu: Emulator,
    journal: Path,
    ids_file: Path,
    *,
    stdout: IO[bytes] | int,
    stderr: IO[bytes] | int = subprocess.STDOUT,
    token: str | None = None,
    module: str = CHILD,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``module`` (the rotation child by default) on ``journal`` and ``ids_file``,
    with ``env`` added to this process's environment (the child's options).

    Plain Popen, polled by :func:`wait_for_child`: asyncio's child watcher sometimes loses a
    SIGKILLed child's status (it reports returncode 255, "Unknown child process").
    """
    environ = {
        **os.environ,
        "MAGICWAN_BASE_URL": emu.base_url,
        "MAGICWAN_ACCOUNT_ID": emu.account_id,
        "CLOUDFLARE_API_TOKEN": token or emu.api_token,
        **(env or {}),
    }
    for name in ("CLOUDFLARE_EMAIL", "CLOUDFLARE_API_KEY", "CLOUDFLARE_BASE_URL"):
        environ.pop(name, None)
    return subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
        [sys.executable, "-m", module, str(journal), str(ids_file)],
        cwd=ROOT,
        stdout=stdout,
        stderr=stderr,
        env=environ,
    )


async def wait_for_child(child: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
    """The child's exit status; it is killed (and the test fails) after ``timeout``."""
    for _ in range(int(timeout / 0.01)):
        code = child.poll()
        if code is not None:
            return code
        await asyncio.sleep(0.01)
    child.kill()
    child.wait()
    raise AssertionError("the child did not finish in time")
