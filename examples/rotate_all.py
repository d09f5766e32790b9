"""Rotate the pre-shared key of every IPsec tunnel of an account, and deliver each new PSK.

By default this runs against magicwan's embedded emulator of the Cloudflare API::

    python examples/rotate_all.py

To run it against Cloudflare, set ``CLOUDFLARE_API_TOKEN`` and ``MAGICWAN_ACCOUNT_ID``
(and ``MAGICWAN_JOURNAL`` to choose the journal's path). Careful: every tunnel gets a new
PSK and the old ones stop working.

Each new PSK is written and fsynced to the journal (a 0600 JSON Lines file) before
``deliver`` sees it, so a crash cannot lose one: rerun with the same journal and the
tunnels already rotated are skipped (their PSK, read from the journal, is delivered again,
so ``deliver`` must be idempotent).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import magicwan
from magicwan.emulator import run as run_emulator

delivered: dict[str, str] = {}


async def deliver(tunnel_id: str, psk: str) -> None:
    """Hand a new PSK to its consumer: push it to the router, or to your secret store."""
    delivered[tunnel_id] = psk
    print(f"delivered {tunnel_id}  psk {'*' * 8} ({len(psk)} characters)")


async def rotate_all(client: magicwan.MagicWAN, account_id: str, journal: Path) -> int:
    """Rotate every tunnel of the account; the number that failed."""
    tunnels = await client.tunnels.ipsec.list(account_id)
    failed = 0
    async for outcome in client.tunnels.ipsec.psk.rotate(
        account_id, [tunnel.id for tunnel in tunnels], concurrency=16, journal=journal
    ):
        if outcome.ok and outcome.result is not None and outcome.result.psk:
            await deliver(outcome.tunnel_id, outcome.result.psk)
        else:
            failed += 1
            print(f"failed {outcome.tunnel_id}: {outcome.error}")  # errors never hold a PSK
    print(f"rotated {len(tunnels) - failed}/{len(tunnels)} tunnels; journal: {journal}")
    return failed


async def main() -> int:
    account_id = os.environ.get("MAGICWAN_ACCOUNT_ID")
    journal = Path(
        os.environ.get("MAGICWAN_JOURNAL")
        or Path(tempfile.mkdtemp(prefix="magicwan-rotate-")) / "journal.jsonl"
    )
    if os.environ.get("CLOUDFLARE_API_TOKEN") and account_id:
        async with magicwan.MagicWAN() as client:  # credentials from the environment
            return await rotate_all(client, account_id, journal)
    async with (
        run_emulator(tunnels=20) as emu,
        magicwan.MagicWAN(api_token=emu.api_token, base_url=emu.base_url) as client,
    ):
        print(f"using the embedded emulator at {emu.base_url}")
        failed = await rotate_all(client, emu.account_id, journal)
        same = sum(psk == emu.state.current_psk(emu.account_id, t) for t, psk in delivered.items())
        print(f"{same}/{len(emu.tunnel_ids)} delivered PSKs match the emulator's")
        return failed


if __name__ == "__main__":
    raise SystemExit(1 if asyncio.run(main()) else 0)
