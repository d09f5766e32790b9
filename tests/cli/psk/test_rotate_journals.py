"""``magicwan psk rotate`` and its journal: every PSK journalled, a reused journal refused,
--journal-dir's fresh private journal per run, and what --resume takes."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from magicwan.emulator import Emulator
from tests.support.cli import (
    TUNNELS,
    Answers,
    assert_no_psk,
    edge_psk,
    journalled,
    magicwan,
    summary,
)


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
    assert psks == {t: edge_psk(emu, t) for t in emu.tunnel_ids}
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
    assert journalled(files[-1], emu.account_id) == {t: edge_psk(emu, t) for t in emu.tunnel_ids}


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
    assert journalled(Path(journal), emu.account_id) == {
        t: edge_psk(emu, t) for t in emu.tunnel_ids
    }
