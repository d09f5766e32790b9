"""A tunnel's whole life: create, give it a PSK, update, list, rotate, delete.

    python examples/tunnel_lifecycle.py --journal lifecycle.jsonl --keep kept

Two IPsec tunnels are created: ``site_a`` with a PSK made here (``new_psk()``), ``site_b``
without one, which then gets a PSK Cloudflare generates. ``site_a`` is updated (its PSK
kept), both are rotated with a journal and a deliverer, then both are deleted. Every PSK
goes to ``KEEP/<tunnel name>.psk`` (mode 0600, fsynced), which stands in for your secret
store and the router's config: a PSK made here before the request that carries it,
a generated one as soon as it is received, a rotated one by the deliverer. An outcome that
did not reach its router but carries a PSK has it kept in ``KEEP/<name>.undelivered.psk``.
Only lengths are printed, never a PSK.

The environment is Cloudflare's, as for the command line: ``CLOUDFLARE_ACCOUNT_ID``,
``CLOUDFLARE_API_TOKEN`` (or ``CLOUDFLARE_EMAIL`` and ``CLOUDFLARE_API_KEY``), and
``CLOUDFLARE_BASE_URL`` to reach another API. Against Cloudflare the same calls create
and delete real tunnels. To try it against the emulator, from the top of a checkout, in
a directory of its own (the journal and kept PSKs stay out of the checkout)::

    examples=$PWD/examples; cd "$(mktemp -d)"
    python -m magicwan.emulator --port 8787 --tunnels 1 > emulator.env &
    sleep 1; . ./emulator.env
    python "$examples/tunnel_lifecycle.py" --journal lifecycle.jsonl --keep kept

Exit status 0 when all of it was done; 1 when a rotated PSK did not reach its stand-in
router (the tunnels are deleted all the same); 2 when an error stopped it (no
``CLOUDFLARE_ACCOUNT_ID``, no credentials, a call Cloudflare refused): the message says
which, and a tunnel created before it is left in place.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import attrs

from magicwan import Delivery, MagicWAN, MagicWANError, RotationOutcome, new_psk
from magicwan.models import IPsecTunnelParams


def write_secret(path: Path, secret: str) -> None:
    """Write ``secret`` to ``path``: readable by its owner only, on disk before it returns."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as file:
        os.fchmod(fd, 0o600)
        file.write(secret + "\n")
        file.flush()
        os.fsync(fd)


async def lifecycle(client: MagicWAN, account_id: str, journal: Path, keep: Path) -> int:
    """Create, rotate and delete two tunnels; the exit status."""
    ipsec = client.tunnels.ipsec

    # 1. Create: one tunnel with a PSK of ours, kept before the request that carries it ...
    psk = new_psk()
    write_secret(keep / "site_a.psk", psk)
    params = IPsecTunnelParams(
        name="site_a",
        cloudflare_endpoint="203.0.113.1",
        customer_endpoint="198.51.100.10",
        interface_address="10.200.0.0/31",
        psk=psk,
    )
    site_a = await ipsec.create(account_id, params)
    print(f"created {site_a.name} ({site_a.id}) with a {len(psk)}-character PSK of ours")

    # ... and one without: Cloudflare generates its PSK, shown once.
    site_b = await ipsec.create(
        account_id,
        IPsecTunnelParams(
            name="site_b",
            cloudflare_endpoint="203.0.113.1",
            customer_endpoint="198.51.100.11",
            interface_address="10.200.0.2/31",
        ),
    )
    generated = await ipsec.psk.generate(account_id, site_b.id)
    assert generated.psk is not None  # only a validate_only answer has none
    write_secret(keep / "site_b.psk", generated.psk)
    print(f"created {site_b.name} ({site_b.id}); Cloudflare generated its PSK")

    # 2. Update: the whole params again, without the PSK (which would replace it).
    site_a = await ipsec.update(
        account_id, site_a.id, attrs.evolve(params, psk=None, description="ISP B")
    )
    print(f"updated {site_a.name}: {site_a.description}")

    # 3. List.
    ours = [t for t in await ipsec.list(account_id) if t.name in ("site_a", "site_b")]
    print(f"listed: {', '.join(sorted(str(t.name) for t in ours))}")

    # 4. Rotate, journalled; each new PSK delivered once it is durable.
    async def deliver(delivery: Delivery) -> None:
        write_secret(keep / f"{delivery.name}.psk", delivery.psk)

    def keep_undelivered(outcome: RotationOutcome) -> None:
        """An outcome that did not get there may carry a PSK Cloudflare holds: keep it."""
        if not outcome.ok and outcome.psk is not None:
            name = outcome.tunnel.name if outcome.tunnel else outcome.tunnel_id
            write_secret(keep / f"{name}.undelivered.psk", outcome.psk)

    rotation = ipsec.psk.rotate(account_id, ours, method="set", journal=journal, deliver=deliver)
    failed = 0
    try:
        async with rotation:
            async for outcome in rotation:
                keep_undelivered(outcome)
                name = outcome.tunnel.name if outcome.tunnel else outcome.tunnel_id
                if outcome.ok:  # rotated (or skipped: the journal had it), and delivered
                    print(f"{outcome.state.value} {name}: delivered")
                else:  # failed, undelivered, unrecorded or not attempted: error says why
                    failed += 1
                    print(f"{outcome.state.value} {name}: {outcome.error}")
    finally:
        # Left early (an exception, Ctrl-C): outcomes not taken yet carry PSKs too.
        for outcome in rotation.unclaimed:
            keep_undelivered(outcome)

    # 5. Delete.
    for tunnel in ours:
        deleted = await ipsec.delete(account_id, tunnel.id)
        print(f"deleted {deleted.name}")
    print(f"{len(await ipsec.list(account_id))} tunnel(s) left")
    return 1 if failed else 0


async def main() -> int:
    parser = argparse.ArgumentParser(description="A tunnel's whole life.")
    parser.add_argument("--journal", type=Path, required=True, help="the rotation's journal")
    parser.add_argument("--keep", type=Path, required=True, help="where the PSKs go")
    args = parser.parse_args()
    account_id = os.environ.get("CLOUDFLARE_ACCOUNT_ID")
    if not account_id:
        print("error: set CLOUDFLARE_ACCOUNT_ID to the account to use", file=sys.stderr)
        return 2
    args.keep.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        async with MagicWAN() as client:  # credentials and base URL from CLOUDFLARE_*
            return await lifecycle(client, account_id, args.journal, args.keep)
    except MagicWANError as exc:  # an error never holds a PSK; the ones made were kept
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
