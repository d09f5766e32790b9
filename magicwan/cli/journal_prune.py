"""``magicwan journal prune``: remove a directory's older journals, but never one that still
holds a tunnel's newest PSK, one whose request was left open, the latest run's when it did
not finish, nor one a rotation holds."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
from pathlib import Path

from magicwan.cli.console import Console
from magicwan.cli.journal_dir import (
    JournalFile,
    Key,
    journals_in,
    last_run,
    left_open,
    newest_psks,
)
from magicwan.cli.status import ExitStatus
from magicwan.internal.timestamps import format_datetime

__all__ = ["run_prune"]


def _remove(path: Path) -> str | None:
    """Unlink ``path`` holding its lock (so no rotation opens it meanwhile); a reason it
    was kept, or None once it is gone."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC)
    except OSError as exc:
        return f"cannot open it: {exc.strerror}"
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return "a rotation holds it (locked)"
        try:
            path.unlink()
        except OSError as exc:
            return f"cannot remove it: {exc.strerror}"
    finally:
        os.close(fd)
    return None


async def run_prune(args: argparse.Namespace, console: Console) -> int:
    journals, skipped = journals_in(args.directory)
    _, sources = newest_psks(journals)
    unfinished = left_open(journals)
    latest = last_run(journals)
    cut = latest.path if latest is not None and latest.finished is False else None
    holders = _newest_psk_counts(sources)
    removed = kept = 0
    for number, journal in enumerate(journals):
        action, why = _prune_one(args, number, journal.path, holders, unfinished, cut)
        if action == "kept":
            kept += 1
        else:
            removed += 1
        _say_pruned(args, console, journal, action, why)
    if removed and not args.dry_run:
        _sync_directory(args.directory)
    for path, why in skipped:
        console.say(f"left alone: {path} (not a journal: {why})")
    verb = "would remove" if args.dry_run else "removed"
    console.say(f"{verb} {removed} journal(s), kept {kept} in {args.directory}")
    return ExitStatus.OK


def _newest_psk_counts(sources: dict[Key, set[Path]]) -> dict[Path, int]:
    """Per journal, how many tunnels' newest PSK it holds."""
    holders: dict[Path, int] = {}
    for paths in sources.values():
        for path in paths:
            holders[path] = holders.get(path, 0) + 1
    return holders


def _prune_one(
    args: argparse.Namespace,
    number: int,
    path: Path,
    holders: dict[Path, int],
    unfinished: dict[Path, int],
    cut: Path | None,
) -> tuple[str, str]:
    """Keep or remove (unless --dry-run) the ``number``-th newest journal: what was done
    (``kept``, ``removed``, ``would remove``) and why. ``cut`` is the latest run's journal
    when that run did not finish."""
    if number < args.keep:
        return "kept", f"one of the {args.keep} newest"
    if path in holders:
        return "kept", f"holds the newest PSK of {holders[path]} tunnel(s)"
    if path in unfinished:
        return "kept", (
            f"a request for {unfinished[path]} tunnel(s) was left open in it: "
            "'psk rotate ... --resume' with it reads them back"
        )
    if path == cut:
        return "kept", (
            "the latest run, which did not finish: 'psk rotate --journal-dir DIR --resume' "
            "continues it"
        )
    if args.dry_run:
        return "would remove", "older, and every PSK in it is in a newer journal"
    reason = _remove(path)
    if reason is None:
        return "removed", "older, and every PSK in it is in a newer journal"
    return "kept", reason


def _say_pruned(
    args: argparse.Namespace, console: Console, journal: JournalFile, action: str, why: str
) -> None:
    """One journal's line: what ``prune`` did with it and why."""
    if args.json:
        console.json(
            {
                "event": "journal",
                "path": str(journal.path),
                "created": format_datetime(journal.created),
                "action": action.replace(" ", "_"),
                "reason": why,
            }
        )
    else:
        console.say(f"{action}: {journal.path} ({why})")


def _sync_directory(directory: str) -> None:
    """fsync ``directory``, so that the removals in it survive a power cut (best effort)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
