"""``magicwan psk generate | set | rotate`` (``magicwan.cli.psk`` and its runner), in-process
against the emulator over loopback."""

from __future__ import annotations

import asyncio
import errno
import io
import json
import os
import stat
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from magicwan import cli
from magicwan.emulator import Emulator, EmulatorState, Faults, run
from magicwan.journal import Journal, read_journal
from tests.support.cli import (
    Answers,
    assert_no_psk,
    cli_emulator,
    journalled,
    json_lines,
    magicwan,
    summary,
)

TUNNELS = 6
HOSTILE = "\x1b[31mred\x1b]0;owned\x07\rover"


@pytest_asyncio.fixture
async def env(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Emulator, Answers]]:
    async with cli_emulator(monkeypatch, tunnels=TUNNELS) as pair:
        yield pair


def current(emu: Emulator, tunnel_id: str) -> str | None:
    return emu.state.current_psk(emu.account_id, tunnel_id)


def events(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()][1:]  # after the header


def break_journal_after(monkeypatch: pytest.MonkeyPatch, path: Path, rotated: int) -> None:
    """Every fsync of ``path`` fails (ENOSPC) once it holds more than ``rotated`` rotated lines."""
    real = os.fsync

    def fsync(fd: int) -> None:
        ours = path.exists() and os.fstat(fd).st_ino == path.stat().st_ino
        if ours and path.read_bytes().count(b'"event":"rotated"') > rotated:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr("magicwan.journal.os.fsync", fsync)


# -- psk generate ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_generate_with_journal_records_the_psk_and_prints_none(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    journal = tmp_path / "journal.jsonl"
    tunnel = emu.tunnel_ids[0]

    result = await magicwan("psk", "generate", emu.account_id, tunnel, "--journal", str(journal))

    assert result.code == 0, result.err
    assert result.out == ""  # nothing for a program to read: the PSK is in the journal
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    lines = events(journal)
    assert [e["event"] for e in lines] == ["intent", "rotated"]
    assert lines[1]["psk"] == current(emu, tunnel)
    assert f"tunnel {tunnel}: new PSK generated at 20" in result.err
    assert f"recorded in the journal {journal}" in result.err
    assert_no_psk(result.out + result.err, emu)


@pytest.mark.asyncio
async def test_generate_without_journal_or_show_psk_is_refused_before_sending(
    env: tuple[Emulator, Answers],
) -> None:
    emu, _ = env
    result = await magicwan("psk", "generate", emu.account_id, emu.tunnel_ids[0])

    assert result.code == 2
    assert "--journal FILE" in result.err
    assert "--show-psk" in result.err
    assert emu.state.requests.total == 0


@pytest.mark.asyncio
async def test_generate_show_psk_prints_the_psk_alone_on_stdout(
    env: tuple[Emulator, Answers],
) -> None:
    emu, _ = env
    tunnel = emu.tunnel_ids[0]
    result = await magicwan("psk", "generate", tunnel, "--show-psk")  # account from the env

    assert result.code == 0, result.err
    assert result.out == f"{current(emu, tunnel)}\n"
    assert_no_psk(result.err, emu)


@pytest.mark.asyncio
async def test_generate_json_is_one_line_with_the_psk_only_when_asked(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    tunnel = emu.tunnel_ids[0]
    journal = str(tmp_path / "j.jsonl")
    hidden = await magicwan("psk", "generate", tunnel, "--journal", journal, "--json")
    shown = await magicwan("psk", "generate", tunnel, "--journal", journal, "--json", "--show-psk")

    [line] = json_lines(hidden.out)
    assert line["event"] == "tunnel"
    assert (line["tunnel_id"], line["ok"], line["state"], line["attempts"]) == (
        tunnel,
        True,
        "rotated",
        1,
    )
    assert "psk" not in line
    [line] = json_lines(shown.out)
    assert line["psk"] == current(emu, tunnel)


@pytest.mark.asyncio
async def test_generate_validate_only_changes_nothing(env: tuple[Emulator, Answers]) -> None:
    emu, _ = env
    tunnel = emu.tunnel_ids[0]
    result = await magicwan("psk", "generate", emu.account_id, tunnel, "--validate-only")

    assert result.code == 0, result.err
    assert "validated" in result.err
    assert emu.state.tunnel(emu.account_id, tunnel).generation == 0


@pytest.mark.asyncio
async def test_generate_unknown_tunnel_exits_1_with_a_hint_and_journals_the_failure(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    journal = tmp_path / "j.jsonl"
    result = await magicwan("psk", "generate", emu.account_id, "f" * 32, "--journal", str(journal))

    assert result.code == 1
    assert "NotFoundError: HTTP 404: 1002" in result.err
    assert "hint: the tunnel is not in this account" in result.err
    assert "Traceback" not in result.err
    assert [e["event"] for e in events(journal)] == ["intent", "failed"]


@pytest.mark.asyncio
async def test_generate_refused_for_lack_of_permission_exits_3(
    env: tuple[Emulator, Answers],
) -> None:
    emu, answers = env
    answers.add(
        "psk_generate", status=403, code=9109, message="Unauthorized to access requested resource"
    )
    result = await magicwan("psk", "generate", emu.tunnel_ids[0], "--show-psk")

    assert result.code == 3
    assert "PermissionDeniedError: HTTP 403: 9109" in result.err
    assert "hint: the credentials lack a permission" in result.err


@pytest.mark.asyncio
@pytest.mark.parametrize("show", [False, True], ids=["hidden", "shown"])
async def test_generate_whose_journal_fails_after_the_psk_arrived_exits_4(
    env: tuple[Emulator, Answers],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    show: bool,
) -> None:
    emu, _ = env
    journal = tmp_path / "j.jsonl"
    tunnel = emu.tunnel_ids[0]
    break_journal_after(monkeypatch, journal, rotated=0)
    argv = ["psk", "generate", tunnel, "--journal", str(journal)]

    result = await magicwan(*argv, *(["--show-psk"] if show else []))

    psk = current(emu, tunnel)
    assert psk is not None  # a new PSK is live at Cloudflare
    assert result.code == 4
    assert f"tunnel {tunnel} holds a NEW PSK" in result.err
    assert "No space left on device" in result.err
    assert psk not in result.err
    if show:
        assert result.out == f"{psk}\n"  # --show-psk is honoured all the same
    else:
        assert psk not in result.out
        assert "run the command again once the journal is writable" in result.err


@pytest.mark.asyncio
async def test_generate_on_a_locked_journal_is_refused_before_sending(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    path = tmp_path / "j.jsonl"
    holder = Journal(path)
    holder.open()  # another rotation holds it
    try:
        result = await magicwan("psk", "generate", emu.tunnel_ids[0], "--journal", str(path))
        rotate = await magicwan("psk", "rotate", "--all", "--journal", str(path))
    finally:
        await holder.aclose()

    for refused in (result, rotate):
        assert refused.code == 2
        assert "in use by another rotation" in refused.err
    assert emu.state.requests.total == 0


@pytest.mark.asyncio
async def test_generate_records_an_uncertain_outcome_in_the_journal(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    journal = tmp_path / "journal.jsonl"
    tunnel = emu.tunnel_ids[0]
    emu.set_faults(Faults(reset_after_store=1.0))
    argv = ["psk", "generate", emu.account_id, tunnel, "--journal", str(journal)]
    first = asyncio.ensure_future(magicwan(*argv, "--settle-window", "0.2"))
    while emu.state.requests.dropped == 0:
        await asyncio.sleep(0.01)
    emu.set_faults(Faults.none())  # the retry gets through: the first PSK went unseen
    result = await first
    assert result.code == 0, result.err
    rotated = [e for e in events(journal) if e["event"] == "rotated"]
    assert rotated[-1]["uncertain"] is True
    assert rotated[-1]["psk"] == current(emu, tunnel)


# -- psk set -------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_set_makes_the_psk_and_journals_it_before_the_request_is_sent(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, answers = env
    journal = tmp_path / "j.jsonl"
    tunnel = emu.tunnel_ids[0]
    on_disk_when_sent: list[bool] = []

    async def look(request: web.Request) -> None:
        if request.path.endswith("/psk"):
            body = await request.json()
            on_disk_when_sent.append(body["psks"][0]["psk"] in journal.read_text())

    answers.hooks.append(look)
    result = await magicwan("psk", "set", tunnel, "--journal", str(journal))

    assert result.code == 0, result.err
    assert on_disk_when_sent == [True]
    psk = current(emu, tunnel)
    assert psk is not None
    assert len(psk) == 32
    lines = events(journal)
    assert [(e["event"], e["method"], e["psk"]) for e in lines] == [
        ("intent", "set", psk),
        ("rotated", "set", psk),
    ]
    assert result.out == ""
    assert psk not in result.err


@pytest.mark.asyncio
async def test_set_reads_the_psk_from_stdin_and_never_echoes_it(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    tunnel = emu.tunnel_ids[1]
    mine = "MyOwn-PSK_with.symbols!0123456789"
    journal = str(tmp_path / "j.jsonl")
    result = await magicwan(
        "psk", "set", tunnel, "--psk-stdin", "--journal", journal, stdin=mine + "\n"
    )

    assert result.code == 0, result.err
    assert current(emu, tunnel) == mine
    assert mine not in result.out + result.err
    assert journalled(Path(journal), emu.account_id) == {tunnel: mine}

    short = "tooShort1"
    refused = await magicwan("psk", "set", tunnel, "--psk-stdin", "--journal", journal, stdin=short)
    assert refused.code == 2
    assert "16 to 128 characters" in refused.err
    assert short not in refused.err
    assert current(emu, tunnel) == mine


@pytest.mark.asyncio
async def test_set_needs_a_journal_and_never_takes_a_psk_as_an_argument(
    env: tuple[Emulator, Answers],
) -> None:
    emu, _ = env
    tunnel = emu.tunnel_ids[0]
    no_journal = await magicwan("psk", "set", tunnel)
    as_argument = await magicwan("psk", "set", tunnel, "--psk", "x" * 32, "--journal", "j")

    assert no_journal.code == 2
    assert "--journal FILE is required" in no_journal.err
    assert as_argument.code == 2
    assert "unrecognized arguments: --psk" in as_argument.err
    assert "x" * 32 not in as_argument.err
    assert emu.state.requests.total == 0


@pytest.mark.asyncio
async def test_set_show_psk_and_validate_only(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    tunnel = emu.tunnel_ids[2]
    validated = await magicwan("psk", "set", tunnel, "--validate-only")
    assert validated.code == 0, validated.err
    assert emu.state.tunnel(emu.account_id, tunnel).generation == 0

    shown = await magicwan("psk", "set", tunnel, "--journal", str(tmp_path / "j"), "--show-psk")
    assert shown.code == 0, shown.err
    assert shown.out == f"{current(emu, tunnel)}\n"


# -- psk rotate: journals --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_rotate_all_journals_every_psk_and_a_reused_journal_is_refused(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    journal = tmp_path / "journal.jsonl"
    argv = ("psk", "rotate", emu.account_id, "--all", "--journal", str(journal))

    first = await magicwan(*argv)

    assert first.code == 0, first.err
    assert first.out == ""  # nothing asked for stdout
    rows = summary(first.err)
    assert (rows["rotated"], rows["failed"], rows["not attempted"]) == (str(TUNNELS), "0", "0")
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    psks = journalled(journal, emu.account_id)
    assert psks == {t: current(emu, t) for t in emu.tunnel_ids}
    assert_no_psk(first.out + first.err, emu)

    generated = emu.state.requests.by_route["psk_generate"]
    again = await magicwan(*argv)  # the cron job that reuses its path

    assert again.code == 2
    assert "already records a new PSK for every one of the 6 selected tunnels" in again.err
    assert "this run would rotate nothing" in again.err
    assert "--resume" in again.err
    assert "--journal-dir" in again.err
    assert emu.state.requests.by_route["psk_generate"] == generated

    resumed = await magicwan(*argv, "--resume")
    assert resumed.code == 0, resumed.err
    assert summary(resumed.err)["skipped (already in the journal)"] == str(TUNNELS)
    assert emu.state.requests.by_route["psk_generate"] == generated


@pytest.mark.asyncio
async def test_a_journal_holding_some_tunnels_is_refused_and_resume_rotates_the_rest(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    journal = str(tmp_path / "j.jsonl")
    assert (await magicwan("psk", "generate", emu.tunnel_ids[0], "--journal", journal)).code == 0

    refused = await magicwan("psk", "rotate", "--all", "--journal", journal)
    resumed = await magicwan("psk", "rotate", "--all", "--journal", journal, "--resume")

    assert refused.code == 2
    assert "already records new PSKs for 1 of the 6 selected tunnels" in refused.err
    assert resumed.code == 0, resumed.err
    rows = summary(resumed.err)
    assert (rows["rotated"], rows["skipped (already in the journal)"]) == ("5", "1")
    assert emu.state.tunnel(emu.account_id, emu.tunnel_ids[0]).generation == 1


@pytest.mark.asyncio
@pytest.mark.usefixtures("permissive_umask")
async def test_journal_dir_makes_a_fresh_private_journal_per_run(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    directory = tmp_path / "state" / "journals"
    argv = ("psk", "rotate", "--all", "--journal-dir", str(directory))

    first = await magicwan(*argv)
    second = await magicwan(*argv)

    assert (first.code, second.code) == (0, 0), first.err + second.err
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = sorted(directory.iterdir())
    assert len(files) == 2
    for path in files:
        assert path.name.startswith("rotate-")
        assert path.suffix == ".jsonl"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert f"journal: {path} " in (first.err + second.err)
    assert all(emu.state.tunnel(emu.account_id, t).generation == 2 for t in emu.tunnel_ids)
    assert journalled(files[-1], emu.account_id) == {t: current(emu, t) for t in emu.tunnel_ids}


@pytest.mark.asyncio
async def test_journal_dir_uses_a_directory_others_can_read_as_it_is(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    directory = tmp_path / "open"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    argv = ("psk", "rotate", emu.tunnel_ids[0], "--journal-dir", str(directory))
    forgot_account = await magicwan(*argv)
    result = await magicwan(*argv[:2], emu.account_id, *argv[2:])

    assert forgot_account.code == 2
    assert f"{emu.tunnel_ids[0]} was taken as ACCOUNT" in forgot_account.err
    assert result.code == 0, result.err
    assert stat.S_IMODE(directory.stat().st_mode) == 0o755  # the operator's, not ours
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in directory.iterdir())


@pytest.mark.asyncio
async def test_resume_needs_the_journal_file_and_not_a_journal_is_refused_untouched(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    with_dir = await magicwan("psk", "rotate", "--all", "--resume", "--validate-only")
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    not_journal = await magicwan("psk", "rotate", "--all", "--journal", str(notes))

    assert with_dir.code == 2
    assert "--resume continues the run recorded in a journal" in with_dir.err
    assert not_journal.code == 2
    assert "is not a magicwan journal" in not_journal.err
    assert notes.read_text() == "my notes\n"
    assert emu.state.requests.total == 0


# -- psk rotate: output ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_json_is_one_line_per_tunnel_then_a_summary_with_people_text_on_stderr(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    journal = tmp_path / "j.jsonl"
    result = await magicwan("psk", "rotate", "--all", "--journal", str(journal), "--json")

    assert result.code == 0, result.err
    lines = json_lines(result.out)
    tunnels, [last] = lines[:-1], lines[-1:]
    assert sorted(line["tunnel_id"] for line in tunnels) == sorted(emu.tunnel_ids)
    names = {t: emu.state.tunnel(emu.account_id, t).name for t in emu.tunnel_ids}
    for line in tunnels:
        assert line["event"] == "tunnel"
        assert line["name"] == names[line["tunnel_id"]]
        assert (line["ok"], line["state"], line["attempts"], line["error"]) == (
            True,
            "rotated",
            1,
            None,
        )
        assert {"verified", "delivered", "last_generated_on", "ipsec_id"} <= set(line)
        assert "psk" not in line
    assert last["event"] == "summary"
    assert (last["requested"], last["rotated"], last["exit_status"]) == (TUNNELS, TUNNELS, 0)
    assert last["journal"] == str(journal)
    assert summary(result.err)["rotated"] == str(TUNNELS)
    assert_no_psk(result.out + result.err, emu)


@pytest.mark.asyncio
async def test_show_psk_writes_only_tunnel_and_psk_lines_to_stdout(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    journal = str(tmp_path / "j.jsonl")
    text = await magicwan("psk", "rotate", "--all", "--journal", journal, "--show-psk")
    assert text.code == 0, text.err
    assert sorted(text.out.splitlines()) == sorted(f"{t} {current(emu, t)}" for t in emu.tunnel_ids)
    assert_no_psk(text.err, emu)

    json_run = await magicwan(
        "psk", "rotate", "--all", "--journal", journal + "2", "--show-psk", "--json"
    )
    shown = {line["tunnel_id"]: line["psk"] for line in json_lines(json_run.out)[:-1]}
    assert shown == {t: current(emu, t) for t in emu.tunnel_ids}
    assert_no_psk(json_run.err, emu)


@pytest.mark.asyncio
async def test_plain_progress_lines_when_not_a_terminal(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    result = await magicwan("psk", "rotate", "--all", "--journal", str(tmp_path / "j.jsonl"))

    assert result.code == 0
    lines = [line for line in result.err.splitlines() if line.startswith("ok ")]
    assert len(lines) == TUNNELS
    for line in lines:
        _, tunnel_id, name, stamp = line.split()
        assert tunnel_id in emu.tunnel_ids
        assert name == emu.state.tunnel(emu.account_id, tunnel_id).name
        assert stamp.startswith("20")
        assert stamp.endswith("Z")
    assert "\r" not in result.err
    assert "\x1b" not in result.err  # no colours on a pipe


@pytest.mark.asyncio
async def test_quiet_is_silent_when_all_is_well_and_verbose_shows_info(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, answers = env
    quiet = await magicwan("psk", "rotate", "--all", "--journal", str(tmp_path / "a"), "-q")
    assert quiet.code == 0
    assert (quiet.out, quiet.err) == ("", "")

    # A retried 5xx leaves doubt: the tunnel is read back after the settle window.
    settle = ("--settle-window", "0")
    answers.add(
        "psk_generate", status=500, code=10001, message="oops", tunnel=emu.tunnel_ids[0], times=1
    )
    plain = await magicwan(
        "psk",
        "rotate",
        emu.account_id,
        emu.tunnel_ids[0],
        "--journal",
        str(tmp_path / "b"),
        *settle,
    )
    answers.add(
        "psk_generate", status=500, code=10001, message="oops", tunnel=emu.tunnel_ids[0], times=1
    )
    verbose = await magicwan(
        "psk",
        "rotate",
        emu.account_id,
        emu.tunnel_ids[0],
        "--journal",
        str(tmp_path / "c"),
        "-v",
        *settle,
    )
    answers.add("psk_generate", status=500, code=10001, message="oops", times=10)
    failing = await magicwan(
        "psk", "rotate", "--all", "--journal", str(tmp_path / "d"), "-q", "--max-retries", "0"
    )

    assert (plain.code, verbose.code) == (0, 0), plain.err + verbose.err
    assert "INFO" not in plain.err  # a retry is not news without -v
    assert "INFO magicwan: " in verbose.err
    assert "retrying after InternalServerError" in verbose.err
    assert "DEBUG" not in verbose.err  # -vv logs every request
    assert "reading it back in 0s" in verbose.err
    assert summary(verbose.err)["verified by read-back"] == "1"
    assert failing.code == 1
    assert "summary: 6 tunnels" in failing.err  # -q still reports a failed run
    assert not any(line.startswith("ok ") for line in failing.err.splitlines())


@pytest.mark.asyncio
async def test_very_verbose_logs_requests_never_a_secret(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    result = await magicwan(
        "psk", "rotate", emu.account_id, emu.tunnel_ids[0], "--journal", str(tmp_path / "j"), "-vv"
    )
    assert result.code == 0, result.err
    assert "DEBUG magicwan: POST /accounts/" in result.err
    assert_no_psk(result.out + result.err, emu)


# -- psk rotate: selection ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_tunnels_by_name_glob_with_exclusions(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    name = {emu.state.tunnel(emu.account_id, t).name: t for t in emu.tunnel_ids}
    result = await magicwan(
        "psk",
        "rotate",
        "--name",
        "emu_tunnel_0000[1-4]",
        "--exclude",
        "*00002",
        "--exclude",
        name["emu_tunnel_00003"],  # by id too
        "--journal",
        str(tmp_path / "j"),
    )

    assert result.code == 0, result.err
    rotated = {t for t in emu.tunnel_ids if emu.state.tunnel(emu.account_id, t).generation}
    assert rotated == {name["emu_tunnel_00001"], name["emu_tunnel_00004"]}


@pytest.mark.asyncio
async def test_options_go_anywhere_among_the_positionals(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    a, b = emu.tunnel_ids[:2]
    result = await magicwan(
        "psk",
        "rotate",
        emu.account_id,
        "--journal",
        str(tmp_path / "j"),
        a,
        "--concurrency",
        "2",
        b,
    )
    assert result.code == 0, result.err
    rotated = {t for t in emu.tunnel_ids if emu.state.tunnel(emu.account_id, t).generation}
    assert rotated == {a, b}


@pytest.mark.asyncio
async def test_names_and_unknown_ids_are_refused_with_the_way_out(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    by_name = await magicwan(
        "psk", "rotate", emu.account_id, "emu_tunnel_00001", "--journal", str(tmp_path / "j")
    )
    unknown = await magicwan(
        "psk", "rotate", emu.account_id, "f" * 32, "--journal", str(tmp_path / "k")
    )
    no_match = await magicwan("psk", "rotate", "--name", "nope*", "--journal", str(tmp_path / "l"))

    assert by_name.code == 2
    assert "tunnels are given by id" in by_name.err
    assert "--name GLOB" in by_name.err
    assert unknown.code == 2
    assert f"not IPsec tunnels of account {emu.account_id}: {'f' * 32}" in unknown.err
    assert "magicwan tunnels list" in unknown.err
    assert no_match.code == 2
    assert "no tunnel selected" in no_match.err
    assert emu.state.requests.by_route["psk_generate"] == 0


@pytest.mark.asyncio
async def test_ids_from_files_and_stdin(env: tuple[Emulator, Answers], tmp_path: Path) -> None:
    emu, _ = env
    ids = emu.tunnel_ids
    listing = tmp_path / "ids.txt"
    listing.write_text(f"# tunnels of site A\n{ids[1]}\n\n  {ids[2]}  # the spare\n{ids[0]}\n")
    journal = tmp_path / "journal.jsonl"

    result = await magicwan(
        "psk",
        "rotate",
        emu.account_id,
        ids[0],
        "--from-file",
        str(listing),
        "--from-file",
        "-",
        "--journal",
        str(journal),
        stdin=f"{ids[3]}\n",
    )

    assert result.code == 0, result.err
    assert summary(result.err)["rotated"] == "4"  # ids[0] twice: rotated once
    assert sorted(journalled(journal, emu.account_id)) == sorted(ids[:4])
    assert emu.state.tunnel(emu.account_id, ids[4]).generation == 0

    bad = tmp_path / "bad.txt"
    bad.write_text(f"{ids[0]}\n../../etc\n")
    refused = await magicwan("psk", "rotate", "--from-file", str(bad), "--journal", "x")
    assert refused.code == 2
    assert f"{bad}, line 2: tunnel id may hold only ASCII letters and digits" in refused.err


@pytest.mark.asyncio
async def test_dry_run_sends_nothing_but_the_tunnel_list(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    journal = tmp_path / "j.jsonl"
    assert (
        await magicwan("psk", "generate", emu.tunnel_ids[0], "--journal", str(journal))
    ).code == 0
    before = emu.state.requests.total

    text = await magicwan("psk", "rotate", "--all", "--dry-run")
    resumed = await magicwan(
        "psk", "rotate", "--all", "--dry-run", "--json", "--journal", str(journal), "--resume"
    )

    assert (text.code, resumed.code) == (0, 0), text.err + resumed.err
    assert emu.state.requests.total == before + 2
    assert emu.state.requests.by_route["list_ipsec_tunnels"] == 2
    assert len(text.out.splitlines()) == TUNNELS
    assert "6 tunnel(s) would be rotated" in text.err
    assert "nothing changed" in text.err
    lines = json_lines(resumed.out)
    states = {line["tunnel_id"]: line["state"] for line in lines[:-1]}
    assert states.pop(emu.tunnel_ids[0]) == "would_skip"
    assert set(states.values()) == {"would_rotate"}
    summary_line = {k: v for k, v in lines[-1].items() if k not in ("ts", "run_id", "account_id")}
    assert summary_line.pop("estimate")["tunnels"] == 5
    assert summary_line == {"event": "summary", "dry_run": True, "would_rotate": 5, "would_skip": 1}
    assert len(events(journal)) == 2  # untouched


@pytest.mark.asyncio
async def test_validate_only_costs_a_request_per_tunnel_and_changes_nothing(
    env: tuple[Emulator, Answers],
) -> None:
    emu, _ = env
    result = await magicwan("psk", "rotate", "--all", "--validate-only")

    assert result.code == 0, result.err
    assert summary(result.err)["validated"] == str(TUNNELS)
    assert emu.state.requests.by_route["psk_generate"] == TUNNELS
    assert emu.state.total_generations() == 0


@pytest.mark.asyncio
async def test_method_set_sends_batches_of_psks_journalled_before_sending(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    journal = tmp_path / "j.jsonl"
    result = await magicwan(
        "psk", "rotate", "--all", "--method", "set", "--batch-size", "4", "--journal", str(journal)
    )

    assert result.code == 0, result.err
    assert emu.state.requests.by_route["psk_set"] == 2  # 6 tunnels, 4 a batch
    assert emu.state.requests.by_route["psk_generate"] == 0
    assert journalled(journal, emu.account_id) == {t: current(emu, t) for t in emu.tunnel_ids}
    intents = [e for e in events(journal) if e["event"] == "intent"]
    assert {e["psk"] for e in intents} == {current(emu, t) for t in emu.tunnel_ids}

    wrong = await magicwan("psk", "rotate", "--all", "--batch-size", "4", "--journal", "x")
    assert wrong.code == 2
    assert "--batch-size applies to --method set" in wrong.err


# -- psk rotate: failures ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_long_429_block_stops_the_run_with_one_line_and_one_group(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, answers = env
    emu.state.add_tunnels(count=24)  # 30 tunnels
    answers.add(
        "psk_generate", status=429, code=971, message="Please wait", headers={"Retry-After": "120"}
    )
    result = await magicwan(
        "psk", "rotate", "--all", "--journal", str(tmp_path / "j"), "--concurrency", "4"
    )

    assert result.code == 1
    warnings = [line for line in result.err.splitlines() if "rate limit stopped the run" in line]
    assert len(warnings) == 1
    assert "to wait 120s, more than --max-retry-after 60s" in warnings[0]
    assert "--resume" in warnings[0]
    rows = summary(result.err)
    failed, not_attempted = int(rows["failed"]), int(rows["not attempted"])
    assert failed + not_attempted == 30
    assert not_attempted >= 20  # no new tunnel after the block was seen
    assert answers.answered <= 4  # those in flight; the cooldown kept the rest from asking
    full = [line for line in result.err.splitlines() if "RateLimitError: HTTP 429" in line]
    assert len(full) == 2  # the first tunnel's line and the summary's group
    assert f"  {failed} tunnel" in result.err
    assert "(as above)" in result.err or failed == 1


@pytest.mark.asyncio
async def test_a_short_429_is_waited_out_and_logged_at_info_with_v(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    _, answers = env
    answers.add(
        "psk_generate", status=429, code=971, message="wait", headers={"Retry-After": "1"}, times=1
    )
    result = await magicwan(
        "psk", "rotate", "--all", "--journal", str(tmp_path / "j"), "--max-retry-after", "5", "-v"
    )
    assert result.code == 0, result.err
    assert "INFO magicwan: " in result.err
    assert "rate limited by the server; every call waits 1.0s" in result.err
    assert summary(result.err)["rotated"] == str(TUNNELS)


@pytest.mark.asyncio
async def test_hints_only_for_what_a_rerun_fixes(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, answers = env
    gone, flaky = emu.tunnel_ids[:2]
    answers.add(
        "psk_generate", status=404, code=1002, message="ipsec_tunnel not found", tunnel=gone
    )
    not_found = await magicwan(
        "psk", "rotate", "--all", "--journal", str(tmp_path / "a"), "--max-retries", "0"
    )
    answers.clear()
    answers.add("psk_generate", status=503, code=10001, message="busy", tunnel=flaky)
    server = await magicwan(
        "psk", "rotate", "--all", "--journal", str(tmp_path / "b"), "--max-retries", "0"
    )

    assert not_found.code == 1
    assert "1 tunnel (failed): NotFoundError: HTTP 404: 1002" in not_found.err
    assert "hint: the tunnel is not in this account" in not_found.err
    assert "to finish" not in not_found.err  # a rerun cannot fix a 404
    assert server.code == 1
    assert "to finish: magicwan psk rotate --all --max-retries 0 --journal" in server.err
    assert server.err.rstrip().endswith(f"--journal {tmp_path / 'b'} --resume")


@pytest.mark.asyncio
async def test_a_token_that_may_not_rotate_halts_and_exits_3(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, answers = env
    emu.state.add_tunnels(count=14)
    answers.add(
        "psk_generate", status=403, code=9109, message="Unauthorized to access requested resource"
    )
    result = await magicwan(
        "psk", "rotate", "--all", "--journal", str(tmp_path / "j"), "--concurrency", "1"
    )

    assert result.code == 3
    rows = summary(result.err)
    assert rows["failed"] == "5"  # --halt-after 5: the default
    assert rows["not attempted"] == "15"
    assert "hint: the credentials lack a permission" in result.err
    assert "to finish" not in result.err or "not attempted" in result.err


@pytest.mark.asyncio
async def test_server_text_and_tunnel_names_are_escaped_before_printing(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, answers = env
    evil = emu.state.add_tunnel(name="evil" + HOSTILE)
    answers.add("psk_generate", status=400, code=1001, message=HOSTILE, tunnel=evil.id)
    result = await magicwan("psk", "rotate", "--all", "--journal", str(tmp_path / "j"))

    assert result.code == 1
    for raw in ("\x1b", "\x07", "\r"):
        assert raw not in result.err
        assert raw not in result.out
    assert "\\x1b[31mred\\x1b]0;owned\\x07\\rover" in result.err
    assert f"{evil.id}  evil\\x1b[31m" in result.err

    as_json = await magicwan(
        "psk", "rotate", emu.account_id, evil.id, "--journal", str(tmp_path / "k"), "--json"
    )
    assert "\x1b" not in as_json.out
    line = json_lines(as_json.out)[0]
    assert line["name"] == "evil" + HOSTILE  # exact, in JSON's own escapes
    assert line["error"]["message"].endswith(HOSTILE)
    assert line["error"]["codes"] == [1001]


@pytest.mark.asyncio
@pytest.mark.parametrize("show", [False, True], ids=["hidden", "shown"])
async def test_a_journal_failing_mid_run_exits_4_and_never_drops_a_psk_silently(
    env: tuple[Emulator, Answers],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    show: bool,
) -> None:
    emu, _ = env
    journal = tmp_path / "j.jsonl"
    break_journal_after(monkeypatch, journal, rotated=2)
    result = await magicwan(
        "psk",
        "rotate",
        "--all",
        "--journal",
        str(journal),
        "--concurrency",
        "1",
        "--json",
        *(["--show-psk"] if show else []),
    )

    assert result.code == 4
    lines = json_lines(result.out)
    unrecorded = [line for line in lines if line.get("state") == "unrecorded"]
    assert unrecorded
    assert lines[-1]["unrecorded"] == len(unrecorded)
    assert lines[-1]["exit_status"] == 4
    for line in unrecorded:
        psk = current(emu, line["tunnel_id"])
        assert psk is not None
        assert line["tunnel_id"] in result.err
        assert psk not in result.err
        if show:
            assert line["psk"] == psk
        else:
            assert psk not in result.out
    assert "hold a NEW PSK that the journal could not record" in result.err


@pytest.mark.asyncio
async def test_the_summary_collapses_identical_failures(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    _, answers = env
    answers.add("psk_generate", status=500, code=10001, message="Internal server error")
    result = await magicwan(
        "psk",
        "rotate",
        "--all",
        "--journal",
        str(tmp_path / "j"),
        "--max-retries",
        "0",
        "--halt-after",
        "off",
        "--json",
    )
    assert result.code == 1
    [group] = json_lines(result.out)[-1]["failures"]
    assert group["count"] == TUNNELS
    assert group["error"]["type"] == "InternalServerError"
    assert group["rerun_fixes"] is True
    assert result.err.count("InternalServerError: HTTP 500") == 2  # first line + the group
    assert f"{TUNNELS} tunnels (failed): InternalServerError" in result.err


# -- psk rotate: delivery ------------------------------------------------------------------------


DELIVER = (
    f'{sys.executable} -c "import os, sys, pathlib; '
    "pathlib.Path(sys.argv[1], os.environ['MAGICWAN_TUNNEL_ID']).write_text("
    "sys.stdin.read().strip() + ' ' + os.environ['MAGICWAN_TUNNEL_NAME'])\""
)


@pytest.mark.asyncio
async def test_deliver_exec_hands_each_psk_to_the_program_on_stdin(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    out = tmp_path / "router"
    out.mkdir()
    result = await magicwan(
        "psk",
        "rotate",
        "--all",
        "--journal",
        str(tmp_path / "j"),
        "--deliver-exec",
        f"{DELIVER} {out}",
        "--json",
    )

    assert result.code == 0, result.err
    for tunnel in emu.tunnel_ids:
        name = emu.state.tunnel(emu.account_id, tunnel).name
        assert (out / tunnel).read_text() == f"{current(emu, tunnel)} {name}"
    lines = json_lines(result.out)
    assert all(line["delivered"] is True for line in lines[:-1])
    assert (lines[-1]["delivered"], lines[-1]["undelivered"]) == (TUNNELS, 0)
    assert summary(result.err)["delivered"] == str(TUNNELS)
    assert_no_psk(result.err, emu)


@pytest.mark.asyncio
async def test_a_failing_deliverer_halts_and_exits_5(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    _, _ = env
    result = await magicwan(
        "psk",
        "rotate",
        "--all",
        "--journal",
        str(tmp_path / "j"),
        "--deliver-exec",
        "false",
        "--deliver-retries",
        "0",
        "--halt-after",
        "2",
        "--concurrency",
        "1",
    )

    assert result.code == 5
    rows = summary(result.err)
    undelivered = int(rows["undelivered"])
    assert 2 <= undelivered < TUNNELS  # halted after 2 (one more may be past its request)
    assert rows["delivered"] == "0"
    assert rows["delivery not attempted"] == str(TUNNELS - undelivered)
    assert rows["not attempted"] == str(TUNNELS - undelivered)
    assert "hint: the --deliver-exec program failed" in result.err
    assert "'false' exited with status 1" in result.err
    assert "to finish:" in result.err  # a rerun with --resume delivers again


@pytest.mark.asyncio
async def test_undelivered_wins_over_failed(env: tuple[Emulator, Answers], tmp_path: Path) -> None:
    emu, answers = env
    answers.add("psk_generate", status=500, code=10001, message="x", tunnel=emu.tunnel_ids[0])
    result = await magicwan(
        "psk",
        "rotate",
        emu.account_id,
        emu.tunnel_ids[0],
        emu.tunnel_ids[1],
        "--journal",
        str(tmp_path / "j"),
        "--deliver-exec",
        "false",
        "--deliver-retries",
        "0",
        "--max-retries",
        "0",
    )
    assert result.code == 5
    rows = summary(result.err)
    assert (rows["failed"], rows["undelivered"]) == ("1", "1")


@pytest.mark.asyncio
async def test_deliver_strongswan_to_a_missing_socket_is_undelivered_with_a_hint(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    pytest.importorskip("vici", reason="the strongswan extra is not installed")
    result = await magicwan(
        "psk",
        "rotate",
        emu.account_id,
        emu.tunnel_ids[0],
        "--journal",
        str(tmp_path / "j"),
        "--deliver-strongswan",
        str(tmp_path / "no-charon.vici"),
        "--reauth",
        "--deliver-retries",
        "0",
    )
    assert result.code == 5
    assert "is charon running" in result.err
    assert summary(result.err)["undelivered"] == "1"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--reauth"], "--reauth applies to --deliver-strongswan"),
        (["--deliver-timeout", "3"], "need a --deliver-... option"),
        (["--deliver-exec", "x", "--validate-only"], "delivers nothing"),
        (["--deliver-exec", "'unclosed"], "--deliver-exec: No closing quotation"),
        (["--deliver-exec", "x", "--deliver-strongswan"], "not allowed with argument"),
    ],
)
async def test_delivery_option_errors(
    env: tuple[Emulator, Answers], argv: list[str], message: str
) -> None:
    emu, _ = env
    result = await magicwan("psk", "rotate", "--all", "--journal", "j", *argv)
    assert result.code == 2
    assert message in result.err
    assert emu.state.requests.total == 0


# -- credentials, account, cancellation ----------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["psk", "rotate", "{account}", "bad/id", "--journal", "{journal}"], id="arg"),
        pytest.param(
            ["psk", "rotate", "bad-account", "--all", "--journal", "{journal}"], id="acct"
        ),
        pytest.param(
            ["psk", "rotate", "{account}", "--from-file", "{bad}", "--journal", "{journal}"],
            id="file",
        ),
        pytest.param(["psk", "rotate", "{account}", "--all"], id="no-journal"),
        pytest.param(["psk", "rotate", "{account}", "--journal", "{journal}"], id="no-tunnels"),
        pytest.param(["psk", "generate", "{account}", "x" * 33, "--show-psk"], id="long-id"),
        pytest.param(["psk", "rotate", "{account}", "--all", "--rate-limit", "fast"], id="rate"),
        pytest.param(["psk", "rotate", "{account}", "--all", "--concurrency", "0"], id="conc"),
        pytest.param(
            ["psk", "rotate", "--all", "--name", "x", "--journal", "{journal}"], id="all+name"
        ),
        pytest.param(["psk", "rotate", "--all", "--dry-run", "--validate-only"], id="dry+validate"),
        pytest.param(
            ["psk", "set", "{account}", "{tunnel}", "--psk-stdin", "--journal", "{journal}"],
            id="no-psk",
        ),
    ],
)
async def test_usage_and_input_errors_exit_2_before_any_request(
    env: tuple[Emulator, Answers], tmp_path: Path, argv: list[str]
) -> None:
    emu, _ = env
    bad = tmp_path / "ids.txt"
    bad.write_text(f"{emu.tunnel_ids[0]}\n../../etc\n")
    values = {
        "account": emu.account_id,
        "tunnel": emu.tunnel_ids[0],
        "journal": str(tmp_path / "j.jsonl"),
        "bad": str(bad),
    }
    result = await magicwan(*(arg.format(**values) for arg in argv))

    assert result.code == 2
    assert "error:" in result.err
    assert "Traceback" not in result.err
    assert emu.state.requests.total == 0


@pytest.mark.asyncio
async def test_base_url_flag_wins_over_the_environment(
    env: tuple[Emulator, Answers], monkeypatch: pytest.MonkeyPatch
) -> None:
    emu, _ = env
    monkeypatch.setenv("CLOUDFLARE_BASE_URL", "http://127.0.0.1:9/client/v4")
    result = await magicwan("psk", "rotate", "--all", "--dry-run", "--base-url", emu.base_url)
    assert result.code == 0, result.err
    unreachable = await magicwan("psk", "rotate", "--all", "--dry-run", "--max-retries", "0")
    assert unreachable.code == 3
    assert "hint: Cloudflare could not be reached" in unreachable.err


@pytest.mark.asyncio
async def test_missing_credentials_exit_2_and_wrong_ones_exit_3(
    env: tuple[Emulator, Answers], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu, _ = env
    journal = tmp_path / "j.jsonl"
    monkeypatch.delenv("CLOUDFLARE_API_TOKEN")
    missing = await magicwan("psk", "rotate", "--all", "--journal", str(journal))
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "wrong")
    wrong = await magicwan("psk", "rotate", "--all", "--journal", str(tmp_path / "k"))

    assert missing.code == 2
    assert "no credentials: set CLOUDFLARE_API_TOKEN" in missing.err
    assert not journal.exists()
    assert wrong.code == 3
    assert "cannot list the IPsec tunnels" in wrong.err
    assert "hint: Cloudflare did not accept the credentials" in wrong.err
    assert emu.state.total_generations() == 0


@pytest.mark.asyncio
async def test_email_and_key_credentials_work(
    env: tuple[Emulator, Answers], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu, _ = env
    monkeypatch.delenv("CLOUDFLARE_API_TOKEN")
    monkeypatch.setenv("CLOUDFLARE_EMAIL", emu.api_email)
    monkeypatch.setenv("CLOUDFLARE_API_KEY", emu.api_key)
    result = await magicwan(
        "psk", "rotate", emu.account_id, emu.tunnel_ids[0], "--journal", str(tmp_path / "j")
    )
    assert result.code == 0, result.err
    assert emu.api_key not in result.out + result.err


@pytest.mark.asyncio
async def test_the_account_comes_from_the_argument_or_the_environment(
    env: tuple[Emulator, Answers], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu, _ = env
    monkeypatch.delenv("CLOUDFLARE_ACCOUNT_ID")
    missing = await magicwan("psk", "rotate", "--all", "--journal", str(tmp_path / "j"))
    assert missing.code == 2
    assert "which account? give ACCOUNT or set CLOUDFLARE_ACCOUNT_ID" in missing.err

    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", "../x")
    bad = await magicwan("psk", "rotate", "--all", "--journal", str(tmp_path / "j"))
    assert bad.code == 2
    assert "CLOUDFLARE_ACCOUNT_ID may hold only" in bad.err
    given = await magicwan(
        "psk", "rotate", emu.account_id, emu.tunnel_ids[1], "--journal", str(tmp_path / "j2")
    )
    assert given.code == 0, given.err  # ACCOUNT given wins over the environment
    assert emu.state.requests.total == 2  # the list and the one generate


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
    assert journalled(journal, emu.account_id) == {t: current(emu, t) for t in emu.tunnel_ids}


@pytest.mark.asyncio
async def test_an_interrupted_generate_says_the_tunnel_may_hold_a_new_psk(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    emu.set_faults(Faults(latency=5.0, latency_probability=1.0))
    journal = tmp_path / "j.jsonl"
    err = io.StringIO()
    argv = ["psk", "generate", emu.tunnel_ids[0], "--journal", str(journal)]
    task = asyncio.create_task(cli.amain(argv, stdout=io.StringIO(), stderr=err))
    while not journal.exists() or '"intent"' not in journal.read_text():
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert f"interrupted: tunnel {emu.tunnel_ids[0]} may now hold a new PSK" in err.getvalue()
    emu.set_faults(Faults())


@pytest.mark.asyncio
async def test_resume_of_a_journal_that_holds_none_of_the_tunnels_rotates_them_all(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    journal = str(tmp_path / "new.jsonl")
    result = await magicwan("psk", "rotate", "--all", "--journal", journal, "--resume")
    assert result.code == 0, result.err
    assert "nothing to resume" in result.err
    assert summary(result.err)["rotated"] == str(TUNNELS)
    assert journalled(Path(journal), emu.account_id) == {t: current(emu, t) for t in emu.tunnel_ids}


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


# -- --validate-only through a gateway that drops the query; generate's doubt --------------------


@web.middleware
async def _drop_the_query(request: web.Request, handler: Any) -> web.StreamResponse:
    """A gateway that drops the query string: ?validate_only=true never reaches the server."""
    response: web.StreamResponse = await handler(
        request.clone(rel_url=request.rel_url.with_query(None))
    )
    return response


@asynccontextmanager
async def gateway(monkeypatch: pytest.MonkeyPatch, *middlewares: Any) -> AsyncIterator[Emulator]:
    state = EmulatorState(tunnels=3, seed=11, rate_limit=None)
    async with run(state=state, middlewares=list(middlewares), shutdown_timeout=2.0) as emu:
        for name, value in emu.env().items():
            monkeypatch.setenv(name, value)
        yield emu


@pytest.mark.asyncio
async def test_set_validate_only_journals_the_psk_sent_before_sending(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    tunnel = emu.tunnel_ids[0]
    journal = tmp_path / "j.jsonl"
    result = await magicwan("psk", "set", tunnel, "--validate-only", "--journal", str(journal))

    assert result.code == 0, result.err
    assert emu.state.tunnel(emu.account_id, tunnel).generation == 0  # nothing changed
    [intent] = events(journal)
    assert (intent["event"], intent["method"]) == ("intent", "set")
    assert "kept in the journal" in result.err
    assert result.out == ""
    assert str(intent["psk"]) not in result.err  # kept, never printed unasked
    hidden = await magicwan("psk", "set", tunnel, "--validate-only", "--json")
    assert "psk" not in json_lines(hidden.out)[0]
    assert "kept nowhere" in hidden.err


@pytest.mark.asyncio
async def test_set_validate_only_applied_anyway_leaves_a_psk_resume_understands(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    journal = tmp_path / "j.jsonl"
    async with gateway(monkeypatch, _drop_the_query) as emu:
        tunnel = emu.tunnel_ids[0]
        result = await magicwan(
            "psk", "set", tunnel, "--validate-only", "--journal", str(journal), "--show-psk"
        )
        live = current(emu, tunnel)
        assert result.code == 0, result.err
        assert result.out == f"{live}\n"
        [record] = read_journal(journal).values()
        assert record.pending_psk == live
        assert record.in_flight
        # --resume with --method set resends the same PSK: the journal then records it.
        resumed = await magicwan(
            "psk", "rotate", emu.account_id, tunnel, "--method", "set",
            "--journal", str(journal), "--resume",
        )  # fmt: skip
        assert resumed.code == 0, resumed.err
        assert current(emu, tunnel) == live
        assert journalled(journal, emu.account_id) == {tunnel: live}


@pytest.mark.asyncio
async def test_rotate_set_validate_only_journals_the_psks_sent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    journal = tmp_path / "j.jsonl"
    async with gateway(monkeypatch, _drop_the_query) as emu:
        result = await magicwan(
            "psk",
            "rotate",
            "--all",
            "--method",
            "set",
            "--validate-only",
            "--journal",
            str(journal),
        )
        live = {t: current(emu, t) for t in emu.tunnel_ids}
    assert result.code == 0, result.err
    assert all(live.values())  # the server applied them all
    pending = {t: r.pending_psk for (_, t), r in read_journal(journal).items()}
    assert pending == live
    assert f"journal: {journal} (mode 0600) keeps the PSKs sent" in result.err
    assert not any(psk in result.err + result.out for psk in live.values() if psk)


@pytest.mark.asyncio
async def test_rotate_generate_validate_only_opens_no_journal(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    journal = tmp_path / "j.jsonl"
    result = await magicwan("psk", "rotate", "--all", "--validate-only", "--journal", str(journal))
    assert result.code == 0, result.err
    assert not journal.exists()


@pytest.mark.asyncio
async def test_generate_validate_only_answered_with_a_psk_journals_it_and_exits_4(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    journal = tmp_path / "j.jsonl"
    async with gateway(monkeypatch, _drop_the_query) as emu:
        tunnel = emu.tunnel_ids[0]
        result = await magicwan(
            "psk", "generate", tunnel, "--validate-only", "--journal", str(journal), "--json"
        )
        live = current(emu, tunnel)
        shown = await magicwan("psk", "generate", tunnel, "--validate-only", "--show-psk")
        again = current(emu, tunnel)
    assert result.code == 4
    assert journalled(journal, emu.account_id) == {tunnel: live}
    [line] = json_lines(result.out)
    assert (line["state"], line["ok"]) == ("unrecorded", False)
    assert "psk" not in line
    assert live is not None
    assert live not in result.err
    assert "generated a NEW PSK anyway" in result.err
    assert shown.code == 4
    assert shown.out == f"{again}\n"


def _late_first_generate(emu_state: EmulatorState, delay: float) -> Any:
    generates = 0

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        nonlocal generates
        if request.path.endswith("/psk_generate"):
            generates += 1
            late = generates == 1
            emu_state.set_faults(
                Faults(late_store=1.0, late_store_delay=delay) if late else Faults()
            )
        response: web.StreamResponse = await handler(request)
        return response

    return middleware


@pytest.mark.asyncio
async def test_generate_whose_late_store_lands_within_the_settle_window_generates_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The first answer is lost, the retry returns B, and the first request stores A late
    # (1.6 s): the read-back after the settle window (3 s) sees a newer stamp and
    # generates again: the journal ends with the PSK the tunnel holds.
    journal = tmp_path / "j.jsonl"
    state = EmulatorState(tunnels=1, seed=12, rate_limit=None)
    async with run(
        state=state, middlewares=[_late_first_generate(state, 1.6)], shutdown_timeout=2.0
    ) as emu:
        for name, value in emu.env().items():
            monkeypatch.setenv(name, value)
        tunnel = emu.tunnel_ids[0]
        result = await magicwan(
            "psk", "generate", tunnel, "--journal", str(journal), "--timeout", "0.3",
            "--settle-window", "3", "--json",
        )  # fmt: skip
        live = current(emu, tunnel)
    assert result.code == 0, result.err
    assert "a retry left doubt" in result.err
    assert "generating again" in result.err
    assert journalled(journal, emu.account_id) == {tunnel: live}
    [line] = json_lines(result.out)
    # Generated again once the window had passed: a certain answer nothing can supersede.
    assert line["verified"] is False
    assert [e["event"] for e in events(journal)] == ["intent", "rotated", "intent", "rotated"]
    assert live is not None
    assert live not in result.err + result.out


_THEIRS = "server-chosen-psk-0123456789abcd"


@web.middleware
async def _answer_another_psk(request: web.Request, handler: Any) -> web.StreamResponse:
    """A server that says it applied a PSK other than the one sent."""
    response: web.StreamResponse = await handler(request)
    if not request.path.endswith("/ipsec_tunnels/psk") or not isinstance(response, web.Response):
        return response
    assert response.body is not None
    data = json.loads(bytes(response.body))  # type: ignore[arg-type]
    for item in data["result"]["successfully_applied_psks"].values():
        item["psk"] = _THEIRS
    return web.json_response(data, status=response.status)


@pytest.mark.asyncio
async def test_set_applied_with_another_psk_journals_it_and_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    journal = tmp_path / "j.jsonl"
    async with gateway(monkeypatch, _answer_another_psk) as emu:
        tunnel = emu.tunnel_ids[0]
        result = await magicwan("psk", "set", tunnel, "--journal", str(journal))
    assert result.code == 1, result.err
    assert "other than the one sent" in result.err
    assert _THEIRS not in result.err + result.out
    [record] = read_journal(journal).values()
    assert record.psk == _THEIRS  # Cloudflare's word, kept
    assert record.uncertain  # a rotate --resume reads it back before trusting it
