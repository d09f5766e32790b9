"""``journal export DIR`` and ``journal prune DIR --keep N``: a --journal-dir's journals,
read together; pruning never loses a tunnel's newest PSK."""

from __future__ import annotations

import fcntl
import io
import os
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, tzinfo
from pathlib import Path

import pytest
import pytest_asyncio

from magicwan import cli
from magicwan.emulator import Emulator
from magicwan.journal import Intent, Journal, Rotated, read_journal
from tests.support.cli import Answers, Result, cli_emulator, json_lines, magicwan
from tests.support.constants import ACCOUNT, TUNNEL

SET_PSK = "pendingSETpsk0123456789abcdefghi"


@pytest_asyncio.fixture
async def env(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Emulator, Answers]]:
    async with cli_emulator(monkeypatch, tunnels=4) as pair:
        yield pair


async def export(*argv: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    code = await cli.amain(["journal", "export", *argv], stdout=out, stderr=err)
    return Result(code, out.getvalue(), err.getvalue())


def live(emu: Emulator) -> dict[str, str | None]:
    return {t: emu.state.current_psk(emu.account_id, t) for t in emu.tunnel_ids}


async def four_runs(emu: Emulator, answers: Answers, directory: Path) -> list[Path]:
    """Oldest first: A rotates all four tunnels, B tunnels 0-1, C fails tunnel 0 (no PSK
    in it), D is a journal that holds nothing but its header."""
    rotate = ("psk", "rotate", emu.account_id)
    a = await magicwan(*rotate, "--all", "--journal-dir", str(directory))
    b = await magicwan(*rotate, *emu.tunnel_ids[:2], "--journal-dir", str(directory))
    answers.add("psk_generate", status=404, code=1002, message="gone", tunnel=emu.tunnel_ids[0])
    c = await magicwan(*rotate, emu.tunnel_ids[0], "--journal-dir", str(directory))
    answers.clear()
    assert (a.code, b.code, c.code) == (0, 0, 1), a.err + b.err + c.err
    journals = sorted(directory.iterdir())
    assert len(journals) == 3
    empty = directory / "rotate-99990101T000000.000000Z.jsonl"  # sorts last by name too
    journal = Journal(empty)
    journal.open()
    await journal.aclose()
    return [*journals, empty]


@pytest.mark.asyncio
async def test_export_dir_gives_each_tunnels_newest_psk_across_the_journals(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, answers = env
    directory = tmp_path / "journals"
    await four_runs(emu, answers, directory)
    (directory / "notes.jsonl").write_text("my notes\n")  # not a journal: skipped, untouched

    result = await export(str(directory))

    assert result.code == 0, result.err
    rows = json_lines(result.out)
    assert {row["tunnel_id"]: row["psk"] for row in rows} == live(emu)
    assert len(rows) == 4
    assert "notes.jsonl skipped" in result.err
    assert "exported 4 tunnel(s) from 4 journal(s)" in result.err
    assert (directory / "notes.jsonl").read_text() == "my notes\n"
    env_lines = await export(str(directory), "--format", "env")
    assert sorted(env_lines.out.splitlines()) == sorted(
        f"MAGICWAN_PSK_{t}={psk}" for t, psk in live(emu).items()
    )


@pytest.mark.asyncio
async def test_export_dir_shows_a_newer_pending_set_psk_beside_the_confirmed_one(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, answers = env
    directory = tmp_path / "journals"
    await four_runs(emu, answers, directory)
    newer = directory / "rotate-99991231T000000.000000Z.jsonl"
    journal = Journal(newer)
    journal.open()
    journal.append(
        Intent(account_id=emu.account_id, tunnel_id=emu.tunnel_ids[3], method="set", psk=SET_PSK)
    )
    await journal.aclose()

    result = await export(str(directory))

    [row] = [row for row in json_lines(result.out) if row["tunnel_id"] == emu.tunnel_ids[3]]
    assert row["pending_psk"] == SET_PSK
    assert row["psk"] == live(emu)[emu.tunnel_ids[3]]  # from journal A, still the live one


@pytest.mark.asyncio
async def test_prune_keeps_the_newest_and_every_journal_holding_a_newest_psk(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, answers = env
    directory = tmp_path / "journals"
    a, b, c, d = await four_runs(emu, answers, directory)
    before = live(emu)

    dry = await magicwan("journal", "prune", str(directory), "--keep", "1", "--dry-run")
    assert dry.code == 0, dry.err
    assert sorted(directory.iterdir()) == [a, b, c, d]
    assert f"would remove: {c}" in dry.err

    result = await magicwan("journal", "prune", str(directory), "--keep", "1", "--json")

    assert result.code == 0, result.err
    # D is the newest (kept by --keep 1, though empty); C holds no PSK; B holds tunnels
    # 0-1's newest PSKs; A holds tunnels 2-3's.
    assert sorted(directory.iterdir()) == [a, b, d]
    actions = {Path(line["path"]).name: line["action"] for line in json_lines(result.out)}
    assert actions == {a.name: "kept", b.name: "kept", c.name: "removed", d.name: "kept"}
    exported = json_lines((await export(str(directory))).out)
    assert {row["tunnel_id"]: row["psk"] for row in exported} == before

    again = await magicwan("journal", "prune", str(directory), "--keep", "0")
    assert again.code == 0, again.err
    assert sorted(directory.iterdir()) == [a, b]  # the empty one goes; A and B never
    assert {
        row["tunnel_id"]: row["psk"] for row in json_lines((await export(str(directory))).out)
    } == before


@pytest.mark.asyncio
async def test_prune_never_removes_a_journal_a_rotation_holds(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, answers = env
    directory = tmp_path / "journals"
    a, b, c, _ = await four_runs(emu, answers, directory)
    fd = os.open(c, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = await magicwan("journal", "prune", str(directory), "--keep", "0")
    finally:
        os.close(fd)

    assert result.code == 0, result.err
    assert sorted(directory.iterdir()) == [a, b, c]
    assert f"kept: {c} (a rotation holds it (locked))" in result.err


@pytest.mark.asyncio
async def test_prune_needs_a_directory_and_keep(tmp_path: Path) -> None:
    missing = await magicwan("journal", "prune", str(tmp_path / "nope"), "--keep", "3")
    no_keep = await magicwan("journal", "prune", str(tmp_path))
    negative = await magicwan("journal", "prune", str(tmp_path), "--keep", "-1")

    assert missing.code == 2
    assert "no such journal directory" in missing.err
    assert no_keep.code == 2
    assert "--keep" in no_keep.err
    assert negative.code == 2


@pytest.mark.asyncio
async def test_prune_keeps_a_journal_whose_request_was_left_open(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    # A run cut while tunnel 1's generate was in flight: that tunnel may hold a PSK nobody
    # recorded, and only --resume with this journal reads it back.
    emu, answers = env
    directory = tmp_path / "journals"
    a, b, _, _ = await four_runs(emu, answers, directory)
    cut = directory / "rotate-00000101T000000.000000Z.jsonl"  # sorts first by name
    journal = Journal(cut)
    journal.open()
    journal.append(Intent(account_id=emu.account_id, tunnel_id=emu.tunnel_ids[1]))
    await journal.aclose()

    result = await magicwan("journal", "prune", str(directory), "--keep", "0")

    assert result.code == 0, result.err
    assert sorted(directory.iterdir()) == sorted([cut, a, b])
    assert "a request for 1 tunnel(s) was left open in it" in result.err


@pytest.mark.asyncio
@pytest.mark.usefixtures("env")
async def test_prune_keeps_the_latest_run_while_it_did_not_finish(tmp_path: Path) -> None:
    # The latest run was stopped before it rotated anything: its journal holds no PSK and
    # no open request, but --journal-dir DIR --resume continues it (and would start a fresh
    # journal, rotating again what an older unfinished run did, if it were gone).
    directory = tmp_path / "journals"
    done = await magicwan("psk", "rotate", "--all", "--journal-dir", str(directory))
    assert done.code == 0, done.err
    (finished,) = directory.iterdir()
    stopped = directory / "rotate-000002-20991231T000000.000000Z.jsonl"
    journal = Journal(stopped)
    journal.open()
    await journal.aclose()

    kept = await magicwan("journal", "prune", str(directory), "--keep", "0")

    assert kept.code == 0, kept.err
    assert sorted(directory.iterdir()) == [finished, stopped]
    assert f"kept: {stopped} (the latest run, which did not finish" in kept.err
    resumed = await magicwan("psk", "rotate", "--all", "--journal-dir", str(directory), "--resume")
    assert resumed.code == 0, resumed.err
    assert sorted(directory.iterdir()) == [finished, stopped]  # it continued that one
    pruned = await magicwan("journal", "prune", str(directory), "--keep", "0")
    assert pruned.code == 0, pruned.err
    assert sorted(directory.iterdir()) == [stopped]  # finished, and it holds the newest PSKs


async def set_journal(path: Path, tunnel: str, psk: str) -> None:
    """A journal of one `set` run: its PSK is live, with no Cloudflare stamp."""
    journal = Journal(path)
    journal.open()
    journal.append(Rotated(account_id=ACCOUNT, tunnel_id=tunnel, psk=psk, method="set"))
    await journal.aclose()


@pytest.mark.asyncio
async def test_without_cloudflare_stamps_the_run_order_decides_not_the_clock(
    tmp_path: Path,
) -> None:
    # Run 2 is written first, so every clock stamp (name, header, lines) says run 1 is
    # the newer: the clock stepped back between them. The run numbers say run 2 is.
    run_one = tmp_path / "rotate-000001-20261205T000000.000000Z.jsonl"
    run_two = tmp_path / "rotate-000002-20261204T000000.000000Z.jsonl"
    await set_journal(run_two, TUNNEL, SET_PSK)
    await set_journal(run_one, TUNNEL, "olderSETpsk0123456789abcdefghijk")

    exported = json_lines((await export(str(tmp_path))).out)
    result = await magicwan("journal", "prune", str(tmp_path), "--keep", "0")

    assert [row["psk"] for row in exported] == [SET_PSK]
    assert result.code == 0, result.err
    assert sorted(tmp_path.iterdir()) == [run_two]


@pytest.mark.asyncio
async def test_prune_keeps_both_journals_when_nothing_orders_them(tmp_path: Path) -> None:
    # No Cloudflare stamps, no run numbers (journals of an older magicwan): the clock
    # alone cannot be trusted to say which PSK the tunnel holds, so neither is removed.
    first = tmp_path / "rotate-20261205T000000.000000Z.jsonl"
    second = tmp_path / "rotate-20261204T000000.000000Z.jsonl"
    await set_journal(first, TUNNEL, SET_PSK)
    await set_journal(second, TUNNEL, "otherSETpsk0123456789abcdefghijk")

    result = await magicwan("journal", "prune", str(tmp_path), "--keep", "0")

    assert result.code == 0, result.err
    assert sorted(tmp_path.iterdir()) == sorted([first, second])
    assert "holds the newest PSK of 1 tunnel(s)" in result.err


class _Yesterday(datetime):
    """``datetime`` whose ``now`` is a day behind: a machine booted before NTP fixed its
    clock (no RTC, a VM restored from a snapshot)."""

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> _Yesterday:
        real = datetime.now(tz)
        return cls.fromtimestamp((real - timedelta(days=1)).timestamp(), tz)


@pytest.mark.asyncio
async def test_prune_after_a_clock_step_back_keeps_the_journal_with_the_live_psk(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Two scheduled runs on one --journal-dir. The second runs while the machine's clock
    # is a day behind (the README's timer has Persistent=true: it fires at boot, before
    # time sync). Its journal's header and lines are stamped "yesterday", so `journal
    # prune --keep 1` must not take it for the older journal: it holds the only copy of
    # the PSKs the edge holds now (Cloudflare's own `last_generated_on` stamps, also
    # journalled, say so). Prune never removes the journal holding the PSK the edge holds.
    journals = tmp_path / "journals"
    rotate = ["psk", "rotate", "--all", "--journal-dir", str(journals), "-q"]
    async with cli_emulator(monkeypatch, tunnels=2) as (emu, _):
        assert (await magicwan(*rotate)).code == 0
        with monkeypatch.context() as clock:
            clock.setattr("magicwan.journal.datetime", _Yesterday)
            clock.setattr("magicwan.cli.common.datetime", _Yesterday)
            assert (await magicwan(*rotate)).code == 0
        pruned = await magicwan("journal", "prune", str(journals), "--keep", "1")
        live = {t: emu.state.current_psk(emu.account_id, t) for t in emu.tunnel_ids}
    kept: set[str | None] = set()
    for path in journals.glob("*.jsonl"):
        kept |= {record.psk for record in read_journal(path).values()}
    lost = sorted(t for t, psk in live.items() if psk not in kept)
    assert not lost, f"prune removed the only copy of the live PSK of {lost}: {pruned.err!r}"
