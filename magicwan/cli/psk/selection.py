"""Which tunnels ``psk rotate`` takes: the options' selection, a journal's reuse, the
dry run."""

from __future__ import annotations

import argparse
import fnmatch

from magicwan.cli.common import UsageError
from magicwan.cli.console import Console
from magicwan.cli.status import ExitStatus
from magicwan.journal import JournalError, read_journal
from magicwan.models.tunnels import IPsecTunnel

__all__ = ["already_rotated", "dry_run", "refuse_reuse", "select"]


def select(
    args: argparse.Namespace, account: str, found: list[IPsecTunnel], explicit: list[str]
) -> list[IPsecTunnel]:
    """The tunnels the options select, in the order given (ids) or listed (the rest)."""
    by_id = {tunnel.id.lower(): tunnel for tunnel in found}
    unknown = [t for t in dict.fromkeys(explicit) if t.lower() not in by_id]
    if unknown:
        shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise UsageError(
            f"not IPsec tunnels of account {account}: {shown}",
            hints=["'magicwan tunnels list' shows the account's tunnels"],
        )
    chosen: dict[str, IPsecTunnel] = {t.lower(): by_id[t.lower()] for t in explicit}
    for tunnel in found:
        name = tunnel.name or ""
        if args.all or any(fnmatch.fnmatchcase(name, glob) for glob in args.name):
            chosen.setdefault(tunnel.id.lower(), tunnel)
    if args.exclude:
        chosen = {
            key: tunnel
            for key, tunnel in chosen.items()
            if not any(
                fnmatch.fnmatchcase(tunnel.name or "", glob) or fnmatch.fnmatchcase(tunnel.id, glob)
                for glob in args.exclude
            )
        }
    return list(chosen.values())


def already_rotated(journal: str, account: str, selected: list[IPsecTunnel]) -> list[IPsecTunnel]:
    try:
        records = read_journal(journal)
    except JournalError as exc:
        raise UsageError(str(exc)) from None
    key = account.lower()
    done = []
    for tunnel in selected:
        record = records.get((key, tunnel.id.lower()))
        if record is not None and record.rotated:
            done.append(tunnel)
    return done


def refuse_reuse(journal: str, done: int, selected: int) -> None:
    if done == selected:
        what = (
            f"the journal {journal} already records a new PSK for every one of the {selected} "
            "selected tunnels: this run would rotate nothing"
        )
    else:
        what = (
            f"the journal {journal} already records new PSKs for {done} of the {selected} "
            "selected tunnels: they would be skipped, not rotated"
        )
    raise UsageError(
        what,
        hints=[
            "to finish the run that journal records, add --resume",
            "to rotate again, use a new journal; --journal-dir DIR makes a fresh one per run",
        ],
    )


def dry_run(
    console: Console,
    args: argparse.Namespace,
    selected: list[IPsecTunnel],
    done: list[IPsecTunnel],
) -> int:
    skipped = {tunnel.id.lower() for tunnel in done} if args.resume else set()
    for tunnel in selected:
        skip = tunnel.id.lower() in skipped
        if args.json:
            console.json(
                {
                    "event": "tunnel",
                    "tunnel_id": tunnel.id,
                    "name": tunnel.name,
                    "state": "would_skip" if skip else "would_rotate",
                }
            )
        else:
            note = "  (skipped: already rotated in the journal)" if skip else ""
            console.data(f"{tunnel.id}  {tunnel.name or '-'}{note}")
    rotating = len(selected) - len(skipped)
    where = f"; {len(skipped)} already in the journal would be skipped" if skipped else ""
    if args.journal_dir is not None:
        where += f"; a new journal would be made in {args.journal_dir}"
    console.say(
        f"dry run: {rotating} tunnel(s) would be rotated{where}. Only the tunnel list was "
        "requested; nothing changed."
    )
    if args.json:
        console.json(
            {
                "event": "summary",
                "dry_run": True,
                "would_rotate": rotating,
                "would_skip": len(skipped),
            }
        )
    return ExitStatus.OK
