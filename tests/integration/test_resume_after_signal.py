"""SIGTERM in the middle of ``psk rotate --journal-dir DIR --resume``, then the very same
command: it continues the same journal and rotates only what the first run never reached.

The command runs as a real ``python -m magicwan`` child against an emulator served on this
test's event loop over loopback, delivering through a shell script that stores each PSK
(what a scheduled job with a deliverer looks like). The first run is stopped once some
tunnels are done; every request it sent finishes, so nothing is left open and nothing is
undelivered: only the journal's missing ``finished`` line says the run did not finish.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest

from magicwan.emulator import Emulator, EmulatorState, Faults
from magicwan.journal import run_finished
from tests.support.cli import process_env
from tests.support.loopback import serve

pytestmark = pytest.mark.asyncio

TUNNELS = 300
STOP_AFTER = 10  # tunnels done before the SIGTERM

PUSH_PSK = """#!/bin/sh
cat > "$ROUTER/$MAGICWAN_TUNNEL_ID"
echo "$MAGICWAN_TUNNEL_ID" >> "$ROUTER/deliveries.log"
"""


def _command(tmp_path: Path) -> list[str]:
    push = tmp_path / "push-psk"
    if not push.exists():
        push.write_text(PUSH_PSK)
        push.chmod(0o700)
    return [
        sys.executable,
        "-m",
        "magicwan",
        "psk",
        "rotate",
        "--all",
        "--concurrency",
        "4",
        "--journal-dir",
        str(tmp_path / "jd"),
        "--resume",
        "--deliver-exec",
        str(push),
        "--json",
    ]


async def _start(emu: Emulator, tmp_path: Path) -> asyncio.subprocess.Process:
    router = tmp_path / "router"
    router.mkdir(exist_ok=True)
    return await asyncio.create_subprocess_exec(
        *_command(tmp_path),
        cwd=tmp_path,
        env=process_env(emu, ROUTER=str(router)),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def _lines(out: bytes) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.decode().splitlines()]


def _generations(emu: Emulator) -> dict[str, int]:
    state = emu.state
    return {t: state.tunnel(state.account_id, t).generation for t in emu.tunnel_ids}


async def test_the_same_command_after_sigterm_finishes_the_run_in_the_same_journal(
    tmp_path: Path,
) -> None:
    state = EmulatorState(tunnels=TUNNELS, seed=19, rate_limit=None)
    async with serve(state) as emu:
        assert set(_generations(emu).values()) == {0}
        # Slow answers keep the first run busy long enough to be stopped midway.
        emu.set_faults(Faults(latency=0.02, latency_probability=1.0))
        first = await _start(emu, tmp_path)
        assert first.stdout is not None
        seen = b""
        done = 0
        while done < STOP_AFTER:
            line = await asyncio.wait_for(first.stdout.readline(), 60)
            assert line, "the first run ended before it was stopped"
            seen += line
            done += b'"event":"tunnel"' in line
        first.send_signal(signal.SIGTERM)
        rest, err = await asyncio.wait_for(first.communicate(), 60)
        assert first.returncode == 130, err.decode()
        (one_summary,) = [x for x in _lines(seen + rest) if x["event"] == "summary"]
        rotated_first = one_summary["rotated"]
        assert isinstance(rotated_first, int)
        assert STOP_AFTER <= rotated_first < TUNNELS
        assert one_summary["not_attempted"] == TUNNELS - rotated_first
        assert one_summary["delivered"] == rotated_first  # nothing undelivered, nothing open
        (journal,) = (tmp_path / "jd").glob("*.jsonl")
        assert run_finished(journal) is False
        after_first = _generations(emu)
        assert sum(after_first.values()) == rotated_first

        emu.set_faults(Faults())
        second = await _start(emu, tmp_path)
        out, err = await asyncio.wait_for(second.communicate(), 120)
        assert second.returncode == 0, err.decode()
        (two_summary,) = [x for x in _lines(out) if x["event"] == "summary"]

        # The same journal, continued: nothing rotated twice, everything once.
        assert list((tmp_path / "jd").glob("*.jsonl")) == [journal]
        assert two_summary["journal"] == one_summary["journal"] == str(journal)
        assert two_summary["skipped"] == rotated_first
        assert two_summary["rotated"] == TUNNELS - rotated_first
        assert two_summary["not_attempted"] == 0
        assert _generations(emu) == dict.fromkeys(emu.tunnel_ids, 1)
        deliveries = (tmp_path / "router" / "deliveries.log").read_text().split()
        assert sorted(deliveries) == sorted(emu.tunnel_ids)  # each delivered exactly once
        assert run_finished(journal) is True
