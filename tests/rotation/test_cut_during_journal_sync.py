"""Third review: the salvage of a rotation cut short."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.constants import ACCOUNT, TUNNEL
from tests.support.tiny_server import (
    THEIRS,
    applies_its_own_psk,
    client_of,
    tiny_server,
)

pytestmark = pytest.mark.asyncio


async def test_a_set_answered_with_another_psk_cut_during_its_fsync_keeps_that_psk(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # method="set". The server answers "applied" with a PSK other than the one sent; the
    # second review's fix journals it and awaits `self._journal.sync(work.seq)` before
    # handing it over. _send_set has already set work.phase = None for the batch, so
    # while that fsync is awaited (a slow disk) the tunnel is in _working with phase None.
    # The caller leaves (Ctrl-C / task cancelled), the drain times out, the worker is
    # cancelled there: _salvage skips every cut tunnel whose phase is not "request" or
    # "read-back" ("its outcome was given already, or it was never sent"). The tunnel gets
    # NO outcome; the PSK Cloudflare says it holds (work.held) is handed to nobody.
    # Same gap, no PSK yet: a set batch cut while awaiting its intent lines' fsync gets
    # no outcome either (phase is set only once that fsync is done).
    real_fsync = os.fsync
    threaded = 0
    entered = threading.Event()

    def slow_fsync(fd: int) -> None:
        nonlocal threaded
        if threading.current_thread() is not threading.main_thread():
            threaded += 1
            if threaded == 2:  # the 1st is the intent's; the 2nd the rotated line's
                entered.set()
                time.sleep(1.0)
        real_fsync(fd)

    monkeypatch.setattr("magicwan.journal.os.fsync", slow_fsync)

    seen: list[Any] = []
    async with tiny_server(applies_its_own_psk) as base, client_of(base) as client:
        rotation = client.tunnels.ipsec.psk.rotate(
            ACCOUNT, [TUNNEL], method="set", journal=tmp_path / "j.jsonl", drain_timeout=0.1
        )

        async def consume() -> None:
            async with rotation:
                async for outcome in rotation:
                    seen.append(outcome)

        task = asyncio.create_task(consume())
        for _ in range(300):
            if entered.is_set():
                break
            await asyncio.sleep(0.01)
        assert entered.is_set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        seen += rotation.unclaimed
    described = [(o.tunnel_id[:4], o.state.value) for o in seen]
    carried = [o.result.psk for o in seen if o.result is not None]
    assert THEIRS in carried, (
        f"outcomes: {described}: the PSK the server applied is handed to no outcome"
    )
