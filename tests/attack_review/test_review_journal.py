"""Outside review: journals that other users can reach."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.cli import cli_emulator, journalled, magicwan

pytestmark = pytest.mark.asyncio

#: Another user (``nobody`` on most systems).
OTHER_UID = 65534


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to chown")
async def test_a_journal_file_owned_by_another_user_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # `magicwan psk rotate --all --journal shared/rotation.jsonl` where another user made
    # (or owns) that file first: an empty file of theirs is taken as a fresh journal. The
    # journal opens it with O_CREAT (no O_EXCL), sees it is empty, fchmods it 0600, and
    # writes every new PSK into it. 0600 does not help: the file is still THEIRS (they
    # read it, or chmod it back, whenever they like; they may also hold an fd opened
    # before). `--journal-dir` refuses a directory that belongs to another user, and
    # `journal export` refuses to tighten a file that is not ours: `--journal FILE` (and
    # `rotate(journal=...)`) checks nothing of the kind. Expected: a journal file owned
    # by another user is refused (exit 2) before anything is sent.
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    path = shared / "rotation.jsonl"
    path.touch(mode=0o644)
    os.chown(path, OTHER_UID, OTHER_UID)
    async with cli_emulator(monkeypatch, tunnels=3) as (emu, _):
        result = await magicwan("psk", "rotate", "--all", "--journal", str(path), "-q")
        held = journalled(path, emu.account_id)
    assert os.stat(path).st_uid == OTHER_UID
    assert not held, (
        f"exit {result.code}: {len(held)} new PSK(s) were written into a journal file that "
        f"belongs to uid {OTHER_UID}, who can read it"
    )
    assert result.code == 2
