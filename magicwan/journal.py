"""The rotation journal: a durable JSON Lines record of every PSK the SDK made or sent.

The first line is a header (``{"event": "journal", "version": 2, ...}``); every other
line is one event about one tunnel:

- ``intent``: a request for the tunnel is about to be sent. With ``method: "set"`` it
  carries the PSK the client made, fsynced *before* the request leaves, so no answer,
  timeout or crash can ever lose it: a rerun resends the same PSK;
- ``rotated``: a PSK is live at Cloudflare (``psk``, ``last_generated_on``,
  ``ipsec_id``); ``uncertain`` when a retry may have hidden a newer one;
- ``verified`` / ``unverified``: a read-back confirmed that PSK, or could not decide
  (the PSK was handed over all the same, and a rerun checks again);
- ``failed``: the tunnel's rotation failed (``error``, ``outcome_unknown``);
- ``delivered`` / ``undelivered``: the PSK reached the tunnel's other end, or not.

One line is about the run, not a tunnel: ``finished`` (:class:`Finished`) says a run gave
every tunnel it selected its final outcome and nothing stopped it early. A journal whose
last event is not ``finished`` holds a run that was cut, halted or killed (or one that is
still going): :func:`run_finished` tells.

The file is created with mode 0600 (an existing one is tightened to 0600, never
loosened), is never followed through a symlink, and is locked (``flock``) for as long
as a writer has it open: a second rotation on the same journal is refused at once. A
file that is not a journal is refused untouched. Lines a rotation must not lose are
fsynced before it hands anything over; concurrent writers share one fsync (group
commit). After any write or fsync failure the journal is *broken*: it refuses every
later write, so the caller stops starting work it could not record.

Every file operation goes through a :class:`Storage` (``Journal(path, storage=...)``,
``read_journal(path, storage=...)``, ``iter_events(path, storage=...)``): the default,
:class:`OSStorage`, is the operating system's; tests pass one that fails or tears
writes on purpose.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import attrs

from magicwan._converter import converter
from magicwan._version import __version__
from magicwan.errors import APIError, MagicWANError, UnexpectedResponseError
from magicwan.internal.timestamps import format_datetime
from magicwan.internal.validation import is_id
from magicwan.models.psk import PSKGenerateResult

__all__ = [
    "JOURNAL_VERSION",
    "Delivered",
    "Failed",
    "Finished",
    "Intent",
    "Journal",
    "JournalContents",
    "JournalError",
    "JournalEvent",
    "JournalRecord",
    "OSStorage",
    "Rotated",
    "StatResult",
    "Storage",
    "Undelivered",
    "Unverified",
    "Verified",
    "failure",
    "iter_events",
    "read_journal",
    "read_journal_contents",
    "rotated",
    "run_finished",
]

JOURNAL_VERSION = 2
_MODE = 0o600
_HEADER = "journal"


class JournalError(MagicWANError):
    """The journal could not be opened, read or written, or is not a journal."""


# -- storage --------------------------------------------------------------------------------


class StatResult(Protocol):
    """What the journal reads of a file's status (``os.stat_result`` has it all)."""

    @property
    def st_mode(self) -> int: ...
    @property
    def st_size(self) -> int: ...
    @property
    def st_dev(self) -> int: ...
    @property
    def st_ino(self) -> int: ...
    @property
    def st_nlink(self) -> int: ...
    @property
    def st_uid(self) -> int: ...


class Storage(Protocol):
    """The file operations a journal uses, on descriptors it gets from ``open_*``.

    Every method raises :class:`OSError` the way the operating system would (``flock``
    raises :class:`BlockingIOError` when another writer holds the lock). :class:`OSStorage`
    is the real one; a test passes one that fails, tears or loses writes on purpose.
    """

    def exists(self, path: Path) -> bool:
        """Whether ``path`` names something (following symbolic links)."""
        ...

    def open_read(self, path: Path) -> int:
        """Open for reading, without blocking (raises :class:`FileNotFoundError`)."""
        ...

    def open_append(self, path: Path, mode: int) -> int:
        """Open for appending, created with ``mode`` if missing, never through a symbolic
        link (``ELOOP``), without blocking on a FIFO."""
        ...

    def fstat(self, fd: int) -> StatResult:
        """The status of an open file."""
        ...

    def stat(self, path: Path) -> StatResult:
        """The status of what ``path`` names now, not following a symbolic link."""
        ...

    def lock(self, fd: int) -> None:
        """Make ``fd`` blocking and lock it exclusively without waiting
        (:class:`BlockingIOError` when another holder has it)."""
        ...

    def fchmod(self, fd: int, mode: int) -> None:
        """Set the file's permission bits."""
        ...

    def write(self, fd: int, data: bytes) -> int:
        """Append ``data`` (possibly only part of it); return the bytes written."""
        ...

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        """Read up to ``size`` bytes at ``offset``."""
        ...

    def lines(self, fd: int) -> Iterator[bytes]:
        """Every line of the file from its start (the last one may lack its newline)."""
        ...

    def first_line(self, fd: int) -> bytes | None:
        """The file's first line, or None when it is empty."""
        ...

    async def fsync(self, fd: int) -> None:
        """Make everything written to ``fd`` durable."""
        ...

    def sync_dir(self, path: Path) -> None:
        """Make the directory entry of the new file ``path`` durable (best effort: never
        raises)."""
        ...

    def close(self, fd: int) -> None:
        """Close ``fd`` (and so release its lock)."""
        ...


class OSStorage:
    """The operating system's files: the default :class:`Storage`."""

    def exists(self, path: Path) -> bool:
        return path.exists()

    def open_read(self, path: Path) -> int:
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))

    def open_append(self, path: Path, mode: int) -> int:
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        # O_NONBLOCK: opening a FIFO would otherwise block until a reader comes.
        flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
        return os.open(path, flags, mode)

    def fstat(self, fd: int) -> os.stat_result:
        return os.fstat(fd)

    def stat(self, path: Path) -> os.stat_result:
        return os.stat(path, follow_symlinks=False)

    def lock(self, fd: int) -> None:
        os.set_blocking(fd, True)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def fchmod(self, fd: int, mode: int) -> None:
        os.fchmod(fd, mode)

    def write(self, fd: int, data: bytes) -> int:
        return os.write(fd, data)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        return os.pread(fd, size, offset)

    def lines(self, fd: int) -> Iterator[bytes]:
        with os.fdopen(os.dup(fd), "rb") as fh:
            fh.seek(0)
            yield from fh

    def first_line(self, fd: int) -> bytes | None:
        with os.fdopen(os.dup(fd), "rb") as fh:
            fh.seek(0)
            return fh.readline() or None

    async def fsync(self, fd: int) -> None:
        await asyncio.to_thread(os.fsync, fd)

    def sync_dir(self, path: Path) -> None:
        try:
            dfd = os.open(path, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)

    def close(self, fd: int) -> None:
        os.close(fd)


_OS_STORAGE = OSStorage()


# -- the events ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class _Event:
    kind: ClassVar[str]
    account_id: str | None = None
    tunnel_id: str
    time: datetime | None = None


@attrs.frozen(kw_only=True)
class Intent(_Event):
    """A request for the tunnel is about to be sent (for ``set``: with its PSK)."""

    kind: ClassVar[str] = "intent"
    method: Literal["generate", "set"] = "generate"
    psk: str | None = attrs.field(default=None, repr=False)


@attrs.frozen(kw_only=True)
class Rotated(_Event):
    """A PSK is live at Cloudflare."""

    kind: ClassVar[str] = "rotated"
    psk: str | None = attrs.field(default=None, repr=False)
    last_generated_on: datetime | None = None
    ipsec_id: str | None = None
    attempts: int = 0
    uncertain: bool = False
    method: Literal["generate", "set"] = "generate"


@attrs.frozen(kw_only=True)
class Verified(_Event):
    """A read-back showed the last rotated PSK is the tunnel's current one."""

    kind: ClassVar[str] = "verified"
    last_generated_on: datetime | None = None


@attrs.frozen(kw_only=True)
class Unverified(_Event):
    """A read-back could not decide; the PSK was handed over, a rerun checks again."""

    kind: ClassVar[str] = "unverified"
    reason: str = ""


@attrs.frozen(kw_only=True)
class Failed(_Event):
    """The tunnel's rotation failed. The message of an SDK error holds no secret."""

    kind: ClassVar[str] = "failed"
    error: str = ""
    error_type: str | None = None
    codes: list[int] = attrs.field(factory=list)
    ray_id: str | None = None
    outcome_unknown: bool = False


@attrs.frozen(kw_only=True)
class Delivered(_Event):
    """The tunnel's current PSK reached its other end."""

    kind: ClassVar[str] = "delivered"
    attempts: int = 0


@attrs.frozen(kw_only=True)
class Undelivered(_Event):
    """Delivering the tunnel's current PSK failed (the PSK is live at Cloudflare)."""

    kind: ClassVar[str] = "undelivered"
    error: str = ""
    attempts: int = 0


JournalEvent = Intent | Rotated | Verified | Unverified | Failed | Delivered | Undelivered
_KINDS: dict[str, type[JournalEvent]] = {
    cls.kind: cls for cls in (Intent, Rotated, Verified, Unverified, Failed, Delivered, Undelivered)
}


@attrs.frozen(kw_only=True)
class Finished:
    """A run gave every tunnel it selected its final outcome, and nothing stopped it early
    (no halt, no cut, no journal failure). The one line about a run, not a tunnel; a run
    that was stopped, cancelled or killed leaves none."""

    kind: ClassVar[str] = "finished"
    account_id: str | None = None
    tunnels: int = 0
    time: datetime | None = None


_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _encode(event: JournalEvent | Finished, now: datetime | None = None) -> bytes:
    data: dict[str, Any] = {"event": event.kind}
    data.update(converter.unstructure(event))
    if now is not None and data.get("time") is None:
        data["time"] = format_datetime(now)
    return (_ENCODER.encode(data) + "\n").encode()


def _decode(raw: bytes) -> JournalEvent | Finished | dict[str, Any] | None:
    """An event, the header (a dict), or None for a line that is neither."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    kind = data.get("event")
    if kind == _HEADER and isinstance(data.get("version"), int):
        return data
    if kind == Finished.kind:
        return _decode_finished(data)
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None or not is_id(data.get("tunnel_id")):
        return None
    account = data.get("account_id")
    if account is not None and not is_id(account):
        return None  # a line edited by hand: an id is letters and digits, nothing else
    fields = {k: v for k, v in data.items() if k != "event"}
    try:
        event: JournalEvent = converter.structure(fields, cls)
    except Exception:  # a line we wrote is always readable; anything else is not ours
        return None
    return event


def _decode_finished(data: dict[str, Any]) -> Finished | None:
    account = data.get("account_id")
    if account is not None and not is_id(account):
        return None
    fields = {k: v for k, v in data.items() if k != "event"}
    try:
        return converter.structure(fields, Finished)
    except Exception:  # as for the tunnel events: a line we did not write is not ours
        return None


def failure(account_id: str, tunnel_id: str, exc: BaseException) -> Failed:
    """The ``failed`` event for an error (its text holds no secret: SDK errors never do)."""
    codes: list[int] = []
    ray_id = None
    if isinstance(exc, APIError):
        codes, ray_id = list(exc.codes), exc.ray_id
    elif isinstance(exc, UnexpectedResponseError):
        ray_id = exc.ray_id
    return Failed(
        account_id=account_id,
        tunnel_id=tunnel_id,
        error=f"{type(exc).__name__}: {exc}",
        error_type=type(exc).__name__,
        codes=codes,
        ray_id=ray_id,
        outcome_unknown=isinstance(exc, MagicWANError) and exc.outcome_unknown,
    )


def rotated(
    account_id: str,
    result: PSKGenerateResult,
    *,
    attempts: int,
    uncertain: bool,
    method: Literal["generate", "set"] = "generate",
) -> Rotated:
    """The ``rotated`` event for a PSK that is live at Cloudflare."""
    meta = result.psk_metadata
    return Rotated(
        account_id=account_id,
        tunnel_id=result.ipsec_tunnel_id,
        psk=result.psk,
        last_generated_on=meta.last_generated_on if meta else None,
        ipsec_id=result.ipsec_id,
        attempts=attempts,
        uncertain=uncertain,
        method=method,
    )


# -- reading --------------------------------------------------------------------------------


def _open_for_reading(path: str | os.PathLike[str], storage: Storage) -> int | None:
    try:
        fd = storage.open_read(Path(path))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise JournalError(f"cannot read journal {os.fspath(path)}: {exc.strerror}") from None
    if not stat.S_ISREG(storage.fstat(fd).st_mode):
        storage.close(fd)
        raise JournalError(f"journal {os.fspath(path)} is not a regular file")
    return fd


#: How every header begins: a first line cut short inside it is a header a full disk tore.
_HEADER_START = b'{"event":"journal","version":'


def _torn_header(line: bytes) -> bool:
    text = line.rstrip(b"\n")
    return bool(text) and (_HEADER_START.startswith(text) or text.startswith(_HEADER_START))


def _check_journal(path: str | os.PathLike[str], first: bytes | None) -> None:
    if first is not None and _decode(first) is None and not _torn_header(first):
        raise JournalError(
            f"{os.fspath(path)} is not a magicwan journal (its first line is not a journal "
            "event); refusing to touch it"
        )


def _scan(
    path: str | os.PathLike[str], storage: Storage | None
) -> Iterator[JournalEvent | Finished | dict[str, Any]]:
    """Every complete line of a journal that is ours (the header, a tunnel event, a
    ``finished`` line), in order; see :func:`iter_events`."""
    storage = _OS_STORAGE if storage is None else storage
    fd = _open_for_reading(path, storage)
    if fd is None:
        return
    try:
        first = True
        for raw in storage.lines(fd):
            if first:
                _check_journal(path, raw)
                first = False
            if not raw.endswith(b"\n"):
                break  # torn final write
            line = _decode(raw)
            if line is not None:
                yield line
    finally:
        storage.close(fd)


def iter_events(
    path: str | os.PathLike[str], *, storage: Storage | None = None
) -> Iterator[JournalEvent]:
    """Every complete event about a tunnel, in order (a missing file has none; the
    ``finished`` lines about runs are :func:`run_finished`'s).

    A last line cut short by a crash (no newline) is skipped, and so is a line in the
    middle that is not an event (a torn write that a later writer closed with a newline).
    A file whose first line is not a journal line raises :class:`JournalError`.
    ``storage`` defaults to the operating system's files (:class:`OSStorage`).
    """
    for line in _scan(path, storage):
        if not isinstance(line, dict | Finished):
            yield line


def run_finished(path: str | os.PathLike[str], *, storage: Storage | None = None) -> bool | None:
    """Whether the last run written to the journal finished: True when its last event is
    a ``finished`` line, False when it is not (a run was cut, halted or killed, or is
    still going; a journal with only its header too), None for a journal that cannot
    tell: a missing or empty file, or one with no header line, as magicwan 0.1.0 wrote
    them (that format had no ``finished`` line). Raises :class:`JournalError` as
    :func:`iter_events` does."""
    return read_journal_contents(path, storage=storage).finished


@attrs.frozen(kw_only=True)
class JournalRecord:
    """What the journal says of one tunnel, folded over all its events.

    ``psk`` is the newest PSK known to have been live at Cloudflare (from ``rotated``),
    kept even when a later ``intent`` or ``failed`` follows: it may still be the
    tunnel's current one. ``pending_psk`` is a ``set`` intent's PSK that no ``rotated``
    line confirmed yet (a rerun resends it). ``in_flight`` means a request for the tunnel
    was started after its last ``rotated`` line and no ``rotated`` line followed: it failed
    (``event`` is then ``failed``) or its outcome was never recorded (``event`` is
    ``intent``, a crash); either way a rerun rotates the tunnel again. ``event`` is the
    last event that changed the tunnel's PSK state: ``intent``, ``rotated`` or ``failed``
    (``verified``, ``delivered`` and the like are the flags beside it). ``outcome_unknown``
    says the tunnel may hold a PSK nobody recorded: a request's outcome was unknown, or a
    run was cut while one was in flight; only a ``rotated`` line clears it.
    """

    account_id: str | None
    tunnel_id: str
    event: str
    psk: str | None = attrs.field(default=None, repr=False)
    pending_psk: str | None = attrs.field(default=None, repr=False)
    last_generated_on: datetime | None = None
    ipsec_id: str | None = None
    in_flight: bool = False
    uncertain: bool = False
    verified: bool = False
    delivered: bool = False
    attempts: int = 0
    error: str | None = None
    outcome_unknown: bool = False
    first_time: datetime | None = None
    last_time: datetime | None = None

    @property
    def rotated(self) -> bool:
        """A PSK is recorded and no request for the tunnel was left open since."""
        return self.psk is not None and not self.in_flight

    @property
    def left_open(self) -> bool:
        """A request for the tunnel was left unanswered (a run cut while it was in flight,
        or an unknown outcome) and nothing rotated it since: it may hold that request's
        PSK."""
        return self.in_flight and (self.event == Intent.kind or self.outcome_unknown)


def _fold(previous: JournalRecord | None, event: JournalEvent) -> JournalRecord:
    record = previous or JournalRecord(
        account_id=event.account_id,
        tunnel_id=event.tunnel_id,
        event=event.kind,
        first_time=event.time,
    )
    record = attrs.evolve(record, last_time=event.time or record.last_time)
    # A request left open by an earlier run (killed in flight, or an unknown outcome) may
    # have stored a PSK: that doubt lasts until a rotated line, whatever fails after it.
    doubt = previous is not None and previous.left_open
    if isinstance(event, Intent | Rotated | Failed):
        record = attrs.evolve(record, event=event.kind)
    if isinstance(event, Intent):
        pending = event.psk if event.method == "set" else record.pending_psk
        return attrs.evolve(record, in_flight=True, pending_psk=pending, outcome_unknown=doubt)
    if isinstance(event, Rotated):
        return attrs.evolve(
            record,
            psk=event.psk,
            pending_psk=None,
            last_generated_on=event.last_generated_on,
            ipsec_id=event.ipsec_id or record.ipsec_id,
            in_flight=False,
            uncertain=event.uncertain,
            verified=False,
            delivered=False,
            attempts=record.attempts + event.attempts,
            error=None,
            outcome_unknown=False,
        )
    if isinstance(event, Verified):
        return attrs.evolve(record, uncertain=False, verified=True)
    if isinstance(event, Unverified):
        return attrs.evolve(record, error=event.reason or record.error)
    if isinstance(event, Failed):
        unknown = event.outcome_unknown or (record.in_flight and record.outcome_unknown)
        return attrs.evolve(record, error=event.error, outcome_unknown=unknown)
    if isinstance(event, Delivered):
        return attrs.evolve(record, delivered=True, error=None)
    return attrs.evolve(record, delivered=False, error=event.error)


def read_journal(
    path: str | os.PathLike[str], *, storage: Storage | None = None
) -> dict[tuple[str | None, str], JournalRecord]:
    """What the journal says of each tunnel, by ``(account_id, tunnel_id)``, lowercased
    (Cloudflare ids are hex: two spellings are one tunnel).

    A missing file is an empty journal. A file that is not a journal, a directory or an
    unreadable file raises :class:`JournalError`. ``storage`` defaults to the operating
    system's files (:class:`OSStorage`).
    """
    return read_journal_contents(path, storage=storage).records


@attrs.frozen
class JournalContents:
    """A journal read once: what it says of each tunnel (:func:`read_journal`) and whether
    its last run finished (:func:`run_finished`)."""

    records: dict[tuple[str | None, str], JournalRecord]
    finished: bool | None


def read_journal_contents(
    path: str | os.PathLike[str], *, storage: Storage | None = None
) -> JournalContents:
    """:func:`read_journal` and :func:`run_finished` of one pass over the file."""
    records: dict[tuple[str | None, str], JournalRecord] = {}
    header: bool | None = None  # whether the first line is the header; None: no line
    finished = False
    for line in _scan(path, storage):
        if header is None:
            header = isinstance(line, dict)
        if isinstance(line, dict):
            continue
        finished = isinstance(line, Finished)
        if not isinstance(line, Finished):
            account = line.account_id.lower() if line.account_id is not None else None
            key = (account, line.tunnel_id.lower())
            records[key] = _fold(records.get(key), line)
    return JournalContents(records, finished if header else None)


# -- writing --------------------------------------------------------------------------------


class Journal:
    """An append-only, locked journal file with group-committed fsyncs.

    ``storage`` defaults to the operating system's files (:class:`OSStorage`).
    """

    def __init__(self, path: str | os.PathLike[str], *, storage: Storage | None = None) -> None:
        self.path = Path(path)
        self.storage: Storage = _OS_STORAGE if storage is None else storage
        self._fd: int | None = None
        self._written = 0  # lines written by us
        self._synced = 0  # of those, lines known durable
        self._size = 0  # the least the file must hold: what was there, plus what we wrote
        self._sync_task: asyncio.Task[None] | None = None
        self._broken: JournalError | None = None

    @property
    def broken(self) -> JournalError | None:
        """The failure that broke the journal (no write is attempted after one), or None."""
        return self._broken

    @property
    def written(self) -> int:
        """How many lines this journal object has written so far."""
        return self._written

    def open(self) -> None:
        """Open (or create, 0600) and lock the journal for appending.

        Raises :class:`JournalError` when the path cannot be opened, is not a regular
        file, is locked by another writer, or holds something that is not a journal.
        """
        if self._fd is not None:
            return
        name = os.fspath(self.path)
        storage = self.storage
        existed = storage.exists(self.path)
        try:
            fd = storage.open_append(self.path, _MODE)
        except OSError as exc:
            why = exc.strerror
            if exc.errno == errno.ELOOP:
                why = "it is a symbolic link (never followed)"
            raise JournalError(f"cannot open journal {name}: {why}") from None
        try:
            info = storage.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise JournalError(f"journal {name} is not a regular file")
            if info.st_uid != os.geteuid():
                # Its owner could read it, or chmod it back, whatever mode we set.
                raise JournalError(
                    f"journal {name} belongs to another user (uid {info.st_uid}): its owner "
                    "could read the PSKs written to it; refusing it"
                )
            try:
                storage.lock(fd)
            except BlockingIOError:
                raise JournalError(
                    f"journal {name} is in use by another rotation (it is locked); "
                    "two writers would corrupt it"
                ) from None
            _check_journal(self.path, storage.first_line(fd))
            if stat.S_IMODE(info.st_mode) & ~_MODE:
                storage.fchmod(fd, _MODE)
            self._fd = fd
            if info.st_size == 0:
                header = {
                    "event": _HEADER,
                    "version": JOURNAL_VERSION,
                    "magicwan": __version__,
                    "created": format_datetime(datetime.now(UTC)),
                }
                self._write((json.dumps(header, separators=(",", ":")) + "\n").encode())
            elif storage.pread(fd, 1, info.st_size - 1) != b"\n":
                self._write(b"\n")  # a crash cut the last line: start a clean one
            self._fsync_now(fd)
            self._size = storage.fstat(fd).st_size
            if not existed:
                storage.sync_dir(self.path.parent)
        except BaseException as exc:
            self._fd = None
            storage.close(fd)
            if isinstance(exc, OSError):
                raise JournalError(f"cannot prepare journal {name}: {exc.strerror}") from None
            raise

    def _fsync_now(self, fd: int) -> None:
        """The storage's fsync, run to completion here (``open`` is synchronous)."""
        storage = self.storage
        if type(storage).fsync is OSStorage.fsync:
            os.fsync(fd)  # as ever: no thread (nor loop) for the one fsync of opening
            return
        step = storage.fsync(fd).__await__()
        try:
            step.send(None)
        except StopIteration:
            return
        step.close()
        raise RuntimeError("a storage's fsync must not suspend while a journal opens")

    def _write(self, data: bytes) -> None:
        fd = self._fd
        if fd is None:
            raise JournalError("journal is not open")
        written = 0
        try:
            while written < len(data):
                written += self.storage.write(fd, data[written:])
        finally:
            self._size += written

    def append(self, event: JournalEvent | Finished) -> int:
        """Write one event (not yet durable); return its sequence number.

        Raises :class:`JournalError` (and breaks the journal) when the write fails.
        """
        if self._broken is not None:
            raise self._broken
        try:
            self._write(_encode(event, datetime.now(UTC)))
        except OSError as exc:
            raise self._break(f"cannot write journal {self.path}: {exc.strerror}") from None
        self._written += 1
        return self._written

    def _break(self, message: str) -> JournalError:
        if self._broken is None:
            self._broken = JournalError(message)
        return self._broken

    async def sync(self, upto: int | None = None) -> None:
        """Return once line ``upto`` (default: everything written) is on disk.

        Callers arriving while an fsync runs wait for the next one, which covers all
        their lines at once. Raises :class:`JournalError` (and breaks the journal) when
        an fsync fails.
        """
        target = self._written if upto is None else upto
        while self._synced < target:
            if self._broken is not None:
                raise self._broken
            task = self._sync_task
            if task is None:
                task = self._sync_task = asyncio.ensure_future(self._fsync())
            try:
                await asyncio.shield(task)
            finally:
                if self._sync_task is task and task.done():
                    self._sync_task = None

    async def _fsync(self) -> None:
        fd = self._fd
        if fd is None:
            raise JournalError("journal is not open")
        covered = self._written
        try:
            await self.storage.fsync(fd)
        except OSError as exc:
            raise self._break(f"cannot sync journal {self.path}: {exc.strerror}") from None
        if not self._still_there(fd):
            raise self._break(
                f"journal {self.path} was removed, replaced or truncated while in use: what "
                "it held is in no file any more"
            )
        self._synced = max(self._synced, covered)

    def _still_there(self, fd: int) -> bool:
        """The file we write is still the one at our path, and still holds all we wrote (a
        cleanup job, an operator's ``rm`` or a rename would leave us writing to an inode
        that no name reaches; ``: > file`` or logrotate's copytruncate would cut it)."""
        try:
            ours = self.storage.fstat(fd)
            named = self.storage.stat(self.path)
        except OSError:
            return False
        same = (ours.st_dev, ours.st_ino) == (named.st_dev, named.st_ino)
        return ours.st_nlink > 0 and same and ours.st_size >= self._size

    def close_now(self) -> None:
        """Close the file (and so release the lock) without a final sync. Safe to call
        twice, and while an fsync runs: the file is then closed once it is over."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        task = self._sync_task
        if task is not None and not task.done():
            # An fsync runs in a thread on this descriptor: closing it now could let the
            # number be reused under that thread's feet.
            task.add_done_callback(lambda _: self.storage.close(fd))
        else:
            self.storage.close(fd)  # closing releases the lock

    async def aclose(self) -> None:
        """Sync what was written, unlock and close the file. Raises :class:`JournalError`
        if the final sync fails (the file is closed all the same)."""
        if self._fd is None:
            return
        try:
            if self._synced < self._written and self._broken is None:
                await self.sync()
        finally:
            self.close_now()
