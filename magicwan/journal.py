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

The file is created with mode 0600 (an existing one is tightened to 0600, never
loosened), is never followed through a symlink, and is locked (``flock``) for as long
as a writer has it open: a second rotation on the same journal is refused at once. A
file that is not a journal is refused untouched. Lines a rotation must not lose are
fsynced before it hands anything over; concurrent writers share one fsync (group
commit). After any write or fsync failure the journal is *broken*: it refuses every
later write, so the caller stops starting work it could not record.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import os
import re
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import attrs

from magicwan._converter import converter, format_datetime
from magicwan._version import __version__
from magicwan.errors import APIError, MagicWANError, UnexpectedResponseError
from magicwan.models.psk import PSKGenerateResult

__all__ = [
    "JOURNAL_VERSION",
    "Delivered",
    "Failed",
    "Intent",
    "Journal",
    "JournalError",
    "JournalEvent",
    "JournalRecord",
    "Rotated",
    "Undelivered",
    "Unverified",
    "Verified",
    "failure",
    "iter_events",
    "read_journal",
    "rotated",
]

JOURNAL_VERSION = 2
_MODE = 0o600
_HEADER = "journal"


class JournalError(MagicWANError):
    """The journal could not be opened, read or written, or is not a journal."""


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


_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _encode(event: JournalEvent, now: datetime | None = None) -> bytes:
    data: dict[str, Any] = {"event": event.kind}
    data.update(converter.unstructure(event))
    if now is not None and data.get("time") is None:
        data["time"] = format_datetime(now)
    return (_ENCODER.encode(data) + "\n").encode()


_ID = re.compile(r"[A-Za-z0-9]{1,32}")


def _is_id(value: object) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def _decode(raw: bytes) -> JournalEvent | dict[str, Any] | None:
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
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None or not _is_id(data.get("tunnel_id")):
        return None
    account = data.get("account_id")
    if account is not None and not _is_id(account):
        return None  # a line edited by hand: an id is letters and digits, nothing else
    fields = {k: v for k, v in data.items() if k != "event"}
    try:
        event: JournalEvent = converter.structure(fields, cls)
    except Exception:  # a line we wrote is always readable; anything else is not ours
        return None
    return event


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


def _open_for_reading(path: str | os.PathLike[str]) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise JournalError(f"cannot read journal {os.fspath(path)}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise JournalError(f"journal {os.fspath(path)} is not a regular file")
    return fd


def _lines(fd: int) -> Iterator[bytes]:
    with os.fdopen(os.dup(fd), "rb") as fh:
        fh.seek(0)
        yield from fh


def _first_line(fd: int) -> bytes | None:
    with os.fdopen(os.dup(fd), "rb") as fh:
        fh.seek(0)
        return fh.readline() or None


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


def iter_events(path: str | os.PathLike[str]) -> Iterator[JournalEvent]:
    """Every complete event of a journal, in order (a missing file has none).

    A last line cut short by a crash (no newline) is skipped, and so is a line in the
    middle that is not an event (a torn write that a later writer closed with a newline).
    A file whose first line is not a journal line raises :class:`JournalError`.
    """
    fd = _open_for_reading(path)
    if fd is None:
        return
    try:
        first = True
        for raw in _lines(fd):
            if first:
                _check_journal(path, raw)
                first = False
            if not raw.endswith(b"\n"):
                break  # torn final write
            event = _decode(raw)
            if event is not None and not isinstance(event, dict):
                yield event
    finally:
        os.close(fd)


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


def read_journal(path: str | os.PathLike[str]) -> dict[tuple[str | None, str], JournalRecord]:
    """What the journal says of each tunnel, by ``(account_id, tunnel_id)``, lowercased
    (Cloudflare ids are hex: two spellings are one tunnel).

    A missing file is an empty journal. A file that is not a journal, a directory or an
    unreadable file raises :class:`JournalError`.
    """
    records: dict[tuple[str | None, str], JournalRecord] = {}
    for event in iter_events(path):
        account = event.account_id.lower() if event.account_id is not None else None
        key = (account, event.tunnel_id.lower())
        records[key] = _fold(records.get(key), event)
    return records


# -- writing --------------------------------------------------------------------------------


class Journal:
    """An append-only, locked journal file with group-committed fsyncs."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
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
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        # O_NONBLOCK: opening a FIFO would otherwise block until a reader comes.
        flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
        existed = self.path.exists()
        try:
            fd = os.open(self.path, flags, _MODE)
        except OSError as exc:
            why = exc.strerror
            if exc.errno == errno.ELOOP:
                why = "it is a symbolic link (never followed)"
            raise JournalError(f"cannot open journal {name}: {why}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise JournalError(f"journal {name} is not a regular file")
            os.set_blocking(fd, True)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise JournalError(
                    f"journal {name} is in use by another rotation (it is locked); "
                    "two writers would corrupt it"
                ) from None
            _check_journal(self.path, _first_line(fd))
            if stat.S_IMODE(info.st_mode) & ~_MODE:
                os.fchmod(fd, _MODE)
            self._fd = fd
            if info.st_size == 0:
                header = {
                    "event": _HEADER,
                    "version": JOURNAL_VERSION,
                    "magicwan": __version__,
                    "created": format_datetime(datetime.now(UTC)),
                }
                self._write((json.dumps(header, separators=(",", ":")) + "\n").encode())
            elif not self._ends_with_newline(fd, info.st_size):
                self._write(b"\n")  # a crash cut the last line: start a clean one
            os.fsync(fd)
            self._size = os.fstat(fd).st_size
            if not existed:
                self._sync_dir()
        except BaseException as exc:
            self._fd = None
            os.close(fd)
            if isinstance(exc, OSError):
                raise JournalError(f"cannot prepare journal {name}: {exc.strerror}") from None
            raise

    @staticmethod
    def _ends_with_newline(fd: int, size: int) -> bool:
        return os.pread(fd, 1, size - 1) == b"\n"

    def _sync_dir(self) -> None:
        try:
            dfd = os.open(self.path.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)

    def _write(self, data: bytes) -> None:
        fd = self._fd
        if fd is None:
            raise JournalError("journal is not open")
        written = 0
        try:
            while written < len(data):
                written += os.write(fd, data[written:])
        finally:
            self._size += written

    def append(self, event: JournalEvent) -> int:
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
            await asyncio.to_thread(os.fsync, fd)
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
            ours = os.fstat(fd)
            named = os.stat(self.path, follow_symlinks=False)
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
            task.add_done_callback(lambda _: os.close(fd))
        else:
            os.close(fd)  # closing releases the lock

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
