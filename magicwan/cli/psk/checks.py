"""``psk rotate``'s command line, checked before anything is read or sent."""

from __future__ import annotations

import argparse

from magicwan.cli.common import UsageError
from magicwan.cli.metrics import MetricsError, check_metrics_path
from magicwan.cli.psk.delivering import DELIVERY_TUNING
from magicwan.internal.redaction import shown_id

__all__ = ["check_options"]


def _given(args: argparse.Namespace, name: str) -> bool:
    return hasattr(args, name)


def check_options(args: argparse.Namespace) -> None:
    _check_selection(args)
    _check_journal(args)
    _check_delivery(args)


def _check_selection(args: argparse.Namespace) -> None:
    if not (args.tunnels or args.from_file or args.all or args.name or args.older_than):
        hint = None
        if args.account is not None:
            hint = (
                f"{shown_id(args.account)} was taken as ACCOUNT: the first positional argument is "
                "always the account; give it before the tunnel ids"
            )
        raise UsageError(
            "which tunnels? give TUNNEL ids, --all, --name GLOB or --from-file FILE",
            hints=[hint],
        )
    if args.all and args.name:
        raise UsageError("--all and --name both select tunnels: give one (--exclude narrows)")
    if args.validate_only and args.dry_run:
        raise UsageError("--dry-run sends nothing; --validate-only sends every request: pick one")
    if _given(args, "batch_size") and getattr(args, "method", "generate") != "set":
        raise UsageError("--batch-size applies to --method set")


def _check_journal(args: argparse.Namespace) -> None:
    checking = args.validate_only or args.dry_run or args.deliver_check
    if args.journal is None and args.journal_dir is None and not checking:
        raise UsageError(
            "a journal is required: --journal FILE or --journal-dir DIR. It is where every "
            "new PSK is recorded (0600), and what lets a rerun resume"
        )
    if args.resume and args.journal is None and args.journal_dir is None:
        raise UsageError(
            "--resume continues the run recorded in a journal: give it as --journal FILE "
            "(the summary of that run names it), or --journal-dir DIR"
        )
    if args.metrics_file is not None:
        try:
            check_metrics_path(args.metrics_file)
        except MetricsError as exc:
            raise UsageError(str(exc)) from None


def _check_delivery(args: argparse.Namespace) -> None:
    sending = args.deliver_exec is not None or args.deliver_strongswan is not None
    templates = [args.strongswan_connection, args.strongswan_local_id, args.strongswan_remote_id]
    if args.reauth and args.deliver_strongswan is None:
        raise UsageError("--reauth applies to --deliver-strongswan")
    if any(t is not None for t in templates) and args.deliver_strongswan is None:
        raise UsageError("--strongswan-... templates apply to --deliver-strongswan")
    if args.deliver_check and not sending:
        raise UsageError("--deliver-check needs a --deliver-... option: what would it check?")
    if args.deliver_check and (args.validate_only or args.dry_run):
        raise UsageError("--deliver-check is a check of its own: drop --validate-only/--dry-run")
    tuning = [f for f in DELIVERY_TUNING if _given(args, f)]
    if not sending and tuning:
        flags = ", ".join("--" + f.replace("_", "-") for f in tuning)
        raise UsageError(f"{flags}: need a --deliver-... option")
    if sending and args.validate_only:
        raise UsageError("--validate-only changes nothing, so it delivers nothing")
