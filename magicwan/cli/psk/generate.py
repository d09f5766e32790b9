"""``magicwan psk generate``: one tunnel's new PSK, made by Cloudflare."""

from __future__ import annotations

import argparse

from magicwan.cli.common import UsageError, account_id, tunnel_id
from magicwan.cli.console import Console
from magicwan.cli.parser import Parser, add_account_argument, add_api_options, add_command
from magicwan.cli.parser import add_output_options as _add_output_options
from magicwan.cli.psk.single import run_single
from magicwan.rotation import RotationOptions

__all__ = ["register"]


def register(actions: argparse._SubParsersAction[Parser], epilog: str) -> None:
    parser = add_command(
        actions,
        "generate",
        _generate,
        help="generate a new PSK for one tunnel (Cloudflare makes it)",
        usage="%(prog)s [ACCOUNT] TUNNEL (--journal FILE | --show-psk) [options]",
        description=(
            "Generate a new PSK for one tunnel. Cloudflare never shows a PSK again, so "
            "record it: --journal FILE appends it to a 0600 JSON Lines journal (fsynced), "
            "--show-psk prints it alone on stdout. A one-tunnel run of the rotation engine: "
            "an answer a retry made doubtful is read back after --settle-window."
        ),
        epilog=epilog,
    )
    add_account_argument(parser)
    parser.add_argument("tunnel", metavar="TUNNEL", help="IPsec tunnel id")
    parser.add_argument("--journal", metavar="FILE", help="record the new PSK in FILE (0600)")
    parser.add_argument("--show-psk", action="store_true", help="print the new PSK on stdout")
    parser.add_argument(
        "--validate-only", action="store_true", help="check the request; change nothing"
    )
    RotationOptions.register_arguments(parser, only=("settle_window",))
    _add_output_options(parser)
    add_api_options(parser)


async def _generate(args: argparse.Namespace, console: Console) -> int:
    account = account_id(args)
    tunnel = tunnel_id(args.tunnel)
    if not args.validate_only and args.journal is None and not args.show_psk:
        raise UsageError(
            "refusing to generate a PSK that nobody records: Cloudflare never shows it "
            "again. Pass --journal FILE (written 0600) or --show-psk."
        )
    options = RotationOptions.from_arguments(
        args,
        method="generate",
        validate_only=args.validate_only,
        journal=args.journal,
        again=True,  # a new PSK whatever the journal holds: it is a log here
        concurrency=1,
        halt_after=None,
    )
    return await run_single(console, args, account=account, tunnel=tunnel, options=options)
