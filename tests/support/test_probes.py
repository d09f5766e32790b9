"""The test probes themselves: they must see magicwan's own code wherever the checkout is."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

import magicwan
from tests.support.probes import magicwan_tasks

PACKAGE = Path(magicwan.__file__).resolve().parent


def _coroutine_from(filename: str) -> Callable[[], Coroutine[Any, Any, None]]:
    """An ``async def`` whose code says it comes from ``filename``."""
    namespace: dict[str, Any] = {"asyncio": asyncio}
    source = "async def waiter():\n    await asyncio.sleep(3600)\n"
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - fixed source
    function: Callable[[], Coroutine[Any, Any, None]] = namespace["waiter"]
    return function


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("filename", "counted"),
    [
        # A clone named like the package, with its virtualenv inside: a library's task
        # is not magicwan's.
        ("/home/me/magicwan/.venv/lib/python3.11/site-packages/aiohttp/web_protocol.py", False),
        ("/srv/magicwan/tests/support/emulator.py", False),
        (str(PACKAGE / "emulator" / "app.py"), False),
        (str(PACKAGE / "rotation.py"), True),
        (str(PACKAGE / "cli" / "runner.py"), True),
    ],
)
async def test_magicwan_tasks_matches_the_package_path_not_a_folder_name(
    filename: str, counted: bool
) -> None:
    task = asyncio.create_task(_coroutine_from(filename)())
    await asyncio.sleep(0)
    try:
        assert (task in magicwan_tasks()) is counted
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
