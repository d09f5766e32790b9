"""``magicwan demo``: the main job, end to end, against the embedded emulator (offline).

It starts the emulator, discovers its tunnels, rotates them all with a journal (through
the same runner as ``psk rotate``) and checks every journalled PSK against the emulator.

``demo --ike`` also delivers each PSK, to a real strongSwan "router" whose peer, an "edge"
standing in for Cloudflare, always holds the emulator's PSK (:mod:`magicwan.ikelab`),
and proves every delivery by IKE: after the rotation each tunnel's IKE SA, initiated from
the router, is ESTABLISHED, except for the few whose delivery is made to go astray on
purpose (``--ike-lose``), which fail IKE_AUTH with AUTHENTICATION_FAILED and come back
undelivered.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs

from magicwan import __version__
from magicwan.cli.common import UsageError, check_journal, ipsec_tunnels
from magicwan.cli.console import Console
from magicwan.cli.parser import (
    Parser,
    add_command,
    add_output_options,
    add_request_options,
    client_default,
    non_negative_int,
    positive_int,
    rate_limit,
)
from magicwan.cli.runner import RunSettings, run_rotation
from magicwan.cli.status import ExitStatus, exit_status_help
from magicwan.client import MagicWAN
from magicwan.delivery import Deliverer, Delivery
from magicwan.journal import read_journal
from magicwan.models.tunnels import IPsecTunnel
from magicwan.ratelimit import CLOUDFLARE_BUDGET

__all__ = ["register"]

#: The emulator's faults never store late: a short window shows the read-back quickly.
_SETTLE_WINDOW = 0.5
#: Tunnels when --ike is given without --tunnels: two real daemons negotiate every SA.
_IKE_TUNNELS = 24


def register(commands: argparse._SubParsersAction[Parser]) -> None:
    """Add ``demo`` to the command tree."""
    budget = f"{CLOUDFLARE_BUDGET[0]}/{CLOUDFLARE_BUDGET[1]:g}"
    parser = add_command(
        commands,
        "demo",
        _demo,
        help="rotate every tunnel of a local emulator of the Cloudflare API",
        usage="%(prog)s [--tunnels N] [--faults] [--ike [--ike-lose N]] [options]",
        description=(
            "Start the embedded Cloudflare emulator, discover its tunnels, rotate them all "
            "with a journal, and check every journalled PSK against the emulator. Nothing "
            "leaves this machine; no credentials are needed."
        ),
        epilog=exit_status_help(),
    )
    parser.add_argument(
        "--tunnels",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"tunnels (default: 300, or {_IKE_TUNNELS} with --ike)",
    )
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        default=32,
        metavar="N",
        help="requests in flight at once (default: 32)",
    )
    parser.add_argument(
        "--journal",
        metavar="FILE",
        help="journal path, kept after the demo (default: in a temporary directory, deleted "
        "when the demo ends)",
    )
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
    add_request_options(parser)
    parser.add_argument(
        "--ike",
        action="store_true",
        help="also deliver every PSK to a real strongSwan router and prove it by IKE against "
        "an edge that holds the emulator's PSKs (needs root, strongswan-charon and "
        "'pip install magicwan[strongswan]'; nothing leaves this machine)",
    )
    parser.add_argument(
        "--ike-lose",
        type=non_negative_int,
        default=2,
        metavar="N",
        help="with --ike: tunnels whose new PSK goes astray on purpose, to show "
        "AUTHENTICATION_FAILED and an undelivered outcome (default: 2)",
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


@attrs.define
class _Router:
    """The lab's router: every PSK through ``StrongSwan(reauth=True)``, except for the
    tunnels in ``lost``, whose router re-authenticates with the PSK it held before (as one
    whose delivery went astray would): IKE refuses it."""

    deliver: Deliverer
    lost: set[str] = attrs.field(factory=set)
    holds: dict[str, str] = attrs.field(factory=dict, repr=False)

    async def __call__(self, delivery: Delivery) -> None:
        held = self.holds.get(delivery.tunnel_id)
        if delivery.tunnel_id in self.lost and held is not None:
            await self.deliver(attrs.evolve(delivery, psk=held))
            return
        await self.deliver(delivery)
        self.holds[delivery.tunnel_id] = delivery.psk


@contextlib.asynccontextmanager
async def _ike(
    args: argparse.Namespace, console: Console, client: MagicWAN, emu: Any, found: list[IPsecTunnel]
) -> AsyncIterator[tuple[_Router | None, Any]]:
    """With --ike: the lab, bridged to the emulator, each tunnel given a first PSK and an
    ESTABLISHED IKE SA, and the router that the rotation delivers to. Else (None, None)."""
    if not args.ike:
        yield None, None
        return
    from magicwan.delivery import StrongSwan
    from magicwan.ikelab import bridge, ike_lab

    async with ike_lab(found) as lab:
        with bridge(emu.state, lab):
            router = _Router(StrongSwan(lab.router_socket, reauth=True))
            first = client.tunnels.ipsec.psk.rotate(
                emu.account_id, found, journal=None, deliver=router, concurrency=8
            )
            async with first:
                commissioned = [o async for o in first if o.ok]
            states = await lab.sa_states()
            up = sum(state == "ESTABLISHED" for state in states.values())
            console.say(
                f"IKE lab: two strongSwan charons; {len(commissioned)} tunnels commissioned "
                f"with a first PSK, {up} IKE SAs ESTABLISHED"
            )
            router.lost = {t.id for t in found[1 : 1 + args.ike_lose]}
            yield router, lab


async def _ike_report(
    console: Console, lab: Any, router: _Router, found: list[IPsecTunnel]
) -> bool:
    """Initiate every tunnel from the router; say what IKE made of each. True if every
    tunnel is ESTABLISHED except exactly the lost ones, which fail authentication."""
    from magicwan.ikelab import IKELabError

    states = await lab.sa_states()
    established = [t.id for t in found if states.get(t.name or t.id) == "ESTABLISHED"]
    refused: list[str] = []
    other: list[str] = []
    for tunnel in found:
        if tunnel.id in established:
            continue
        try:  # not up: initiate it once more, to show what IKE says
            await lab.initiate(tunnel.name or tunnel.id)
        except IKELabError as exc:
            failed = any("AUTHENTICATION_FAILED" in line for line in exc.log)
            (refused if failed else other).append(tunnel.id)
            continue
        other.append(tunnel.id)  # up now: it was not delivered, yet IKE took a key
    console.say("")
    console.say(
        f"IKE: {len(established)}/{len(found)} tunnels ESTABLISHED from the router with "
        "their new PSK"
    )
    if refused:
        names = ", ".join(t.name or t.id for t in found if t.id in refused)
        console.say(
            f"IKE: {len(refused)} failed IKE_AUTH with AUTHENTICATION_FAILED (their delivery "
            f"went astray on purpose): {names}"
        )
    if other:
        console.tell(f"IKE: {len(other)} tunnels neither ESTABLISHED nor refused")
    return set(refused) == router.lost and not other


async def _demo(args: argparse.Namespace, console: Console) -> int:
    _check_usage(args)
    if args.journal is not None:
        status = await _run(args, console, args.journal, temporary=False)
        console.say(f"journal kept: {args.journal}")
        return status
    # The journal holds (emulated) PSKs: it goes with its directory, whatever happens.
    with tempfile.TemporaryDirectory(prefix="magicwan-demo-") as directory:
        journal = str(Path(directory) / "journal.jsonl")
        status = await _run(args, console, journal, temporary=True)
    console.say("deleted the demo's temporary journal (pass --journal FILE to keep one)")
    return status


async def _run(args: argparse.Namespace, console: Console, journal: str, *, temporary: bool) -> int:
    """The demo with ``journal``: start the emulator, rotate, verify; the exit status."""
    from magicwan import emulator

    tunnels = args.tunnels if args.tunnels is not None else (_IKE_TUNNELS if args.ike else 300)
    await check_journal(journal)
    limit = args.rate_limit
    async with emulator.run(
        tunnels=tunnels, gre_tunnels=0, rate_limit=limit, seed=0, faults=_faults(args)
    ) as emu:
        shown = f"{journal} (temporary: deleted when the demo ends)" if temporary else journal
        _say_settings(console, args, emu, tunnels, shown)
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
            status, ike_ok = await _rotate(args, console, client, emu, found, journal)
        _say_requests(console, emu)
        matching = _verify(console, emu, found, journal)
    return _demo_status(args, status, ike_ok=ike_ok, all_match=matching == len(found))


def _check_usage(args: argparse.Namespace) -> None:
    """Refuse what the demo cannot do: a negative latency, --ike where it cannot run."""
    if args.latency < 0:
        raise UsageError("--latency must be >= 0 seconds")
    if args.ike:
        from magicwan.ikelab import ike_missing

        missing = ike_missing()
        if missing is not None:
            raise UsageError(f"--ike cannot run here: {missing}")


def _say_settings(
    console: Console, args: argparse.Namespace, emu: Any, tunnels: int, journal: str
) -> None:
    """The demo's banner: what runs against what."""
    limit = args.rate_limit
    shown = "on (seeded: 5xx, resets before/after the PSK is stored, cut bodies)"
    for line in (
        f"magicwan {__version__} demo: rotate every IPsec PSK of an account, against a "
        "local emulator of the Cloudflare API (nothing leaves this machine)",
        "",
        f"  emulator     {emu.base_url}",
        f"  account      {emu.account_id}",
        f"  tunnels      {tunnels}",
        f"  IKE lab      {'on: two strongSwan charons' if args.ike else 'off'}",
        f"  rate limit   {f'{limit[0]} requests / {limit[1]:g}s' if limit else 'off'}",
        f"  faults       {shown if args.faults else 'off'}",
        f"  latency      {args.latency * 1000:g} ms per request",
        f"  journal      {journal}",
        "",
    ):
        console.say(line)


async def _rotate(
    args: argparse.Namespace,
    console: Console,
    client: MagicWAN,
    emu: Any,
    found: list[IPsecTunnel],
    journal: str,
) -> tuple[int, bool]:
    """Rotate every tunnel through the ``psk rotate`` runner (with --ike, delivering to the
    lab's router and reporting what IKE made of it): the run's exit status, and whether IKE
    said what the demo expects (True without --ike)."""
    ike_ok = True
    async with _ike(args, console, client, emu, found) as (router, lab):
        rotation = client.tunnels.ipsec.psk.rotate(
            emu.account_id,
            found,
            concurrency=args.concurrency,
            journal=journal,
            deliver=router,
            deliver_retries=0,
            settle_window=_SETTLE_WINDOW,
        )
        settings = RunSettings(
            max_retry_after=client_default("max_retry_after"),
            progress=args.progress,
            journal=journal,
            delivering=router is not None,
        )
        names = {tunnel.id.lower(): tunnel.name for tunnel in found}
        status = await run_rotation(console, rotation, names=names, settings=settings)
        if router is not None:
            ike_ok = await _ike_report(console, lab, router, found)
    return status, ike_ok


def _say_requests(console: Console, emu: Any) -> None:
    """How many requests the emulator answered, and how many with an injected fault."""
    requests = emu.state.requests
    injected = sum(requests.faults.values())
    answered = f"the emulator answered {requests.total} requests"
    if injected:
        kinds = ", ".join(f"{name} {count}" for name, count in sorted(requests.faults.items()))
        answered += f", {injected} of them with an injected fault ({kinds})"
    console.say("")
    console.say(answered)


def _verify(console: Console, emu: Any, found: list[IPsecTunnel], journal: str) -> int:
    """Check every journalled PSK against the emulator; say and return how many match."""
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
    return matching


def _demo_status(args: argparse.Namespace, status: int, *, ike_ok: bool, all_match: bool) -> int:
    """The demo's exit status from the run's, IKE's verdict and the emulator check."""
    if args.ike:
        # Undelivered is what --ike-lose asked for: the demo succeeds when IKE says exactly so.
        lost_only = status in (ExitStatus.OK, ExitStatus.UNDELIVERED)
        if lost_only and ike_ok and all_match:
            return ExitStatus.OK
        return status if status != ExitStatus.OK else ExitStatus.FAILED
    if status == ExitStatus.OK and not all_match:
        return ExitStatus.FAILED
    return status
