"""``magicwan journal show | export | prune``: read rotation journals without ``jq``.

``show`` tells, per tunnel, where its rotation stands (never a PSK). ``export`` hands the
PSKs to another tool: on stdout only, and never to a terminal unless ``--force``; given a
directory (``--journal-dir``), each tunnel's newest PSK across its journals. Both read
without locking (a running rotation may hold the journal) and refuse a file that is not a
journal, untouched. ``prune`` removes a directory's older journals, but never one that
still holds a tunnel's newest PSK, nor one a rotation holds.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import io
import json
import os
import shlex
import stat
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from magicwan._argtypes import non_negative_int
from magicwan._converter import format_datetime, parse_datetime
from magicwan.cli.common import UsageError, run_number
from magicwan.cli.console import Console, escape
from magicwan.cli.parser import Parser, add_actions, add_command, add_output_options
from magicwan.cli.status import ExitStatus, exit_status_help
from magicwan.journal import JournalError, JournalRecord, read_journal

__all__ = ["JournalFile", "journals_in", "left_open", "newest_psks", "register"]

Key = tuple[str | None, str]


def register(commands: argparse._SubParsersAction[Parser]) -> None:
    """Add ``journal`` and its actions to the command tree."""
    journal = add_command(
        commands,
        "journal",
        None,
        help="show a rotation journal, or export its PSKs",
        description="Read a rotation journal (the JSON Lines file psk rotate writes).",
    )
    actions = add_actions(journal, "journal_command")
    show = add_command(
        actions,
        "show",
        _show,
        help="per tunnel: state, times, attempts, verified, delivered (never PSKs)",
        usage="%(prog)s FILE [--json]",
        description=(
            "Show where each tunnel of a journal stands: its state (rotated, failed, or "
            "in-flight: a request whose outcome was never recorded, which a rerun with "
            "--resume redoes), when, after how many attempts, whether a read-back verified "
            "it and whether it was delivered. Never a PSK."
        ),
        epilog=exit_status_help(),
    )
    show.add_argument("file", metavar="FILE", help="the journal")
    add_output_options(show)
    export = add_command(
        actions,
        "export",
        _export,
        help="the newest PSKs of a journal (or a --journal-dir) as JSON Lines, CSV or env",
        usage="%(prog)s FILE|DIR [--format json|csv|env] [--force]",
        description=(
            "Write each tunnel's newest PSK known to be live at Cloudflare to stdout, for "
            "another tool: json (one object a line, with a set's unconfirmed PSK as "
            "pending_psk), csv (with a header row) or env (MAGICWAN_PSK_<tunnel id>=... "
            "lines to source). Given a directory (what --journal-dir fills), each "
            "tunnel's newest PSK across all its journals, as 'journal prune' decides it "
            "(when nothing tells, the journals' times pick one). Refuses a terminal unless "
            "--force: PSKs are secrets."
        ),
        epilog=exit_status_help(),
    )
    export.add_argument(
        "file", metavar="FILE|DIR", help="a journal, or a directory of journals (*.jsonl)"
    )
    export.add_argument(
        "--format", choices=("json", "csv", "env"), default="json", help="(default: json)"
    )
    export.add_argument(
        "--force", action="store_true", help="write PSKs even when stdout is a terminal"
    )
    add_output_options(export, json=False)
    prune = add_command(
        actions,
        "prune",
        _prune,
        help="remove older journals of a directory, never one holding a tunnel's newest PSK",
        usage="%(prog)s DIR --keep N [--dry-run] [--json]",
        description=(
            "Remove the journals (*.jsonl) of DIR but the N newest, except any that still "
            "holds a tunnel's newest PSK (what 'journal export DIR' would give for it: "
            "removing it would lose that PSK), any whose request for a tunnel was left "
            "open (a cut run: --resume needs it) and any a rotation holds (locked). "
            "'Newest' never trusts the clock (it may step back between runs): of two "
            "journals' PSKs for a tunnel, the one with the later Cloudflare "
            "last_generated_on when both have one, else the one of the later run (the "
            "run number in the journal's name); when neither tells, both are kept. "
            "--keep N counts journals by their creation time. Old journals hold "
            "plaintext PSKs: prune them on a schedule, after the PSKs are on the "
            "routers. Files that are not journals are left alone."
        ),
        epilog=exit_status_help(),
    )
    prune.add_argument("directory", metavar="DIR", help="the journal directory")
    prune.add_argument(
        "--keep",
        type=non_negative_int,
        metavar="N",
        required=True,
        help="how many of the newest journals to keep whatever they hold",
    )
    prune.add_argument(
        "--dry-run", action="store_true", help="say what would be removed; remove nothing"
    )
    add_output_options(prune)


@attrs.frozen
class JournalFile:
    """One journal of a directory: its path, when it was created (by the clock of the
    machine: for people, and for ``--keep``), its run number (the order of the runs, see
    :func:`~magicwan.cli.common.fresh_journal`; None for a name without one), what it
    holds."""

    path: Path
    created: datetime
    records: dict[Key, JournalRecord] = attrs.field(repr=False)
    run: int | None = None


def _created(path: Path) -> datetime:
    """The header's ``created`` time, else the file's modification time."""
    try:
        with path.open("rb") as file:
            header = json.loads(file.readline())
        return parse_datetime(header["created"])
    except (OSError, ValueError, TypeError, KeyError):
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)


def journals_in(directory: str) -> tuple[list[JournalFile], list[tuple[Path, str]]]:
    """The journals (``*.jsonl``) of ``directory``, newest first by their ``created`` time,
    and the ``*.jsonl`` files that are not journals (with why). Other files are not looked
    at."""
    root = Path(directory)
    if not root.is_dir():
        raise UsageError(f"no such journal directory: {directory}")
    journals: list[JournalFile] = []
    skipped: list[tuple[Path, str]] = []
    for path in sorted(root.glob("*.jsonl")):
        if path.is_symlink() or not path.is_file():
            skipped.append((path, "not a regular file"))
            continue
        try:
            records = read_journal(path)
            created = _created(path)
        except (JournalError, OSError) as exc:
            skipped.append((path, str(exc)))
            continue
        journals.append(
            JournalFile(path=path, created=created, records=records, run=run_number(path))
        )
    journals.sort(key=lambda j: (j.created, j.path.name), reverse=True)
    return journals, skipped


@attrs.frozen
class _Said:
    """What one journal says of one tunnel."""

    record: JournalRecord
    journal: JournalFile

    @property
    def stamp(self) -> datetime | None:
        """Cloudflare's ``last_generated_on`` of the PSK this record ends on; None when
        its last word has none (a pending set PSK, a request left open)."""
        record = self.record
        if record.pending_psk is not None or record.left_open:
            return None
        return record.last_generated_on

    @property
    def clock(self) -> tuple[datetime, datetime]:
        """The machine's clock: only to pick one of records nothing else orders."""
        return (self.record.last_time or self.journal.created, self.journal.created)


def _newer(a: _Said, b: _Said) -> bool:
    """``a`` is known to be newer than ``b``: by Cloudflare's ``last_generated_on`` when
    both have one, else by the run numbers of their journals. Never by the machine's
    clock, which may have stepped back between two runs."""
    if a.stamp is not None and b.stamp is not None:
        return a.stamp > b.stamp
    if a.journal.run is not None and b.journal.run is not None:
        return a.journal.run > b.journal.run
    return False


def _latest(candidates: list[_Said]) -> list[_Said]:
    """The candidates no other one is known to be newer than (all of them when the
    orders disagree): each may be the tunnel's latest word."""
    latest = [c for c in candidates if not any(_newer(d, c) for d in candidates)]
    return latest or candidates


def _pick(candidates: list[_Said]) -> _Said:
    """One of the latest candidates: when several may be, the machine's clock picks."""
    return max(_latest(candidates), key=lambda c: c.clock)


def newest_psks(
    journals: Iterable[JournalFile],
) -> tuple[dict[Key, JournalRecord], dict[Key, set[Path]]]:
    """Each tunnel's newest PSK across ``journals``: the record of its latest journal line
    that holds a PSK (``psk`` or a set's unconfirmed ``pending_psk``) and, when that record
    has only a pending PSK, the newest confirmed ``psk`` beside it. "Newest" goes by
    Cloudflare's ``last_generated_on`` when both records have one, else by the order of
    the runs (the run number in a journal's name); the machine's clock only picks one of
    records that neither orders. Also, per tunnel, the journals any of its possibly newest
    PSKs come from (which ``prune`` keeps: all of them when it cannot tell)."""
    holding: dict[Key, list[_Said]] = {}
    confirmed: dict[Key, list[_Said]] = {}
    for journal in journals:
        for key, record in journal.records.items():
            said = _Said(record, journal)
            if record.psk is not None or record.pending_psk is not None:
                holding.setdefault(key, []).append(said)
            if record.psk is not None:
                # As a confirmed PSK, it is the record's rotated line that counts.
                bare = attrs.evolve(record, pending_psk=None, in_flight=False)
                confirmed.setdefault(key, []).append(_Said(bare, journal))
    chosen: dict[Key, JournalRecord] = {}
    sources: dict[Key, set[Path]] = {}
    for key, candidates in holding.items():
        latest = _latest(candidates)
        sources[key] = {c.journal.path for c in latest}
        if any(c.record.psk is None for c in latest) and key in confirmed:
            sources[key] |= {c.journal.path for c in _latest(confirmed[key])}
        record = _pick(candidates).record
        if record.psk is None and key in confirmed:
            record = attrs.evolve(record, psk=_pick(confirmed[key]).record.psk)
        chosen[key] = record
    return chosen, sources


def left_open(journals: Iterable[JournalFile]) -> dict[Path, int]:
    """Journals whose tunnels' latest word may be a request left open (a run cut in
    flight, an unknown outcome): the tunnel may hold a PSK nobody recorded, and
    ``--resume`` with that journal reads it back. Per journal, how many such tunnels.
    "Latest" as in :func:`newest_psks`: when it cannot tell, any of them."""
    said: dict[Key, list[_Said]] = {}
    for journal in journals:
        for key, record in journal.records.items():
            said.setdefault(key, []).append(_Said(record, journal))
    counts: dict[Path, int] = {}
    for candidates in said.values():
        for latest in _latest(candidates):
            if latest.record.left_open:
                path = latest.journal.path
                counts[path] = counts.get(path, 0) + 1
    return counts


def _records(path: str) -> list[JournalRecord]:
    if not os.path.lexists(path):
        raise UsageError(f"no such journal: {path}")
    try:
        records = read_journal(path)
    except JournalError as exc:
        raise UsageError(str(exc)) from None
    return sorted(records.values(), key=lambda r: (r.first_time is None, r.first_time or 0))


def _time(value: Any) -> str | None:
    return format_datetime(value) if value is not None else None


def state_of(record: JournalRecord) -> str:
    """``rotated``, ``failed`` or ``in-flight`` (an intent is the last word: a request whose
    outcome was never recorded)."""
    # record.event, not record.in_flight: the latter stays set after a ``failed`` line.
    return "in-flight" if record.event == "intent" else record.event


def _show_json(record: JournalRecord) -> dict[str, Any]:
    return {
        "account_id": record.account_id,
        "tunnel_id": record.tunnel_id,
        "state": state_of(record),
        "uncertain": record.uncertain,
        "verified": record.verified,
        "delivered": record.delivered,
        "attempts": record.attempts,
        "first_time": _time(record.first_time),
        "last_time": _time(record.last_time),
        "last_generated_on": _time(record.last_generated_on),
        "ipsec_id": record.ipsec_id,
        "has_psk": record.psk is not None,
        "pending_psk": record.pending_psk is not None,
        "outcome_unknown": record.outcome_unknown,
        "error": record.error,
    }


async def _show(args: argparse.Namespace, console: Console) -> int:
    records = _records(args.file)
    if args.json:
        for record in records:
            console.json(_show_json(record))
    elif records:
        accounts = {r.account_id for r in records}
        header = ["TUNNEL", "STATE", "LAST CHANGE", "ATTEMPTS", "VERIFIED", "DELIVERED", "NOTE"]
        if len(accounts) > 1:
            header.insert(0, "ACCOUNT")
        rows = [header]
        for r in records:
            state = state_of(r) + (" (uncertain)" if r.uncertain and not r.verified else "")
            note = r.error or ("earlier PSK kept" if r.event == "failed" and r.psk else "")
            row = [
                r.tunnel_id,
                state,
                _time(r.last_time) or "-",
                str(r.attempts),
                "yes" if r.verified else "no",
                "yes" if r.delivered else "no",
                note,
            ]
            if len(accounts) > 1:
                row.insert(0, r.account_id or "-")
            rows.append([escape(cell) for cell in row])
        console.table(rows)
    states = [state_of(r) for r in records]
    console.say(
        f"{len(records)} tunnel(s): {states.count('rotated')} rotated, "
        f"{states.count('failed')} failed, {states.count('in-flight')} in flight"
    )
    return ExitStatus.OK


def _export_rows(records: list[JournalRecord]) -> list[dict[str, Any]]:
    rows = []
    for r in records:
        if r.psk is None and r.pending_psk is None:
            continue
        rows.append(
            {
                "account_id": r.account_id,
                "tunnel_id": r.tunnel_id,
                "ipsec_id": r.ipsec_id,
                "last_generated_on": _time(r.last_generated_on),
                "psk": r.psk,
                "pending_psk": r.pending_psk,
                "uncertain": r.uncertain and not r.verified,
                "in_flight": r.event == "intent",
            }
        )
    return rows


def _protect_output(console: Console, force: bool) -> None:
    """Before a PSK is written: a regular file other users may read (``> psks.json`` under
    umask 022) is tightened to 0600 when it is ours, refused otherwise (unless --force)."""
    fileno = getattr(console.out, "fileno", None)
    try:
        fd = fileno() if fileno is not None else None
        info = os.fstat(fd) if fd is not None else None
    except (OSError, ValueError, io.UnsupportedOperation):
        return
    if fd is None or info is None or not stat.S_ISREG(info.st_mode) or not info.st_mode & 0o077:
        return
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid == os.geteuid():
        try:
            os.fchmod(fd, mode & 0o700)
        except OSError:
            pass
        else:
            console.tell(f"stdout is a file others could read (mode {mode:04o}): made it 0600")
            return
    if not force:
        raise UsageError(
            f"refusing to write PSKs into a file other users may read (mode {mode:04o}) that "
            "is not yours to tighten: write to a 0600 file, or pass --force"
        )
    console.warn(f"stdout is a file other users may read (mode {mode:04o}); it now holds PSKs")


def _export_records(source: str, console: Console) -> tuple[list[JournalRecord], str]:
    """A journal's records, or each tunnel's newest across a directory's journals."""
    if not os.path.isdir(source):
        return _records(source), source
    journals, skipped = journals_in(source)
    for path, why in skipped:
        console.warn(f"{path} skipped: {why}")
    if not journals:
        raise UsageError(f"no journals (*.jsonl) in directory {source}")
    chosen, _ = newest_psks(journals)
    records = sorted(chosen.values(), key=lambda r: (r.first_time is None, r.first_time or 0))
    return records, f"{len(journals)} journal(s) in {source}"


async def _export(args: argparse.Namespace, console: Console) -> int:
    records, source = _export_records(args.file, console)
    if console.out_is_terminal() and not args.force:
        raise UsageError(
            "refusing to write PSKs to a terminal (anyone behind you, your scrollback, a "
            "screen recording): redirect stdout to a file or a program, or pass --force"
        )
    _protect_output(console, args.force)
    rows = _export_rows(records)
    fmt = args.format
    if fmt == "json":
        for row in rows:
            console.json(
                {k: v for k, v in row.items() if k != "pending_psk" or v is not None},
                stamp=False,  # a data format of its own, read by other tools
            )
    else:
        confirmed = [row for row in rows if row["psk"] is not None]
        if fmt == "csv":
            buffer = io.StringIO()
            fields = ["account_id", "tunnel_id", "ipsec_id", "last_generated_on", "psk"]
            writer = csv.DictWriter(buffer, fields, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            writer.writerows(confirmed)
            console.raw(buffer.getvalue())
        else:
            console.raw(
                "".join(
                    f"MAGICWAN_PSK_{row['tunnel_id']}={shlex.quote(row['psk'])}\n"
                    for row in confirmed
                )
            )
        pending = sum(1 for row in rows if row["pending_psk"] is not None)
        if pending:
            console.warn(
                f"{pending} tunnel(s) have a set PSK whose answer was never recorded (it may "
                "be live): --format json shows it as pending_psk; 'psk rotate --resume' "
                "resends it"
            )
    doubtful = sum(1 for row in rows if row["in_flight"] or row["uncertain"])
    if doubtful:
        console.warn(
            f"{doubtful} tunnel(s) may hold a newer PSK than the one exported (a request's "
            "outcome is unknown): finish them with 'psk rotate ... --resume'"
        )
    console.say(f"exported {len(rows)} tunnel(s) from {source}")
    return ExitStatus.OK


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


async def _prune(args: argparse.Namespace, console: Console) -> int:
    journals, skipped = journals_in(args.directory)
    _, sources = newest_psks(journals)
    unfinished = left_open(journals)
    holders = _holders(sources)
    removed = kept = 0
    for number, journal in enumerate(journals):
        action, why = _prune_one(args, number, journal.path, holders, unfinished)
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


def _holders(sources: dict[Key, set[Path]]) -> dict[Path, int]:
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
) -> tuple[str, str]:
    """Keep or remove (unless --dry-run) the ``number``-th newest journal: what was done
    (``kept``, ``removed``, ``would remove``) and why."""
    if number < args.keep:
        return "kept", f"one of the {args.keep} newest"
    if path in holders:
        return "kept", f"holds the newest PSK of {holders[path]} tunnel(s)"
    if path in unfinished:
        return "kept", (
            f"a request for {unfinished[path]} tunnel(s) was left open in it: "
            "'psk rotate ... --resume' with it reads them back"
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
