"""Where the command line puts secrets: never in a delivery program's environment, a
world-readable file (``--show-psk`` into one included), or shell lines that run code. A real
``python -m magicwan`` process (or ``cli.amain``) against the emulator on loopback."""

from __future__ import annotations

import asyncio
import io
import os
import stat
import sys
from pathlib import Path

import pytest

from magicwan import cli
from magicwan.emulator import run
from tests.support.cli import REPO, cli_emulator, magicwan_process, process_env

pytestmark = pytest.mark.asyncio


async def test_deliver_exec_program_does_not_get_the_cloudflare_api_token(tmp_path: Path) -> None:
    # The --deliver-exec program (a router script, often a third-party tool that logs its
    # environment on failure) gets the PSK and the tunnel's facts, never the account-wide
    # API token the command line itself reads from its environment.
    dump = tmp_path / "env"
    deliver = (
        f"{sys.executable} -c \"import os, sys; open(sys.argv[1], 'a').write("
        'repr(dict(os.environ)) + chr(10)); sys.stdin.read()" ' + str(dump)
    )
    async with run(tunnels=2, rate_limit=None) as emu:
        result = await magicwan_process(
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
        assert result.code == 0, result.err
        seen = dump.read_text()
        assert "MAGICWAN_TUNNEL_ID" in seen  # the program ran, with its facts
        assert emu.api_token not in seen, "the deliverer's environment holds the API token"


async def test_journal_export_does_not_write_psks_into_a_world_readable_file(
    tmp_path: Path,
) -> None:
    # `magicwan journal export J > psks.json` under the usual umask 022: the shell makes
    # psks.json 0644 before the command starts. The live PSKs never land in a file any
    # local user can read.
    import os
    import stat

    async with run(tunnels=2, rate_limit=None) as emu:
        journal = tmp_path / "j.jsonl"
        rotated = await magicwan_process(
            emu, "psk", "rotate", "--all", "--journal", str(journal), "-q"
        )
        assert rotated.code == 0, rotated.err
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
    # `--format env` makes lines to source. A journal line edited by hand (or copied from a
    # colleague, or merged from another tool) whose tunnel_id is 'x;touch PWNED;y' must not
    # become a command when the export is sourced.
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
        result = await magicwan_process(emu, "journal", "export", str(journal), "--format", "env")
    exports = tmp_path / "exports.sh"
    exports.write_text(result.out)
    proc = await asyncio.create_subprocess_exec("sh", "-c", f". {exports}", cwd=tmp_path)
    await proc.wait()
    assert not pwned.exists(), (
        f"sourcing the export ran a command (exit {result.code}): {result.out!r}"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ("psk", "rotate", "--all", "--journal", "{journal}", "--show-psk", "--json"),
        ("psk", "generate", "{tunnel}", "--show-psk"),
        ("psk", "set", "{tunnel}", "--journal", "{journal}", "--show-psk"),
    ],
    ids=["rotate", "generate", "set"],
)
async def test_show_psk_never_leaves_psks_in_a_file_others_can_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, argv: tuple[str, ...]
) -> None:
    # `magicwan psk ... --show-psk > out` under umask 022: the PSKs land in a 0644 file
    # that every user of the machine can read. `journal export > out` tightens that very
    # file to 0600 first ("stdout is a file others could read: made it 0600"); --show-psk,
    # which prints the same secrets, did not. Expected: the same protection.
    out_path = tmp_path / "out.txt"
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT, 0o644)
    os.fchmod(fd, 0o644)
    async with cli_emulator(monkeypatch, tunnels=2) as (emu, _):
        words = [w.format(journal=tmp_path / "j.jsonl", tunnel=emu.tunnel_ids[0]) for w in argv]
        with os.fdopen(fd, "w") as out:
            code = await cli.amain(words, stdout=out, stderr=io.StringIO())
        assert code == 0
        text = out_path.read_text()
        assert any(
            record.psk in text
            for tunnel in emu.tunnel_ids
            for record in emu.state.history(emu.account_id, tunnel)
        ), "the scenario printed no PSK"
    assert not stat.S_IMODE(out_path.stat().st_mode) & 0o077
