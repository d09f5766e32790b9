"""``magicwan psk rotate`` interrupted: Ctrl-C prints the summary so far and the command that
finishes the run; a closed stdout stops starting tunnels."""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path

import pytest

from magicwan import cli
from magicwan.emulator import Emulator, Faults
from tests.support.cli import (
    TUNNELS,
    Answers,
    edge_psk,
    journalled,
    magicwan,
    summary,
)


@pytest.mark.asyncio
async def test_cancelling_prints_the_summary_so_far_and_the_resume_command(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    emu.set_faults(Faults(latency=0.5, latency_probability=1.0))
    out, err = io.StringIO(), io.StringIO()
    journal = tmp_path / "j.jsonl"
    argv = ["psk", "rotate", "--all", "--journal", str(journal), "--drain-timeout", "0.1"]
    task = asyncio.create_task(cli.amain(argv, stdout=out, stderr=err))
    # every tunnel's request is in flight (its intent is journalled) when we cancel
    while not journal.exists() or journal.read_text().count('"intent"') < TUNNELS:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    text = err.getvalue()
    # Each request was cut short in flight: a failure whose outcome is unknown, to rerun.
    assert summary(text)["failed"] == str(TUNNELS)
    assert summary(text)["not attempted"] == "0"
    assert "request was in flight" in text
    assert "interrupted: no new tunnel was started" in text
    assert (
        f"to finish: magicwan psk rotate --all --drain-timeout 0.1 --journal {journal} --resume"
        in text
    )
    emu.set_faults(Faults())
    # The requests the cut left open may still store a PSK: the rerun reads them back after
    # the settle window (kept short here).
    resumed = await magicwan(
        "psk", "rotate", "--all", "--journal", str(journal), "--resume", "--settle-window", "0.5"
    )  # fmt: skip
    assert resumed.code == 0, resumed.err
    assert journalled(journal, emu.account_id) == {t: edge_psk(emu, t) for t in emu.tunnel_ids}


@pytest.mark.asyncio
async def test_a_closed_stdout_stops_starting_tunnels(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    emu.state.add_tunnels(count=24)
    read, write = os.pipe()
    os.close(read)  # the reader left (| head)
    err = io.StringIO()
    with os.fdopen(write, "w") as out:
        argv = ["psk", "rotate", "--all", "--journal", str(tmp_path / "j"), "--json"]
        code = await cli.amain([*argv, "--concurrency", "1"], stdout=out, stderr=err)

    assert code == 1
    assert "standard output was closed: no new tunnel is started" in err.getvalue()
    assert emu.state.total_generations() < 30
    assert int(summary(err.getvalue())["not attempted"]) > 0
    assert "Traceback" not in err.getvalue()
