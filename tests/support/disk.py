"""The journal's disk, observed and broken on purpose.

``DurableBytes`` watches the journal's fsyncs (``magicwan.journal.os.fsync``) and knows how much
of a journal file the last completed fsync covered: a test compares what was handed over with
what was on disk. ``fail_journal_writes`` makes chosen journal appends hit a real ``OSError``
(``ENOSPC`` by default) at ``os.write``, the way a full disk fails them.
"""

from __future__ import annotations

import errno as errnos
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from magicwan.journal import Journal, JournalEvent

__all__ = ["DurableBytes", "fail_journal_writes"]


class DurableBytes:
    """How many bytes of the journal the last completed fsync covered (regular files only:
    the directory's fsync on creation is no offset into the file)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bytes = 0
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            info = os.fstat(fd)
            real_fsync(fd)
            if stat.S_ISREG(info.st_mode):
                self.bytes = max(self.bytes, info.st_size)

        monkeypatch.setattr("magicwan.journal.os.fsync", fsync)

    def text(self, path: Path) -> str:
        """The part of the journal at ``path`` that is known to be on disk."""
        return path.read_bytes()[: self.bytes].decode()


def fail_journal_writes(
    monkeypatch: pytest.MonkeyPatch,
    when: Callable[[JournalEvent], bool],
    errno: int = errnos.ENOSPC,
) -> None:
    """Make ``Journal.append`` of the events ``when`` picks fail with ``OSError(errno)``."""
    original = Journal.append
    real_write = os.write

    def append(self: Journal, event: JournalEvent) -> int:
        if not when(event):
            return original(self, event)

        def full(fd: int, data: bytes) -> int:
            raise OSError(errno, os.strerror(errno))

        monkeypatch.setattr("magicwan.journal.os.write", full)
        try:
            return original(self, event)
        finally:
            monkeypatch.setattr("magicwan.journal.os.write", real_write)

    monkeypatch.setattr(Journal, "append", append)
