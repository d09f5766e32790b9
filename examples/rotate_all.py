"""Rotate the PSK of every IPsec tunnel of an account, and deliver each new PSK.

    python examples/rotate_all.py --journal rotate_all.jsonl --routers routers --keep kept

The job ``magicwan psk rotate`` does, as a program of your own: every tunnel gets a new
PSK, fsynced to the journal (a 0600 JSON Lines file) before it is delivered, and each
outcome is reported. ``deliver`` stands in for your routers: it writes the PSK into
``ROUTERS/<tunnel name>/psk`` and fails, permanently, for a tunnel whose router is not in
that inventory. Swap in your router's API, or :class:`magicwan.delivery.Command` or
:class:`magicwan.delivery.StrongSwan`.

No PSK is ever dropped: an outcome that did not reach its router but carries a PSK (the
tunnel may hold it at Cloudflare) has it written to ``KEEP/<tunnel id>.psk``, your secret
store here. Rerun with ``--resume`` and the same journal once the cause is fixed: tunnels
already delivered are skipped, undelivered ones are delivered without a new PSK, the rest
are rotated.

The environment is Cloudflare's, as for the command line: ``CLOUDFLARE_ACCOUNT_ID``,
``CLOUDFLARE_API_TOKEN`` (or ``CLOUDFLARE_EMAIL`` and ``CLOUDFLARE_API_KEY``), and
``CLOUDFLARE_BASE_URL`` to reach another API. Careful: against Cloudflare every tunnel gets
a new PSK and the old ones stop working. To try it against the emulator instead, from
the top of a checkout, in a directory of its own (the journal and kept PSKs stay out of
the checkout)::

    examples=$PWD/examples; cd "$(mktemp -d)"
    python -m magicwan.emulator --port 8787 --tunnels 20 > emulator.env &
    sleep 1; . ./emulator.env
    mkdir -p routers/emu_tunnel_{00001..00020}
    python "$examples/rotate_all.py" --journal rotate_all.jsonl --routers routers --keep kept

Exit status 0 when every tunnel was rotated and delivered; 1 when some were not (or the
journal failed); 2 for an error before any rotation (no ``CLOUDFLARE_ACCOUNT_ID``, no
credentials, Cloudflare refused the tunnel list, a journal that already records new PSKs
for these tunnels without ``--resume``): nothing was changed. Nothing printed ever holds
a PSK.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import sys
from pathlib import Path
from typing import assert_never

from magicwan import (
    Deliverer,
    Delivery,
    DeliveryError,
    JournalError,
    MagicWAN,
    MagicWANError,
    OutcomeState,
    RotationOptions,
    RotationOutcome,
)


def write_secret(path: Path, secret: str) -> None:
    """Write ``secret`` to ``path``: readable by its owner only, on disk before it returns."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as file:
        os.fchmod(fd, 0o600)
        file.write(secret + "\n")
        file.flush()
        os.fsync(fd)


def router_deliverer(inventory: Path) -> Deliverer:
    """A deliverer that puts each PSK on the tunnel's router (here: a directory)."""

    async def deliver(delivery: Delivery) -> None:
        router = inventory / (delivery.name or delivery.tunnel_id)
        if not router.is_dir():
            # permanent: trying again cannot help, so it is not retried.
            raise DeliveryError(
                f"no router {router.name!r} in the inventory",
                reason="misconfigured",
                tunnel_id=delivery.tunnel_id,
            )
        await asyncio.to_thread(write_secret, router / "psk", delivery.psk)

    return deliver


def report(outcome: RotationOutcome, keep: Path) -> None:
    """Say what happened to one tunnel, and keep the PSK of one that did not get there."""
    tunnel = outcome.tunnel_id
    if outcome.tunnel is not None and outcome.tunnel.name:
        tunnel += f" ({outcome.tunnel.name})"
    if not outcome.ok and outcome.psk is not None:
        # The tunnel may hold this PSK at Cloudflare now: never drop it.
        kept = keep / f"{outcome.tunnel_id}.psk"
        write_secret(kept, outcome.psk)
        print(f"kept {outcome.tunnel_id}: the PSK it may hold is in {kept}")
    state = outcome.state
    match state:
        case OutcomeState.ROTATED:
            print(f"rotated {tunnel}: delivered")
        case OutcomeState.SKIPPED:
            print(f"skipped {tunnel}: the journal already had its new PSK; delivered")
        case OutcomeState.VALIDATED:  # only with validate_only=True
            print(f"validated {tunnel}: nothing changed")
        case OutcomeState.UNDELIVERED:
            print(f"undelivered {tunnel}: live at Cloudflare, not on the router: {outcome.error}")
        case OutcomeState.UNRECORDED:
            print(f"unrecorded {tunnel}: live at Cloudflare, not in the journal: {outcome.error}")
        case OutcomeState.FAILED:
            print(f"failed {tunnel}: {outcome.error}")
            if outcome.outcome_unknown:
                print(f"  {outcome.tunnel_id} may hold a PSK nobody received: rotate it again")
        case OutcomeState.NOT_ATTEMPTED:
            print(f"not attempted {tunnel}: {outcome.error}")
        case _:
            assert_never(state)
    if outcome.unverified is not None:
        print(f"  not verified: {outcome.unverified}")


async def rotate_all(client: MagicWAN, account_id: str, args: argparse.Namespace) -> int:
    """Rotate every IPsec tunnel of the account; the exit status."""
    tunnels = await client.tunnels.ipsec.list(account_id)  # objects: their names, endpoints
    options = RotationOptions(
        method=args.method,
        journal=args.journal,
        resume=args.resume,
        halt_after=5,  # five broken tunnels: stop before breaking more
        deliver_group_by="customer_endpoint",  # one delivery at a time per device
    )
    rotation = client.tunnels.ipsec.psk.rotate(
        account_id, tunnels, options=options, deliver=router_deliverer(args.routers)
    )
    states: collections.Counter[str] = collections.Counter()
    try:
        async with rotation:
            async for outcome in rotation:
                report(outcome, args.keep)
                states[outcome.state.value] += 1
    except JournalError as exc:
        # Every outcome was handed over first: the PSKs the journal lacks are kept above.
        print(f"journal failed: {exc} ({rotation.unrecorded} unrecorded)", file=sys.stderr)
        states["journal_failed"] += 1
    finally:
        # Left early (an exception, Ctrl-C): what finished but was not taken yet.
        for outcome in rotation.unclaimed:
            report(outcome, args.keep)
            states[outcome.state.value] += 1
    summary = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
    print(f"{len(tunnels)} tunnels: {summary}; journal: {args.journal}")
    done = states["rotated"] + states["skipped"]
    if done == len(tunnels) and not states["journal_failed"]:
        return 0
    print("fix what failed, then run again with --resume and the same journal", file=sys.stderr)
    return 1


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else "")
    parser.add_argument("--journal", type=Path, required=True, help="the rotation's journal")
    parser.add_argument("--routers", type=Path, required=True, help="the router inventory")
    parser.add_argument("--keep", type=Path, required=True, help="where kept PSKs go")
    parser.add_argument("--method", choices=("generate", "set"), default="set")
    parser.add_argument("--resume", action="store_true", help="finish the journal's run")
    return parser.parse_args()


async def main() -> int:
    args = parse_arguments()
    account_id = os.environ.get("CLOUDFLARE_ACCOUNT_ID")
    if not account_id:
        print("error: set CLOUDFLARE_ACCOUNT_ID to the tunnels' account", file=sys.stderr)
        return 2
    args.keep.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        async with MagicWAN() as client:  # credentials and base URL from CLOUDFLARE_*
            return await rotate_all(client, account_id, args)
    except MagicWANError as exc:
        # Only before any rotation: once it runs, every outcome (and a journal error) is
        # handled in rotate_all().
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
