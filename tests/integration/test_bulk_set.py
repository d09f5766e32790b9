"""Bulk PSK set against the emulator: thousands of tunnels in a few requests, nothing unknown.

``method="set"``: the client makes each PSK, journals and fsyncs it *before* the request that
carries it leaves, and sets a batch per request. A lost answer, a timeout, a late store or a
``kill -9`` can then never lose a PSK: a retry or a rerun resends the same PSK, and no read-back
is ever needed.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import pytest

from magicwan import NotAppliedError, OutcomeState, RotationFailure, read_journal
from magicwan.emulator import Emulator, EmulatorState, FaultKind, Faults
from tests.support.children import start_rotation_child, wait_for_child
from tests.support.loopback import Tracker, make_client, serve

pytestmark = pytest.mark.asyncio


def _set_psks(emu: Emulator, tunnel_id: str) -> list[str]:
    return [r.psk for r in emu.state.history(emu.account_id, tunnel_id) if r.source == "set"]


async def test_set_rotates_every_tunnel_in_a_few_requests(emu: Emulator, tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    async with make_client(emu) as client:
        tunnels = await client.tunnels.ipsec.list(emu.account_id)
        rotation = client.tunnels.ipsec.psk.rotate(
            emu.account_id, tunnels, method="set", batch_size=4, journal=journal, resume=True
        )
        async with rotation:
            outcomes = [o async for o in rotation]
    assert emu.state.requests.by_route["psk_set"] == 3  # 10 tunnels, batches of 4
    assert emu.state.requests.by_route.get("psk_generate", 0) == 0
    assert emu.state.requests.by_route.get("get_ipsec_tunnel", 0) == 0
    records = read_journal(journal)
    for outcome in outcomes:
        assert outcome.ok
        assert outcome.tunnel is not None  # the tunnel objects came back with their outcomes
        edge = emu.state.current_psk(emu.account_id, outcome.tunnel_id)
        assert outcome.psk == edge == records[(emu.account_id, outcome.tunnel_id)].psk
        assert outcome.result.ipsec_id == outcome.tunnel.ipsec_id


async def test_a_batch_over_the_servers_maximum_is_split(tmp_path: Path) -> None:
    state = EmulatorState(tunnels=30, seed=41, rate_limit=None, max_psk_batch=8)
    async with serve(state) as emu, make_client(emu) as client:
        rotation = client.tunnels.ipsec.psk.rotate(
            emu.account_id, emu.tunnel_ids, method="set", batch_size=30, journal=tmp_path / "j"
        )
        async with rotation:
            outcomes = [o async for o in rotation]
    assert all(o.ok for o in outcomes)
    assert emu.state.requests.by_status[400] >= 1  # refused as too large, then split
    for tunnel_id in emu.tunnel_ids:
        assert len(_set_psks(emu, tunnel_id)) == 1


async def test_a_foreign_tunnel_is_unapplied_with_cloudflares_reason(
    emu: Emulator, tmp_path: Path
) -> None:
    foreign = "f" * 32
    async with make_client(emu) as client:
        rotation = client.tunnels.ipsec.psk.rotate(
            emu.account_id, [emu.tunnel_ids[0], foreign], method="set", journal=tmp_path / "j"
        )
        async with rotation:
            outcomes = {o.tunnel_id: o async for o in rotation}
    assert outcomes[emu.tunnel_ids[0]].ok
    failed = outcomes[foreign]
    assert isinstance(failed, RotationFailure)
    assert failed.state is OutcomeState.FAILED
    assert isinstance(failed.error, NotAppliedError)
    assert failed.error.reason  # Cloudflare's words, as they came
    assert not failed.outcome_unknown


async def test_validate_only_applies_nothing(emu: Emulator) -> None:
    async with make_client(emu) as client:
        rotation = client.tunnels.ipsec.psk.rotate(
            emu.account_id, emu.tunnel_ids, method="set", validate_only=True
        )
        async with rotation:
            outcomes = [o async for o in rotation]
    assert {o.state for o in outcomes} == {OutcomeState.VALIDATED}
    assert emu.state.total_generations() == 0


# --- the proof: 1,000 tunnels, every fault at 5 %, kill -9, rerun ----------------------------

TUNNELS = 1000
FAULTS = Faults(
    **dict.fromkeys((kind.value for kind in FaultKind), 0.05),
    late_store_delay=0.2,
    latency=0.01,
    latency_probability=1.0,  # keeps the child busy long enough to be killed midway
)


def _start_child(emu: Emulator, journal: Path, ids_file: Path) -> subprocess.Popen[bytes]:
    with journal.with_suffix(".child.log").open("ab") as out:
        return start_rotation_child(
            emu,
            journal,
            ids_file,
            stdout=out,
            env={
                "MAGICWAN_TEST_FAST": "20",
                "MAGICWAN_TEST_METHOD": "set",
                "MAGICWAN_TEST_BATCH": "20",
            },
        )


_wait = wait_for_child


async def _idle(tracker: Tracker, delay: float) -> None:
    """Let the emulator finish what the dead child left behind (late stores included)."""
    for _ in range(300):
        await asyncio.sleep(0.02)
        if tracker.in_flight == 0:
            await asyncio.sleep(delay + 0.1)
            if tracker.in_flight == 0:
                return
    raise AssertionError("the emulator never went idle")


async def test_a_thousand_tunnels_through_every_fault_and_a_kill_lose_nothing(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "rotation.jsonl"
    tracker = Tracker()
    state = EmulatorState(tunnels=TUNNELS, seed=42, rate_limit=None, faults=FAULTS)
    async with serve(state, tracker=tracker) as emu:
        ids_file = tmp_path / "ids.txt"
        ids_file.write_text("\n".join(emu.tunnel_ids) + "\n")
        child = _start_child(emu, journal, ids_file)
        try:
            for _ in range(6000):
                text = journal.read_bytes() if journal.exists() else b""
                if text.count(b'"event":"rotated"') >= 300 or child.poll() is not None:
                    break
                await asyncio.sleep(0.005)
            assert child.poll() is None, "the child finished before it could be killed"
            child.send_signal(signal.SIGKILL)
        finally:
            if child.poll() is None:
                child.kill()
            code = await _wait(child, 10)
        assert code == -signal.SIGKILL
        await _idle(tracker, FAULTS.late_store_delay)
        assert any(_set_psks(emu, t) for t in emu.tunnel_ids)  # some were set before the kill

        journal.with_suffix(".child.log").unlink(missing_ok=True)
        child = _start_child(emu, journal, ids_file)
        code = await _wait(child, 120)
        log = journal.with_suffix(".child.log").read_text()
        assert code == 0, log[-3000:]
        await _idle(tracker, FAULTS.late_store_delay)

        faults = emu.state.requests.faults
        assert all(faults[kind.value] > 0 for kind in FaultKind), faults  # every fault happened
        records = read_journal(journal)
        for tunnel_id in emu.tunnel_ids:
            edge = emu.state.current_psk(emu.account_id, tunnel_id)
            assert records[(emu.account_id, tunnel_id)].psk == edge, tunnel_id
            # One PSK per tunnel from this rotation, resent as often as needed: never two.
            assert len(set(_set_psks(emu, tunnel_id))) == 1, tunnel_id
        assert emu.state.requests.by_route.get("get_ipsec_tunnel", 0) == 0  # no read-back
        assert emu.state.requests.by_route.get("psk_generate", 0) == 0
