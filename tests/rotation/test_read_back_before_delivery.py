"""A doubtful generate answer is delivered only once a read-back proves it: not when the run
is stopped during the settle window, nor when a resume follows a kill during a retry."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime, timedelta
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
    # hands its PSK over with unverified set". Leaving the block (Ctrl-C, a cancellation,
    # `break`) while a doubtful tunnel waits for its read-back hands the PSK over without
    # delivering it: a late store may already have superseded it at the edge.
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


async def test_resume_after_a_kill_during_a_retry_reads_back_before_delivering(
    tmp_path: Path,
) -> None:
    # README: "a resumed run reads that tunnel back once the settle window has passed
    # since the journal's last word about it". For generate, the last word is the
    # intent line, written once before generate() is called; the client's retries inside
    # that call write nothing. With the defaults (timeout 60 s = settle window), a first
    # attempt that times out is retried at ~60 s + backoff; a kill -9 at 130 s, while the
    # retry sent at ~125 s is in flight, leaves a journal whose last word is 130 s old.
    # The retry in flight may still store its PSK (well within a timeout of when it was
    # sent), so the resumed run reads the tunnel back before it delivers anything: "after a
    # kill -9 at any moment, a rerun leaves every tunnel with a PSK that is in the journal
    # and equal to the one Cloudflare holds".
    from tests.support.clock import FakeClock

    journal = tmp_path / "j"
    killed = datetime.now(UTC) - timedelta(seconds=130)
    ts = killed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    header = {"event": "journal", "version": 2, "magicwan": "0.1.0", "created": ts}
    intent = {
        "event": "intent",
        "account_id": ACCOUNT,
        "tunnel_id": TUNNEL,
        "time": ts,
        "method": "generate",
        "psk": None,
    }
    journal.write_text(json.dumps(header) + "\n" + json.dumps(intent) + "\n")
    journal.chmod(0o600)

    clock = FakeClock()
    base = datetime(2026, 1, 1, tzinfo=UTC)
    edge: dict[str, tuple[str, datetime]] = {}
    delivered: list[str] = []

    def stamp() -> datetime:
        return base + timedelta(seconds=clock.elapsed)

    async def generate(account: str, tunnel: str, validate_only: bool) -> Reply[Any]:
        psk, when = new_psk(), stamp()
        edge[tunnel] = (psk, when)
        meta = PSKMetadata(last_generated_on=when)
        return Reply(
            PSKGenerateResult(ipsec_tunnel_id=tunnel, psk=psk, psk_metadata=meta), 1, False
        )

    async def read_back(account: str, tunnel: str) -> Reply[IPsecTunnel]:
        meta = PSKMetadata(last_generated_on=edge[tunnel][1])
        return Reply(IPsecTunnel(id=tunnel, psk_metadata=meta), 1, False)

    async def router(delivery: Delivery) -> None:
        delivered.append(delivery.psk)

    async def retry_in_flight_stores() -> None:
        await clock.sleep(20.0)
        edge[TUNNEL] = (new_psk(), stamp())

    late = asyncio.ensure_future(retry_in_flight_stores())
    rotation = rotate(
        ACCOUNT,
        [TUNNEL],
        generate=generate,
        set_psks=None,  # type: ignore[arg-type]
        read_back=read_back,
        clock=clock,
        sleep=clock.sleep,
        journal=journal,
        resume=True,
        deliver=router,
        settle_window=60.0,
    )
    async with rotation:
        outcomes = [o async for o in rotation]
    await late
    (outcome,) = outcomes
    assert not (outcome.ok and delivered and delivered[-1] != edge[TUNNEL][0]), (
        "the resumed run delivered a fresh PSK without a read-back, reported ok, and the "
        "retry the killed run left in flight then stored another one at the edge"
    )
