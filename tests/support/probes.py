"""Ways to watch the SDK from outside: its requests' sessions and ``cf-ray`` ids, its pending
tasks, the locks it keeps alive, and the journal lines it wrote. None of them reads a private
attribute of a magicwan object.
"""

from __future__ import annotations

import asyncio
import gc
import json
from pathlib import Path
from typing import Any

import aiohttp

import magicwan

__all__ = ["journal_lines", "live_locks", "magicwan_tasks", "ray_recorder", "session_spy"]

#: The package's real folder, and its emulator's (whose tasks are not the client's).
_PACKAGE = Path(magicwan.__file__).resolve().parent
_EMULATOR = _PACKAGE / "emulator"


def ray_recorder() -> tuple[aiohttp.TraceConfig, list[str | None]]:
    """A TraceConfig that records the ``cf-ray`` header of every response, in order."""
    rays: list[str | None] = []

    async def on_end(
        session: aiohttp.ClientSession,
        ctx: Any,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        rays.append(params.response.headers.get("cf-ray"))

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_end)
    return trace, rays


def session_spy() -> tuple[aiohttp.TraceConfig, list[aiohttp.ClientSession]]:
    """A TraceConfig that records the session of every request it sees."""
    seen: list[aiohttp.ClientSession] = []

    async def on_start(session: aiohttp.ClientSession, *_: object) -> None:
        seen.append(session)

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    return trace, seen


def magicwan_tasks() -> list[asyncio.Task[Any]]:
    """Pending tasks running magicwan's own code (rotation, transport, journal), not the
    emulator's: which module a task's coroutine comes from, never what it is called."""
    found = []
    for task in asyncio.all_tasks():
        if task is asyncio.current_task() or task.done():
            continue
        code = getattr(task.get_coro(), "cr_code", None)
        if code is None:
            continue
        # The package's real path, not a folder name: a clone named "magicwan" holds its
        # .venv (aiohttp's tasks) and tests/ too.
        where = Path(code.co_filename).resolve()
        if where.is_relative_to(_PACKAGE) and not where.is_relative_to(_EMULATOR):
            found.append(task)
    return found


def live_locks() -> int:
    """How many ``asyncio.Lock`` objects are alive in the process (after a collection).

    A client keeps a lock per tunnel only while a call for that tunnel runs; compared before
    and after a burst of calls, this shows that none is left behind, like an fd count shows
    that no socket is.
    """
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, asyncio.Lock))


def journal_lines(path: Path) -> list[dict[str, Any]]:
    """Every event line about a tunnel of a journal, parsed (fails on a line that is not
    JSON); the header and the ``finished`` lines (about runs) are left out."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [line for line in lines if line.get("event") not in ("journal", "finished")]
