"""Outside review 2: a doubtful generate answer is kept only if a read-back proves it."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from magicwan import (
    Delivery,
    PSKGenerateResult,
    PSKMetadata,
    Reply,
    new_psk,
)
from magicwan.models.tunnels import IPsecTunnel
from magicwan.rotation import rotate
from tests.support.constants import ACCOUNT

pytestmark = pytest.mark.asyncio

TUNNEL = f"{1:032x}"


async def test_a_run_stopped_during_the_settle_window_does_not_deliver_the_unproven_psk(
    tmp_path: Path,
) -> None:
    # README: "nothing unproven is ever delivered"; "A run stopped while a tunnel waits
    # hands its PSK over with unverified set". But the driver turns the stop into
    # ReadBackFailed(stopped=True), and the machine's _unverified() calls _hand_over(),
    # which *delivers* the PSK when there is a deliverer. So leaving the block (Ctrl-C,
    # a cancellation, `break`) while a doubtful tunnel waits for its read-back pushes to
    # the router a PSK that a late store has already superseded at the edge.
    edge: dict[str, str] = {}
    answered = asyncio.Event()
    delivered: list[str] = []
    stamp = datetime(2026, 1, 1, tzinfo=UTC)

    async def generate(account: str, tunnel: str, validate_only: bool) -> Reply[Any]:
        # The first attempt timed out (its request stores late), the retry answered.
        edge[tunnel] = psk = new_psk()
        meta = PSKMetadata(last_generated_on=stamp)
        answered.set()
        return Reply(PSKGenerateResult(ipsec_tunnel_id=tunnel, psk=psk, psk_metadata=meta), 2, True)

    async def late_store() -> None:
        await answered.wait()
        edge[TUNNEL] = new_psk()  # the first, unanswered request lands now

    async def read_back(account: str, tunnel: str) -> Reply[IPsecTunnel]:
        raise AssertionError("the settle window is long: no read-back in this test")

    async def router(delivery: Delivery) -> None:
        delivered.append(delivery.psk)

    rotation = rotate(
        ACCOUNT,
        [TUNNEL],
        generate=generate,
        set_psks=None,  # type: ignore[arg-type]
        read_back=read_back,
        journal=tmp_path / "j",
        deliver=router,
        settle_window=3600.0,
    )
    outcomes: list[Any] = []

    async def consume() -> None:
        async with rotation:
            async for outcome in rotation:
                outcomes.append(outcome)

    storing = asyncio.ensure_future(late_store())
    task = asyncio.ensure_future(consume())
    await answered.wait()
    await storing
    for _ in range(20):
        await asyncio.sleep(0)  # the tunnel now waits aside for its read-back
    task.cancel()  # Ctrl-C / the caller leaves
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert edge[TUNNEL] not in delivered
    assert delivered == [], (
        "a doubtful PSK never read back was delivered to the router when the run stopped; "
        f"the edge holds another one (outcomes: {[o.state.value for o in outcomes]}, "
        f"unclaimed: {[(o.state.value, o.ok) for o in rotation.unclaimed]})"
    )
