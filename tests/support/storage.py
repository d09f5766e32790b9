"""A journal storage in memory that fails, tears or loses writes on purpose.

``MemoryStorage`` implements :class:`magicwan.journal.Storage` over a dict of files. It knows
what an fsync made durable (:meth:`~MemoryStorage.durable`), injects faults by operation
(:class:`Fault`: ``ENOSPC``, ``EIO``, ``EFBIG``, ``EMFILE`` on open, a torn write, an fsync that
fails) and can *crash* after its Nth operation: that operation happens, then it and every later
one raise :class:`Crashed` (the process is dead), and :meth:`~MemoryStorage.after_crash` gives
the files a restarted machine finds (everything written, only what was fsynced, or the fsynced
part plus a torn piece of the rest).

It never waits and uses no thread, so a virtual-time event loop runs it deterministically.
"""

from __future__ import annotations

import errno as errnos
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import attrs

__all__ = ["Crashed", "Fault", "MemoryStorage", "Op", "StatInfo", "event_kind"]


def event_kind(data: bytes) -> str | None:
    """The ``event`` of a journal line being written (``journal`` for the header), or None."""
    try:
        found = json.loads(data)
    except ValueError:
        return None
    kind = found.get("event") if isinstance(found, dict) else None
    return kind if isinstance(kind, str) else None


Op = Literal[
    "exists",
    "open_read",
    "open_append",
    "fstat",
    "stat",
    "lock",
    "fchmod",
    "write",
    "pread",
    "lines",
    "first_line",
    "fsync",
    "sync_dir",
    "close",
]


class Crashed(BaseException):
    """The simulated process died: nothing after it happened."""


@attrs.frozen
class StatInfo:
    st_mode: int
    st_size: int
    st_dev: int
    st_ino: int
    st_nlink: int
    st_uid: int = attrs.field(factory=os.geteuid)


@attrs.define
class Fault:
    """Fail the ``op`` calls that ``when`` picks (by default the ``skip``-th and the ``times``
    after it, counting that op's calls from 0) with ``OSError(errno)``. ``torn``: a write that
    fails writes that many bytes of its data first (what a full disk does)."""

    op: Op
    errno: int = errnos.EIO
    skip: int = 0
    times: int | None = 1
    torn: int | None = None
    when: Callable[[bytes], bool] | None = None  # for writes: which data to fail
    seen: int = 0
    fired: int = 0

    def picks(self, data: bytes) -> bool:
        if self.when is not None and not self.when(data):
            return False
        index, self.seen = self.seen, self.seen + 1
        if index < self.skip or (self.times is not None and self.fired >= self.times):
            return False
        self.fired += 1
        return True


@attrs.define
class _File:
    data: bytearray
    durable: bytes
    mode: int
    ino: int
    kind: int = stat.S_IFREG
    locked: bool = False
    synced_fds: set[int] = attrs.field(factory=set)


class MemoryStorage:
    """Files in memory; see the module docstring."""

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files: dict[str, _File] = {}
        self._inodes = 1
        for name, data in (files or {}).items():
            self._create(name, data, durable=True)
        self._fds: dict[int, str] = {}
        self._next_fd = 3
        self.faults: list[Fault] = []
        #: Every operation in order (``op`` names), the one that crashed included.
        self.log: list[str] = []
        self.crash_after: int | None = None
        self.crashed = False
        #: A callback told of every operation (``op``, number), for a simulation's checks.
        self.observer: Callable[[str, int], None] | None = None

    # -- set-up and inspection ---------------------------------------------------------------

    def _create(self, name: str, data: bytes, *, durable: bool, mode: int = 0o600) -> _File:
        self._inodes += 1
        file = _File(bytearray(data), bytes(data) if durable else b"", mode, self._inodes)
        self.files[name] = file
        return file

    def fail(self, op: Op, errno: int = errnos.EIO, **kwargs: object) -> Fault:
        """Add a :class:`Fault` (see its fields) and return it."""
        fault = Fault(op, errno, **kwargs)  # type: ignore[arg-type]
        self.faults.append(fault)
        return fault

    @property
    def operations(self) -> int:
        return len(self.log)

    def durable(self, path: str | os.PathLike[str]) -> bytes:
        """What the file holds for sure: its content at its last fsync."""
        file = self.files.get(os.fspath(path))
        return file.durable if file is not None else b""

    def content(self, path: str | os.PathLike[str]) -> bytes:
        """Everything written to the file (durable or not)."""
        file = self.files.get(os.fspath(path))
        return bytes(file.data) if file is not None else b""

    def after_crash(
        self, mode: Literal["process", "power", "torn"] = "process", torn: int | None = None
    ) -> MemoryStorage:
        """The files a restart finds: ``process`` (a killed process: the kernel kept every
        write), ``power`` (only what was fsynced), ``torn`` (what was fsynced plus the first
        ``torn`` bytes of the rest, by default half of it: a write cut mid-line)."""
        image: dict[str, bytes] = {}
        for name, file in self.files.items():
            if mode == "process":
                image[name] = bytes(file.data)
            elif mode == "power":
                image[name] = file.durable
            else:
                tail = bytes(file.data[len(file.durable) :])
                keep = len(tail) // 2 if torn is None else min(torn, len(tail))
                image[name] = file.durable + tail[:keep]
        return MemoryStorage(image)

    # -- the machinery -----------------------------------------------------------------------

    def _op(self, op: Op, data: bytes = b"") -> Fault | None:
        if self.crashed:
            raise Crashed(f"the process crashed before {op}")
        self.log.append(op)
        if self.observer is not None:
            self.observer(op, len(self.log))
        for fault in self.faults:
            if fault.op == op and fault.picks(data):
                return fault
        return None

    def _after(self) -> None:
        if self.crash_after is not None and len(self.log) >= self.crash_after:
            self.crashed = True
            raise Crashed(f"the process crashed after operation {len(self.log)}")

    def _raise(self, fault: Fault) -> None:
        self._after()
        raise OSError(fault.errno, os.strerror(fault.errno))

    def _file(self, fd: int) -> _File:
        name = self._fds.get(fd)
        if name is None or name not in self.files:
            raise OSError(errnos.EBADF, os.strerror(errnos.EBADF))
        return self.files[name]

    def _new_fd(self, name: str) -> int:
        fd, self._next_fd = self._next_fd, self._next_fd + 1
        self._fds[fd] = name
        return fd

    def _info(self, file: _File) -> StatInfo:
        return StatInfo(file.kind | file.mode, len(file.data), 1, file.ino, 1)

    # -- Storage ------------------------------------------------------------------------------

    def exists(self, path: Path) -> bool:
        fault = self._op("exists")
        if fault is not None:
            return False
        found = os.fspath(path) in self.files
        self._after()
        return found

    def open_read(self, path: Path) -> int:
        fault = self._op("open_read")
        if fault is not None:
            self._raise(fault)
        name = os.fspath(path)
        if name not in self.files:
            self._after()
            raise FileNotFoundError(errnos.ENOENT, os.strerror(errnos.ENOENT))
        fd = self._new_fd(name)
        self._after()
        return fd

    def open_append(self, path: Path, mode: int) -> int:
        fault = self._op("open_append")
        if fault is not None:
            self._raise(fault)
        name = os.fspath(path)
        if name not in self.files:
            self._create(name, b"", durable=True, mode=mode)
        fd = self._new_fd(name)
        self._after()
        return fd

    def fstat(self, fd: int) -> StatInfo:
        fault = self._op("fstat")
        if fault is not None:
            self._raise(fault)
        info = self._info(self._file(fd))
        self._after()
        return info

    def stat(self, path: Path) -> StatInfo:
        fault = self._op("stat")
        if fault is not None:
            self._raise(fault)
        file = self.files.get(os.fspath(path))
        if file is None:
            self._after()
            raise FileNotFoundError(errnos.ENOENT, os.strerror(errnos.ENOENT))
        info = self._info(file)
        self._after()
        return info

    def lock(self, fd: int) -> None:
        fault = self._op("lock")
        if fault is not None:
            self._raise(fault)
        file = self._file(fd)
        if file.locked:
            self._after()
            raise BlockingIOError(errnos.EAGAIN, os.strerror(errnos.EAGAIN))
        file.locked = True
        self._after()

    def fchmod(self, fd: int, mode: int) -> None:
        fault = self._op("fchmod")
        if fault is not None:
            self._raise(fault)
        self._file(fd).mode = mode
        self._after()

    def write(self, fd: int, data: bytes) -> int:
        fault = self._op("write", data)
        file = self._file(fd)
        if fault is not None:
            if fault.torn:
                # A torn write: part of the data lands, the rest fails on the next call.
                piece = bytes(data[: fault.torn])
                file.data += piece
                self.faults.insert(0, Fault("write", fault.errno))
                self._after()
                return len(piece)
            self._raise(fault)
        file.data += data
        self._after()
        return len(data)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        fault = self._op("pread")
        if fault is not None:
            self._raise(fault)
        out = bytes(self._file(fd).data[offset : offset + size])
        self._after()
        return out

    def lines(self, fd: int) -> Iterator[bytes]:
        fault = self._op("lines")
        if fault is not None:
            self._raise(fault)
        data = bytes(self._file(fd).data)
        self._after()
        return iter(data.splitlines(keepends=True))

    def first_line(self, fd: int) -> bytes | None:
        fault = self._op("first_line")
        if fault is not None:
            self._raise(fault)
        data = bytes(self._file(fd).data)
        self._after()
        return data.splitlines(keepends=True)[0] if data else None

    async def fsync(self, fd: int) -> None:
        fault = self._op("fsync")
        file = self._file(fd)
        if fault is not None:
            self._raise(fault)
        file.durable = bytes(file.data)
        file.synced_fds.add(fd)
        self._after()

    def sync_dir(self, path: Path) -> None:
        self._op("sync_dir")
        self._after()

    def close(self, fd: int) -> None:
        if self.crashed:
            raise Crashed("the process crashed before close")
        self.log.append("close")
        name = self._fds.pop(fd, None)
        if name in self.files and name not in self._fds.values():
            self.files[name].locked = False
        self._after()
