"""How ``psk rotate`` reaches the tunnels' other ends: the deliverer its flags build, and
``--deliver-check``, which tries every router without a new PSK."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
from typing import Any

from magicwan.cli.common import UsageError
from magicwan.cli.console import Console
from magicwan.cli.report import describe
from magicwan.cli.status import ExitStatus
from magicwan.delivery import (
    FIELDS,
    Checkable,
    Command,
    Deliverer,
    DeliveryTarget,
    StrongSwan,
    limit_deliveries,
)
from magicwan.models.tunnels import IPsecTunnel
from magicwan.rotation import DEFAULT_DELIVER_TIMEOUT

__all__ = [
    "DELIVERY_TUNING",
    "add_template_arguments",
    "deliver_check",
    "deliver_timeout",
    "deliverer",
]

#: The options that tune delivery: they need a deliverer.
DELIVERY_TUNING = (
    "deliver_retries",
    "deliver_timeout",
    "deliver_concurrency",
    "deliver_group_by",
    "rollout_max",
)

#: The strongSwan templates the command line exposes: flag, default, what it names.
_TEMPLATES = (
    ("--strongswan-connection", "{name}", "the charon connection of a tunnel"),
    ("--strongswan-local-id", "{ipsec_id}", "the IKE identity the router presents"),
    ("--strongswan-remote-id", "{cloudflare_endpoint}", "Cloudflare's IKE identity ('' for none)"),
)


def add_template_arguments(group: Any) -> None:
    """``--strongswan-connection`` and the identities, as templates of the tunnel's facts."""
    placeholders = ", ".join("{" + name + "}" for name in FIELDS)
    for flag, default, what in _TEMPLATES:
        group.add_argument(
            flag,
            metavar="TEMPLATE",
            help=f"with --deliver-strongswan: {what} (default: {default!r}; placeholders: "
            f"{placeholders})",
        )


def deliver_timeout(args: argparse.Namespace) -> float:
    timeout: float = getattr(args, "deliver_timeout", DEFAULT_DELIVER_TIMEOUT)
    return timeout


def _not_runnable(program: str) -> str | None:
    """Why ``program`` cannot start (it is looked up like the kernel will run it), or
    None: not found or not executable, a script whose ``#!`` interpreter is missing, a
    file that is neither a binary nor a script with a ``#!`` line."""
    path = shutil.which(program)
    if path is None:
        return "not found, or not executable"
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError as exc:
        return exc.strerror or "it cannot be read"
    if head.startswith(b"\x7fELF"):
        return None
    if not head.startswith(b"#!"):
        return "it is neither a binary nor a script with a #! line"
    words = head[2:].split(b"\n", 1)[0].split()
    if not words:
        return "its #! line names no interpreter"
    interpreter = words[0].decode(errors="replace")
    if not os.access(interpreter, os.X_OK):
        return f"its #! interpreter {interpreter} cannot be run"
    return None


def deliverer(args: argparse.Namespace) -> Deliverer | None:
    """The deliverer the flags ask for, or None; a usage error for a bad one."""
    timeout = deliver_timeout(args)
    if args.deliver_exec is not None:
        try:
            argv = shlex.split(args.deliver_exec)
        except ValueError as exc:
            raise UsageError(f"--deliver-exec: {exc}") from None
        if not argv:
            raise UsageError("--deliver-exec needs a program")
        why = _not_runnable(argv[0])
        if why is not None:
            # Found out before any PSK is made: a program that cannot start would break the
            # first tunnels (new PSK at the edge, the old one on the router) before the halt.
            raise UsageError(
                f"--deliver-exec: {argv[0]} cannot be run: {why}",
                hints=["--deliver-check tries every router side without a new PSK"],
            )
        return Command(argv, timeout=timeout, run_check=args.deliver_check)
    if args.deliver_strongswan is None:
        return None
    given = {
        "connection": args.strongswan_connection,
        "local_id": args.strongswan_local_id,
        "remote_id": args.strongswan_remote_id,
    }
    templates: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if templates.get("remote_id") == "":
        templates["remote_id"] = None
    try:
        return StrongSwan(args.deliver_strongswan, reauth=args.reauth, timeout=timeout, **templates)
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    except ValueError as exc:  # an unknown placeholder, a malformed template
        raise UsageError(str(exc)) from None


async def deliver_check(
    console: Console,
    args: argparse.Namespace,
    account: str,
    deliver: Deliverer,
    selected: list[IPsecTunnel],
) -> int:
    """Try the router side of every selected tunnel, without a new PSK."""
    if not isinstance(deliver, Checkable):  # pragma: no cover - both CLI deliverers are
        raise UsageError("this deliverer cannot be checked without a PSK")
    limit = getattr(args, "deliver_concurrency", None) or getattr(args, "concurrency", 16)
    checker = limit_deliveries(deliver, limit)
    targets = [DeliveryTarget(account_id=account, tunnel_id=t.id, tunnel=t) for t in selected]
    results = await asyncio.gather(
        *(checker.check(target) for target in targets), return_exceptions=True
    )
    failed = 0
    for tunnel, result in zip(selected, results, strict=True):
        if isinstance(result, BaseException) and not isinstance(result, Exception):
            raise result
        error = describe(result) if isinstance(result, Exception) else None
        failed += error is not None
        if args.json:
            line = {"event": "deliver_check", "tunnel_id": tunnel.id, "name": tunnel.name}
            console.json({**line, "ok": error is None, "error": error})
        else:
            console.data(f"{tunnel.id}  {tunnel.name or '-'}  {'ok' if error is None else error}")
    ready = len(selected) - failed
    console.say(
        f"deliver check: {ready} of {len(selected)} tunnel(s) ready; no PSK was made or sent"
    )
    if args.json:
        console.json({"event": "summary", "deliver_check": True, "ok": ready, "failed": failed})
    return ExitStatus.FAILED if failed else ExitStatus.OK
