"""The command line when a write fails: a full disk under the journal or stdout, a closed
pipe. A live PSK is never reported as done when it could not be recorded or shown, and a
full disk never blocks the next run."""

from __future__ import annotations

import asyncio
import errno
import io
import os
import resource
import signal
import sys
from pathlib import Path

import pytest

from magicwan import cli
from magicwan.emulator import run
from magicwan.journal import Rotated
from tests.support.cli import REPO, cli_emulator, magicwan_process, process_env
from tests.support.disk import fail_journal_writes

pytestmark = pytest.mark.asyncio


class FullFile(io.StringIO):
    """stdout redirected to a file on a full disk (``>> rotations.jsonl``, or /dev/full):
    every write fails with ENOSPC, not EPIPE."""

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


async def test_a_full_disk_under_journal_and_stdout_still_exits_4_naming_the_tunnels(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The README's cron line: `magicwan psk rotate --all --journal-dir /var/lib/... --json
    # -q >> /var/log/magicwan/rotations.jsonl`. /var fills up: the journal cannot record
    # a new PSK (the tunnel is `unrecorded`: live at Cloudflare, in no journal) and the
    # JSON line for it cannot be written either. A stdout that fails to write is handled
    # like a closed one: the run still names the unrecorded tunnels on stderr and exits 4
    # ("new PSKs are live at Cloudflare but the journal could not record them"), not 1
    # with a traceback.
    path = tmp_path / "j.jsonl"
    fail_journal_writes(monkeypatch, lambda event: isinstance(event, Rotated))
    async with cli_emulator(monkeypatch, tunnels=2) as (emu, _):
        err = io.StringIO()
        code: int | str
        try:
            code = await cli.amain(
                ["psk", "rotate", "--all", "--journal", str(path), "--json", "-q"],
                stdout=FullFile(),
                stderr=err,
                stdin=io.StringIO(""),
            )
        except OSError as exc:  # the installed `magicwan` prints a traceback, exits 1
            code = f"raised {exc!r}"
        live = [t for t in emu.tunnel_ids if emu.state.history(emu.account_id, t)]
    assert live  # a new PSK is live at Cloudflare and in no journal
    assert code == 4, f"exit {code}: {err.getvalue()[-600:]!r}"
    assert all(tunnel in err.getvalue() for tunnel in live)


async def test_generate_show_psk_into_a_closed_pipe_does_not_exit_0(tmp_path: Path) -> None:
    # `magicwan psk generate ACCOUNT TUNNEL --show-psk | vault kv put secret/psk value=-`
    # where the consumer died first (not logged in, a typo): the PSK is live at the edge
    # and recorded nowhere (no journal was asked for), so the command must not say "done".
    async with run(tunnels=1, rate_limit=None) as emu:
        tunnel = emu.tunnel_ids[0]
        read_end, write_end = os.pipe()
        os.close(read_end)  # the reader is gone before anything is written
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "magicwan",
                "psk",
                "generate",
                emu.account_id,
                tunnel,
                "--show-psk",
                cwd=REPO,
                env=process_env(emu),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=write_end,
                stderr=asyncio.subprocess.PIPE,
            )
        finally:
            os.close(write_end)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        generated = emu.state.current_psk(emu.account_id, tunnel) is not None
    assert generated  # a new PSK is live at the edge
    assert proc.returncode != 0, f"exit 0; stderr: {err.decode()!r}"


async def test_a_disk_full_while_creating_the_journal_does_not_brick_its_path(
    tmp_path: Path,
) -> None:
    # A cron job with a fixed --journal path runs on a full disk (a real EFBIG: RLIMIT_FSIZE,
    # SIGXFSZ ignored): the journal's header is cut at the limit and nothing is sent. Once
    # the disk has room again, the next run works: the torn header the SDK wrote itself is
    # forgiven like any torn last line, not refused as "not a magicwan journal".
    journal = tmp_path / "cron.jsonl"

    def full_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (40, 40))

    async with run(tunnels=2, rate_limit=None) as emu:
        argv = ["psk", "rotate", "--all", "--journal", str(journal), "-q"]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "magicwan",
            *argv,
            cwd=REPO,
            env=process_env(emu),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=full_disk,
        )
        await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode != 0  # the full disk is reported, nothing rotated
        assert emu.state.total_generations() == 0
        # The disk has room again: the next scheduled run must work.
        result = await magicwan_process(emu, *argv)
    assert result.code == 0, result.err
