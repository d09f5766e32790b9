"""``magicwan psk rotate`` run unattended: no journal litter from a refused run,
the dry run's cost estimate, the progress outlook and what Ctrl-C waits for."""

from __future__ import annotations

import asyncio
import io
import json
import shlex
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_asyncio

from magicwan import cli
from magicwan.cli.console import Progress
from magicwan.cli.psk.selection import estimate
from magicwan.cli.runner import outlook
from magicwan.emulator import Emulator, Faults
from magicwan.journal import read_journal
from magicwan.ratelimit import RateLimiter
from magicwan.rotation import DEFAULT_BATCH_SIZE
from tests.support.cli import REPO, Answers, cli_emulator, journalled, json_lines, magicwan
from tests.support.clock import FakeClock

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


# -- the progress ETA and its waits -----------------------------------------------------------


@attrs.define
class Watched:
    """What the progress reads of a rotation."""

    total: int
    waiting: dict[str, float] = attrs.Factory(dict)


def bar(watched: Watched, clock: FakeClock, limiter: RateLimiter | None, unit: int = 1) -> Progress:
    progress = Progress(watched.total, stream=io.StringIO(), mode="off", clock=clock, width=200)
    progress.outlook = lambda: outlook(
        watched, done=progress.done, unit=unit, limiter=limiter, now=clock()
    )
    return progress


def test_the_eta_follows_the_limiters_pace_not_the_bursts_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    watched = Watched(total=3000)
    progress = bar(watched, clock, limiter)
    progress.start()
    for _ in range(1 + 1195):  # the list, then the burst: every request at once
        assert limiter.reserve() == 0
    for _ in range(1195):
        progress.add(True)
    clock.advance(10.0)

    # 1,195 done in 10 s would say "ETA 15s"; 1,805 requests to go at 4/s take ~7.5 min,
    # less what the 10 s gave back (40 requests).
    assert progress.rate == pytest.approx(119.5)
    assert progress.eta == pytest.approx((1805 - 40) * 0.25)
    assert "ETA 7m21s" in progress.render()
    batched = bar(Watched(total=3000), clock, limiter, unit=100)  # set: 30 requests to go
    assert batched.eta is None  # within what the limiter allows now: no wait to add


def test_a_settle_window_is_shown_as_a_wait_and_counts_down() -> None:
    clock = FakeClock()
    watched = Watched(total=6, waiting={"a": 60.0, "b": 60.0, "c": 45.0})
    progress = bar(watched, clock, RateLimiter(clock=clock))
    progress.start()
    for _ in range(3):
        progress.add(True)
    clock.advance(1.0)

    assert progress.render().endswith("3.0/s  ETA 1m00s  waiting 1m00s for 3 read-backs")
    clock.advance(30.0)
    watched.waiting = {"a": 30.0, "b": 30.0}
    # the rate (3 in 31 s) says 31 s for the last 3: the longer of the two
    assert progress.render().endswith("ETA 31s  waiting 30s for 2 read-backs")
    watched.waiting = {}
    for _ in range(3):
        progress.add(True)
    assert "waiting" not in progress.render()


def test_a_429_cooldown_is_shown_as_a_wait() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    limiter.pause(90.0)
    progress = bar(Watched(total=10), clock, limiter)
    progress.start()
    # the cooldown, then the 10 requests at the limiter's pace (it resumes without a burst)
    assert progress.eta == pytest.approx(90.0 + 9 * 0.25)
    assert progress.render().endswith("ETA 1m32s  waiting 1m30s (rate limited)")


def test_without_a_limit_or_a_wait_the_eta_is_the_rate() -> None:
    clock = FakeClock()
    progress = bar(Watched(total=10), clock, None)
    progress.start()
    assert progress.eta is None  # nothing known yet: "ETA -"
    progress.add(True)
    clock.advance(2.0)
    assert progress.eta == pytest.approx(18.0)


def test_the_bar_ticks_while_nothing_else_draws_it() -> None:
    clock = FakeClock()
    stream = io.StringIO()
    watched = Watched(total=2, waiting={"a": 5.0, "b": 5.0})
    progress = Progress(2, stream=stream, mode="bar", clock=clock, width=200)
    progress.outlook = lambda: outlook(watched, done=0, unit=1, limiter=None, now=clock())
    progress.start()
    clock.advance(1.0)
    watched.waiting = {"a": 4.0, "b": 4.0}
    progress.tick()
    progress.tick()  # not due again: not drawn
    frames = stream.getvalue().split("\r\x1b[K")[1:]
    assert [frame.rsplit("  ", 1)[-1] for frame in frames] == [
        "waiting 5s for 2 read-backs",
        "waiting 4s for 2 read-backs",
    ]


# -- Ctrl-C says what it waits for ------------------------------------------------------------


async def interrupt_when(
    argv: list[str], ready: Any, says: str
) -> tuple[asyncio.Task[int], io.StringIO]:
    """Start ``magicwan ARGV``, cancel it (a first Ctrl-C) once ``ready()``, and return
    once stderr ``says`` so: the run is then still waiting."""
    err = io.StringIO()
    task = asyncio.create_task(cli.amain(argv, stdout=io.StringIO(), stderr=err))
    while not ready():
        assert not task.done(), err.getvalue()
        await asyncio.sleep(0.01)
    task.cancel()
    while says not in err.getvalue():
        assert not task.done(), err.getvalue()
        await asyncio.sleep(0.01)
    return task, err


@pytest.mark.asyncio
async def test_a_first_ctrl_c_says_what_it_waits_for_and_a_second_stops_waiting(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    emu.set_faults(Faults(latency=5.0, latency_probability=1.0))
    journal = tmp_path / "j.jsonl"
    argv = ["psk", "rotate", "--all", "--journal", str(journal), "--drain-timeout", "120"]

    def sent() -> bool:
        return journal.exists() and journal.read_text().count('"intent"') == TUNNELS

    task, err = await interrupt_when(argv, sent, "interrupted: no new tunnel is started")

    assert not task.done()  # said at once, while it waits
    assert (
        "interrupted: no new tunnel is started; waiting at most 2m00s (--drain-timeout) for "
        f"{TUNNELS} tunnel(s): {TUNNELS} with a request in flight, so that what they hold is "
        "journalled. A second interrupt (Ctrl-C or SIGTERM) stops waiting"
    ) in err.getvalue()
    task.cancel()  # the second Ctrl-C
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "interrupted: no new tunnel was started; stopped waiting" in err.getvalue()
    emu.set_faults(Faults())


@pytest.mark.asyncio
async def test_ctrl_c_counts_the_deliveries_it_waits_for(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    _, _ = env
    journal = tmp_path / "j.jsonl"
    started = tmp_path / "started"
    started.mkdir()
    program = (
        "import os, pathlib, sys, time; sys.stdin.read(); "
        f"pathlib.Path({str(started)!r}, os.environ['MAGICWAN_TUNNEL_ID']).touch(); "
        "time.sleep(60)"
    )
    deliver = f"{sys.executable} -c {shlex.quote(program)}"
    argv = [
        "psk", "rotate", "--all", "--journal", str(journal), "--deliver-exec", deliver,
        "--deliver-timeout", "120", "--drain-timeout", "90",
    ]  # fmt: skip

    task, err = await interrupt_when(
        argv, lambda: any(started.iterdir()), "interrupted: no new tunnel is started"
    )

    # The rollout window lets one tunnel go first: its delivery is what the stop waits for.
    assert (
        "waiting at most 1m30s (--drain-timeout) for 1 tunnel(s): 1 being delivered"
        in err.getvalue()
    )
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "stopped waiting" in err.getvalue()


# -- a scheduled run with a PSK-age policy ----------------------------------------------------


@pytest.mark.asyncio
async def test_a_run_with_nothing_old_enough_still_writes_its_metrics(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    metrics = tmp_path / "magicwan.prom"
    argv = ["psk", "rotate", "--older-than", "90d", "--journal-dir", str(tmp_path / "j")]
    assert (await magicwan(*argv)).code == 0  # every tunnel never rotated: all of them

    quiet_day = await magicwan(*argv, "--metrics-file", str(metrics))

    assert quiet_day.code == 0, quiet_day.err
    assert "nothing to rotate" in quiet_day.err
    text = metrics.read_text()
    # A daily job that finds nothing to do succeeded: "no success in 91 days" stays quiet.
    assert "magicwan_rotation_last_success_timestamp_seconds " in text
    assert 'magicwan_rotation_tunnels{outcome="rotated"} 0.0' in text


@pytest.mark.asyncio
async def test_resume_with_older_than_finishes_the_tunnels_the_journal_left_open(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    journal = tmp_path / "j.jsonl"
    argv = ["psk", "rotate", "--older-than", "90d", "--journal", str(journal)]
    broken = await magicwan(*argv, "--deliver-exec", "false", "--halt-after", "1")
    assert broken.code == 5, broken.err  # the first tunnel rotated, not delivered: halted

    resumed = await magicwan(*argv, "--resume", "--deliver-exec", "true")

    # Its PSK is new (not older than 90d), but the journal's run left it undelivered.
    assert resumed.code == 0, resumed.err
    assert "delivered" in resumed.err
    records = read_journal(journal)
    assert all(record.delivered for record in records.values()), records
    assert len(records) == TUNNELS


@pytest.mark.asyncio
async def test_the_same_scheduled_command_delivers_what_the_last_run_left_undelivered(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    directory = tmp_path / "journals"
    argv = ["psk", "rotate", "--older-than", "90d", "--journal-dir", str(directory), "--resume"]
    broken = await magicwan(*argv, "--deliver-exec", "false", "--halt-after", "1")
    assert broken.code == 5, broken.err

    fixed = await magicwan(*argv, "--deliver-exec", "true")  # the router is back

    assert fixed.code == 0, fixed.err
    (journal,) = directory.iterdir()  # the same journal, finished
    records = read_journal(journal)
    assert len(records) == TUNNELS
    assert all(record.delivered for record in records.values())


# -- the scheduled-rotation recipes (docs/scheduling.md) ----------------------------------------


def recipe_command_lines() -> list[list[str]]:
    """Every ``magicwan psk rotate --older-than ...`` command line of the scheduled-rotation
    recipes in docs/scheduling.md (cron, systemd, Kubernetes), as argv after ``magicwan``."""
    text = (REPO / "docs" / "scheduling.md").read_text(encoding="utf-8").replace("\\\n", " ")
    found = []
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        at = line.find("magicwan psk rotate --older-than")
        if not fenced or at < 0 or line[at - 1 : at] in ("'", '"'):
            continue  # prose, or a command quoted in a hint
        command = line[at:].split(" >> ")[0].rstrip("\\ ")
        found.append(shlex.split(command)[1:])
    return found


def test_the_recipes_use_set_resume_and_metrics_and_parse() -> None:
    lines = recipe_command_lines()
    assert len(lines) >= 4  # the command, cron, systemd, Kubernetes
    parser = cli.build_parser()
    for argv in lines:
        args = parser.parse_args(argv)
        assert args.method == "set"
        assert args.resume
        assert args.journal_dir
        assert args.metrics_file
        assert args.older_than is not None


@pytest.mark.asyncio
async def test_the_recipe_command_line_runs_daily(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    argv = recipe_command_lines()[0]
    swap = {
        "/var/lib/magicwan/journals": str(tmp_path / "journals"),
        "/var/lib/node_exporter/textfile_collector/magicwan.prom": str(tmp_path / "m.prom"),
    }
    argv = [swap.get(arg, arg) for arg in argv]

    first = await magicwan(*argv)
    second = await magicwan(*argv)

    assert (first.code, second.code) == (0, 0), first.err + second.err
    assert (first.err, second.err) == ("", "")  # -q: nothing unless something went wrong
    assert len(json_lines(first.out)) == TUNNELS + 1
    assert len(list((tmp_path / "journals").iterdir())) == 1  # the quiet day made none
    assert "magicwan_rotation_last_success_timestamp_seconds " in (tmp_path / "m.prom").read_text()
    (journal,) = (tmp_path / "journals").iterdir()
    assert journalled(journal, emu.account_id) == {
        t: emu.state.current_psk(emu.account_id, t) for t in emu.tunnel_ids
    }


@pytest.mark.asyncio
async def test_a_policy_run_with_nothing_old_enough_still_writes_its_metrics(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A weekly policy job: `magicwan psk rotate --older-than 90d --journal-dir DIR
    # --metrics-file rotation.prom`. Most weeks no PSK is old enough: the command says
    # "nothing to rotate" and exits 0. It still writes its metrics (last run, last success,
    # zero counts): otherwise the README's alert `time() -
    # magicwan_rotation_last_success_timestamp_seconds > 91 * 86400` would fire on a
    # healthy job.
    metrics = tmp_path / "rotation.prom"
    policy = [
        "psk",
        "rotate",
        "--older-than",
        "30d",
        "--journal-dir",
        str(tmp_path / "journals"),
        "--metrics-file",
        str(metrics),
        "-q",
    ]
    async with cli_emulator(monkeypatch, tunnels=2) as (_, _answers):
        assert (await magicwan(*policy)).code == 0  # every PSK was never generated: old
        assert metrics.exists()
        metrics.unlink()  # as if this were a fresh machine, or to see the next run's file
        quiet = await magicwan(*policy)  # the next week: every PSK is fresh
    assert quiet.code == 0
    assert metrics.exists(), f"a successful run wrote no metrics: {quiet.err!r}"
    assert "magicwan_rotation_last_success_timestamp_seconds" in metrics.read_text()
