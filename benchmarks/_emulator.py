"""The benchmark's emulator process: magicwan's emulator plus a connection counter.

Started by ``run.py`` as ``python benchmarks/_emulator.py --tunnels N --ids-file F``.
It serves the same application as ``python -m magicwan.emulator`` (through
``magicwan.emulator.run()``: rate limit off, no faults, no access log) and adds one outer
middleware that records the client port of every request, so a benchmark can count the TCP
connections a client really used.

- ``GET  /__emulator__/bench/connections`` -> ``{"connections": n, "requests": m}``
  (distinct client ports and API requests seen since the last reset; admin requests are
  not counted);
- ``POST /__emulator__/bench/reset`` forgets them;
- ``GET  /__emulator__/bench/requests`` -> the emulator's own request counters
  (``state.requests``: ``total``, ``by_route``, ``by_status``, ``dropped``, ``faults``), which
  the budget benchmark reads to count 429s where they happen. The standard admin routes
  (``/__emulator__/rate_limit``, ``/__emulator__/reset``) set the budget and zero them.

Prints ``MAGICWAN_BASE_URL=...``, ``MAGICWAN_ACCOUNT_ID=...``, ``CLOUDFLARE_API_TOKEN=...``,
``BENCH_ADMIN_URL=...`` and ``READY`` on stdout, then serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Awaitable, Callable

from aiohttp import web

from magicwan.emulator import EmulatorState, run
from magicwan.emulator.app import ADMIN_PREFIX

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _serve(args: argparse.Namespace) -> None:
    state = EmulatorState(tunnels=args.tunnels, seed=args.seed, rate_limit=None, faults=None)
    ports: set[int] = set()
    counts = {"requests": 0}

    @web.middleware
    async def count_connections(request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        if transport is not None and not request.path.startswith(ADMIN_PREFIX):
            peer = transport.get_extra_info("peername")
            if peer:
                ports.add(peer[1])
            counts["requests"] += 1
        return await handler(request)

    async def connections(request: web.Request) -> web.Response:
        return web.json_response({"connections": len(ports), "requests": counts["requests"]})

    async def reset(request: web.Request) -> web.Response:
        ports.clear()
        counts["requests"] = 0
        return web.json_response({"ok": True})

    async def requests(request: web.Request) -> web.Response:
        # Not /__emulator__/state: that snapshot carries every tunnel's PSK history.
        return web.json_response(state.requests.to_dict())

    with open(args.ids_file, "w") as fh:
        json.dump(state.tunnel_ids, fh)

    async with run(
        state=state,
        port=args.port,
        middlewares=[count_connections],
        routes=[
            web.get(ADMIN_PREFIX + "/bench/connections", connections),
            web.post(ADMIN_PREFIX + "/bench/reset", reset),
            web.get(ADMIN_PREFIX + "/bench/requests", requests),
        ],
    ) as emulator:
        print(f"MAGICWAN_BASE_URL={emulator.base_url}")
        print(f"MAGICWAN_ACCOUNT_ID={emulator.account_id}")
        print(f"CLOUDFLARE_API_TOKEN={emulator.api_token}")
        print(f"BENCH_ADMIN_URL={emulator.admin_url}")
        print("READY", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tunnels", type=int, required=True)
    parser.add_argument("--ids-file", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
