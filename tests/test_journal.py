"""``magicwan.journal`` on its own: the file's safety, its events, and how a journal is read back.

Rotations that write journals against the emulator (reruns, crashes, modes during a run) are
the scenario suites' business: ``tests/integration/`` and ``tests/hostile/``.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from magicwan import JournalError, PSKGenerateResult, PSKMetadata, read_journal
from magicwan.errors import NotFoundError
from magicwan.journal import (
    JOURNAL_VERSION,
    Finished,
    Intent,
    Journal,
    JournalRecord,
    Verified,
    failure,
    iter_events,
    rotated,
    run_finished,
)
from tests.support.constants import ACCOUNT, PSK
from tests.support.disk import DurableBytes

A = "c4a7362d577a6c3019a474fd6f485823"
B = "0123456789abcdef0123456789abcdef"
STAMP = datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=UTC)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _result(tunnel_id: str = A, psk: str = PSK) -> PSKGenerateResult:
    return PSKGenerateResult(
        ipsec_tunnel_id=tunnel_id, psk=psk, psk_metadata=PSKMetadata(last_generated_on=STAMP)
    )


def _write(path: Path, *events: object, tail: bytes = b"") -> None:
    path.write_bytes(b"".join(json.dumps(e).encode() + b"\n" for e in events) + tail)


HEADER = {"event": "journal", "version": JOURNAL_VERSION}


# --- the file ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_journal_is_0600_from_the_moment_it_exists(
    tmp_path: Path, permissive_umask: None
) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    journal.open()
    try:
        assert _mode(path) == 0o600  # created 0600, not chmod-ed afterwards
        journal.append(Intent(tunnel_id="a"))
        assert _mode(path) == 0o600
        await journal.sync()
    finally:
        await journal.aclose()
    assert _mode(path) == 0o600


@pytest.mark.asyncio
async def test_a_journal_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(JournalError):
        Journal(tmp_path).open()  # a directory
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(JournalError):
        Journal(fifo).open()


@pytest.mark.asyncio
async def test_a_journal_in_use_by_another_writer_is_refused(tmp_path: Path) -> None:
    # Two rotations on one journal would corrupt it silently. The lock is taken on open and
    # kept until aclose(), and conflicts across open files, processes and all.
    path = tmp_path / "j.jsonl"
    first = Journal(path)
    first.open()
    first.append(Intent(account_id=ACCOUNT, tunnel_id=A))
    size = path.stat().st_size
    second = Journal(path)
    with pytest.raises(JournalError, match="in use by another rotation"):
        second.open()
    assert path.stat().st_size == size  # the refused writer wrote nothing
    with pytest.raises(JournalError, match="not open"):
        second.append(Intent(account_id=ACCOUNT, tunnel_id=B))
    await first.aclose()
    second.open()  # free again once the first writer is done
    second.append(Intent(account_id=ACCOUNT, tunnel_id=B))
    await second.aclose()
    assert [e.tunnel_id for e in iter_events(path)] == [A, B]


# Run as root, this drops to nobody first (root reads any file), then reports what happened.
_AS_NOBODY = """
import json, os, pwd, sys
from magicwan import JournalError, read_journal
from magicwan.journal import Journal

entry = pwd.getpwnam("nobody")
os.setgroups([])
os.setgid(entry.pw_gid)
os.setuid(entry.pw_uid)
report = {}
for name, attempt in (("open", lambda: Journal(sys.argv[1]).open()),
                      ("read", lambda: read_journal(sys.argv[1]))):
    try:
        attempt()
        report[name] = "no error"
    except JournalError as exc:
        report[name] = f"JournalError: {exc}"
    except Exception as exc:
        report[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(report))
"""


def _try_as_this_user(path: Path) -> dict[str, str]:
    report = {}
    for name, attempt in (("open", Journal(path).open), ("read", lambda: read_journal(path))):
        try:
            attempt()
            report[name] = "no error"
        except JournalError as exc:
            report[name] = f"JournalError: {exc}"
    return report


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user may enter (pytest's tmp_path is root's alone when run as root)."""
    path = Path(tempfile.mkdtemp(prefix="magicwan-journal-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_a_journal_of_another_user_is_a_journal_error(shared_dir: Path) -> None:
    # A journal owned by another user is a JournalError, never a raw PermissionError.
    path = shared_dir / "j.jsonl"
    _write(path, HEADER)
    path.chmod(0o600)
    if os.geteuid() == 0:
        done = subprocess.run(  # noqa: S603 - our own interpreter and script
            [sys.executable, "-c", _AS_NOBODY, str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(done.stdout)
    else:
        path.chmod(0o000)
        try:
            report = _try_as_this_user(path)
        finally:
            path.chmod(0o600)
    for name in ("open", "read"):
        assert report[name].startswith("JournalError: "), report
        assert "Permission denied" in report[name]
        assert str(path) in report[name]
    assert path.read_bytes() == json.dumps(HEADER).encode() + b"\n"
    assert _mode(path) == 0o600


@pytest.mark.timeout(20)  # the old reader blocked for ever opening a FIFO nobody writes to
def test_reading_a_directory_or_a_fifo_is_a_journal_error(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (tmp_path, fifo):
        with pytest.raises(JournalError, match="not a regular file"):
            read_journal(path)
        with pytest.raises(JournalError, match="not a regular file"):
            list(iter_events(path))


@pytest.mark.asyncio
async def test_a_symlink_is_never_followed(tmp_path: Path) -> None:
    real = tmp_path / "real.jsonl"
    _write(real, HEADER)
    real.chmod(0o644)
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    dangling = tmp_path / "dangling.jsonl"
    dangling.symlink_to(tmp_path / "nowhere.jsonl")
    for path in (link, dangling):
        with pytest.raises(JournalError, match="symbolic link"):
            Journal(path).open()
    assert real.read_bytes() == json.dumps(HEADER).encode() + b"\n"
    assert _mode(real) == 0o644  # not tightened through the link either
    assert not (tmp_path / "nowhere.jsonl").exists()


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", [0o644, 0o666, 0o606, 0o600])
async def test_an_existing_journal_is_0600_once_opened(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "j.jsonl"
    path.write_text("")
    path.chmod(mode)
    journal = Journal(path)
    journal.open()
    assert _mode(path) == 0o600  # before any event is written
    await journal.aclose()
    assert _mode(path) == 0o600


@pytest.mark.asyncio
async def test_writing_to_a_closed_journal_is_a_journal_error(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    with pytest.raises(JournalError, match="not open"):
        journal.append(Intent(account_id=ACCOUNT, tunnel_id=A))
    journal.open()
    await journal.aclose()
    await journal.aclose()  # twice is fine
    with pytest.raises(JournalError, match="not open"):
        journal.append(Intent(account_id=ACCOUNT, tunnel_id=A))


@pytest.mark.asyncio
@pytest.mark.parametrize("cut", ["truncated", "removed", "replaced"])
async def test_a_journal_cut_while_in_use_fails_the_next_sync(tmp_path: Path, cut: str) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    journal.open()
    try:
        journal.append(Intent(account_id=ACCOUNT, tunnel_id=A))
        await journal.sync()
        if cut == "truncated":
            os.truncate(path, 0)  # `: > j.jsonl`, logrotate's copytruncate
        elif cut == "removed":
            path.unlink()
        else:
            path.rename(tmp_path / "old.jsonl")
            path.write_text("")
        journal.append(Intent(account_id=ACCOUNT, tunnel_id=A))
        with pytest.raises(JournalError, match="removed, replaced or truncated"):
            await journal.sync()
        assert journal.broken is not None  # nothing more is written to it
    finally:
        journal.close_now()


@pytest.mark.asyncio
async def test_a_torn_last_line_is_closed_off_before_the_next_event(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    _write(path, {"event": "intent", "account_id": ACCOUNT, "tunnel_id": A}, tail=b'{"event":"ro')
    journal = Journal(path)
    journal.open()
    journal.append(Intent(account_id=ACCOUNT, tunnel_id=B))
    await journal.aclose()
    lines = path.read_bytes().split(b"\n")
    assert lines[1] == b'{"event":"ro'  # the torn line stays, alone on its line
    assert json.loads(lines[2])["tunnel_id"] == B
    assert lines[-1] == b""


# --- the events --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_each_event_writes_one_json_line_with_its_facts(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    journal.open()
    assert journal.append(Intent(account_id=ACCOUNT, tunnel_id=A)) == 1
    assert journal.append(rotated(ACCOUNT, _result(), attempts=2, uncertain=True)) == 2
    assert journal.append(Verified(account_id=ACCOUNT, tunnel_id=A)) == 3
    assert journal.append(failure(ACCOUNT, B, NotFoundError(404))) == 4
    assert journal.written == 4
    await journal.aclose()

    header, *lines = path.read_text().splitlines()
    assert json.loads(header)["event"] == "journal"
    assert json.loads(header)["version"] == JOURNAL_VERSION
    events = [json.loads(line) for line in lines]
    assert [e["event"] for e in events] == ["intent", "rotated", "verified", "failed"]
    assert all(e["account_id"] == ACCOUNT and e["time"].endswith("Z") for e in events)
    line = events[1]
    assert (line["tunnel_id"], line["psk"]) == (A, PSK)
    assert (line["attempts"], line["uncertain"]) == (2, True)
    assert line["last_generated_on"] == "2026-11-27T10:00:00.123456Z"
    assert "psk" not in events[2]
    assert events[3]["error"] == "NotFoundError: HTTP 404"
    assert events[3]["outcome_unknown"] is False


@pytest.mark.asyncio
async def test_sync_makes_every_line_written_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "j.jsonl"
    durable = DurableBytes(monkeypatch)
    journal = Journal(path)
    journal.open()
    journal.append(Intent(account_id=ACCOUNT, tunnel_id=A))
    seq = journal.append(rotated(ACCOUNT, _result(), attempts=1, uncertain=False))
    await journal.sync(seq)
    assert durable.bytes == path.stat().st_size
    journal.append(Intent(account_id=ACCOUNT, tunnel_id=B))
    await journal.aclose()  # syncs what is left
    assert durable.bytes == path.stat().st_size


# --- reading a journal back ----------------------------------------------------------------


def test_a_missing_journal_reads_as_empty(tmp_path: Path) -> None:
    assert read_journal(tmp_path / "nothing.jsonl") == {}
    assert list(iter_events(tmp_path / "nothing.jsonl")) == []


def test_lines_that_are_not_events_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_bytes(
        json.dumps({"event": "journal", "version": 2}).encode()
        + b"\n"
        + b"not json\n"  # a torn write that a later writer closed with a newline
        b"[1, 2]\n"
        b'{"event": "intent"}\n'
        b'{"tunnel_id": 7, "event": "intent"}\n'
        + json.dumps({"event": "intent", "account_id": ACCOUNT, "tunnel_id": A}).encode()
        + b"\n"
        + b'{"event": "rotated", "tunnel_id": "torn'  # a crash cut the last write
    )
    assert [e.tunnel_id for e in iter_events(path)] == [A]
    assert read_journal(path) == {
        (ACCOUNT, A): JournalRecord(account_id=ACCOUNT, tunnel_id=A, event="intent", in_flight=True)
    }


# --- the finished line ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_finished_line_says_the_last_run_finished_and_is_no_tunnels_event(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    journal.open()
    try:
        assert run_finished(path) is False  # only the header: a run began, none finished
        journal.append(Intent(account_id=ACCOUNT, tunnel_id=A))
        journal.append(rotated(ACCOUNT, _result(), attempts=1, uncertain=False))
        assert run_finished(path) is False
        journal.append(Finished(account_id=ACCOUNT, tunnels=1))
        await journal.sync()
    finally:
        await journal.aclose()
    last = json.loads(path.read_bytes().splitlines()[-1])
    assert last["event"] == "finished"
    assert last["account_id"] == ACCOUNT
    assert last["tunnels"] == 1
    assert last["time"].endswith("Z")
    assert run_finished(path) is True
    # The tunnels' events and records are what they were without it.
    assert [e.kind for e in iter_events(path)] == ["intent", "rotated"]
    assert read_journal(path)[(ACCOUNT, A)].psk == PSK
    # A later run that writes anything and is then cut ends the journal unfinished again.
    journal = Journal(path)
    journal.open()
    journal.append(Intent(account_id=ACCOUNT, tunnel_id=B))
    await journal.aclose()
    assert run_finished(path) is False
    assert [e.kind for e in iter_events(path)] == ["intent", "rotated", "intent"]


def test_run_finished_of_files_that_cannot_tell(tmp_path: Path) -> None:
    assert run_finished(tmp_path / "missing.jsonl") is None
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert run_finished(empty) is None
    # magicwan 0.1.0 wrote no header (and no finished line): it cannot say.
    old = tmp_path / "old.jsonl"
    _write(old, {"event": "intent", "tunnel_id": A}, {"event": "rotated", "tunnel_id": A})
    assert run_finished(old) is None


def test_a_torn_or_foreign_finished_line_does_not_finish_a_run(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    rotated_line = {"event": "rotated", "account_id": ACCOUNT, "tunnel_id": A}
    _write(path, HEADER, rotated_line, tail=b'{"event":"finished","tunn')
    assert run_finished(path) is False  # a crash cut the finished line itself
    _write(path, HEADER, rotated_line, {"event": "finished", "account_id": "../x"})
    assert run_finished(path) is False  # not a line magicwan wrote
    _write(path, HEADER, rotated_line, {"event": "finished", "tunnels": "many"})
    assert run_finished(path) is False
    _write(path, HEADER, rotated_line, {"event": "finished", "tunnels": 1}, tail=b"not json\n")
    assert run_finished(path) is True  # a later line that is not ours changes nothing


@pytest.mark.parametrize(
    "content",
    [
        b"not json\n",
        b"c4a7362d577a6c3019a474fd6f485823\n",
        b"c4a7362d577a6c3019a474fd6f485823\n0123456789abcdef0123456789abcdef\n",
        b'{"a": 1}\n',
        b'{"id": "c4a7362d577a6c3019a474fd6f485823", "psk": "x"}\n',
        b"x",
    ],
)
@pytest.mark.asyncio
async def test_a_file_that_is_not_a_journal_is_refused_untouched(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "ids.txt"
    path.write_bytes(content)
    path.chmod(0o644)
    with pytest.raises(JournalError, match="not a magicwan journal"):
        read_journal(path)
    with pytest.raises(JournalError, match="not a magicwan journal"):
        Journal(path).open()
    assert path.read_bytes() == content  # nothing appended
    assert _mode(path) == 0o644  # nothing chmod-ed


def test_the_latest_event_wins_and_keeps_the_newest_psk(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    rotated = {
        "event": "rotated",
        "account_id": ACCOUNT,
        "tunnel_id": A,
        "psk": PSK,
        "last_generated_on": "2026-11-27T10:00:00Z",
        "uncertain": True,
    }
    _write(
        path,
        rotated,
        {"event": "verified", "account_id": ACCOUNT, "tunnel_id": A},
        {"event": "intent", "account_id": ACCOUNT, "tunnel_id": A},
        {"event": "rotated", "tunnel_id": B, "psk": "x" * 32},  # no account: an old journal
    )
    records = read_journal(path)
    assert set(records) == {(ACCOUNT, A), (None, B)}
    record = records[(ACCOUNT, A)]
    assert record.event == "intent"  # a new request was sent after the PSK arrived
    assert record.psk == PSK  # which may still be the tunnel's current PSK
    assert record.last_generated_on == datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    assert PSK not in repr(record)

    _write(path, rotated, {"event": "verified", "account_id": ACCOUNT, "tunnel_id": A})
    assert read_journal(path)[(ACCOUNT, A)].uncertain is False  # verified clears the doubt
    _write(path, rotated)
    assert read_journal(path)[(ACCOUNT, A)].uncertain is True


def test_the_doubt_of_a_request_left_open_lasts_until_a_rotated_line(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    lines = [
        {"event": "intent", "account_id": ACCOUNT, "tunnel_id": A},  # run 1, killed
        {"event": "intent", "account_id": ACCOUNT, "tunnel_id": A},  # run 2
        {"event": "failed", "account_id": ACCOUNT, "tunnel_id": A, "error": "400"},
        {"event": "intent", "account_id": ACCOUNT, "tunnel_id": A},  # run 3
        {"event": "failed", "account_id": ACCOUNT, "tunnel_id": A, "error": "400"},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert read_journal(path)[(ACCOUNT, A)].outcome_unknown  # run 1 may have stored one
    with path.open("a") as fh:
        fh.write(json.dumps({"event": "rotated", "account_id": ACCOUNT, "tunnel_id": A}) + "\n")
        fh.write(json.dumps({"event": "intent", "account_id": ACCOUNT, "tunnel_id": A}) + "\n")
        fh.write(json.dumps({"event": "failed", "account_id": ACCOUNT, "tunnel_id": A}) + "\n")
    assert not read_journal(path)[(ACCOUNT, A)].outcome_unknown  # a certain failure, alone
