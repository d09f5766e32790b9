"""The rollout window's cost and its bound, measured in one run.

    python benchmarks/rollout.py                  # 2,000 tunnels, a 5 ms deliverer
    python benchmarks/rollout.py --tunnels 500    # smaller

The engine is driven through the public ``rotate()`` by in-process callables (a Cloudflare
answering in ``--latency`` seconds, a deliverer taking ``--deliver`` seconds), so the
figures are the engine's, not a network's. Three rows, all in this run:

- ``ideal``: the time the work takes at full concurrency with no window at all
  (tunnels x (latency + delivery) / concurrency): the baseline;
- ``window``: the real rotation with its rollout window (one tunnel first, wider as
  deliveries succeed); its ratio to ``ideal`` is the window's cost;
- ``broken``: the same rotation with a deliverer that always fails: how many tunnels end
  with a new PSK at the edge and the old one on the router (the bound is ``halt_after``).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from magicwan import Delivery, PSKGenerateResult, PSKSetResult, Reply, new_psk
from magicwan.models.psk import AppliedPSK
from magicwan.rotation import rotate


async def _run(args: argparse.Namespace, *, failing: bool, journal: Path) -> dict[str, Any]:
    ids = [f"{n:032x}" for n in range(1, args.tunnels + 1)]
    edge: dict[str, str] = {}
    router: dict[str, str] = {}
    peak = 0

    async def generate(account: str, tunnel: str, validate_only: bool) -> Reply[Any]:
        await asyncio.sleep(args.latency)
        edge[tunnel] = psk = new_psk()
        return Reply(PSKGenerateResult(ipsec_tunnel_id=tunnel, psk=psk), 1, False)

    async def set_psks(account: str, psks: Mapping[str, str], v: bool) -> Reply[PSKSetResult]:
        await asyncio.sleep(args.latency)
        edge.update(psks)
        applied = {t: AppliedPSK(ipsec_tunnel_id=t, psk=p) for t, p in psks.items()}
        return Reply(PSKSetResult(applied=applied), 1, False)

    async def read_back(account: str, tunnel: str) -> Any:
        raise AssertionError("no read-back expected")

    async def deliver(delivery: Delivery) -> None:
        nonlocal peak
        peak = max(peak, rotation.window)
        await asyncio.sleep(args.deliver)
        if failing:
            raise RuntimeError("router unreachable")
        router[delivery.tunnel_id] = delivery.psk

    rotation = rotate(
        "0" * 32,
        ids,
        generate=generate,
        set_psks=set_psks,
        read_back=read_back,
        method=args.method,
        concurrency=args.concurrency,
        journal=journal,
        deliver=deliver,
        deliver_retries=0,
    )
    started = time.perf_counter()
    async with rotation:
        outcomes = [o async for o in rotation]
    wall = time.perf_counter() - started
    broken = sum(1 for t, psk in edge.items() if router.get(t) != psk)
    return {"wall_s": wall, "ok": sum(o.ok for o in outcomes), "broken": broken, "peak": peak}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tunnels", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--method", choices=("generate", "set"), default="generate")
    parser.add_argument("--latency", type=float, default=0.001, help="seconds per request")
    parser.add_argument("--deliver", type=float, default=0.005, help="seconds per delivery")
    args = parser.parse_args()
    ideal = args.tunnels * (args.latency + args.deliver) / args.concurrency
    with tempfile.TemporaryDirectory() as tmp:
        window = await _run(args, failing=False, journal=Path(tmp) / "ok.jsonl")
        broken = await _run(args, failing=True, journal=Path(tmp) / "broken.jsonl")
    print(f"{args.tunnels} tunnels, {args.method}, concurrency {args.concurrency}")
    print(f"  ideal (no window)   {ideal:7.3f} s")
    print(
        f"  window              {window['wall_s']:7.3f} s  ratio {window['wall_s'] / ideal:5.2f}"
        f"  ok {window['ok']}  widest {window['peak']}"
    )
    print(f"  always failing      broken tunnels {broken['broken']} (halt_after 5)")


if __name__ == "__main__":
    asyncio.run(main())
