"""The rotation journal: a durable JSON Lines record of every PSK a rotation made.

Each line is one event with at least ``tunnel_id`` and ``event``:

- ``intent``: the tunnel's request is about to be sent;
- ``rotated``: a PSK arrived (``psk``, ``last_generated_on``); a later line for the
  same tunnel supersedes an earlier one;
- ``verified``: a read-back confirmed that the last ``rotated`` PSK is the current one
  (written only when a retry had made that uncertain);
- ``failed``: the tunnel's rotation failed (``error``, ``outcome_unknown``).

The file is created with mode 0600 (an existing one is tightened to 0600, never
loosened) and is never followed through a symlink. ``rotated`` lines are fsynced
before the rotation hands the PSK to its caller; concurrent rotations share one
fsync (group commit), so durability costs little per tunnel.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from magicwan._converter import format_datetime
from magicwan.errors import MagicWANError
from magicwan.models.psk import PSKGenerateResult

__all__ = ["Journal", "JournalError", "JournalRecord", "read_journal"]

_MODE = 0o600


class JournalError(MagicWANError):
    """The journal could not be opened, read or written."""


@attrs.frozen(kw_only=True)
class JournalRecord:
    """The last word of the journal on one tunnel."""

    account_id: str | None
    tunnel_id: str
    event: str
    psk: str | None = attrs.field(default=None, repr=False)
    last_generated_on: str | None = None
    uncertain: bool = False


def _now() -> str:
    return format_datetime(datetime.now(UTC))


def generated_on(result: PSKGenerateResult) -> str | None:
    """The result's ``last_generated_on`` as journalled, or None."""
    stamp = result.psk_metadata.last_generated_on if result.psk_metadata else None
    return format_datetime(stamp) if stamp else None


def iter_events(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every complete event of a journal, in order.

    A last line cut short by a crash (no newline, or not JSON) is skipped; so is any
    line that is not a JSON object with ``tunnel_id`` and ``event``.
    """
    try:
        with open(path, "rb") as fh:
            for raw in fh:
                if not raw.endswith(b"\n"):
                    break  # torn final write
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                if (
                    isinstance(event, dict)
                    and isinstance(event.get("tunnel_id"), str)
                    and isinstance(event.get("event"), str)
                ):
                    yield event
    except FileNotFoundError:
        return


def read_journal(path: str | os.PathLike[str]) -> dict[tuple[str | None, str], JournalRecord]:
    """The latest record per (account_id, tunnel_id) in a journal.

    Each record keeps the newest PSK seen for its tunnel, even when a later ``intent``
    or ``failed`` follows it: that PSK may still be the tunnel's current one.
    """
    latest: dict[tuple[str | None, str], JournalRecord] = {}
    for event in iter_events(path):
        account = event.get("account_id")
        key = (account if isinstance(account, str) else None, event["tunnel_id"])
        kind = event["event"]
        if kind == "rotated":
            psk = event.get("psk")
            generated = event.get("last_generated_on")
            latest[key] = JournalRecord(
                account_id=key[0],
                tunnel_id=key[1],
                event=kind,
                psk=psk if isinstance(psk, str) else None,
                last_generated_on=generated if isinstance(generated, str) else None,
                uncertain=event.get("uncertain") is True,
            )
        elif kind == "verified":
            previous = latest.get(key)
            if previous is not None and previous.event == "rotated":
                latest[key] = attrs.evolve(previous, uncertain=False)
        else:
            previous = latest.get(key)
            latest[key] = JournalRecord(
                account_id=key[0],
                tunnel_id=key[1],
                event=kind,
                psk=previous.psk if previous else None,
                last_generated_on=previous.last_generated_on if previous else None,
            )
    return latest


class Journal:
    """An append-only journal file with group-committed fsyncs."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._written = 0  # lines written
        self._synced = 0  # lines known durable
        self._sync_task: asyncio.Task[None] | None = None

    def open(self) -> None:
        """Open (or create, 0600) the journal for appending."""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        # O_NONBLOCK: opening a FIFO for writing would otherwise block until a reader comes.
        flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
        existed = self.path.exists()
        try:
            fd = os.open(self.path, flags, _MODE)
        except OSError as exc:
            raise JournalError(f"cannot open journal {self.path}: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise JournalError(f"journal {self.path} is not a regular file")
            if hasattr(os, "O_NONBLOCK"):
                os.set_blocking(fd, True)
            if stat.S_IMODE(info.st_mode) & ~_MODE:
                os.fchmod(fd, _MODE)
            if info.st_size and not self._ends_with_newline():
                os.write(fd, b"\n")  # a crash cut the last line: start a clean one
            if not existed:
                self._sync_dir()
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"

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

    @property
    def written(self) -> int:
        """How many lines this journal object has written so far."""
        return self._written

    def append(self, event: dict[str, Any]) -> int:
        """Write one event (not yet durable); return its sequence number."""
        if self._fd is None:
            raise JournalError("journal is not open")
        line = json.dumps({**event, "time": _now()}, separators=(",", ":")) + "\n"
        data = line.encode()
        try:
            written = os.write(self._fd, data)
            while written < len(data):  # pragma: no cover - short writes are rare
                written += os.write(self._fd, data[written:])
        except OSError as exc:
            raise JournalError(f"cannot write journal {self.path}: {exc.strerror}") from None
        self._written += 1
        return self._written

    # The events, in one place: every writer of a journal uses these.

    def intent(self, account_id: str, tunnel_id: str) -> int:
        """A request for the tunnel is about to be sent."""
        return self.append({"event": "intent", "account_id": account_id, "tunnel_id": tunnel_id})

    def rotated(
        self, account_id: str, result: PSKGenerateResult, *, attempts: int, uncertain: bool
    ) -> int:
        """A new PSK arrived; ``uncertain`` when a retry may have hidden a newer one."""
        return self.append(
            {
                "event": "rotated",
                "account_id": account_id,
                "tunnel_id": result.ipsec_tunnel_id,
                "psk": result.psk,
                "last_generated_on": generated_on(result),
                "attempts": attempts,
                "uncertain": uncertain,
            }
        )

    def verified(self, account_id: str, result: PSKGenerateResult) -> int:
        """A read-back showed the last rotated PSK is the tunnel's current one."""
        return self.append(
            {
                "event": "verified",
                "account_id": account_id,
                "tunnel_id": result.ipsec_tunnel_id,
                "last_generated_on": generated_on(result),
            }
        )

    def failed(self, account_id: str, tunnel_id: str, exc: BaseException) -> int:
        """The tunnel's rotation failed (the message of an SDK error holds no secret)."""
        return self.append(
            {
                "event": "failed",
                "account_id": account_id,
                "tunnel_id": tunnel_id,
                "error": f"{type(exc).__name__}: {exc}",
                "outcome_unknown": isinstance(exc, MagicWANError) and exc.outcome_unknown,
            }
        )

    async def sync(self, upto: int | None = None) -> None:
        """Return once line ``upto`` (default: everything written) is on disk.

        Callers arriving while an fsync runs wait for the next one, which covers
        all their lines at once.
        """
        target = self._written if upto is None else upto
        while self._synced < target:
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
            raise JournalError(f"cannot sync journal {self.path}: {exc.strerror}") from None
        self._synced = max(self._synced, covered)

    async def aclose(self) -> None:
        """Sync what was written and close the file."""
        if self._fd is None:
            return
        try:
            if self._synced < self._written:
                await self.sync()
        finally:
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)
