"""``magicwan.cli.common``: the pieces every command shares (here: ``--journal-dir``)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from magicwan.cli.common import UsageError, fresh_journal, run_number


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("permissive_umask")
def test_fresh_journal_creates_a_missing_directory_0700(tmp_path: Path) -> None:
    directory = tmp_path / "state" / "journals"

    journal = Path(fresh_journal(str(directory)))

    assert _mode(directory) == 0o700
    assert journal.parent == directory
    assert _mode(journal) == 0o600


@pytest.mark.parametrize("mode", [0o700, 0o750, 0o755, 0o711], ids=oct)
def test_fresh_journal_uses_an_existing_directory_as_it_is(tmp_path: Path, mode: int) -> None:
    # Journals are 0600 files: a directory others may list is theirs to choose, and
    # changing its mode behind the operator's back (a shared state dir losing group
    # access) is not ours to do.
    directory = tmp_path / "journals"
    directory.mkdir()
    directory.chmod(mode)

    journal = Path(fresh_journal(str(directory)))

    assert _mode(directory) == mode
    assert _mode(journal) == 0o600


@pytest.mark.parametrize("mode", [0o1777, 0o777, 0o775, 0o770, 0o1770, 0o703], ids=oct)
def test_fresh_journal_refuses_a_directory_others_can_write_and_leaves_it_alone(
    tmp_path: Path, mode: int
) -> None:
    # /tmp is 1777: chmod'ing it to 0700 (as root: every other user locked out of /tmp)
    # is what the old code did. Others who can write there can replace or remove names.
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(mode)

    with pytest.raises(UsageError) as caught:
        fresh_journal(str(directory))

    assert _mode(directory) == mode
    assert list(directory.iterdir()) == []
    message = caught.value.message
    assert f"{mode:04o}" in message
    assert "other users can write" in message
    assert "journals hold PSKs" in message
    assert "mkdir -m 700" in " ".join(caught.value.hints)


def test_fresh_journal_refuses_a_file(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("")

    with pytest.raises(UsageError, match="not a directory"):
        fresh_journal(str(path))


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a directory to another user")
def test_fresh_journal_refuses_a_directory_of_another_user(tmp_path: Path) -> None:
    # Its owner may remove or replace what is in it, journals included.
    directory = tmp_path / "theirs"
    directory.mkdir(mode=0o755)
    os.chown(directory, 4242, 4242)

    with pytest.raises(UsageError, match=r"belongs to another user \(uid 4242\)"):
        fresh_journal(str(directory))
    assert list(directory.iterdir()) == []


def test_fresh_journal_numbers_the_runs_of_a_directory(tmp_path: Path) -> None:
    # The number, not the time in the name, orders the runs: the clock may step back.
    (tmp_path / "rotate-000041-20991231T000000.000000Z.jsonl").touch()
    (tmp_path / "rotate-20991231T000000.000000Z.jsonl").touch()  # an older magicwan's
    first = Path(fresh_journal(str(tmp_path)))
    second = Path(fresh_journal(str(tmp_path)))
    assert (run_number(first), run_number(second)) == (42, 43)
    assert first.name.startswith("rotate-000042-")
    assert run_number(tmp_path / "rotate-20991231T000000.000000Z.jsonl") is None
