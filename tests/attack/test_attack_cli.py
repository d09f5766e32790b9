"""Attacks through the command line, as a real ``python -m magicwan`` process against the
emulator on loopback."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from magicwan.emulator import Emulator, run
from tests.support.cli import REPO, process_env

pytestmark = pytest.mark.asyncio


async def _cli(
    emu: Emulator, *argv: str, timeout: float = 30.0, **env: str
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "magicwan",
        *argv,
        cwd=REPO,
        env=process_env(emu, **env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_deliver_exec_program_does_not_get_the_cloudflare_api_token(tmp_path: Path) -> None:
    # The command line takes credentials only from the environment, so that `ps` cannot
    # show them. The --deliver-exec program (a router script, often a third-party tool
    # that logs its environment on failure) needs the PSK and the tunnel's facts, not the
    # account-wide Cloudflare API token; yet it inherits the whole environment.
    dump = tmp_path / "env"
    deliver = (
        f"{sys.executable} -c \"import os, sys; open(sys.argv[1], 'a').write("
        'repr(dict(os.environ)) + chr(10)); sys.stdin.read()" ' + str(dump)
    )
    async with run(tunnels=2, rate_limit=None) as emu:
        code, _, err = await _cli(
            emu,
            "psk",
            "rotate",
            "--all",
            "--journal",
            str(tmp_path / "j.jsonl"),
            "--deliver-exec",
            deliver,
            "-q",
        )
        assert code == 0, err
        seen = dump.read_text()
        assert "MAGICWAN_TUNNEL_ID" in seen  # the program ran, with its facts
        assert emu.api_token not in seen, "the deliverer's environment holds the API token"


async def test_generate_show_psk_into_a_closed_pipe_does_not_exit_0(tmp_path: Path) -> None:
    # `magicwan psk generate ACCOUNT TUNNEL --show-psk | vault kv put secret/psk value=-`
    # where the consumer died first (not logged in, a typo): the PSK is generated and live,
    # the write hits EPIPE, OutputClosed is turned into exit status 0 by amain(), nothing
    # on stderr. The PSK was recorded nowhere (no journal was asked for) and the command
    # says "all done".
    import os

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
    # A cron job with a fixed --journal path runs on a full disk: opening the journal writes
    # a header that is cut at the limit (a real EFBIG: RLIMIT_FSIZE, SIGXFSZ ignored).
    # Nothing is sent, fine. But the torn header stays, and from then on every run, disk
    # freed or not, is refused: "is not a magicwan journal ... refusing to touch it" (exit
    # 2, "usage error"), until a human deletes the file. A torn first line the SDK wrote
    # itself is exactly what it already forgives for any later line.
    import resource
    import signal

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
        code, _, err = await _cli(emu, *argv)
    assert code == 0, err
