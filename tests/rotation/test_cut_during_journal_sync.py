"""A rotation cut short (the caller leaves, the drain times out) while the journal is syncing
a bulk set's answer to disk: every tunnel still gets an outcome, and it carries the PSK the
server said it applied, not the one sent. A slow fsync, tiny servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.support.constants import ACCOUNT, TUNNEL
from tests.support.tiny_server import (
    THEIRS,
    applies_its_own_psk,
    client_of,
    envelope,
    tiny_server,
)

pytestmark = pytest.mark.asyncio


async def test_a_set_answered_with_another_psk_cut_during_its_fsync_keeps_that_psk(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # method="set". The server answers "applied" with a PSK other than the one sent; the
    # rotation journals that PSK and waits for the fsync before handing it over. The caller
    # leaves (Ctrl-C / task cancelled) during that fsync (a slow disk) and the drain times
    # out: the tunnel still gets an outcome, carrying the PSK Cloudflare says it holds.
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


SECOND = "d5b8473e688b7d4120b585ae7f596934"


def _theirs(tunnel_id: str) -> str:
    """The PSK the hostile server says it applied to ``tunnel_id`` (one per tunnel)."""
    return f"server-chosen-{tunnel_id[:8]}-0123456789"


async def _applies_its_own_psk_per_tunnel(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    applied = {
        item["id"]: {
            "ipsec_tunnel_id": item["id"],
            "psk": _theirs(item["id"]),
            "psk_metadata": {"last_generated_on": "2030-01-01T00:00:00.123456Z"},
        }
        for item in body["psks"]
    }
    result = {"successfully_applied_psks": applied, "unapplied_psks": {}}
    return web.Response(body=envelope(result), content_type="application/json")


async def test_a_set_batch_cut_during_one_tunnels_answer_fsync_keeps_the_next_tunnels_psk(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # method="set", two tunnels in one batch. The server answers "applied" for both, each
    # with a PSK other than the one sent. The rotation is cut (the caller leaves, the drain
    # times out) while the first tunnel's answer is being synced to the journal. The second
    # tunnel's answer was already in the rotation's hands: its outcome carries the PSK the
    # server said it applied (or that PSK is in the journal), not the PSK sent.
    real_fsync = os.fsync
    threaded = 0
    entered = threading.Event()

    def slow_fsync(fd: int) -> None:
        nonlocal threaded
        if threading.current_thread() is not threading.main_thread():
            threaded += 1
            if threaded == 2:  # the 1st is the intents'; the 2nd the first tunnel's answer
                entered.set()
                time.sleep(0.6)
        real_fsync(fd)

    monkeypatch.setattr("magicwan.journal.os.fsync", slow_fsync)

    seen: list[Any] = []
    journal = tmp_path / "j.jsonl"
    async with tiny_server(_applies_its_own_psk_per_tunnel) as base, client_of(base) as client:
        rotation = client.tunnels.ipsec.psk.rotate(
            ACCOUNT, [TUNNEL, SECOND], method="set", journal=journal, drain_timeout=0.1
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
    carried = {o.tunnel_id: o.result.psk for o in seen if o.result is not None}
    journalled = _theirs(SECOND) in journal.read_text()
    assert sorted(o.tunnel_id for o in seen) == sorted([TUNNEL, SECOND]), described
    assert carried.get(TUNNEL) == _theirs(TUNNEL), described  # the first one is kept
    assert carried.get(SECOND) == _theirs(SECOND) or journalled, (
        f"outcomes: {described}; the second tunnel's outcome carries the PSK sent, "
        "while Cloudflare answered that it holds another one: that PSK is in no outcome "
        "and in no journal line"
    )
