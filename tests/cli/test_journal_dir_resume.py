"""``psk rotate --journal-dir DIR --resume``: the same command line every time. It checks the
directory like a fresh run, and resumes only a journal a cut left unfinished."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.support.cli import cli_emulator, magicwan

pytestmark = pytest.mark.asyncio


def _pusher(tmp_path: Path, *, fail: bool) -> str:
    router = tmp_path / "router"
    script = tmp_path / ("down.py" if fail else "up.py")
    lines = ["import pathlib, sys", "psk = sys.stdin.readline().strip()"]
    lines.append("sys.exit(1)" if fail else f"pathlib.Path({str(router)!r}).write_text(psk)")
    script.write_text("\n".join(lines) + "\n")
    return f"{sys.executable} {script}"


async def _leave_undelivered(tmp_path: Path, journals: Path) -> None:
    result = await magicwan(
        "psk",
        "rotate",
        "--all",
        "--journal-dir",
        str(journals),
        "--resume",
        "-q",
        "--deliver-exec",
        _pusher(tmp_path, fail=True),
    )
    assert result.code != 0
    assert len(list(journals.glob("*.jsonl"))) == 1


@pytest.mark.parametrize("change", ["world-writable", "other-owner"])
async def test_resume_in_journal_dir_checks_the_directory_like_a_fresh_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, change: str
) -> None:
    # README: an existing DIR is "refused if other users can write to it (/tmp included)
    # or if it belongs to another user but root". A --resume run that picks the newest
    # unfinished journal of DIR checks that too: otherwise it would trust and deliver from
    # a journal others planted (rotate-999999-... with a chosen PSK "undelivered").
    if change == "other-owner" and os.geteuid() != 0:
        pytest.skip("needs root to chown")
    journals = tmp_path / "journals"
    async with cli_emulator(monkeypatch, tunnels=1) as (_emu, _):
        await _leave_undelivered(tmp_path, journals)
        # Sanity: a fresh run is refused once the directory is changed.
        if change == "world-writable":
            journals.chmod(0o777)
        else:
            os.chown(journals, 65534, 65534)
        fresh = await magicwan(
            "psk",
            "rotate",
            "--all",
            "--journal-dir",
            str(journals),
            "-q",
            "--deliver-exec",
            _pusher(tmp_path, fail=False),
        )
        assert fresh.code == 2, fresh.err
        resumed = await magicwan(
            "psk",
            "rotate",
            "--all",
            "--journal-dir",
            str(journals),
            "--resume",
            "-q",
            "--deliver-exec",
            _pusher(tmp_path, fail=False),
        )
    assert resumed.code == 2, (
        f"--resume used a journal of a directory a fresh run refuses ({change}): exit "
        f"{resumed.code}, router now {'set' if (tmp_path / 'router').exists() else 'unset'}"
    )


async def test_journal_dir_resume_every_time_keeps_rotating_despite_one_failing_tunnel(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # `magicwan psk rotate --all --journal-dir DIR --resume` is offered as "the same
    # command line every time": it resumes "the newest journal in DIR that a cut left
    # unfinished, else a fresh one". One tunnel fails for good (here: 403 on its
    # psk_generate, a token scoped too narrowly; or any permanent 4xx). No run was cut, so
    # the next run does not resume that journal (which would skip every other tunnel as
    # "already rotated", week after week): it rotates the other tunnels again.
    journals = tmp_path / "journals"
    weekly = ["psk", "rotate", "--all", "--journal-dir", str(journals), "--resume", "-q"]
    async with cli_emulator(monkeypatch, tunnels=3) as (emu, answers):
        stuck = emu.tunnel_ids[0]
        answers.add("psk_generate", status=403, code=10000, message="denied", tunnel=stuck)
        first = await magicwan(*weekly)
        assert first.code == 1, first.err
        before = {t: emu.state.current_psk(emu.account_id, t) for t in emu.tunnel_ids[1:]}
        second = await magicwan(*weekly)  # a week later
        after = {t: emu.state.current_psk(emu.account_id, t) for t in emu.tunnel_ids[1:]}
    unrotated = sorted(t for t in before if after[t] == before[t])
    assert not unrotated, (
        f"the next scheduled run (exit {second.code}) resumed the finished journal and "
        f"rotated none of {unrotated}: {second.err!r}"
    )


async def test_journal_dir_resume_continues_a_halted_run_and_starts_fresh_once_it_finished(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A run that halted (or was stopped) before every tunnel had its outcome left no request
    # open and nothing undelivered: only the journal's missing "finished" line says so. The
    # same command continues that journal; once a run finished, the next one is fresh.
    journals = tmp_path / "journals"
    daily = ["psk", "rotate", "--all", "--journal-dir", str(journals), "--resume", "-q"]
    halting = [*daily, "--concurrency", "1", "--halt-after", "1"]
    async with cli_emulator(monkeypatch, tunnels=3) as (emu, answers):
        answers.add("psk_generate", status=403, code=10000, message="denied")
        first = await magicwan(*halting)
        assert first.code == 3, first.err  # every tunnel attempted failed on access
        assert "halting" in first.err
        (journal,) = journals.glob("*.jsonl")
        answers.clear()

        second = await magicwan(*daily)
        assert second.code == 0, second.err
        assert list(journals.glob("*.jsonl")) == [journal]  # continued, not a fresh one
        generations = {t: emu.state.tunnel(emu.account_id, t).generation for t in emu.tunnel_ids}
        assert generations == dict.fromkeys(emu.tunnel_ids, 1), first.err + second.err

        third = await magicwan(*daily)
        assert third.code == 0, third.err
        assert len(list(journals.glob("*.jsonl"))) == 2  # that run finished: a fresh one
