"""Rotate every IPsec tunnel's PSK into strongSwan, through a program (the exec deliverer).

    python examples/rotate_to_strongswan.py --journal strongswan.jsonl --keep kept \\
        --conf-dir /etc/swanctl/conf.d

Each new PSK goes to ``swanctl_psk_hook.py`` (beside this file), run by
:class:`magicwan.delivery.Command` with the PSK (one line) on its standard input: it writes
the PSK as a swanctl secret under ``--conf-dir`` and runs ``swanctl --load-creds``. Here magicwan
runs where charon runs; for remote routers, make the program reach them (over ssh, or
your router's API). Before any PSK changes, every tunnel's delivery is checked
(``Command(..., run_check=True)``: the hook runs with ``MAGICWAN_CHECK=1`` and changes
nothing); one that cannot be made stops the run. Then the PSKs are set (``method="set"``:
made here, journalled before they are sent), at most one delivery at a time per router.

No PSK is ever dropped: an outcome that did not reach its router but carries a PSK has it
written to ``KEEP/<tunnel id>.psk`` (mode 0600). Rerun with ``--resume`` and the same
journal once the cause is fixed.

The environment is Cloudflare's: ``CLOUDFLARE_ACCOUNT_ID``, ``CLOUDFLARE_API_TOKEN`` (or
``CLOUDFLARE_EMAIL`` and ``CLOUDFLARE_API_KEY``), ``CLOUDFLARE_BASE_URL``. To try it
without Cloudflare or charon, against the emulator, writing the swanctl files only, from
the top of a checkout, in a directory of its own (the journal, the kept PSKs and the
swanctl files stay out of the checkout)::

    examples=$PWD/examples; cd "$(mktemp -d)"
    python -m magicwan.emulator --port 8787 --tunnels 20 > emulator.env &
    sleep 1; . ./emulator.env
    mkdir -p conf.d
    python "$examples/rotate_to_strongswan.py" --journal strongswan.jsonl --keep kept \\
        --conf-dir conf.d --no-load

Exit status 0 when every tunnel's new PSK is in strongSwan; 1 when some are not, or when
some deliveries cannot be made (then nothing was changed); 2 for an error before any
rotation (no ``CLOUDFLARE_ACCOUNT_ID``, no credentials, Cloudflare refused the tunnel
list, a journal that already records new PSKs for these tunnels without ``--resume``):
nothing was changed. Nothing printed ever holds a PSK.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import assert_never

from magicwan import (
    IPsecTunnel,
    JournalError,
    MagicWAN,
    MagicWANError,
    OutcomeState,
    RotationOutcome,
)
from magicwan.delivery import Command, DeliveryError, DeliveryTarget

HOOK = Path(__file__).resolve().with_name("swanctl_psk_hook.py")


def write_secret(path: Path, secret: str) -> None:
    """Write ``secret`` to ``path``: readable by its owner only, on disk before it returns."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as file:
        os.fchmod(fd, 0o600)
        file.write(secret + "\n")
        file.flush()
        os.fsync(fd)


async def unready(
    deliverer: Command, account_id: str, tunnels: list[IPsecTunnel]
) -> list[DeliveryError]:
    """Why deliveries to some tunnels could not be made (an empty list: all could)."""
    targets = [DeliveryTarget(account_id=account_id, tunnel_id=t.id, tunnel=t) for t in tunnels]
    results = await asyncio.gather(*map(deliverer.check, targets), return_exceptions=True)
    errors: list[DeliveryError] = []
    for result in results:
        if isinstance(result, DeliveryError):
            errors.append(result)
        elif isinstance(result, BaseException):
            raise result
    return errors


def report(outcome: RotationOutcome, keep: Path) -> bool:
    """Say what happened to one tunnel and keep any PSK that did not get there; whether
    the tunnel now has its new PSK on both ends."""
    if not outcome.ok and outcome.psk is not None:
        # The tunnel may hold this PSK at Cloudflare now: never drop it.
        kept = keep / f"{outcome.tunnel_id}.psk"
        write_secret(kept, outcome.psk)
        print(f"kept {outcome.tunnel_id}: the PSK it may hold is in {kept}")
    state = outcome.state
    match state:
        case OutcomeState.ROTATED | OutcomeState.SKIPPED | OutcomeState.VALIDATED:
            print(f"{state.value} {outcome.tunnel_id}: in strongSwan")
        case OutcomeState.UNDELIVERED | OutcomeState.UNRECORDED | OutcomeState.NOT_ATTEMPTED:
            print(f"{state.value} {outcome.tunnel_id}: {outcome.error}")
        case OutcomeState.FAILED:
            unknown = " (it may hold a PSK nobody received)" if outcome.outcome_unknown else ""
            print(f"failed {outcome.tunnel_id}{unknown}: {outcome.error}")
        case _:
            assert_never(state)
    return outcome.ok


async def rotate(client: MagicWAN, account_id: str, args: argparse.Namespace) -> int:
    """Check every delivery, then rotate every IPsec tunnel; the exit status."""
    hook = [sys.executable, str(HOOK), "--conf-dir", str(args.conf_dir), "--swanctl", args.swanctl]
    deliverer = Command([*hook, *(["--no-load"] if args.no_load else [])], run_check=True)
    tunnels = await client.tunnels.ipsec.list(account_id)  # objects: their identities
    errors = await unready(deliverer, account_id, tunnels)
    if errors:
        for error in errors:
            print(f"not ready: {error.tunnel_id}: {error}", file=sys.stderr)
        print(f"{len(errors)} of {len(tunnels)} deliveries cannot be made: nothing changed")
        return 1
    print(f"checked: all {len(tunnels)} deliveries can be made")
    rotation = client.tunnels.ipsec.psk.rotate(
        account_id,
        tunnels,
        method="set",
        journal=args.journal,
        resume=args.resume,
        deliver=deliverer,
        deliver_group_by="customer_endpoint",
    )
    done = 0
    try:
        async with rotation:
            async for outcome in rotation:
                done += report(outcome, args.keep)
    except JournalError as exc:  # after every outcome: those the journal lacks were kept
        print(f"journal failed: {exc} ({rotation.unrecorded} unrecorded)", file=sys.stderr)
    finally:
        for outcome in rotation.unclaimed:  # left early: outcomes not taken yet
            done += report(outcome, args.keep)
    print(f"{done} of {len(tunnels)} tunnels rotated into strongSwan")
    return 0 if done == len(tunnels) else 1


async def main() -> int:
    parser = argparse.ArgumentParser(description="Rotate every IPsec tunnel into strongSwan.")
    parser.add_argument("--journal", type=Path, required=True, help="the rotation's journal")
    parser.add_argument("--keep", type=Path, required=True, help="where kept PSKs go")
    parser.add_argument("--conf-dir", type=Path, default=Path("/etc/swanctl/conf.d"))
    parser.add_argument("--swanctl", default="swanctl", help="the swanctl program")
    parser.add_argument("--no-load", action="store_true", help="do not run swanctl")
    parser.add_argument("--resume", action="store_true", help="finish the journal's run")
    args = parser.parse_args()
    account_id = os.environ.get("CLOUDFLARE_ACCOUNT_ID")
    if not account_id:
        print("error: set CLOUDFLARE_ACCOUNT_ID to the tunnels' account", file=sys.stderr)
        return 2
    args.keep.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        async with MagicWAN() as client:  # credentials and base URL from CLOUDFLARE_*
            return await rotate(client, account_id, args)
    except MagicWANError as exc:  # only before any rotation: rotate() handles the rest
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
