"""``magicwan journal show | export`` (``magicwan.cli.journal``): a journal read without jq."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import stat
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from magicwan import cli
from magicwan.emulator import Emulator
from magicwan.journal import Intent, Journal
from tests.support.cli import Answers, Result, cli_emulator, json_lines, magicwan

SET_PSK = "pendingSETpsk0123456789abcdefghi"


@pytest_asyncio.fixture
async def env(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Emulator, Answers]]:
    async with cli_emulator(monkeypatch, tunnels=4) as pair:
        yield pair


async def rotated_journal(emu: Emulator, answers: Answers, path: Path) -> None:
    """Tunnels 0-1 rotated, 2 failed (404), 3 left in flight by a set whose answer is lost."""
    answers.add("psk_generate", status=404, code=1002, message="gone", tunnel=emu.tunnel_ids[2])
    ids = emu.tunnel_ids[:3]
    result = await magicwan("psk", "rotate", emu.account_id, *ids, "--journal", str(path))
    assert result.code == 1, result.err
    journal = Journal(path)
    journal.open()
    journal.append(
        Intent(account_id=emu.account_id, tunnel_id=emu.tunnel_ids[3], method="set", psk=SET_PSK)
    )
    await journal.aclose()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def export_to(stream: io.StringIO, *argv: str) -> Result:
    err = io.StringIO()
    code = await cli.amain(["journal", "export", *argv], stdout=stream, stderr=err)
    return Result(code, stream.getvalue(), err.getvalue())


@pytest.mark.asyncio
async def test_show_says_whether_the_journals_last_run_finished(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    path = tmp_path / "j.jsonl"
    assert (await magicwan("psk", "rotate", "--all", "--journal", str(path))).code == 0
    finished = await magicwan("journal", "show", str(path))
    old = tmp_path / "old.jsonl"  # as 0.1.0 wrote them: no header, no finished line
    old.write_bytes(b"".join(line + b"\n" for line in path.read_bytes().splitlines()[1:-1]))
    unknown = await magicwan("journal", "show", str(old))

    assert (finished.code, unknown.code) == (0, 0), finished.err + unknown.err
    assert "4 tunnel(s): 4 rotated, 0 failed, 0 in flight; its last run finished" in finished.err
    assert "4 tunnel(s): 4 rotated, 0 failed, 0 in flight\n" in unknown.err


@pytest.mark.asyncio
async def test_show_tells_each_tunnels_state_and_never_a_psk(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, answers = env
    path = tmp_path / "j.jsonl"
    await rotated_journal(emu, answers, path)

    table = await magicwan("journal", "show", str(path))
    as_json = await magicwan("journal", "show", str(path), "--json")

    assert table.code == 0, table.err
    rows = {row.split()[0]: row.split() for row in table.out.splitlines()[1:]}
    assert rows[emu.tunnel_ids[0]][1:2] == ["rotated"]
    assert rows[emu.tunnel_ids[2]][1] == "failed"
    assert "NotFoundError: HTTP 404: 1002: gone" in table.out
    assert rows[emu.tunnel_ids[3]][1] == "in-flight"
    assert "4 tunnel(s): 2 rotated, 1 failed, 1 in flight" in table.err
    assert "its last run did not finish (no finished line: --resume continues it)" in table.err
    lines = {line["tunnel_id"]: line for line in json_lines(as_json.out)}
    assert lines[emu.tunnel_ids[0]]["has_psk"] is True
    assert lines[emu.tunnel_ids[0]]["attempts"] == 1
    assert lines[emu.tunnel_ids[3]]["pending_psk"] is True
    for text in (table.out, table.err, as_json.out):
        assert SET_PSK not in text
        for tunnel in emu.tunnel_ids:
            psk = emu.state.current_psk(emu.account_id, tunnel)
            assert psk is None or psk not in text


@pytest.mark.asyncio
@pytest.mark.parametrize("command", ["show", "export"])
async def test_files_that_are_not_journals_are_refused_untouched(
    tmp_path: Path, command: str
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a journal\n")
    before = notes.stat()
    refused = (
        await export_to(io.StringIO(), str(notes))
        if command == "export"
        else await magicwan("journal", "show", str(notes))
    )
    missing = await magicwan("journal", command, str(tmp_path / "missing.jsonl"))
    directory = await magicwan("journal", command, str(tmp_path))

    assert refused.code == 2
    assert "is not a magicwan journal" in refused.err
    assert notes.read_text() == "not a journal\n"
    assert notes.stat().st_mtime_ns == before.st_mtime_ns
    assert missing.code == 2
    assert "no such journal" in missing.err
    assert directory.code == 2
    # export takes a --journal-dir too, and says when it holds no journal
    assert (
        "no journals (*.jsonl) in directory" if command == "export" else "not a regular file"
    ) in (directory.err)


@pytest.mark.asyncio
async def test_export_formats_hand_the_psks_to_another_tool(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, answers = env
    path = tmp_path / "j.jsonl"
    await rotated_journal(emu, answers, path)
    live = {t: emu.state.current_psk(emu.account_id, t) for t in emu.tunnel_ids[:2]}

    as_json = await export_to(io.StringIO(), str(path), "--format", "json")
    as_csv = await export_to(io.StringIO(), str(path), "--format", "csv")
    as_env = await export_to(io.StringIO(), str(path), "--format", "env")

    rows = {line["tunnel_id"]: line for line in json_lines(as_json.out)}
    assert {t: rows[t]["psk"] for t in live} == live
    assert rows[emu.tunnel_ids[3]]["pending_psk"] == SET_PSK  # a set that may be live
    assert rows[emu.tunnel_ids[3]]["in_flight"] is True
    assert emu.tunnel_ids[2] not in rows  # failed, no PSK
    parsed = list(csv.DictReader(io.StringIO(as_csv.out)))
    assert {row["tunnel_id"]: row["psk"] for row in parsed} == live
    assert list(parsed[0]) == ["account_id", "tunnel_id", "ipsec_id", "last_generated_on", "psk"]
    assert "pending_psk" in as_csv.err  # the pending PSK is not in csv: it says where it is
    env_file = tmp_path / "psks.env"
    env_file.write_text(as_env.out)
    for tunnel, psk in live.items():
        sourced = subprocess.run(  # noqa: S603 - a fixed shell line over our own file
            ["/bin/sh", "-c", f'. "$0"; printf %s "$MAGICWAN_PSK_{tunnel}"', str(env_file)],
            capture_output=True,
            text=True,
            check=True,
        )
        assert sourced.stdout == psk
    for result in (as_json, as_csv, as_env):
        assert result.code == 0
        assert all(psk not in result.err for psk in live.values() if psk)


@pytest.mark.asyncio
async def test_export_refuses_a_terminal_unless_forced(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, answers = env
    path = tmp_path / "j.jsonl"
    await rotated_journal(emu, answers, path)
    psk = emu.state.current_psk(emu.account_id, emu.tunnel_ids[0])
    assert psk is not None

    refused = await export_to(_Terminal(), str(path))
    forced = await export_to(_Terminal(), str(path), "--force")

    assert refused.code == 2
    assert refused.out == ""
    assert "refusing to write PSKs to a terminal" in refused.err
    assert forced.code == 0
    assert psk in forced.out


@pytest.mark.asyncio
async def test_export_makes_its_own_output_file_private_before_writing(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, answers = env
    path = tmp_path / "j.jsonl"
    await rotated_journal(emu, answers, path)
    target = tmp_path / "out.json"
    with open(target, "w") as out:
        os.chmod(target, 0o644)
        err = io.StringIO()
        code = await cli.amain(["journal", "export", str(path)], stdout=out, stderr=err)
    assert code == 0
    assert "stdout is a file others could read (mode 0644): made it 0600" in err.getvalue()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert json.loads(target.read_text().splitlines()[0])["psk"]


@pytest.mark.asyncio
async def test_export_to_a_full_disk_fails_with_one_line_not_a_traceback(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    # `journal export J > psks.json` with the disk full: not "done" (exit 0), not a crash.
    emu, answers = env
    path = tmp_path / "j.jsonl"
    await rotated_journal(emu, answers, path)
    err = io.StringIO()
    with open("/dev/full", "w") as full:  # a real full device
        code = await cli.amain(["journal", "export", str(path)], stdout=full, stderr=err)
    assert code == 1
    assert f"cannot write to standard output: {os.strerror(errno.ENOSPC)}" in err.getvalue()
    assert "exported" not in err.getvalue()
