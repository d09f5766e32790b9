"""Closing a client with generates in flight, against the real emulator.

A call whose request was sent when the client closed has an unknown outcome: the server may
have stored a PSK that nobody received. It must say so (``outcome_unknown``), and so must the
``failed`` line a rotation journals for it. A call that never sent anything says the opposite.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest

from magicwan import MagicWANError, read_journal
from magicwan.emulator import Emulator, EmulatorState, Faults
from tests.support.loopback import Tracker, make_client, serve
from tests.support.probes import journal_lines

pytestmark = pytest.mark.asyncio

#: Each request is read, then the emulator stalls this long and stores the PSK whether or
#: not the client is still there (the ``late_store`` fault): requests stay in flight.
STALL = 0.5


async def _until(condition: object, what: str, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.005)
    assert condition(), what  # type: ignore[operator]


def _arrived(tracker: Tracker) -> Counter[str]:
    """psk_generate requests that reached the emulator, by tunnel."""
    return Counter(path.split("/")[-2] for _, _, path in tracker.arrivals if "psk_generate" in path)


def _stored(emu: Emulator) -> dict[str, int]:
    return {t: emu.state.tunnel(emu.account_id, t).generation for t in emu.tunnel_ids}


class Gate:
    """A client ``sleep`` that holds every backoff until the test opens the gate."""

    def __init__(self) -> None:
        self.waiting = 0
        self.opened = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.waiting += 1
        await self.opened.wait()


async def test_aclose_with_requests_in_flight_leaves_their_outcome_unknown() -> None:
    tracker = Tracker()
    faults = Faults(late_store=1.0, late_store_delay=STALL)
    state = EmulatorState(tunnels=10, seed=61, rate_limit=None, faults=faults)
    async with serve(state, tracker=tracker) as emu:
        client = make_client(emu, max_retries=2)
        psk = client.tunnels.ipsec.psk
        calls = [asyncio.create_task(psk.generate(emu.account_id, t)) for t in emu.tunnel_ids]
        await _until(lambda: tracker.in_flight == 10, "10 requests in flight")
        await client.aclose()
        results = await asyncio.gather(*calls, return_exceptions=True)
        await _until(lambda: sum(_stored(emu).values()) == 10, "the 10 late stores")
    # The emulator stored 10 PSKs that nobody received: every call must say so.
    assert all(isinstance(r, MagicWANError) for r in results), results
    unknown = [r.outcome_unknown for r in results if isinstance(r, MagicWANError)]
    assert unknown == [True] * 10, [repr(r) for r in results]
    assert _arrived(tracker) == Counter(emu.tunnel_ids)  # one request each, no retry


async def test_aclose_while_retries_wait_leaves_their_outcome_unknown() -> None:
    # Every first attempt stores a PSK and loses the answer (reset_after_store); the retry
    # is waiting in its backoff when the client closes. The retry cannot go, and the call
    # must not pretend nothing happened: the emulator holds 10 PSKs nobody received.
    tracker = Tracker()
    state = EmulatorState(
        tunnels=10, seed=62, rate_limit=None, faults=Faults(reset_after_store=1.0)
    )
    gate = Gate()
    async with serve(state, tracker=tracker) as emu:
        client = make_client(emu, max_retries=3, sleep=gate.sleep)
        psk = client.tunnels.ipsec.psk
        calls = [asyncio.create_task(psk.generate(emu.account_id, t)) for t in emu.tunnel_ids]
        await _until(lambda: gate.waiting == 10, "10 retries waiting")
        await client.aclose()
        gate.opened.set()
        results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, MagicWANError) for r in results), results
    unknown = [r.outcome_unknown for r in results if isinstance(r, MagicWANError)]
    assert unknown == [True] * 10, [f"{type(r).__name__}: {r}" for r in results]
    assert _stored(emu) == dict.fromkeys(emu.tunnel_ids, 1)
    assert _arrived(tracker) == Counter(emu.tunnel_ids)  # the retries were never sent


async def test_aclose_with_calls_queued_for_a_connection_raises_typed_errors() -> None:
    # connection_limit=2: two requests in flight, eight calls queued for a connection when
    # the client closes. The queued ones never sent anything and must say so with a
    # MagicWANError (a bare RuntimeError would crash a rotation); the two sent ones may have
    # stored a PSK (they did) and say that.
    tracker = Tracker()
    faults = Faults(late_store=1.0, late_store_delay=STALL)
    state = EmulatorState(tunnels=10, seed=65, rate_limit=None, faults=faults)
    async with serve(state, tracker=tracker) as emu:
        client = make_client(emu, max_retries=2, connection_limit=2)
        psk = client.tunnels.ipsec.psk
        calls = [asyncio.create_task(psk.generate(emu.account_id, t)) for t in emu.tunnel_ids]
        await _until(lambda: tracker.in_flight == 2, "2 requests in flight")
        await client.aclose()
        results = await asyncio.gather(*calls, return_exceptions=True)
        await _until(lambda: sum(_stored(emu).values()) == 2, "the 2 late stores")
    assert all(isinstance(r, MagicWANError) for r in results), [repr(r) for r in results]
    sent = set(_arrived(tracker))
    assert len(sent) == 2
    assert {t for t, n in _stored(emu).items() if n} == sent
    unknown = {
        t
        for t, r in zip(emu.tunnel_ids, results, strict=True)
        if isinstance(r, MagicWANError) and r.outcome_unknown
    }
    assert unknown == sent


async def test_a_call_that_never_sent_anything_says_so() -> None:
    # The other side of the coin: a call made after aclose() sent nothing, and says so.
    async with serve(EmulatorState(tunnels=1, seed=63, rate_limit=None)) as emu:
        client = make_client(emu)
        await client.aclose()
        with pytest.raises(MagicWANError) as info:
            await client.tunnels.ipsec.psk.generate(emu.account_id, emu.tunnel_ids[0])
    assert info.value.outcome_unknown is False
    assert emu.state.requests.total == 0


@pytest.mark.parametrize("connection_limit", [100, 2])
async def test_a_rotation_whose_client_closes_journals_unknown_outcomes(
    tmp_path: Path, connection_limit: int
) -> None:
    # connection_limit=2 (below concurrency=4): two of the four workers are queued for a
    # connection when the client closes.
    busy = min(4, connection_limit)
    tracker = Tracker()
    faults = Faults(late_store=1.0, late_store_delay=STALL)
    state = EmulatorState(tunnels=12, seed=64, rate_limit=None, faults=faults)
    journal = tmp_path / "rotation.jsonl"
    async with serve(state, tracker=tracker) as emu:
        client = make_client(emu, max_retries=2, connection_limit=connection_limit)

        async def close_when_busy() -> None:
            await _until(lambda: tracker.in_flight == busy, "requests in flight")
            await client.aclose()

        closer = asyncio.create_task(close_when_busy())
        rotation = client.tunnels.ipsec.psk.rotate(
            emu.account_id, emu.tunnel_ids, concurrency=4, journal=journal
        )
        async with rotation:
            outcomes = {o.tunnel_id: o async for o in rotation}
        await closer
        await _until(lambda: sum(_stored(emu).values()) == busy, "the late stores")

    sent = set(_arrived(tracker))
    stored = {t for t, n in _stored(emu).items() if n}
    assert len(sent) == busy
    assert stored == sent
    assert sorted(outcomes) == sorted(emu.tunnel_ids)
    assert not any(o.ok for o in outcomes.values())
    # The outcomes: unknown exactly where a request reached the emulator (a PSK may be there).
    assert {t for t, o in outcomes.items() if o.outcome_unknown} == sent

    # The journal's raw failed lines say the same, one per tunnel ...
    failed = [line for line in journal_lines(journal) if line["event"] == "failed"]
    assert sorted(line["tunnel_id"] for line in failed) == sorted(emu.tunnel_ids)
    unknown_lines = {line["tunnel_id"] for line in failed if line["outcome_unknown"] is True}
    assert unknown_lines == sent, json.dumps(failed, indent=1)
    # ... and so does read_journal.
    records = {tunnel: r for (_, tunnel), r in read_journal(journal).items()}
    assert {t for t, r in records.items() if r.outcome_unknown} == sent
