"""``magicwan psk rotate`` run unattended (issue 17): no journal litter from a refused run,
the dry run's cost estimate, the progress outlook and what Ctrl-C waits for."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from magicwan.emulator import Emulator
from tests.support.cli import Answers, cli_emulator, magicwan

TUNNELS = 6


@pytest_asyncio.fixture
async def env(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Emulator, Answers]]:
    async with cli_emulator(monkeypatch, tunnels=TUNNELS) as pair:
        yield pair


# -- a refused run leaves no journal ------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "selection",
    [
        pytest.param(["--name", "no-such-*"], id="no tunnel selected"),
        pytest.param(["--older-than", "90d"], id="none older"),
    ],
)
async def test_a_run_that_selects_nothing_leaves_no_journal(
    env: tuple[Emulator, Answers], tmp_path: Path, selection: list[str]
) -> None:
    if "--older-than" in selection:
        first = await magicwan("psk", "rotate", "--all", "--journal", str(tmp_path / "a"))
        assert first.code == 0, first.err
    directory = tmp_path / "journals"
    journal = tmp_path / "run.jsonl"

    in_dir = await magicwan("psk", "rotate", *selection, "--journal-dir", str(directory))
    in_file = await magicwan("psk", "rotate", *selection, "--journal", str(journal))

    assert in_dir.code == in_file.code
    assert in_dir.code in (0, 2), in_dir.err
    assert list(directory.iterdir()) == []  # the directory may be made; no journal in it
    assert not journal.exists()
    assert "journal:" not in in_dir.err + in_file.err


@pytest.mark.asyncio
async def test_a_refused_run_keeps_a_journal_it_did_not_create(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    journal = tmp_path / "run.jsonl"
    assert (await magicwan("psk", "rotate", "--all", "--journal", str(journal))).code == 0
    before = journal.read_bytes()

    reused = await magicwan("psk", "rotate", "--all", "--journal", str(journal))
    unselected = await magicwan("psk", "rotate", "--name", "x*", "--journal", str(journal))

    assert (reused.code, unselected.code) == (2, 2)
    assert journal.read_bytes() == before


@pytest.mark.asyncio
async def test_a_journal_that_cannot_be_used_is_still_refused_before_any_request(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    missing = tmp_path / "no-such-dir" / "run.jsonl"
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)

    no_dir = await magicwan("psk", "rotate", "--all", "--journal", str(missing))
    writable = await magicwan("psk", "rotate", "--all", "--journal-dir", str(shared))

    assert (no_dir.code, writable.code) == (2, 2)
    assert "cannot open journal" in no_dir.err
    assert "other users can write to" in writable.err
    assert emu.state.requests.total == 0
    assert list(shared.iterdir()) == []


@pytest.mark.asyncio
async def test_a_run_that_goes_ahead_still_makes_its_journal(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    directory = tmp_path / "journals"
    result = await magicwan("psk", "rotate", "--all", "--journal-dir", str(directory), "--json")
    assert result.code == 0, result.err
    (journal,) = directory.iterdir()
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert sum(line.get("event") == "rotated" for line in lines) == TUNNELS
