"""``magicwan psk rotate`` run unattended (issue 17): no journal litter from a refused run,
the dry run's cost estimate, the progress outlook and what Ctrl-C waits for."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from magicwan.cli.psk.selection import estimate
from magicwan.emulator import Emulator
from magicwan.ratelimit import RateLimiter
from magicwan.rotation import DEFAULT_BATCH_SIZE
from tests.support.cli import Answers, cli_emulator, json_lines, magicwan

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


# -- the dry run's estimate -----------------------------------------------------------------


def test_the_estimate_at_cloudflares_budget_matches_the_limiters_pace() -> None:
    cost = estimate(3000, RateLimiter(), DEFAULT_BATCH_SIZE)

    # 1,196 requests go at once (the burst less the headroom), the rest every 0.25 s.
    assert cost.text().startswith(
        "3,000 tunnels: generate ~451 s and 3,000 requests; set 30 requests, no wait for "
        "the rate limit (batches of 100); of the 1,200-per-300-s API budget"
    )
    assert cost.to_json()["generate"] == {"requests": 3000, "seconds": 451.2}
    assert cost.to_json()["set"] == {"requests": 30, "seconds": 0.0, "batch_size": 100}
    off = estimate(3000, RateLimiter(None), 1000)
    assert off.to_json()["generate"] == {"requests": 3000, "seconds": None}
    assert off.to_json()["set"] == {"requests": 3, "seconds": None, "batch_size": 1000}
    assert "no client-side rate limit" in off.text()


@pytest.mark.asyncio
async def test_the_dry_run_says_what_either_method_would_take_and_spend(
    env: tuple[Emulator, Answers],
) -> None:
    emu, _ = env
    argv = ["psk", "rotate", "--all", "--dry-run", "--rate-limit", "4/10"]

    text = await magicwan(*argv)
    batched = await magicwan(*argv, "--method", "set", "--batch-size", "4", "--json")

    assert (text.code, batched.code) == (0, 0), text.err + batched.err
    # The list, then one request every 2.5 s once the burst (4 less 1 of headroom) is spent.
    assert (
        "estimate: 6 tunnels: generate ~10 s and 6 requests; set 1 request, no wait for the "
        "rate limit (batches of 100)"
    ) in text.err
    assert "paced at 4 per 10 s" in text.err
    final = json_lines(batched.out)[-1]
    assert final["estimate"] == {
        "tunnels": TUNNELS,
        "budget": {"requests": 1200, "seconds": 300.0},
        "rate_limit": {"requests": 4, "seconds": 10.0},
        "generate": {"requests": TUNNELS, "seconds": 10.0},
        "set": {"requests": 2, "seconds": 0.0, "batch_size": 4},
    }
    assert emu.state.requests.by_route["list_ipsec_tunnels"] == 2  # and nothing else
    assert emu.state.requests.total == 2
