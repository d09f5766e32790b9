"""What scripts read: every ``--json`` line carries ``ts``, ``run_id`` and ``account_id``;
a command that ends before its run says why in one JSON object; ``--log-format json``."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from magicwan.emulator import Emulator
from tests.support.cli import Answers, cli_emulator, json_lines, magicwan

RFC3339_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")


@pytest_asyncio.fixture
async def env(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Emulator, Answers]]:
    async with cli_emulator(monkeypatch, tunnels=3, gre_tunnels=1) as pair:
        yield pair


@pytest.mark.asyncio
async def test_every_json_line_has_ts_run_id_and_account_id(
    env: tuple[Emulator, Answers],
) -> None:
    emu, _ = env
    first = await magicwan("tunnels", "list", "--json")
    second = await magicwan("tunnels", "list", emu.account_id, "--json")
    dry = await magicwan("psk", "rotate", "--all", "--dry-run", "--json")

    lines = json_lines(first.out)
    assert len(lines) == 4
    for line in [*lines, *json_lines(second.out), *json_lines(dry.out)]:
        assert RFC3339_UTC.fullmatch(line["ts"]), line
        assert line["account_id"] == emu.account_id
        assert line["run_id"]
    assert len({line["run_id"] for line in lines}) == 1  # one per run
    assert json_lines(second.out)[0]["run_id"] != lines[0]["run_id"]


RUN_ID = re.compile(r"\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{6}")


@pytest.mark.asyncio
async def test_a_rotation_has_one_run_id_for_every_line_and_names_its_journal_apart(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    # run_id is the process's, made at its start: the tunnel list's request, every later
    # log line and every --json line carry the same one. The journal is a field of its own
    # (one journal holds every run that resumes it).
    logged = ["-vv", "--log-format", "json", "--json"]
    directory = await magicwan(
        "psk", "rotate", "--all", "--journal-dir", str(tmp_path / "jd"), *logged
    )
    assert directory.code == 0, directory.err
    lines = json_lines(directory.out)
    logs = [json.loads(line) for line in directory.err.splitlines() if line.startswith("{")]
    assert any(log.get("event") == "request" for log in logs), directory.err
    assert {line["run_id"] for line in [*lines, *logs]} == {lines[0]["run_id"]}
    assert RUN_ID.fullmatch(lines[0]["run_id"])
    (journal,) = (tmp_path / "jd").glob("*.jsonl")
    assert {line["journal"] for line in lines} == {str(journal)}
    assert logs[-1]["journal"] == str(journal)

    again = tmp_path / "j.jsonl"
    runs = [
        await magicwan("psk", "rotate", "--all", "--journal", str(again), "--resume", "--json")
        for _ in range(2)
    ]
    assert [run.code for run in runs] == [0, 0], [run.err for run in runs]
    first, second = (json_lines(run.out) for run in runs)
    assert len({line["run_id"] for line in first}) == len({line["run_id"] for line in second}) == 1
    assert first[0]["run_id"] != second[0]["run_id"]  # two runs, one journal
    assert {line["journal"] for line in [*first, *second]} == {str(again)}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("argv", "status", "words"),
    [
        (("tunnels", "list", "--json", "no/such"), 2, "ACCOUNT may hold only"),
        (("psk", "rotate", "--all", "--json", "--journal-dir", "/proc/x"), 2, "journal"),
    ],
    ids=["bad-account", "bad-journal-dir"],
)
async def test_an_error_before_the_run_is_one_json_object_under_json(
    env: tuple[Emulator, Answers], argv: tuple[str, ...], status: int, words: str
) -> None:
    result = await magicwan(*argv)

    assert result.code == status
    [line] = json_lines(result.out)
    assert line["event"] == "error"
    assert line["exit_status"] == status
    assert words in line["message"]
    assert isinstance(line["hints"], list)
    assert RFC3339_UTC.fullmatch(line["ts"])
    assert "magicwan: error:" in result.err  # people still read it on stderr


@pytest.mark.asyncio
async def test_an_access_error_is_one_json_object_with_status_3(
    env: tuple[Emulator, Answers], monkeypatch: pytest.MonkeyPatch
) -> None:
    emu, _ = env
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "wrong")
    result = await magicwan("tunnels", "list", "--json")

    assert result.code == 3
    [line] = json_lines(result.out)
    assert (line["event"], line["exit_status"], line["account_id"]) == (
        "error",
        3,
        emu.account_id,
    )
    assert any("credentials" in h for h in line["hints"])
    assert "wrong" not in result.out


@pytest.mark.asyncio
async def test_log_format_json_request_lines_with_duration_and_ids(
    env: tuple[Emulator, Answers],
) -> None:
    emu, _ = env
    tunnel = emu.tunnel_ids[0]
    result = await magicwan("psk", "generate", tunnel, "--show-psk", "-vv", "--log-format", "json")

    assert result.code == 0, result.err
    logs = [json.loads(line) for line in result.err.splitlines() if line.startswith("{")]
    requests = [log for log in logs if log.get("event") == "request"]
    assert requests, result.err
    for log in requests:
        assert RFC3339_UTC.fullmatch(log["ts"])
        assert log["level"] == "debug"
        assert log["account_id"] == emu.account_id
        assert log["run_id"]
        assert re.search(r" -> 200 in \d+\.\d{3}s ", log["message"]), log
    assert any(log.get("tunnel_id") == tunnel for log in requests)
    psk = emu.state.current_psk(emu.account_id, tunnel)
    assert psk is not None
    assert psk not in result.err
    assert emu.api_token not in result.err


@pytest.mark.asyncio
async def test_a_command_line_argparse_refuses_is_one_json_object_under_json(
    env: tuple[Emulator, Answers],
) -> None:
    result = await magicwan("tunnels", "list", "--json", "--older-than", "soon")
    without = await magicwan("tunnels", "list", "--older-than", "soon")

    assert result.code == 2
    [line] = json_lines(result.out)
    assert line["event"] == "error"
    assert line["exit_status"] == 2
    assert line["message"].startswith("argument --older-than: DURATION must be")
    assert "usage: magicwan tunnels list" in result.err
    assert without.code == 2
    assert without.out == ""
