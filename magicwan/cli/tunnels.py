"""``magicwan tunnels list``: the account's IPsec and GRE tunnels, with their ids and names."""

from __future__ import annotations

import argparse
import fnmatch
from datetime import UTC, datetime
from typing import Any

from magicwan.cli.common import UsageError, account_id, gre_tunnels, ipsec_tunnels, make_client
from magicwan.cli.console import Console, escape
from magicwan.cli.parser import (
    ENVIRONMENT_HELP,
    Parser,
    add_account_argument,
    add_actions,
    add_api_options,
    add_command,
    add_output_options,
    duration,
)
from magicwan.cli.report import stamp_text
from magicwan.cli.selection import older_than
from magicwan.cli.status import ExitStatus, exit_status_help
from magicwan.models.gre import GRETunnel
from magicwan.models.tunnels import IPsecTunnel

__all__ = ["register"]

_COLUMNS = ("TYPE", "ID", "NAME", "CUSTOMER ENDPOINT", "CLOUDFLARE ENDPOINT", "PSK GENERATED")


def register(commands: argparse._SubParsersAction[Parser]) -> None:
    """Add ``tunnels`` and its actions to the command tree."""
    tunnels = add_command(
        commands,
        "tunnels",
        None,
        help="list the account's tunnels",
        description="The account's Magic WAN tunnels.",
    )
    actions = add_actions(tunnels, "tunnels_command")
    parser = add_command(
        actions,
        "list",
        _list,
        help="list IPsec and GRE tunnels: ids, names, endpoints",
        usage=(
            "%(prog)s [ACCOUNT] [--type all|ipsec|gre] [--name GLOB] [--older-than DURATION] "
            "[--json] [options]"
        ),
        description=(
            "List the account's IPsec tunnels (with when their PSK was last generated) and "
            "GRE tunnels: a table on stdout, or one JSON object a line with --json. Names "
            "are shown as Cloudflare has them, control characters escaped."
        ),
        epilog=ENVIRONMENT_HELP + "\n\n" + exit_status_help(),
    )
    add_account_argument(parser)
    parser.add_argument(
        "--type",
        choices=("all", "ipsec", "gre"),
        default="all",
        help="which tunnels (default: all)",
    )
    parser.add_argument(
        "--name", metavar="GLOB", action="append", default=[], help="only names matching GLOB"
    )
    parser.add_argument(
        "--older-than",
        type=duration,
        metavar="DURATION",
        help=(
            "only IPsec tunnels whose PSK is older than DURATION (90d, 12h, 30m, 45s), from "
            "the list's psk_metadata.last_generated_on; a tunnel never rotated counts as old"
        ),
    )
    add_output_options(parser)
    add_api_options(parser)


def _ipsec_json(tunnel: IPsecTunnel) -> dict[str, Any]:
    return {
        "type": "ipsec",
        "id": tunnel.id,
        "name": tunnel.name,
        "description": tunnel.description,
        "customer_endpoint": tunnel.customer_endpoint,
        "cloudflare_endpoint": tunnel.cloudflare_endpoint,
        "interface_address": tunnel.interface_address,
        "ipsec_id": tunnel.ipsec_id,
        "psk_last_generated_on": stamp_text(tunnel),
    }


def _gre_json(tunnel: GRETunnel) -> dict[str, Any]:
    return {
        "type": "gre",
        "id": tunnel.id,
        "name": tunnel.name,
        "description": tunnel.description,
        "customer_endpoint": tunnel.customer_gre_endpoint,
        "cloudflare_endpoint": tunnel.cloudflare_gre_endpoint,
        "interface_address": tunnel.interface_address,
        "mtu": tunnel.mtu,
        "ttl": tunnel.ttl,
    }


async def _list(args: argparse.Namespace, console: Console) -> int:
    if args.older_than is not None and args.type == "gre":
        raise UsageError("--older-than selects by PSK age, and GRE tunnels have no PSK")
    account = account_id(args)
    client = make_client(args)
    rows: list[dict[str, Any]] = []
    async with client:
        if args.type in ("all", "ipsec"):
            listed = await ipsec_tunnels(client, account)
            if args.older_than is not None:
                listed = older_than(listed, args.older_than, datetime.now(UTC))
            rows += [_ipsec_json(t) for t in listed]
        if args.type in ("all", "gre") and args.older_than is None:
            rows += [_gre_json(t) for t in await gre_tunnels(client, account)]
    if args.name:
        rows = [
            row
            for row in rows
            if any(fnmatch.fnmatchcase(row["name"] or "", glob) for glob in args.name)
        ]
    if args.json:
        for row in rows:
            console.json(row)
    elif rows:
        _table(console, rows)
    ipsec = sum(1 for row in rows if row["type"] == "ipsec")
    console.say(f"{ipsec} IPsec and {len(rows) - ipsec} GRE tunnel(s) in account {account}")
    return ExitStatus.OK


def _table(console: Console, rows: list[dict[str, Any]]) -> None:
    cells = [
        [
            escape(str(value)) if value is not None else "-"
            for value in (
                row["type"],
                row["id"],
                row["name"],
                row["customer_endpoint"],
                row["cloudflare_endpoint"],
                row.get("psk_last_generated_on"),
            )
        ]
        for row in rows
    ]
    console.table([list(_COLUMNS), *cells])
