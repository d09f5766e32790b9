"""The journal's storage seam: every file operation goes through a ``Storage``, and a storage
that fails (full disk, I/O error, file too large, no descriptor left, a torn write, a failing
fsync, a crash) breaks the journal the way the operating system would."""

from __future__ import annotations

import asyncio
import errno
from datetime import UTC, datetime
from pathlib import Path

import pytest

from magicwan import JournalError, PSKGenerateResult, PSKMetadata
from magicwan.journal import (
    Intent,
    Journal,
    OSStorage,
    Storage,
    iter_events,
    read_journal,
    rotated,
)
from tests.support.constants import ACCOUNT, PSK
from tests.support.storage import Crashed, MemoryStorage

A = "a" * 32
B = "b" * 32
PATH = Path("/sim/journal.jsonl")


def _result(tunnel: str = A) -> PSKGenerateResult:
    stamp = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    return PSKGenerateResult(
        ipsec_tunnel_id=tunnel, psk=PSK, psk_metadata=PSKMetadata(last_generated_on=stamp)
    )


def _opened(storage: MemoryStorage) -> Journal:
    journal = Journal(PATH, storage=storage)
    journal.open()
    return journal


def test_the_default_storage_is_the_operating_systems(tmp_path: Path) -> None:
    storage: Storage = OSStorage()  # the protocol, checked by mypy
    journal = Journal(tmp_path / "j")
    assert isinstance(journal.storage, OSStorage)
    assert isinstance(storage, OSStorage)


@pytest.mark.asyncio
async def test_a_journal_in_memory_reads_back_what_it_wrote() -> None:
    storage = MemoryStorage()
    journal = _opened(storage)
    journal.append(Intent(account_id=ACCOUNT, tunnel_id=A))
    seq = journal.append(rotated(ACCOUNT, _result(), attempts=1, uncertain=False))
    await journal.sync(seq)
    assert storage.durable(PATH) == storage.content(PATH)
    journal.append(Intent(account_id=ACCOUNT, tunnel_id=B))
    assert storage.durable(PATH) != storage.content(PATH)  # written, not yet durable
    await journal.aclose()  # syncs what is left
    assert storage.durable(PATH) == storage.content(PATH)
    assert [e.kind for e in iter_events(PATH, storage=storage)] == ["intent", "rotated", "intent"]
    assert read_journal(PATH, storage=storage)[(ACCOUNT, A)].psk == PSK


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO, errno.EFBIG])
def test_a_failed_write_breaks_the_journal(code: int) -> None:
    storage = MemoryStorage()
    journal = _opened(storage)
    storage.fail("write", code)
    with pytest.raises(JournalError, match="cannot write journal") as caught:
        journal.append(Intent(account_id=ACCOUNT, tunnel_id=A))
    assert journal.broken is caught.value
    before = storage.operations
    with pytest.raises(JournalError):  # refused without touching the file
        journal.append(Intent(account_id=ACCOUNT, tunnel_id=B))
    assert storage.operations == before
    journal.close_now()


def test_no_descriptor_left_refuses_to_open() -> None:
    storage = MemoryStorage()
    storage.fail("open_append", errno.EMFILE)
    with pytest.raises(JournalError, match=r"cannot open journal .*Too many open files"):
        Journal(PATH, storage=storage).open()


def test_a_second_writer_is_refused_by_the_lock() -> None:
    storage = MemoryStorage()
    first = _opened(storage)
    with pytest.raises(JournalError, match="locked"):
        Journal(PATH, storage=storage).open()
    first.close_now()
    Journal(PATH, storage=storage).open()  # the lock went with the first writer's close


@pytest.mark.asyncio
async def test_a_torn_write_leaves_a_line_the_reader_skips_and_the_next_writer_closes() -> None:
    storage = MemoryStorage()
    journal = _opened(storage)
    journal.append(Intent(account_id=ACCOUNT, tunnel_id=A))
    storage.fail("write", errno.ENOSPC, torn=10)
    with pytest.raises(JournalError):
        journal.append(Intent(account_id=ACCOUNT, tunnel_id=B))
    journal.close_now()
    assert not storage.content(PATH).endswith(b"\n")
    assert [e.tunnel_id for e in iter_events(PATH, storage=storage)] == [A]
    again = _opened(storage)  # a clean line first, then the new events
    again.append(Intent(account_id=ACCOUNT, tunnel_id=B))
    await again.aclose()
    assert [e.tunnel_id for e in iter_events(PATH, storage=storage)] == [A, B]


@pytest.mark.asyncio
async def test_a_failed_fsync_breaks_the_journal() -> None:
    storage = MemoryStorage()
    journal = _opened(storage)
    storage.fail("fsync", errno.EIO)
    journal.append(Intent(account_id=ACCOUNT, tunnel_id=A))
    with pytest.raises(JournalError, match="cannot sync journal"):
        await journal.sync()
    assert journal.broken is not None
    journal.close_now()


@pytest.mark.asyncio
async def test_a_crash_keeps_what_was_fsynced_and_may_tear_the_rest() -> None:
    storage = MemoryStorage()
    journal = _opened(storage)
    seq = journal.append(rotated(ACCOUNT, _result(), attempts=1, uncertain=False))
    await journal.sync(seq)
    storage.crash_after = storage.operations + 1  # the next write lands, then the process dies
    with pytest.raises(Crashed):
        journal.append(rotated(ACCOUNT, _result(B), attempts=1, uncertain=False))
    with pytest.raises(Crashed):  # nothing happens after a crash
        storage.close(3)
    kept = storage.after_crash("process")
    assert {t for _, t in read_journal(PATH, storage=kept)} == {A, B}
    lost = storage.after_crash("power")
    assert {t for _, t in read_journal(PATH, storage=lost)} == {A}
    torn = storage.after_crash("torn")
    assert not torn.content(PATH).endswith(b"\n")
    assert {t for _, t in read_journal(PATH, storage=torn)} == {A}


@pytest.mark.asyncio
async def test_an_fsync_that_suspends_cannot_serve_the_opening() -> None:
    class Slow(MemoryStorage):
        async def fsync(self, fd: int) -> None:
            await asyncio.sleep(1)

    with pytest.raises(RuntimeError, match="must not suspend"):
        Journal(PATH, storage=Slow()).open()
