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


async def test_journal_export_does_not_write_psks_into_a_world_readable_file(
    tmp_path: Path,
) -> None:
    # `magicwan journal export J > psks.json` under the usual umask 022: the shell makes
    # psks.json 0644. The command refuses a terminal ("anyone behind you") but writes every
    # live PSK into a file any local user can read, checks its mode *afterwards*, warns,
    # and exits 0.
    import os
    import stat

    async with run(tunnels=2, rate_limit=None) as emu:
        journal = tmp_path / "j.jsonl"
        code, _, err = await _cli(emu, "psk", "rotate", "--all", "--journal", str(journal), "-q")
        assert code == 0, err
        target = tmp_path / "psks.json"
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)  # `> psks.json`
        os.fchmod(fd, 0o644)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "magicwan",
                "journal",
                "export",
                str(journal),
                cwd=REPO,
                env=process_env(emu),
                stdout=fd,
                stderr=asyncio.subprocess.PIPE,
            )
        finally:
            os.close(fd)
        await asyncio.wait_for(proc.communicate(), 30)
        psk = emu.state.current_psk(emu.account_id, emu.tunnel_ids[0])
    assert psk is not None
    readable_by_others = stat.S_IMODE(target.stat().st_mode) & 0o044
    assert not (readable_by_others and psk in target.read_text()), (
        f"exit {proc.returncode}: live PSKs written into a 0644 file"
    )


async def test_journal_export_env_lines_cannot_run_code_when_sourced(tmp_path: Path) -> None:
    # `--format env` makes lines "to source". The value is shlex-quoted; the tunnel id, read
    # back from the journal, is not checked: a journal line edited by hand (or copied from a
    # colleague, or merged from another tool) with tunnel_id 'x;touch PWNED;y' becomes
    # MAGICWAN_PSK_x;touch PWNED;y='...' and runs when sourced.
    import json as jsonlib

    journal = tmp_path / "j.jsonl"
    header = {"event": "journal", "version": 2, "magicwan": "0", "created": "2030-01-01T00:00:00Z"}
    pwned = tmp_path / "PWNED"
    line = {
        "event": "rotated",
        "account_id": "a" * 32,
        "tunnel_id": f"x;touch {pwned};y",
        "psk": "psk-0123456789abcdef",
        "time": "2030-01-01T00:00:00Z",
    }
    journal.write_text(jsonlib.dumps(header) + "\n" + jsonlib.dumps(line) + "\n")
    async with run(tunnels=1, rate_limit=None) as emu:
        code, out, _ = await _cli(emu, "journal", "export", str(journal), "--format", "env")
    exports = tmp_path / "exports.sh"
    exports.write_text(out)
    proc = await asyncio.create_subprocess_exec("sh", "-c", f". {exports}", cwd=tmp_path)
    await proc.wait()
    assert not pwned.exists(), f"sourcing the export ran a command (exit {code}): {out!r}"
