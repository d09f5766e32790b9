"""The journal of a ``psk rotate`` run: which one (a file, a directory's fresh or unfinished
one), locking the directory for the run, and what a resume finds in it."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from magicwan.cli.common import (
    CLIError,
    UsageError,
    check_journal,
    fresh_journal,
    journal_directory,
)
from magicwan.cli.console import Console
from magicwan.cli.journal_dir import journals_in, last_run
from magicwan.cli.psk.selection import already_rotated, refuse_reuse
from magicwan.journal import JournalRecord
from magicwan.models.tunnels import IPsecTunnel

__all__ = [
    "delivering",
    "directory_lock",
    "discarded_if_unused",
    "journal_for",
    "keeping",
    "resumable",
    "try_journal",
    "unfinished",
    "unfinished_journal",
    "unfinished_record",
]


def keeping(args: argparse.Namespace) -> bool:
    """``--validate-only --method set`` sends real PSKs (made here): a server that applies
    them anyway makes them the tunnels', so a journal given gets their intent lines."""
    return bool(args.validate_only) and getattr(args, "method", "generate") == "set"


def _journal_wanted(args: argparse.Namespace) -> bool:
    writing = not (args.validate_only or args.dry_run or args.deliver_check)
    kept = keeping(args) and (args.journal is not None or args.journal_dir is not None)
    return writing or kept


async def try_journal(args: argparse.Namespace) -> None:
    """Before any request: the journal the run would use can be created, opened and
    locked (and is a journal); one made only to find that out is removed again, so a run
    refused later (nothing selected) leaves none behind."""
    if not _journal_wanted(args):
        return
    if args.journal is not None and _exists(args.journal):
        await check_journal(args.journal)
        return
    left = unfinished(args) if args.journal is None and args.resume else None
    if left is not None:
        await check_journal(left)
        return
    journal, made = await journal_for(args)
    if made and journal is not None:
        _discard(journal)


async def journal_for(args: argparse.Namespace) -> tuple[str | None, bool]:
    """The run's journal, checked (locked, a journal), and whether it was made now."""
    journal: str | None = args.journal
    if args.validate_only and not keeping(args):
        return None, False
    if not _journal_wanted(args):
        return journal, False  # a dry run reads the one given (--resume), if any
    writing = not (args.validate_only or args.dry_run or args.deliver_check)
    if journal is None and args.resume and writing:
        journal = unfinished(args)
        args.resume = journal is not None
    if journal is None:
        journal = fresh_journal(args.journal_dir)
        made = True
    else:
        made = not _exists(journal)
    await check_journal(journal)
    return journal, made


@contextlib.contextmanager
def discarded_if_unused(journal: str | None) -> Iterator[None]:
    """Remove ``journal`` (made by this run) if the run is refused with nothing in it but
    its header."""
    try:
        yield
    except CLIError:
        if journal is not None and _header_only(journal):
            _discard(journal)
        raise


def _exists(path: str) -> bool:
    return os.path.lexists(path)  # a dangling symbolic link too: the journal refuses it


def _header_only(path: str) -> bool:
    try:
        with open(path, "rb") as file:
            lines = file.read(1 << 16).splitlines()
    except OSError:
        return False
    if len(lines) > 1:
        return False
    try:
        return not lines or json.loads(lines[0]).get("event") == "journal"
    except (ValueError, AttributeError):
        return False


def _discard(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def unfinished_journal(directory: str, *, delivering: bool = False) -> str | None:
    """The newest journal in ``directory`` if its run did not finish, or None.

    Unfinished: no ``finished`` line ends it (a signal, a halt, a kill, a journal failure
    stopped the run before every selected tunnel had its outcome), a request it holds was
    never answered, or (with ``delivering``) a PSK it holds was not delivered. A journal
    of magicwan 0.1.0 (no header: it cannot say whether its run finished) is judged by
    the last two alone. A tunnel that failed for certain (a 403) in a finished run does
    not keep its journal open: later runs would skip every other tunnel it rotated, for
    ever."""
    if not Path(directory).is_dir():
        return None
    journal_directory(directory)  # others can write, or own it: refused as a fresh run is
    journals, _ = journals_in(directory)
    newest = last_run(journals)
    if newest is None:
        return None
    if newest.finished is False or any(
        unfinished_record(r, delivering=delivering) for r in newest.records.values()
    ):
        return str(newest.path)
    return None


def unfinished_record(record: JournalRecord, *, delivering: bool) -> bool:
    """The run that wrote ``record`` did not finish with its tunnel: a request left open,
    or (when this run delivers) a PSK not yet delivered."""
    return record.left_open or (delivering and record.rotated and not record.delivered)


@contextlib.contextmanager
def directory_lock(directory: str | None) -> Iterator[None]:
    """Hold ``--journal-dir`` for the whole run: a second run on it (the next cron slot
    while this one still runs) is refused, so two runs never rotate one tunnel and
    deliver different PSKs to its router."""
    if directory is None:
        yield
        return
    try:
        with contextlib.suppress(FileExistsError):
            Path(directory).mkdir(mode=0o700, parents=True)  # then checked by fresh_journal
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"cannot use journal directory {directory}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"another rotation is using the journal directory {directory} (it is "
                "locked): two runs would rotate the same tunnels",
                hints=["wait for it to finish; a scheduler should not start overlapping runs"],
            ) from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


def unfinished(args: argparse.Namespace) -> str | None:
    return unfinished_journal(args.journal_dir, delivering=delivering(args))


def delivering(args: argparse.Namespace) -> bool:
    return args.deliver_exec is not None or args.deliver_strongswan is not None


def resumable(
    console: Console,
    args: argparse.Namespace,
    journal: str | None,
    account: str,
    selected: list[IPsecTunnel],
) -> list[IPsecTunnel]:
    """The selected tunnels the journal already rotated; a reuse without --resume is
    refused."""
    if journal is None or args.validate_only:
        return []
    done = already_rotated(journal, account, selected)
    if done and not args.resume:
        refuse_reuse(journal, len(done), len(selected))
    if args.resume and not done and not args.dry_run:
        console.say(
            f"nothing to resume: {journal} records none of the selected tunnels; rotating them all"
        )
    return done
