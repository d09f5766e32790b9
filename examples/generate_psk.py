"""Generate a new pre-shared key for one IPsec tunnel.

By default this runs against magicwan's embedded emulator of the Cloudflare API, so it
changes nothing real::

    python examples/generate_psk.py

To run it against Cloudflare, set ``CLOUDFLARE_API_TOKEN``, ``MAGICWAN_ACCOUNT_ID`` and
``MAGICWAN_TUNNEL_ID``. Careful: that replaces the tunnel's PSK, and the old one stops
working. Cloudflare never shows a PSK again, so a real program stores it (a secret store,
the router's config) before doing anything else. This example prints only its length.
"""

from __future__ import annotations

import asyncio
import os

import magicwan
from magicwan.emulator import run as run_emulator


async def generate(client: magicwan.MagicWAN, account_id: str, tunnel_id: str) -> None:
    # A dry run first: Cloudflare checks the request and changes nothing.
    await client.tunnels.ipsec.psk.generate(account_id, tunnel_id, validate_only=True)
    print(f"validate_only: a PSK can be generated for tunnel {tunnel_id}")

    result = await client.tunnels.ipsec.psk.generate(account_id, tunnel_id)
    psk = result.psk or ""
    # Store `psk` now. Never print or log it: here we show only its length.
    print(f"generated: tunnel {result.ipsec_tunnel_id}, a {len(psk)}-character PSK")
    if result.psk_metadata is not None:
        print(f"last_generated_on: {result.psk_metadata.last_generated_on}")


async def main() -> None:
    account_id = os.environ.get("MAGICWAN_ACCOUNT_ID")
    tunnel_id = os.environ.get("MAGICWAN_TUNNEL_ID")
    if os.environ.get("CLOUDFLARE_API_TOKEN") and account_id and tunnel_id:
        async with magicwan.MagicWAN() as client:  # credentials from the environment
            await generate(client, account_id, tunnel_id)
        return
    async with (
        run_emulator(tunnels=3) as emu,
        magicwan.MagicWAN(api_token=emu.api_token, base_url=emu.base_url) as client,
    ):
        print(f"using the embedded emulator at {emu.base_url}")
        await generate(client, emu.account_id, emu.tunnel_ids[0])


if __name__ == "__main__":
    asyncio.run(main())
