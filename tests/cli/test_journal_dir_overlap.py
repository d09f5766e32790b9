"""Two scheduled ``psk rotate --journal-dir`` runs that overlap: no two runs deliver different
PSKs to one router."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from tests.support.cli import cli_emulator, magicwan

pytestmark = pytest.mark.asyncio


def _pusher(tmp_path: Path, name: str, *, wait_for: Path | None, then: Path | None) -> str:
    """A --deliver-exec program that writes the PSK to the router file (after ``wait_for``
    exists, at most 20 s) and then creates ``then``."""
    router = tmp_path / "router"
    script = tmp_path / f"{name}.py"
    lines = ["import pathlib, sys, time", "psk = sys.stdin.readline().strip()"]
    if wait_for is not None:
        lines.append(
            f"end = time.monotonic() + 20\nwhile not pathlib.Path({str(wait_for)!r}).exists()"
            " and time.monotonic() < end:\n    time.sleep(0.02)"
        )
    lines.append(f"pathlib.Path({str(router)!r}).write_text(psk)")
    if then is not None:
        lines.append(f"pathlib.Path({str(then)!r}).touch()")
    script.write_text("\n".join(lines) + "\n")
    return f"{sys.executable} {script}"


async def test_two_overlapping_runs_on_one_journal_dir_do_not_both_report_delivered(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The README's scheduled job: `magicwan psk rotate --all --journal-dir DIR
    # --deliver-exec PUSH`. A run at Cloudflare's budget takes long (37 minutes for
    # 10,000 tunnels), so a second run (the next cron slot, or an operator by hand)
    # overlaps the first. If both rotated the same tunnel, A's push of P_a could land after
    # B's P_b: the router would hold P_a, the edge P_b, and both runs would say
    # "delivered". The second run is refused (or leaves alone the tunnels the first one is
    # rotating) while the first holds the directory.
    journals = tmp_path / "journals"
    go = tmp_path / "b-delivered"
    slow = _pusher(tmp_path, "slow", wait_for=go, then=None)
    fast = _pusher(tmp_path, "fast", wait_for=None, then=go)
    async with cli_emulator(monkeypatch, tunnels=1) as (emu, _):
        tunnel = emu.tunnel_ids[0]
        common = ["psk", "rotate", "--all", "--journal-dir", str(journals), "-q"]
        run_a = asyncio.ensure_future(magicwan(*common, "--deliver-exec", slow))
        while not emu.state.history(emu.account_id, tunnel) and not run_a.done():
            await asyncio.sleep(0.01)  # run A's PSK is live: run B starts now
        run_b = await magicwan(*common, "--deliver-exec", fast)
        result_a = await run_a
        edge = emu.state.current_psk(emu.account_id, tunnel)
    router = (tmp_path / "router").read_text()
    assert not (result_a.code == 0 and run_b.code == 0 and router != edge), (
        "both overlapping runs exit 0 with the tunnel delivered, but the router holds "
        "run A's PSK and the edge run B's"
    )
