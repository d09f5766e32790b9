"""``magicwan journal show | export | prune``: read rotation journals without ``jq``.

``show`` tells, per tunnel, where its rotation stands (never a PSK). ``export`` hands the
PSKs to another tool: on stdout only, and never to a terminal unless ``--force``; given a
directory (``--journal-dir``), each tunnel's newest PSK across its journals. Both read
without locking (a running rotation may hold the journal) and refuse a file that is not a
journal, untouched. ``prune`` removes a directory's older journals, but never one that
still holds a tunnel's newest PSK, nor one a rotation holds.

A directory's journals are read by :mod:`magicwan.cli.journal_dir`; ``prune`` runs in
:mod:`magicwan.cli.journal_prune`.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shlex
import stat
from typing import Any

from magicwan.cli.common import UsageError
from magicwan.cli.console import Console, escape
from magicwan.cli.journal_dir import JournalFile, journals_in, left_open, newest_psks
from magicwan.cli.journal_prune import run_prune
from magicwan.cli.parser import (
    Parser,
    add_actions,
    add_command,
    add_output_options,
    non_negative_int,
)
from magicwan.cli.status import ExitStatus, exit_status_help
from magicwan.internal.timestamps import format_datetime
from magicwan.journal import (
    JournalContents,
    JournalError,
    JournalRecord,
    read_journal_contents,
)

__all__ = ["JournalFile", "journals_in", "left_open", "newest_psks", "protect_output", "register"]


def register(commands: argparse._SubParsersAction[Parser]) -> None:
    """Add ``journal`` and its actions to the command tree."""
    journal = add_command(
        commands,
        "journal",
        None,
        help="show a rotation journal, export its PSKs, or prune a directory of them",
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
        run_prune,
        help="remove older journals of a directory, never one holding a tunnel's newest PSK",
        usage="%(prog)s DIR --keep N [--dry-run] [--json]",
        description=(
            "Remove the journals (*.jsonl) of DIR but the N newest, except any that still "
            "holds a tunnel's newest PSK (what 'journal export DIR' would give for it: "
            "removing it would lose that PSK), any whose request for a tunnel was left "
            "open (a cut run: --resume needs it), the latest run's when that run did not "
            "finish (--journal-dir DIR --resume continues it) and any a rotation holds "
            "(locked). "
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


def _contents(path: str) -> JournalContents:
    if not os.path.lexists(path):
        raise UsageError(f"no such journal: {path}")
    try:
        return read_journal_contents(path)
    except JournalError as exc:
        raise UsageError(str(exc)) from None


def _records(contents: JournalContents) -> list[JournalRecord]:
    records = contents.records.values()
    return sorted(records, key=lambda r: (r.first_time is None, r.first_time or 0))


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
    contents = _contents(args.file)
    records = _records(contents)
    if args.json:
        for record in records:
            console.json(_show_json(record))
    elif records:
        accounts = {r.account_id for r in records}
        header = ["TUNNEL", "STATE", "LAST CHANGE", "ATTEMPTS", "VERIFIED", "DELIVERED", "NOTE"]
        if len(accounts) > 1:
            header.insert(0, "ACCOUNT")
        rows = [header]
        for record in records:
            state = state_of(record) + (
                " (uncertain)" if record.uncertain and not record.verified else ""
            )
            note = record.error or (
                "earlier PSK kept" if record.event == "failed" and record.psk else ""
            )
            row = [
                record.tunnel_id,
                state,
                _time(record.last_time) or "-",
                str(record.attempts),
                "yes" if record.verified else "no",
                "yes" if record.delivered else "no",
                note,
            ]
            if len(accounts) > 1:
                row.insert(0, record.account_id or "-")
            rows.append([escape(cell) for cell in row])
        console.table(rows)
    states = [state_of(r) for r in records]
    console.say(
        f"{len(records)} tunnel(s): {states.count('rotated')} rotated, "
        f"{states.count('failed')} failed, {states.count('in-flight')} in flight"
        + _last_run(contents.finished)
    )
    return ExitStatus.OK


def _last_run(finished: bool | None) -> str:
    """What the journal says of its last run, for the line under ``show``."""
    if finished is None:
        return ""  # a journal of 0.1.0 cannot tell
    if finished:
        return "; its last run finished"
    return "; its last run did not finish (no finished line: --resume continues it)"


def _export_rows(records: list[JournalRecord]) -> list[dict[str, Any]]:
    rows = []
    for record in records:
        if record.psk is None and record.pending_psk is None:
            continue
        rows.append(
            {
                "account_id": record.account_id,
                "tunnel_id": record.tunnel_id,
                "ipsec_id": record.ipsec_id,
                "last_generated_on": _time(record.last_generated_on),
                "psk": record.psk,
                "pending_psk": record.pending_psk,
                "uncertain": record.uncertain and not record.verified,
                "in_flight": record.event == "intent",
            }
        )
    return rows


def protect_output(console: Console, force: bool) -> None:
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
        return _records(_contents(source)), source
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
    protect_output(console, args.force)
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
