"""``magicwan psk rotate``: many tunnels, journalled and resumable, through the engine."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path

from magicwan.cli.common import (
    UsageError,
    account_id,
    ipsec_tunnels,
    make_client,
    read_ids,
    resume_command,
    tunnel_id,
)
from magicwan.cli.console import Console
from magicwan.cli.metrics import (
    MetricsError,
    add_metrics_option,
    write_rotation_metrics,
)
from magicwan.cli.parser import (
    Parser,
    add_account_argument,
    add_api_options,
    add_command,
    add_output_options,
    duration,
)
from magicwan.cli.psk.checks import check_options
from magicwan.cli.psk.delivering import (
    add_template_arguments,
    deliver_check,
    deliver_timeout,
    deliverer,
)
from magicwan.cli.psk.journals import (
    delivering,
    directory_lock,
    discarded_if_unused,
    journal_for,
    keeping,
    resumable,
    try_journal,
    unfinished,
    unfinished_record,
)
from magicwan.cli.psk.selection import dry_run, select
from magicwan.cli.runner import RunSettings, TrackedDeliverer, run_rotation
from magicwan.cli.selection import older_than
from magicwan.cli.status import ExitStatus
from magicwan.client import MagicWAN
from magicwan.delivery import DEFAULT_SOCKET, Deliverer
from magicwan.errors import InvalidInputError
from magicwan.internal.timestamps import format_datetime
from magicwan.journal import JournalError, read_journal
from magicwan.models.tunnels import IPsecTunnel
from magicwan.ratelimit import CLOUDFLARE_BUDGET
from magicwan.rotation import DEFAULT_HALT_AFTER, RotationOptions

__all__ = ["DEFAULT_HALT_AFTER", "register"]

_BUDGET = f"{CLOUDFLARE_BUDGET[0]:,}-per-{CLOUDFLARE_BUDGET[1]:g}-seconds"

EXAMPLES = """\
examples:
  magicwan psk rotate ACCOUNT --all --journal-dir /var/lib/magicwan --json
  magicwan psk rotate ACCOUNT --name 'branch-*' --exclude 'branch-lab*' --journal run.jsonl
  magicwan psk rotate ACCOUNT --all --journal run.jsonl --resume     # finish that run
  magicwan psk rotate ACCOUNT --all --dry-run                         # one request: the list
  magicwan psk rotate ACCOUNT --all --journal-dir DIR --deliver-exec 'push-psk --router'
"""


def register(actions: argparse._SubParsersAction[Parser], epilog: str) -> None:
    parser = add_command(
        actions,
        "rotate",
        _rotate,
        help="rotate the PSKs of many tunnels, journalled and resumable",
        usage=(
            "%(prog)s [ACCOUNT] [TUNNEL ...] [--all | --name GLOB] [--exclude GLOB]\n"
            "       (--journal FILE [--resume] | --journal-dir DIR) [options]"
        ),
        description=(
            "Rotate the PSKs of many IPsec tunnels concurrently within the rate limit. "
            "The tunnel list is read first (one request); every new PSK is fsynced to the "
            "journal (0600) before it counts as done. A journal that already holds the "
            "selected tunnels is refused unless --resume is given (then tunnels already "
            "rotated are skipped); --journal-dir makes a fresh journal for every run, "
            "which is what a scheduled job wants. With a deliverer, one tunnel goes first "
            "and more follow as deliveries succeed (--rollout-max), so a broken router "
            "costs at most --halt-after tunnels. Options may go anywhere after "
            "'psk rotate'; the first positional argument is ACCOUNT."
        ),
        epilog=epilog,
    )
    add_account_argument(parser, then="; the first positional argument")
    parser.add_argument("tunnels", metavar="TUNNEL", nargs="*", help="IPsec tunnel ids")
    select = parser.add_argument_group("which tunnels")
    select.add_argument("--all", action="store_true", help="every IPsec tunnel of the account")
    select.add_argument(
        "--name",
        metavar="GLOB",
        action="append",
        default=[],
        help="tunnels whose name matches GLOB (case-sensitive; * ? [...]); may repeat",
    )
    select.add_argument(
        "--exclude",
        metavar="GLOB",
        action="append",
        default=[],
        help="leave out tunnels whose name or id matches GLOB; may repeat",
    )
    select.add_argument(
        "--older-than",
        metavar="DURATION",
        type=duration,
        help="only tunnels whose PSK is older than DURATION (90d, 12h, 30m, 45s; a tunnel "
        "never rotated counts as old); alone, it selects among all tunnels",
    )
    select.add_argument(
        "--from-file",
        metavar="FILE",
        action="append",
        default=[],
        help="tunnel ids, one a line (# comments; - for stdin); may repeat",
    )
    journal = parser.add_argument_group(
        "journal (one is required unless --validate-only or --dry-run)"
    )
    where = journal.add_mutually_exclusive_group()
    where.add_argument("--journal", metavar="FILE", help="the journal file (created 0600)")
    where.add_argument(
        "--journal-dir",
        metavar="DIR",
        help="a fresh journal for this run: DIR/rotate-<run number>-<UTC start time>.jsonl "
        "(a missing DIR is made 0700; DIR is locked for the run)",
    )
    journal.add_argument(
        "--resume",
        action="store_true",
        help="continue the run recorded in --journal FILE (skip the tunnels it rotated); "
        "with --journal-dir DIR, the newest journal in DIR if its run did not finish (it "
        "was stopped before every selected tunnel had its outcome, or left a request open; "
        "with a deliverer, a PSK is not yet delivered), else a fresh one: the same command "
        "line every time",
    )
    how = parser.add_argument_group("how")
    check = parser.add_argument_group("checks")
    check.add_argument(
        "--dry-run",
        action="store_true",
        help="list the tunnels that would be rotated and estimate what either method "
        f"would take and spend of the {_BUDGET} budget; send nothing but the tunnel list",
    )
    check.add_argument(
        "--deliver-check",
        action="store_true",
        help="try the router side of every selected tunnel without a new PSK (strongSwan: "
        "the connection exists; --deliver-exec: the program runs with MAGICWAN_CHECK=1 and "
        "an empty stdin, and must change nothing); sends only the tunnel list",
    )
    check.add_argument(
        "--validate-only",
        action="store_true",
        help="ask Cloudflare to check every request; changes nothing, but costs one request "
        f"per tunnel (or batch) of the {_BUDGET} budget",
    )
    deliver = parser.add_argument_group("delivery to the tunnel's other end")
    target = deliver.add_mutually_exclusive_group()
    target.add_argument(
        "--deliver-exec",
        metavar="'CMD ARGS'",
        help="run CMD per tunnel (split like a shell, never run by one): the PSK and a "
        "newline on its stdin, then end of file; MAGICWAN_TUNNEL_ID, _NAME, _ACCOUNT_ID, "
        "_IPSEC_ID, _CUSTOMER_ENDPOINT, _CLOUDFLARE_ENDPOINT in its environment; exit "
        "status 0 = delivered, 78 = misconfigured (not retried). It must be idempotent: a "
        "retry or a rerun may give it the same PSK again. It dies with magicwan",
    )
    target.add_argument(
        "--deliver-strongswan",
        metavar="SOCKET",
        nargs="?",
        const=DEFAULT_SOCKET,
        help=f"load each PSK into strongSwan's charon over VICI (default socket: {DEFAULT_SOCKET})",
    )
    deliver.add_argument(
        "--reauth",
        action="store_true",
        help="with --deliver-strongswan: re-authenticate the tunnel's IKE SA to prove the PSK",
    )
    add_template_arguments(deliver)
    RotationOptions.register_arguments(parser, {"how": how, "deliver": deliver})
    out = parser.add_argument_group("what is shown")
    out.add_argument(
        "--show-psk",
        action="store_true",
        help="print 'TUNNEL_ID PSK' lines on stdout as tunnels finish (the PSK in --json lines)",
    )
    add_output_options(parser, progress=True)
    add_metrics_option(out)
    add_api_options(parser)


async def _rotate(args: argparse.Namespace, console: Console) -> int:
    started_at = datetime.now(UTC)
    account = account_id(args)
    check_options(args)
    explicit = [tunnel_id(t) for t in args.tunnels]
    for source in args.from_file:
        explicit += read_ids(source, args.stdin)
    deliver = deliverer(args)
    client = make_client(args)
    with directory_lock(args.journal_dir):
        return await _rotate_locked(console, args, account, explicit, deliver, client, started_at)


async def _rotate_locked(
    console: Console,
    args: argparse.Namespace,
    account: str,
    explicit: list[str],
    deliver: Deliverer | None,
    client: MagicWAN,
    started_at: datetime,
) -> int:
    await try_journal(args)  # a journal that cannot be used fails before any request
    async with client:
        found = await ipsec_tunnels(client, account)
        selected = _selected(console, args, account, found, explicit)
        if not selected:
            _nothing_done(console, args, started_at)
            return ExitStatus.OK
        journal, made = await journal_for(args)
        console.bind(journal=journal)  # run_id stays the process's: a journal spans runs
        with discarded_if_unused(journal if made else None):
            return await _run(console, args, account, client, deliver, journal, selected)


async def _run(
    console: Console,
    args: argparse.Namespace,
    account: str,
    client: MagicWAN,
    deliver: Deliverer | None,
    journal: str | None,
    selected: list[IPsecTunnel],
) -> int:
    """The dry run, the delivery check or the rotation of ``selected``."""
    done = resumable(console, args, journal, account, selected)
    if args.dry_run:
        return dry_run(console, args, selected, done, client.rate_limiter)
    if args.deliver_check:
        assert deliver is not None
        return await deliver_check(console, args, account, deliver, selected)
    tracked = TrackedDeliverer(deliver) if deliver is not None else None
    try:
        options = RotationOptions.from_arguments(
            args,
            validate_only=args.validate_only,
            journal=journal,
            resume=args.resume,
            deliver=tracked,
            # The deliverer bounds each try itself (and says more when it does).
            deliver_timeout=deliver_timeout(args) + 1.0,
        )
        rotation = client.tunnels.ipsec.psk.rotate(account, selected, options)
    except InvalidInputError as exc:
        raise UsageError(str(exc)) from None
    settings = RunSettings(
        max_retry_after=args.max_retry_after,
        validate_only=args.validate_only,
        show_psk=args.show_psk,
        json=args.json,
        progress=args.progress,
        journal=journal,
        delivering=deliver is not None,
        sent_psks=keeping(args),
        resume=resume_command(args.argv, journal) if journal is not None else None,
        metrics_file=args.metrics_file,
        unit=options.unit,
        drain_timeout=options.with_client_defaults(args.timeout).drain_timeout,
    )
    names = {tunnel.id.lower(): tunnel.name for tunnel in selected}
    return await run_rotation(
        console,
        rotation,
        names=names,
        settings=settings,
        limiter=client.rate_limiter,
        deliveries=tracked,
    )


def _selected(
    console: Console,
    args: argparse.Namespace,
    account: str,
    found: list[IPsecTunnel],
    explicit: list[str],
) -> list[IPsecTunnel]:
    """The tunnels to rotate; none (said why) when there is nothing to do."""
    if args.older_than is not None and not (args.tunnels or args.from_file or args.name):
        args.all = True  # --older-than alone selects among every tunnel
    selected = select(args, account, found, explicit)
    if not selected:
        if args.all and not found:
            console.say(f"account {account} has no IPsec tunnels: nothing to rotate")
            return []
        raise UsageError(
            f"no tunnel selected: the options match none of the account's {len(found)} "
            "IPsec tunnels",
            hints=["'magicwan tunnels list' shows names and ids"],
        )
    if args.older_than is not None:
        left_open = _left_open(args, account)
        old = {t.id.lower() for t in older_than(selected, args.older_than, datetime.now(UTC))}
        selected = [t for t in selected if t.id.lower() in old | left_open]
        if not selected:
            console.say(
                f"no selected tunnel has a PSK older than {_age(args.older_than)}: nothing "
                "to rotate"
            )
    return selected


def _left_open(args: argparse.Namespace, account: str) -> set[str]:
    """With ``--resume``: the tunnels the journal's run left unfinished (a request left
    open, or a PSK not yet delivered when this run delivers). ``--older-than`` keeps them:
    their PSK may be new, but the run that made it has not finished with them."""
    if not args.resume or args.validate_only:
        return set()
    journal = args.journal
    if journal is None and args.journal_dir is not None:
        journal = unfinished(args)
    if journal is None or not Path(journal).is_file():
        return set()
    try:
        records = read_journal(journal)
    except JournalError as exc:
        raise UsageError(str(exc)) from None
    with_delivery = delivering(args)
    return {
        tunnel
        for (acc, tunnel), record in records.items()
        if acc == account.lower() and unfinished_record(record, delivering=with_delivery)
    }


def _age(age: timedelta) -> str:
    """A duration as the flag takes it: ``90d``, ``12h``, ``30m``, ``45s``."""
    seconds = int(age.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _nothing_done(console: Console, args: argparse.Namespace, started_at: datetime) -> None:
    """A run with nothing to rotate succeeded: its summary and metrics say so (a daily job
    with a PSK age policy finds nothing to do most days, and "no success in 91 days" must
    not fire)."""
    if args.json:
        finished = datetime.now(UTC)
        console.json(
            {
                "event": "summary",
                "requested": 0,
                "rotated": 0,
                "started_at": format_datetime(started_at),
                "finished_at": format_datetime(finished),
                "exit_status": int(ExitStatus.OK),
            }
        )
    if args.metrics_file is None or args.dry_run or args.validate_only or args.deliver_check:
        return
    try:
        write_rotation_metrics(
            args.metrics_file,
            counts={},
            started_at=started_at,
            finished_at=datetime.now(UTC),
            succeeded=True,
            rate_limited=0,
        )
    except MetricsError as exc:
        console.error(f"the metrics could not be written: {exc}")
