"""A tunnel's whole life: create, give it a PSK, list, rotate, delete.

It runs against magicwan's embedded emulator of the Cloudflare API (nothing real changes)::

    python examples/tunnel_lifecycle.py

Two IPsec tunnels are created: one with a PSK the client makes (``psk=new_psk()``), one
without, which then gets a PSK Cloudflare generates. Both are rotated with a journal (the
PSKs are "delivered" to a dict standing in for the router), then deleted. Against Cloudflare
the same calls create real tunnels: a real program stores every PSK before anything else
(a secret store, the router's config). This example prints only lengths, never a PSK.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path

import magicwan
from magicwan.emulator import run as run_emulator
from magicwan.models import IPsecTunnelParams


async def lifecycle(
    client: magicwan.MagicWAN,
    account_id: str,
    journal: Path,
    holds: Callable[[str, str], bool] | None = None,
) -> None:
    """``holds(tunnel_id, psk)``: whether the API holds that PSK (the emulator can tell)."""
    ipsec = client.tunnels.ipsec
    router: dict[str, str] = {}  # tunnel id -> PSK: stands in for the device's config

    # 1. Create: one tunnel with the client's PSK (kept out of every repr and log) ...
    psk = magicwan.new_psk()
    site_a = await ipsec.create(
        account_id,
        IPsecTunnelParams(
            name="site_a",
            cloudflare_endpoint="203.0.113.1",
            customer_endpoint="198.51.100.10",
            interface_address="10.200.0.0/31",
            psk=psk,
        ),
    )
    router[site_a.id] = psk
    print(f"created {site_a.name} ({site_a.id}) with a {len(psk)}-character PSK of ours")

    # ... and one without: Cloudflare generates its PSK, shown once.
    site_b = await ipsec.create(
        account_id,
        IPsecTunnelParams(
            name="site_b", cloudflare_endpoint="203.0.113.1", interface_address="10.200.0.2/31"
        ),
    )
    generated = await ipsec.psk.generate(account_id, site_b.id)
    router[site_b.id] = generated.psk or ""
    print(f"created {site_b.name} ({site_b.id}); Cloudflare generated its PSK")

    # 2. List.
    ours = [t for t in await ipsec.list(account_id) if t.name in ("site_a", "site_b")]
    print(f"listed: {', '.join(sorted(str(t.name) for t in ours))}")

    # 3. Rotate, journalled, each new PSK delivered once it is durable.
    async def deliver(delivery: magicwan.Delivery) -> None:
        router[delivery.tunnel_id] = delivery.psk

    rotation = ipsec.psk.rotate(account_id, ours, method="set", journal=journal, deliver=deliver)
    async with rotation:
        async for outcome in rotation:
            print(f"rotated {outcome.tunnel_id}: {outcome.state.value}")

    if holds is not None:
        matching = sum(holds(tunnel.id, router[tunnel.id]) for tunnel in ours)
        print(f"{matching}/{len(ours)} router PSKs match the API's")

    # 4. Delete.
    for tunnel in ours:
        await ipsec.delete(account_id, tunnel.id)
        print(f"deleted {tunnel.name}")
    print(f"{len(await ipsec.list(account_id))} tunnel(s) left")


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            run_emulator(tunnels=1, gre_tunnels=0, rate_limit=None) as emu,
            magicwan.MagicWAN(api_token=emu.api_token, base_url=emu.base_url) as client,
        ):
            print(f"using the embedded emulator at {emu.base_url}")

            def holds(tunnel_id: str, psk: str) -> bool:
                return emu.state.current_psk(emu.account_id, tunnel_id) == psk

            await lifecycle(client, emu.account_id, Path(tmp) / "rotation.jsonl", holds)


if __name__ == "__main__":
    asyncio.run(main())
