"""``magicwan psk set``: one tunnel's PSK, made here (or read from stdin) and journalled
before the request that carries it is sent."""

from __future__ import annotations

import argparse
import getpass
from typing import Any

from magicwan.cli.common import UsageError, account_id, tunnel_id
from magicwan.cli.console import Console
from magicwan.cli.parser import (
    Parser,
    add_account_argument,
    add_api_options,
    add_command,
    add_output_options,
)
from magicwan.cli.psk.single import run_single
from magicwan.errors import InvalidInputError
from magicwan.internal.validation import check_psk
from magicwan.rotation import RotationOptions

__all__ = ["register"]


def register(actions: argparse._SubParsersAction[Parser], epilog: str) -> None:
    parser = add_command(
        actions,
        "set",
        _set,
        help="set one tunnel's PSK: made here, or read from stdin",
        usage="%(prog)s [ACCOUNT] TUNNEL --journal FILE [--psk-stdin] [options]",
        description=(
            "Set one tunnel's PSK. The PSK is made here (32 random letters and digits) "
            "or read from standard input with --psk-stdin (a terminal prompts without "
            "echo); never from the command line, which other users can read. It is "
            "written to the journal and fsynced before the request that carries it is "
            "sent. When the journal holds a PSK an earlier 'psk set' sent and never saw "
            "answered, that PSK is sent again (unless --psk-stdin gives another)."
        ),
        epilog=epilog,
    )
    add_account_argument(parser)
    parser.add_argument("tunnel", metavar="TUNNEL", help="IPsec tunnel id")
    parser.add_argument(
        "--journal", metavar="FILE", help="the journal (0600), required unless --validate-only"
    )
    parser.add_argument(
        "--psk-stdin", action="store_true", help="read the PSK from standard input (one line)"
    )
    parser.add_argument("--show-psk", action="store_true", help="print the PSK on stdout")
    parser.add_argument(
        "--validate-only", action="store_true", help="check the request and the PSK; change nothing"
    )
    add_output_options(parser)
    add_api_options(parser)


def _read_psk(stdin: Any) -> str:
    """One line from standard input (a terminal prompts without echo)."""
    isatty = getattr(stdin, "isatty", None)
    if isatty is not None and isatty():
        text = getpass.getpass("PSK (not echoed): ")
    else:
        text = stdin.read()
        if text.endswith("\n"):
            text = text[:-1]
        if text.endswith("\r"):
            text = text[:-1]
    if "\n" in text:
        raise UsageError("--psk-stdin reads one line; standard input holds several")
    if not text:
        raise UsageError("--psk-stdin: standard input is empty")
    try:
        return check_psk(text, "the PSK from standard input")
    except InvalidInputError as exc:
        raise UsageError(str(exc)) from None


async def _set(args: argparse.Namespace, console: Console) -> int:
    account = account_id(args)
    tunnel = tunnel_id(args.tunnel)
    if args.journal is None and not args.validate_only:
        raise UsageError(
            "--journal FILE is required: the PSK is written there (0600, fsynced) before "
            "the request that carries it is sent, so no lost answer can lose it"
        )
    psks = {tunnel: _read_psk(args.stdin)} if args.psk_stdin else None
    options = RotationOptions(
        method="set",
        validate_only=args.validate_only,
        journal=args.journal,
        again=True,
        concurrency=1,
        batch_size=1,
        halt_after=None,
    )
    return await run_single(
        console, args, account=account, tunnel=tunnel, options=options, psks=psks
    )
