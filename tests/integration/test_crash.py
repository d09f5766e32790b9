"""kill -9 in the middle of a rotation, then a rerun with the same journal: no PSK lost.

The rotation runs in a child process (``tests/integration/_rotate_child.py``) against an emulator
served on this test's own event loop over loopback. The test polls the journal and SIGKILLs the
child once a given number of ``rotated`` lines are on disk, reruns the child to completion, and
compares every tunnel's journalled PSK with the one the emulator holds.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from magicwan import read_journal
from magicwan.emulator import Emulator, EmulatorState, Faults
from tests.support.children import start_rotation_child, wait_for_child
from tests.support.loopback import Tracker, serve

pytestmark = pytest.mark.asyncio

TUNNELS = 300
FAULTS = Faults(
    latency=0.01,
    latency_probability=1.0,  # keeps the child busy long enough to be killed midway
    server_error=0.03,
    reset_after_store=0.03,
    truncated_json=0.03,
)


def _start_child(emu: Emulator, journal: Path, ids_file: Path) -> subprocess.Popen[bytes]:
    with journal.with_suffix(".child.log").open("ab") as out:
        return start_rotation_child(
            emu, journal, ids_file, stdout=out, env={"MAGICWAN_TEST_FAST": "20"}
        )


_wait = wait_for_child


def _rotated_lines(journal: Path) -> int:
    try:
        return journal.read_bytes().count(b'"event":"rotated"')
    except FileNotFoundError:
        return 0


async def _settle(tracker: Tracker) -> None:
    """Let the emulator finish requests the dead child left behind (a latency fault sleeps)."""
    for _ in range(200):
        await asyncio.sleep(0.02)
        if tracker.in_flight == 0:
            await asyncio.sleep(0.05)
            if tracker.in_flight == 0:
                return
    raise AssertionError("the emulator never went idle")


async def _kill_midway(
    emu: Emulator, tracker: Tracker, journal: Path, ids_file: Path, kill_after: int
) -> None:
    child = _start_child(emu, journal, ids_file)
    try:
        for _ in range(3000):
            if _rotated_lines(journal) >= kill_after or child.poll() is not None:
                break
            await asyncio.sleep(0.005)
        assert child.poll() is None, "the child finished before it could be killed"
        child.send_signal(signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        code = await _wait(child, 10)
    assert code == -signal.SIGKILL
    await _settle(tracker)


async def _rerun(emu: Emulator, tracker: Tracker, journal: Path, ids_file: Path) -> dict[str, int]:
    log = journal.with_suffix(".child.log")
    log.unlink(missing_ok=True)
    child = _start_child(emu, journal, ids_file)
    code = await _wait(child, 30)
    output = log.read_text()
    assert code == 0, output[-3000:]
    await _settle(tracker)
    summary: dict[str, int] = json.loads(output.strip().splitlines()[-1])
    return summary


def _assert_no_psk_lost(journal: Path, emu: Emulator) -> None:
    records = read_journal(journal)
    for tunnel_id in emu.tunnel_ids:
        record = records[(emu.account_id, tunnel_id)]
        assert record.event == "rotated", (tunnel_id, record.event)
        assert record.psk == emu.state.current_psk(emu.account_id, tunnel_id), tunnel_id


def _safely_rotated(journal: Path, emu: Emulator) -> dict[str, int]:
    """Tunnels whose latest journal record is a certain PSK, with their generation now."""
    return {
        key[1]: emu.state.tunnel(emu.account_id, key[1]).generation
        for key, record in read_journal(journal).items()
        if record.event == "rotated" and not record.uncertain
    }


@pytest.mark.parametrize(("seed", "kill_after"), [(21, 15), (22, 120), (23, 240)])
async def test_sigkill_midway_then_rerun_loses_nothing(
    tmp_path: Path, seed: int, kill_after: int
) -> None:
    journal = tmp_path / "rotation.jsonl"
    tracker = Tracker()
    state = EmulatorState(tunnels=TUNNELS, seed=seed, rate_limit=None, faults=FAULTS)
    async with serve(state, tracker=tracker) as emu:
        ids_file = tmp_path / "ids.txt"
        ids_file.write_text("\n".join(emu.tunnel_ids) + "\n")
        await _kill_midway(emu, tracker, journal, ids_file, kill_after)

        done_before = _safely_rotated(journal, emu)
        assert 0 < len(done_before) < TUNNELS  # killed midway, really
        events = {r.event for r in read_journal(journal).values()}
        assert "intent" in events  # requests were in flight: their outcome is unknown
        for tunnel_id, generation in done_before.items():
            # The journal's PSK is the edge's: the kill never leaves a "rotated" line stale.
            assert read_journal(journal)[(emu.account_id, tunnel_id)].psk == (
                emu.state.current_psk(emu.account_id, tunnel_id)
            )
            assert generation >= 1

        summary = await _rerun(emu, tracker, journal, ids_file)
        assert summary["ok"] == TUNNELS
        assert summary["failed"] == 0
        assert summary["skipped"] >= len(done_before)
        _assert_no_psk_lost(journal, emu)
        for tunnel_id, generation in done_before.items():  # skipped: not rotated again
            assert emu.state.tunnel(emu.account_id, tunnel_id).generation == generation


def _cut_last_line_in_half(journal: Path) -> bytes:
    data = journal.read_bytes()
    body = data[:-1] if data.endswith(b"\n") else data
    start = body.rfind(b"\n") + 1
    last = data[start:]
    journal.write_bytes(data[: start + len(last) // 2])
    return data[:start]  # the complete lines


async def test_a_torn_last_line_is_skipped_and_the_rerun_appends_cleanly(tmp_path: Path) -> None:
    journal = tmp_path / "rotation.jsonl"
    tracker = Tracker()
    state = EmulatorState(tunnels=TUNNELS, seed=24, rate_limit=None, faults=FAULTS)
    async with serve(state, tracker=tracker) as emu:
        ids_file = tmp_path / "ids.txt"
        ids_file.write_text("\n".join(emu.tunnel_ids) + "\n")
        await _kill_midway(emu, tracker, journal, ids_file, kill_after=80)

        complete = _cut_last_line_in_half(journal)
        assert not journal.read_bytes().endswith(b"\n")
        intact = tmp_path / "intact.jsonl"
        intact.write_bytes(complete)
        shutil.copymode(journal, intact)
        assert read_journal(journal) == read_journal(intact)  # no complete line lost
        assert len(read_journal(journal)) >= 80

        summary = await _rerun(emu, tracker, journal, ids_file)
        assert summary["ok"] == TUNNELS
        _assert_no_psk_lost(journal, emu)

    lines = journal.read_bytes().split(b"\n")
    assert lines[-1] == b""  # ends with a newline
    unparsable = []
    for raw in lines[:-1]:
        try:
            json.loads(raw)
        except ValueError:
            unparsable.append(raw)
    assert len(unparsable) == 1  # only the torn line; the rerun started on a fresh line
    assert journal.read_bytes().startswith(complete)
