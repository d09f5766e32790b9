"""The ``magicwan`` command line, run in-process against the embedded emulator."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import attrs
import pytest
import pytest_asyncio

from magicwan import cli
from magicwan.emulator import Emulator, Faults, run
from magicwan.journal import read_journal

TUNNELS = 6


@attrs.frozen
class Result:
    code: int
    out: str
    err: str


async def magicwan(*argv: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    code = await cli.amain(list(argv), stdout=out, stderr=err)
    return Result(code, out.getvalue(), err.getvalue())


@pytest_asyncio.fixture
async def emu(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Emulator]:
    async with run(tunnels=TUNNELS, rate_limit=None) as emulator:
        monkeypatch.setenv("CLOUDFLARE_API_TOKEN", emulator.api_token)
        monkeypatch.setenv("CLOUDFLARE_BASE_URL", emulator.base_url)
        yield emulator


def journalled(path: Path, account_id: str) -> dict[str, str]:
    return {
        tunnel_id: record.psk
        for (account, tunnel_id), record in read_journal(path).items()
        if account == account_id and record.psk
    }


def summary(out: str) -> dict[str, str]:
    """The rows of the summary table: name -> value."""
    rows: dict[str, str] = {}
    lines = out.splitlines()
    start = lines.index("summary") + 1
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        name, _, value = line.strip().rpartition("  ")
        rows[name.strip()] = value.strip()
    return rows


def assert_no_psk(text: str, emu: Emulator) -> None:
    for tunnel_id in emu.tunnel_ids:
        for record in emu.state.history(emu.account_id, tunnel_id):
            assert record.psk not in text
    assert emu.api_token not in text


# -- psk generate -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_generate_with_journal_records_the_psk_and_prints_none(
    emu: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.jsonl"
    tunnel = emu.tunnel_ids[0]

    result = await magicwan("psk", "generate", emu.account_id, tunnel, "--journal", str(journal))

    assert result.code == 0, result.err
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    events = [json.loads(line) for line in journal.read_text().splitlines()][1:]  # header
    assert [e["event"] for e in events] == ["intent", "rotated"]
    assert events[1]["psk"] == emu.state.current_psk(emu.account_id, tunnel)
    assert events[1]["uncertain"] is False  # a later rotate verifies it only when True
    assert f"tunnel_id          {tunnel}" in result.out
    assert "last_generated_on  20" in result.out
    assert "--show-psk" in result.out
    assert_no_psk(result.out + result.err, emu)


@pytest.mark.asyncio
async def test_generate_without_journal_or_show_psk_is_refused_before_sending(
    emu: Emulator,
) -> None:
    result = await magicwan("psk", "generate", emu.account_id, emu.tunnel_ids[0])

    assert result.code == 2
    assert "--journal FILE" in result.err
    assert "--show-psk" in result.err
    assert emu.state.requests.total == 0


@pytest.mark.asyncio
async def test_generate_show_psk_prints_it(emu: Emulator) -> None:
    tunnel = emu.tunnel_ids[0]
    result = await magicwan("psk", "generate", emu.account_id, tunnel, "--show-psk")

    assert result.code == 0, result.err
    psk = emu.state.current_psk(emu.account_id, tunnel)
    assert psk is not None
    assert f"psk                {psk}" in result.out


@pytest.mark.asyncio
async def test_generate_validate_only_changes_nothing(emu: Emulator) -> None:
    tunnel = emu.tunnel_ids[0]
    result = await magicwan("psk", "generate", emu.account_id, tunnel, "--validate-only")

    assert result.code == 0, result.err
    assert "validated" in result.out
    assert emu.state.tunnel(emu.account_id, tunnel).generation == 0


@pytest.mark.asyncio
async def test_generate_unknown_tunnel_fails_with_1_and_journals_the_failure(
    emu: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "j.jsonl"
    result = await magicwan("psk", "generate", emu.account_id, "f" * 32, "--journal", str(journal))

    assert result.code == 1
    assert "NotFoundError: HTTP 404" in result.err
    assert "Traceback" not in result.err
    assert [json.loads(line)["event"] for line in journal.read_text().splitlines()][1:] == [
        "intent",
        "failed",
    ]


# -- psk rotate -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_rotate_all_journals_every_psk_and_a_rerun_skips_them(
    emu: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.jsonl"
    argv = ("psk", "rotate", emu.account_id, "--all", "--journal", str(journal))

    first = await magicwan(*argv)

    assert first.code == 0, first.err
    rows = summary(first.out)
    assert rows["tunnels requested"] == str(TUNNELS)
    assert rows["rotated"] == str(TUNNELS)
    assert rows["skipped (already in journal)"] == "0"
    assert rows["failed"] == "0"
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    psks = journalled(journal, emu.account_id)
    assert sorted(psks) == sorted(emu.tunnel_ids)
    for tunnel_id, psk in psks.items():
        assert emu.state.current_psk(emu.account_id, tunnel_id) == psk
    assert_no_psk(first.out + first.err, emu)

    generated = emu.state.requests.by_route["psk_generate"]
    again = await magicwan(*argv)

    assert again.code == 0, again.err
    rows = summary(again.out)
    assert rows["skipped (already in journal)"] == str(TUNNELS)
    assert rows["rotated"] == "0"
    assert emu.state.requests.by_route["psk_generate"] == generated


@pytest.mark.asyncio
async def test_rotate_ids_from_args_files_and_stdin(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = emu.tunnel_ids
    listing = tmp_path / "ids.txt"
    listing.write_text(f"# tunnels of site A\n{ids[1]}\n\n  {ids[2]}  # the spare\n{ids[0]}\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{ids[3]}\n"))
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
    )

    assert result.code == 0, result.err
    assert summary(result.out)["tunnels requested"] == "4"  # ids[0] twice: rotated once
    assert sorted(journalled(journal, emu.account_id)) == sorted(ids[:4])
    assert emu.state.tunnel(emu.account_id, ids[4]).generation == 0


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
        pytest.param(["--rate-limit", "fast", "psk", "rotate", "{account}", "--all"], id="rate"),
        pytest.param(["psk", "rotate", "{account}", "--all", "--concurrency", "0"], id="conc"),
    ],
)
async def test_usage_and_input_errors_exit_2_before_any_request(
    emu: Emulator, tmp_path: Path, argv: list[str]
) -> None:
    bad = tmp_path / "ids.txt"
    bad.write_text(f"{emu.tunnel_ids[0]}\n../../etc\n")
    values = {"account": emu.account_id, "journal": str(tmp_path / "j.jsonl"), "bad": str(bad)}

    result = await magicwan(*(arg.format(**values) for arg in argv))

    assert result.code == 2
    assert "error:" in result.err
    assert "Traceback" not in result.err
    assert emu.state.requests.total == 0


@pytest.mark.asyncio
async def test_from_file_errors_name_the_line(emu: Emulator, tmp_path: Path) -> None:
    bad = tmp_path / "ids.txt"
    bad.write_text(f"{emu.tunnel_ids[0]}\n../../etc\n")
    result = await magicwan(
        "psk", "rotate", emu.account_id, "--from-file", str(bad), "--journal", "j"
    )
    assert result.code == 2
    assert f"{bad}, line 2: tunnel id may hold only ASCII letters and digits" in result.err


@pytest.mark.asyncio
async def test_missing_credentials_exit_2_with_a_clear_message(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLOUDFLARE_API_TOKEN")
    journal = tmp_path / "j.jsonl"
    result = await magicwan("psk", "rotate", emu.account_id, "--all", "--journal", str(journal))

    assert result.code == 2
    assert "no credentials: set CLOUDFLARE_API_TOKEN" in result.err
    assert emu.state.requests.total == 0
    assert not journal.exists()


@pytest.mark.asyncio
async def test_account_comes_from_cloudflare_account_id_when_not_given(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = tmp_path / "j.jsonl"
    missing = await magicwan("psk", "rotate", "--all", "--journal", str(journal))
    assert missing.code == 2
    assert "which account? give ACCOUNT or set CLOUDFLARE_ACCOUNT_ID" in missing.err
    missing = await magicwan("psk", "generate", emu.tunnel_ids[0], "--show-psk")
    assert missing.code == 2
    assert "CLOUDFLARE_ACCOUNT_ID" in missing.err
    assert emu.state.requests.total == 0

    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", emu.account_id)
    rotated = await magicwan("psk", "rotate", "--all", "--journal", str(journal))
    assert rotated.code == 0, rotated.err
    assert journalled(journal, emu.account_id) == {
        t: emu.state.current_psk(emu.account_id, t) for t in emu.tunnel_ids
    }
    generated = await magicwan("psk", "generate", emu.tunnel_ids[0], "--journal", str(journal))
    assert generated.code == 0, generated.err
    assert emu.state.tunnel(emu.account_id, emu.tunnel_ids[0]).generation == 2

    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", "../x")
    bad = await magicwan("psk", "rotate", "--all", "--journal", str(journal))
    assert bad.code == 2
    assert "CLOUDFLARE_ACCOUNT_ID" in bad.err
    # ACCOUNT given wins over the environment.
    given = await magicwan(
        "psk", "rotate", emu.account_id, emu.tunnel_ids[1], "--journal", str(tmp_path / "j2")
    )
    assert given.code == 0, given.err


@pytest.mark.asyncio
async def test_email_and_key_credentials_work(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLOUDFLARE_API_TOKEN")
    monkeypatch.setenv("CLOUDFLARE_EMAIL", emu.api_email)
    monkeypatch.setenv("CLOUDFLARE_API_KEY", emu.api_key)
    journal = tmp_path / "j.jsonl"
    result = await magicwan(
        "psk", "rotate", emu.account_id, emu.tunnel_ids[0], "--journal", str(journal)
    )
    assert result.code == 0, result.err
    assert emu.api_key not in result.out + result.err


@pytest.mark.asyncio
async def test_a_failed_tunnel_exits_1_and_is_listed_while_the_others_rotate(
    emu: Emulator, tmp_path: Path
) -> None:
    unknown = "f" * 32
    journal = tmp_path / "j.jsonl"
    result = await magicwan(
        "psk", "rotate", emu.account_id, emu.tunnel_ids[0], unknown, "--journal", str(journal)
    )

    assert result.code == 1
    rows = summary(result.out)
    assert (rows["rotated"], rows["failed"]) == ("1", "1")
    assert "failed tunnels:" in result.out
    assert f"  {unknown}  NotFoundError: HTTP 404" in result.out
    assert f"failed   {unknown}  NotFoundError" in result.err
    assert "same journal to resume" in result.out
    assert emu.state.current_psk(emu.account_id, emu.tunnel_ids[0]) is not None


@pytest.mark.asyncio
async def test_rotate_show_psk_prints_tunnel_and_psk_lines(emu: Emulator, tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    result = await magicwan(
        "psk", "rotate", emu.account_id, "--all", "--journal", str(journal), "--show-psk"
    )

    assert result.code == 0, result.err
    for tunnel_id in emu.tunnel_ids:
        assert f"\n{tunnel_id} {emu.state.current_psk(emu.account_id, tunnel_id)}\n" in result.out
    assert_no_psk(result.err, emu)


@pytest.mark.asyncio
async def test_rotate_validate_only_needs_no_journal_and_changes_nothing(emu: Emulator) -> None:
    result = await magicwan("psk", "rotate", emu.account_id, "--all", "--validate-only")

    assert result.code == 0, result.err
    assert summary(result.out)["validated"] == str(TUNNELS)
    assert emu.state.total_generations() == 0


@pytest.mark.asyncio
async def test_plain_progress_lines_when_not_a_terminal(emu: Emulator, tmp_path: Path) -> None:
    result = await magicwan(
        "psk", "rotate", emu.account_id, "--all", "--journal", str(tmp_path / "j.jsonl")
    )

    assert result.code == 0
    lines = [line for line in result.err.splitlines() if line.startswith("ok ")]
    assert len(lines) == TUNNELS
    for line in lines:
        _, tunnel_id, stamp = line.split()
        assert tunnel_id in emu.tunnel_ids
        assert stamp.startswith("20")
        assert stamp.endswith("Z")
    assert "\r" not in result.err


@pytest.mark.asyncio
async def test_global_options_go_before_or_after_the_command(emu: Emulator, tmp_path: Path) -> None:
    before = await magicwan(
        "--progress",
        "off",
        "--rate-limit",
        "100/1",
        "-v",
        "psk",
        "rotate",
        emu.account_id,
        emu.tunnel_ids[0],
        "--journal",
        str(tmp_path / "a.jsonl"),
    )
    after = await magicwan(
        "psk",
        "rotate",
        emu.account_id,
        emu.tunnel_ids[1],
        "--journal",
        str(tmp_path / "b.jsonl"),
        "--progress",
        "off",
        "--verbose",
        "--rate-limit",
        "off",
    )

    for result in (before, after):
        assert result.code == 0, result.err
        assert "DEBUG magicwan: POST /accounts/" in result.err  # -v logs requests
        assert not any(line.startswith("ok ") for line in result.err.splitlines())
        assert_no_psk(result.out + result.err, emu)


@pytest.mark.asyncio
async def test_base_url_flag_wins_over_the_environment(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDFLARE_BASE_URL", "http://127.0.0.1:9/client/v4")
    result = await magicwan(
        "--base-url",
        emu.base_url,
        "psk",
        "rotate",
        emu.account_id,
        "--all",
        "--validate-only",
    )
    assert result.code == 0, result.err


@pytest.mark.asyncio
async def test_cancelling_prints_the_summary_so_far(emu: Emulator, tmp_path: Path) -> None:
    emu.set_faults(Faults(latency=0.5, latency_probability=1.0))
    out, err = io.StringIO(), io.StringIO()
    journal = tmp_path / "j.jsonl"
    argv = ["psk", "rotate", emu.account_id, "--all", "--journal", str(journal)]
    task = asyncio.create_task(cli.amain(argv, stdout=out, stderr=err))
    # every tunnel's request is in flight (its intent is journalled) when we cancel
    while not journal.exists() or journal.read_text().count('"intent"') < TUNNELS:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    rows = summary(out.getvalue())
    assert rows["not finished"] == str(TUNNELS)
    assert "interrupted: in-flight requests were cancelled." in out.getvalue()


@pytest.mark.asyncio
async def test_ctrl_c_exits_130_with_the_summary_and_a_rerun_resumes(
    emu: Emulator, tmp_path: Path
) -> None:
    emu.set_faults(Faults(latency=0.1, latency_probability=1.0))
    journal = tmp_path / "j.jsonl"
    argv = ["psk", "rotate", emu.account_id, "--all", "--journal", str(journal)]
    # As a terminal's Ctrl-C finds it: a shell (CI's, or nohup's) may start us with SIGINT
    # ignored, and Python keeps an ignored SIGINT ignored in its children.
    as_in_a_terminal = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv[0] = 'magicwan'; runpy.run_module('magicwan', run_name='__main__')"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        as_in_a_terminal,
        *argv,
        "--concurrency",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    while True:
        line = await asyncio.wait_for(proc.stderr.readline(), 10)
        assert line, "the rotation ended before a tunnel was rotated"
        if line.startswith(b"ok "):
            break
    proc.send_signal(signal.SIGINT)
    out, rest = await asyncio.wait_for(proc.communicate(), 10)

    assert proc.returncode == 130, rest.decode()
    rows = summary(out.decode())
    assert int(rows["rotated"]) >= 1
    assert int(rows["not finished"]) >= 1
    assert b"Traceback" not in rest

    emu.set_faults(Faults())
    rerun = await magicwan(*argv)
    assert rerun.code == 0, rerun.err
    assert int(summary(rerun.out)["skipped (already in journal)"]) == int(rows["rotated"])
    psks = journalled(journal, emu.account_id)
    assert all(psks[t] == emu.state.current_psk(emu.account_id, t) for t in emu.tunnel_ids)


# -- demo and entry points --------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("faults", [False, True])
async def test_demo_rotates_and_verifies_every_tunnel(tmp_path: Path, faults: bool) -> None:
    journal = tmp_path / "demo.jsonl"
    argv = ["demo", "--tunnels", "50", "--latency", "0", "--journal", str(journal)]
    result = await magicwan(*argv, *(["--faults"] if faults else []))

    assert result.code == 0, result.out + result.err
    assert "verified: 50/50 journalled PSKs match the emulator" in result.out
    assert summary(result.out)["rotated"] == "50"
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    if faults:
        assert "injected fault" in result.out


def test_main_returns_the_status_without_a_running_loop() -> None:
    assert cli.main(["psk", "generate", "a" * 32, "b" * 32]) == 2  # refused, nothing sent
    assert cli.main(["--version"]) == 0


def test_python_m_magicwan_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "magicwan", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "psk" in done.stdout
    assert "demo" in done.stdout
    assert "CLOUDFLARE_API_TOKEN" in done.stdout


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    """Every command path of ``parser`` (``("psk",)``, ``("psk", "rotate")``, ...).

    argparse offers no public way to list subcommands: this walks its ``_actions``.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name)
                yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(cli.build_parser()))


def test_the_command_list_is_not_empty() -> None:
    assert {("psk",), ("psk", "generate"), ("psk", "rotate"), ("demo",)} <= set(COMMANDS)


@pytest.mark.asyncio
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
async def test_every_command_has_help_and_is_listed_by_its_parent(command: tuple[str, ...]) -> None:
    own = await magicwan(*command, "--help")
    assert own.code == 0, own.err
    assert own.out.startswith(f"usage: magicwan {' '.join(command)}")
    parent = await magicwan(*command[:-1], "--help")
    assert parent.code == 0, parent.err
    assert f"    {command[-1]} " in parent.out or f"    {command[-1]}\n" in parent.out


@pytest.mark.asyncio
async def test_generate_records_an_uncertain_outcome_in_the_journal(
    emu: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.jsonl"
    tunnel = emu.tunnel_ids[0]
    emu.set_faults(Faults(reset_after_store=1.0))
    first = asyncio.ensure_future(
        magicwan("psk", "generate", emu.account_id, tunnel, "--journal", str(journal))
    )
    while emu.state.requests.dropped == 0:
        await asyncio.sleep(0.01)
    emu.set_faults(Faults.none())  # the retry gets through: the first PSK went unseen
    result = await first
    assert result.code == 0, result.err
    rotated = [json.loads(x) for x in journal.read_text().splitlines() if '"rotated"' in x]
    assert rotated[-1]["uncertain"] is True
    assert rotated[-1]["psk"] == emu.state.current_psk(emu.account_id, tunnel)
