"""What a rotation cut short (the caller leaves, the drain times out) hands over: a PSK proved
superseded is never handed over as rotated, and every tunnel gets exactly one outcome. Tiny
servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.support.constants import ACCOUNT, TUNNEL
from tests.support.tiny_server import client_of, envelope, tiny_server

pytestmark = pytest.mark.asyncio

OTHER = "d4a7362d577a6c3019a474fd6f485824"


def _generated(psk: str, stamp: str) -> web.Response:
    result = {
        "ipsec_tunnel_id": TUNNEL,
        "psk": psk,
        "psk_metadata": {"last_generated_on": stamp},
    }
    return web.Response(body=envelope(result), content_type="application/json")


async def test_a_regeneration_cut_short_is_not_handed_over_as_a_rotated_psk() -> None:
    # method="generate", no deliverer. The first psk_generate times out (its answer is
    # lost), the retry returns PSK A (doubtful). The read-back shows the edge holds a NEWER
    # PSK than A (the lost request stored late): A is known to be dead, so the rotation
    # regenerates. The operator presses Ctrl-C while that regeneration is in flight and the
    # drain times out. A, the one PSK the SDK proved superseded, is not handed over as
    # rotated (ok=True): the tunnel's outcome is unknown, so that the caller rotates again.
    posts = 0
    regenerating = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal posts
        await request.read()
        if request.method == "POST":
            posts += 1
            if posts == 1:
                await asyncio.sleep(1.0)  # past the client's timeout: the answer is lost
            if posts == 3:
                regenerating.set()
                await asyncio.sleep(5)  # the regeneration: still in flight at Ctrl-C
            return _generated("psk-A-superseded-0123456789abcd", "2030-01-01T00:00:01.000001Z")
        # The read-back: the late store of the first request, stamped after A.
        tunnel = {"id": TUNNEL, "psk_metadata": {"last_generated_on": "2030-01-01T00:00:02Z"}}
        return web.Response(body=envelope({"ipsec_tunnel": tunnel}))

    seen: list[Any] = []
    async with tiny_server(handler) as base, client_of(base, timeout=0.5) as client:
        rotation = client.tunnels.ipsec.psk.rotate(
            ACCOUNT, [TUNNEL], settle_window=0.0, drain_timeout=0.3
        )

        async def consume() -> None:
            async with rotation:
                async for outcome in rotation:
                    seen.append(outcome)

        task = asyncio.create_task(consume())
        await asyncio.wait_for(regenerating.wait(), 10)
        task.cancel()  # Ctrl-C while the regeneration is in flight
        with pytest.raises(asyncio.CancelledError):
            await task
        seen += rotation.unclaimed
    assert posts == 3
    [outcome] = seen
    assert not outcome.ok, (
        f"ok=True, state={outcome.state.value}: the PSK handed over is the one the read-back "
        "proved superseded; a regeneration was in flight (outcome unknown)"
    )
    assert outcome.outcome_unknown


async def test_a_split_batch_cut_short_gives_each_tunnel_one_outcome(tmp_path: Path) -> None:
    # method="set", two tunnels in one batch. The server refuses the batch as too large
    # (HTTP 413), so the rotation splits it and sends each half in turn. The first half is
    # applied, journalled and handed over (ok=True). The second half hangs; the caller
    # leaves and the drain times out. README: "Every tunnel gets exactly one outcome": the
    # first tunnel is not failed a second time with the rest of its original batch.
    hanging = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        items = body["psks"]
        if len(items) > 1:
            refusal = {
                "success": False,
                "errors": [{"code": 1000, "message": "too large"}],
                "messages": [],
            }
            return web.json_response(refusal, status=413)
        if items[0]["id"] == OTHER:
            hanging.set()
            await asyncio.sleep(5)
        applied = {
            item["id"]: {
                "ipsec_tunnel_id": item["id"],
                "psk": item["psk"],
                "psk_metadata": {"last_generated_on": "2030-01-01T00:00:00.123456Z"},
            }
            for item in items
        }
        result = {"successfully_applied_psks": applied, "unapplied_psks": {}}
        return web.Response(body=envelope(result), content_type="application/json")

    seen: list[Any] = []
    async with tiny_server(handler) as base, client_of(base, timeout=10.0) as client:
        rotation = client.tunnels.ipsec.psk.rotate(
            ACCOUNT,
            [TUNNEL, OTHER],
            method="set",
            journal=tmp_path / "j.jsonl",
            drain_timeout=0.3,
        )

        async def consume() -> None:
            async with rotation:
                async for outcome in rotation:
                    seen.append(outcome)

        task = asyncio.create_task(consume())
        await asyncio.wait_for(hanging.wait(), 10)
        await asyncio.sleep(0.2)  # the first half's outcome reaches the caller
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        seen += rotation.unclaimed
    per_tunnel = [o.tunnel_id for o in seen]
    described = [(o.tunnel_id[:4], o.state.value) for o in seen]
    assert sorted(per_tunnel) == sorted([TUNNEL, OTHER]), f"outcomes: {described}"
    rotated = [json.loads(x) for x in (tmp_path / "j.jsonl").read_text().splitlines()]
    assert any(e.get("event") == "rotated" and e.get("tunnel_id") == TUNNEL for e in rotated)
