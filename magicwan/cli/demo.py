"""``magicwan demo``: the main job, end to end, against the embedded emulator (offline).

It starts the emulator, discovers its tunnels, rotates them all with a journal (through
the same runner as ``psk rotate``) and checks every journalled PSK against the emulator.

A lab that also delivers each PSK (``demo --ike``: two strongSwan charons) plugs in at
:func:`_deliverer`: it returns the deliverer the rotation hands every new PSK to.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from magicwan._version import __version__
from magicwan.cli.common import UsageError, check_journal, ipsec_tunnels
from magicwan.cli.console import Console
from magicwan.cli.parser import (
    Parser,
    add_command,
    add_output_options,
    client_default,
    non_negative_int,
    positive_int,
    rate_limit,
    seconds,
)
from magicwan.cli.runner import RunSettings, run_rotation
from magicwan.cli.status import ExitStatus, exit_status_help
from magicwan.client import MagicWAN
from magicwan.delivery import Deliverer
from magicwan.journal import read_journal
from magicwan.ratelimit import CLOUDFLARE_BUDGET

__all__ = ["register"]

#: The emulator's faults never store late: a short window shows the read-back quickly.
_SETTLE_WINDOW = 0.5


def register(commands: argparse._SubParsersAction[Parser]) -> None:
    """Add ``demo`` to the command tree."""
    budget = f"{CLOUDFLARE_BUDGET[0]}/{CLOUDFLARE_BUDGET[1]:g}"
    parser = add_command(
        commands,
        "demo",
        _demo,
        help="rotate every tunnel of a local emulator of the Cloudflare API",
        usage="%(prog)s [--tunnels N] [--faults] [options]",
        description=(
            "Start the embedded Cloudflare emulator, discover its tunnels, rotate them all "
            "with a journal, and check every journalled PSK against the emulator. Nothing "
            "leaves this machine; no credentials are needed."
        ),
        epilog=exit_status_help(),
    )
    parser.add_argument(
        "--tunnels", type=positive_int, default=300, metavar="N", help="tunnels (default: 300)"
    )
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        default=32,
        metavar="N",
        help="requests in flight at once (default: 32)",
    )
    parser.add_argument("--journal", metavar="FILE", help="journal path (default: in a temp dir)")
    parser.add_argument(
        "--faults",
        action="store_true",
        help="inject seeded faults (5xx, connection resets, cut bodies) to show the retries",
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=0.05,
        metavar="SECONDS",
        help="simulated round-trip time of each request (default: 0.05)",
    )
    parser.add_argument(
        "--rate-limit",
        type=rate_limit,
        default=None,
        metavar="N/SECONDS|off",
        help=f"the emulator's and the client's request budget (default: off, so the demo "
        f"runs at full speed; Cloudflare's is {budget})",
    )
    parser.add_argument(
        "--timeout",
        type=seconds,
        metavar="SECONDS",
        default=client_default("timeout"),
        help="timeout of one request (default: %(default)g)",
    )
    parser.add_argument(
        "--max-retries",
        type=non_negative_int,
        metavar="N",
        default=client_default("max_retries"),
        help="retries of a failed request (default: %(default)s)",
    )
    add_output_options(parser, json=False, progress=True)


def _faults(args: argparse.Namespace) -> Any:
    from magicwan.emulator import Faults

    latency = {"latency": args.latency, "latency_probability": 1.0} if args.latency > 0 else {}
    if args.faults:
        return Faults(
            server_error=0.02,
            reset_before_store=0.01,
            reset_after_store=0.01,
            truncated_json=0.005,
            **latency,
        )
    return Faults(**latency) if latency else None


def _deliverer(args: argparse.Namespace, emu: Any) -> Deliverer | None:
    """Where each new PSK goes after the journal: nowhere yet (``--ike`` goes here)."""
    return None


async def _demo(args: argparse.Namespace, console: Console) -> int:
    from magicwan import emulator

    if args.latency < 0:
        raise UsageError("--latency must be >= 0 seconds")
    journal = args.journal
    if journal is None:
        journal = str(Path(tempfile.mkdtemp(prefix="magicwan-demo-")) / "journal.jsonl")
    await check_journal(journal)
    limit = args.rate_limit
    async with emulator.run(
        tunnels=args.tunnels, rate_limit=limit, seed=0, faults=_faults(args)
    ) as emu:
        shown = "on (seeded: 5xx, resets before/after the PSK is stored, cut bodies)"
        for line in (
            f"magicwan {__version__} demo: rotate every IPsec PSK of an account, against a "
            "local emulator of the Cloudflare API (nothing leaves this machine)",
            "",
            f"  emulator     {emu.base_url}",
            f"  account      {emu.account_id}",
            f"  tunnels      {args.tunnels}",
            f"  rate limit   {f'{limit[0]} requests / {limit[1]:g}s' if limit else 'off'}",
            f"  faults       {shown if args.faults else 'off'}",
            f"  latency      {args.latency * 1000:g} ms per request",
            f"  journal      {journal}",
            "",
        ):
            console.say(line)
        client = MagicWAN(
            api_token=emu.api_token,
            base_url=emu.base_url,
            timeout=args.timeout,
            max_retries=args.max_retries,
            rate_limit=limit,
            environ={},
        )
        async with client:
            found = await ipsec_tunnels(client, emu.account_id)
            console.say(
                f"discovered {len(found)} tunnels; rotating with concurrency {args.concurrency}"
            )
            deliver = _deliverer(args, emu)
            rotation = client.tunnels.ipsec.psk.rotate(
                emu.account_id,
                found,
                concurrency=args.concurrency,
                journal=journal,
                deliver=deliver,
                settle_window=_SETTLE_WINDOW,
            )
            settings = RunSettings(
                max_retry_after=client_default("max_retry_after"),
                progress=args.progress,
                journal=journal,
                delivering=deliver is not None,
            )
            names = {tunnel.id.lower(): tunnel.name for tunnel in found}
            status = await run_rotation(console, rotation, names=names, settings=settings)
        requests = emu.state.requests
        injected = sum(requests.faults.values())
        answered = f"the emulator answered {requests.total} requests"
        if injected:
            kinds = ", ".join(f"{name} {count}" for name, count in sorted(requests.faults.items()))
            answered += f", {injected} of them with an injected fault ({kinds})"
        console.say("")
        console.say(answered)
        records = read_journal(journal)
        current = {t.id: emu.state.current_psk(emu.account_id, t.id) for t in found}
        matching = sum(
            1
            for (account, tunnel_id), record in records.items()
            if account == emu.account_id.lower()
            and record.psk is not None
            and current.get(tunnel_id) == record.psk
        )
        line = f"verified: {matching}/{len(found)} journalled PSKs match the emulator"
        if matching == len(found):
            console.say(line)
        else:
            console.tell(line)
    if status == ExitStatus.OK and matching != len(found):
        return ExitStatus.FAILED
    return status
