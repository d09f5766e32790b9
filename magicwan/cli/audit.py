"""``magicwan psk audit``: each tunnel's PSK age against a policy (``--max-age 90d``).

It sends one request, the tunnel list, and changes nothing: the ages come from its
``psk_metadata.last_generated_on``. Exit 1 when any PSK is older than ``--max-age`` (a
PSK never generated counts as older), 0 otherwise; ``--metrics-file`` leaves the ages
for Prometheus.
"""

from __future__ import annotations

import argparse
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from magicwan.cli.common import CLIError, account_id, ipsec_tunnels, make_client
from magicwan.cli.console import Console, escape
from magicwan.cli.metrics import (
    MetricsError,
    add_metrics_option,
    check_metrics_path,
    write_audit_metrics,
)
from magicwan.cli.parser import (
    ENVIRONMENT_HELP,
    Parser,
    add_account_argument,
    add_api_options,
    add_command,
    add_output_options,
    duration,
)
from magicwan.cli.report import stamp_text
from magicwan.cli.selection import psk_age
from magicwan.cli.status import ExitStatus, exit_status_help
from magicwan.internal.timestamps import format_datetime
from magicwan.models.tunnels import IPsecTunnel

__all__ = ["duration_text", "format_age", "register"]


def register(actions: argparse._SubParsersAction[Parser]) -> None:
    """Add ``audit`` to ``psk``'s actions."""
    parser = add_command(
        actions,
        "audit",
        _audit,
        help="each tunnel's PSK age; exit 1 if any is older than --max-age (sends 1 request)",
        usage="%(prog)s [ACCOUNT] --max-age DURATION [--json] [--metrics-file PATH] [options]",
        description=(
            "List the age of every IPsec tunnel's PSK, oldest first, from the tunnel list's "
            "psk_metadata.last_generated_on (one request; nothing is changed), and check it "
            "against --max-age: exit 1 when any PSK is older (a PSK never generated counts "
            "as older), 0 otherwise. A table on stdout, or with --json one JSON object per "
            "tunnel and a summary. --metrics-file writes magicwan_psk_age_seconds per "
            "tunnel and magicwan_psk_oldest_age_seconds for Prometheus."
        ),
        epilog=(
            "examples:\n"
            "  magicwan psk audit --max-age 90d\n"
            "  magicwan psk audit --max-age 90d --json -q --metrics-file "
            "/var/lib/node_exporter/textfile/magicwan_audit.prom\n\n"
            f"{ENVIRONMENT_HELP}\n\n{exit_status_help()}\n"
            "  for psk audit: 1 means some PSK is older than --max-age"
        ),
    )
    add_account_argument(parser)
    parser.add_argument(
        "--max-age",
        type=duration,
        metavar="DURATION",
        required=True,
        help="the policy: the oldest a PSK may be (90d, 12h, 30m, 45s)",
    )
    add_metrics_option(parser)
    add_output_options(parser)
    add_api_options(parser)


def format_age(age: timedelta | None) -> str:
    """``91d04h``, ``3h12m``, ``5m07s``, ``45s``; ``never`` for None."""
    if age is None:
        return "never"
    whole = int(age.total_seconds())
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"


def duration_text(value: timedelta) -> str:
    """A duration as ``--max-age`` takes it, in its largest exact unit: ``90d``, ``36h``."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _too_old(age: timedelta | None, max_age: timedelta) -> bool:
    return age is None or age > max_age


def _tunnel_json(tunnel: IPsecTunnel, age: timedelta | None, max_age: timedelta) -> dict[str, Any]:
    return {
        "event": "tunnel",
        "tunnel_id": tunnel.id,
        "name": tunnel.name,
        "last_generated_on": stamp_text(tunnel),
        "age_seconds": age.total_seconds() if age is not None else None,
        "too_old": _too_old(age, max_age),
    }


async def _audit(args: argparse.Namespace, console: Console) -> int:
    account = account_id(args)
    if args.metrics_file is not None:
        check_metrics_path(args.metrics_file)
    client = make_client(args)
    async with client:
        tunnels = await ipsec_tunnels(client, account)
    now = datetime.now(UTC)
    max_age: timedelta = args.max_age
    aged = [(t, psk_age(t, now)) for t in tunnels]
    # Oldest first; a PSK never generated before any other.
    aged.sort(key=lambda pair: -math.inf if pair[1] is None else -pair[1].total_seconds())
    too_old = [t for t, age in aged if _too_old(age, max_age)]
    never = sum(1 for _, age in aged if age is None)
    oldest = aged[0][1] if aged else None
    policy = duration_text(max_age)

    if args.json:
        for tunnel, age in aged:
            console.json(_tunnel_json(tunnel, age, max_age))
        console.json(
            {
                "event": "summary",
                "tunnels": len(aged),
                "too_old": len(too_old),
                "never_generated": never,
                "max_age_seconds": max_age.total_seconds(),
                "oldest_age_seconds": (
                    oldest.total_seconds() if oldest is not None and not never else None
                ),
                "checked_at": format_datetime(now),
            }
        )
    elif aged:
        rows = [["ID", "NAME", "PSK GENERATED", "AGE", "POLICY"]]
        for tunnel, age in aged:
            rows.append(
                [
                    tunnel.id,
                    escape(tunnel.name or "-"),
                    stamp_text(tunnel) or "-",
                    format_age(age),
                    f"OLDER THAN {policy}" if _too_old(age, max_age) else "ok",
                ]
            )
        console.table(rows)

    if args.metrics_file is not None:
        try:
            write_audit_metrics(args.metrics_file, ((t.id, t.name, age) for t, age in aged))
        except MetricsError as exc:
            raise CLIError(str(exc), status=ExitStatus.USAGE) from None

    if too_old:
        detail = f" ({never} never generated)" if never else ""
        console.tell(
            f"{len(too_old)} of {len(aged)} tunnel(s) in account {account} have a PSK older "
            f"than {policy}{detail}: rotate them with 'magicwan psk rotate --older-than "
            f"{policy} ...'",
            colour="red",
        )
        return ExitStatus.FAILED
    console.say(
        f"all {len(aged)} tunnel(s) in account {account} have a PSK younger than {policy}"
        + (f" (oldest: {format_age(oldest)})" if aged else "")
    )
    return ExitStatus.OK
