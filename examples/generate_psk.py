"""Generate a new pre-shared key for one IPsec tunnel, and keep it before anything else.

    python examples/generate_psk.py TUNNEL_ID --keep kept

A dry run first (``validate_only``: Cloudflare checks the request and changes nothing),
then the real generation. Cloudflare never shows a PSK again, so the new one goes to
``KEEP/<tunnel id>.psk`` (mode 0600, fsynced: your secret store here) before anything else
happens; only its length is printed. For many tunnels, or to deliver each PSK to its
router, use ``rotate()`` (see ``rotate_all.py``): it journals every PSK first.

The environment is Cloudflare's, as for the command line: ``CLOUDFLARE_ACCOUNT_ID``,
``CLOUDFLARE_API_TOKEN`` (or ``CLOUDFLARE_EMAIL`` and ``CLOUDFLARE_API_KEY``), and
``CLOUDFLARE_BASE_URL`` to reach another API. Careful: against Cloudflare this replaces
the tunnel's PSK, and the old one stops working. To try it against the emulator, from
the top of a checkout, in a directory of its own (the PSK it keeps stays out of the
checkout)::

    examples=$PWD/examples; cd "$(mktemp -d)"
    python -m magicwan.emulator --port 8787 --tunnels 3 > emulator.env &
    sleep 1; . ./emulator.env
    TUNNEL_ID=$(magicwan tunnels list --type ipsec --json | head -1 | jq -r .id)
    python "$examples/generate_psk.py" "$TUNNEL_ID" --keep kept

Exit status 0 when the new PSK is kept; 1 when Cloudflare refused it or could not be
reached; 2 for an error before any request (no ``CLOUDFLARE_ACCOUNT_ID``, no credentials,
a malformed tunnel id): nothing was changed. Nothing printed ever holds a PSK.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from magicwan import InvalidInputError, MagicWAN, MagicWANError


def write_secret(path: Path, secret: str) -> None:
    """Write ``secret`` to ``path``: readable by its owner only, on disk before it returns."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as file:
        os.fchmod(fd, 0o600)
        file.write(secret + "\n")
        file.flush()
        os.fsync(fd)


async def generate(client: MagicWAN, account_id: str, tunnel_id: str, keep: Path) -> int:
    """Generate and keep one tunnel's new PSK; the exit status."""
    psk = client.tunnels.ipsec.psk
    try:
        await psk.generate(account_id, tunnel_id, validate_only=True)
        print(f"validate_only: tunnel {tunnel_id} can get a new PSK")
        reply = await psk.with_reply.generate(account_id, tunnel_id)
    except InvalidInputError as exc:  # refused before any request
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MagicWANError as exc:  # an error never holds a PSK
        print(f"failed: {exc}", file=sys.stderr)
        if exc.outcome_unknown:
            print("the tunnel may hold a PSK nobody received: generate again", file=sys.stderr)
        return 1
    result = reply.value
    assert result.psk is not None  # only a validate_only answer has none
    kept = keep / f"{result.ipsec_tunnel_id}.psk"
    write_secret(kept, result.psk)  # first thing: it can never be read back
    print(f"generated a {len(result.psk)}-character PSK for tunnel {result.ipsec_tunnel_id}")
    print(f"kept in {kept}")
    if result.psk_metadata is not None:
        print(f"last_generated_on: {result.psk_metadata.last_generated_on}")
    if reply.uncertain:
        # A retry: an earlier attempt may still store a PSK behind this one's back.
        print("an earlier attempt may have stored another PSK: rotate() reads such tunnels back")
    return 0


async def main() -> int:
    parser = argparse.ArgumentParser(description="Generate a new PSK for one IPsec tunnel.")
    parser.add_argument("tunnel_id", help="the IPsec tunnel's id")
    parser.add_argument("--keep", type=Path, required=True, help="where the new PSK goes")
    args = parser.parse_args()
    account_id = os.environ.get("CLOUDFLARE_ACCOUNT_ID")
    if not account_id:
        print("error: set CLOUDFLARE_ACCOUNT_ID to the tunnel's account", file=sys.stderr)
        return 2
    args.keep.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        async with MagicWAN() as client:  # credentials and base URL from CLOUDFLARE_*
            return await generate(client, account_id, args.tunnel_id, args.keep)
    except MagicWANError as exc:  # no credentials, a malformed base URL: nothing was sent
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
