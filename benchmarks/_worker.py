"""One benchmark run in a fresh process; prints one JSON line on stdout.

    python benchmarks/_worker.py CLIENT MODE --concurrency C --n N --ids-file F \
        --base-url URL --account-id ID --token T --t0 EPOCH [--journal PATH] \
        [--method generate|set --budget default|N/SECONDS --batch-size B]

CLIENT is ``magicwan``, ``raw`` or ``cloudflare``; MODE is ``generate`` (N PSK
generations over N distinct tunnels, C at a time, after one untimed first call on
another tunnel), ``bulk-rotate`` (magicwan's ``rotate(..., journal=...)`` over N
tunnels), ``bulk-gather`` (``asyncio.gather`` of N plain ``generate`` calls bounded by
a semaphore of C) or ``budget`` (magicwan only: ``rotate(..., method=M, journal=...)``
over N tunnels with the client's limiter on, against an emulator enforcing the same
budget; see ``_budget.py``).

Nothing but the standard library is imported before the SDK under test, so the
import and first-call times are those of a fresh process.
"""

from __future__ import annotations

import time

_T_START = time.perf_counter()

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


@contextlib.contextmanager
def _profiled(path: str | None) -> Iterator[None]:
    """With ``--profile PATH``: pyinstrument samples the measured section (the whole event
    loop thread, idle waits included) and writes its call tree to PATH. A diagnosis tool:
    the profiler costs CPU, so a profiled run's figures are not results."""
    if not path:
        yield
        return
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    try:
        yield
    finally:
        session = profiler.stop()
        with open(path, "w") as fh:
            fh.write(profiler.output_text(unicode=False, color=False))
        session.save(path + ".pyisession")


async def _drive(call: Any, ids: list[str], concurrency: int) -> None:
    """``concurrency`` workers pulling tunnel ids from one iterator (same for every client)."""
    pending = iter(ids)

    async def worker() -> None:
        for tunnel_id in pending:
            await call(tunnel_id)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


# -- the clients ------------------------------------------------------------------------------


class MagicWANClient:
    name = "magicwan"

    @staticmethod
    def import_sdk() -> None:
        from magicwan import MagicWAN  # noqa: F401 - `import magicwan` alone loads no client

    def __init__(self, args: argparse.Namespace) -> None:
        from magicwan import MagicWAN

        # rate_limit=None: the benchmark measures the client, not Cloudflare's budget of
        # 1,200 requests per 5 minutes (the default limiter would pace 10,000 calls over 40 min).
        self.client = MagicWAN(
            api_token=args.token, base_url=args.base_url, rate_limit=None, connection_limit=100
        )
        self.account_id = args.account_id
        self.generate = self.client.tunnels.ipsec.psk.generate

    async def call(self, tunnel_id: str) -> Any:
        result = await self.generate(self.account_id, tunnel_id)
        assert result.psk
        return result

    async def aclose(self) -> None:
        await self.client.aclose()


class RawClient:
    """The floor: one aiohttp session, one POST, one json decode per call."""

    name = "raw"

    @staticmethod
    def import_sdk() -> None:
        import aiohttp  # noqa: F401

    def __init__(self, args: argparse.Namespace) -> None:
        import aiohttp

        self.json_loads = json.loads
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=100)  # magicwan's default connection_limit
        )
        self.prefix = f"{args.base_url}/accounts/{args.account_id}/magic/ipsec_tunnels/"
        self.headers = {
            "Authorization": f"Bearer {args.token}",
            "Content-Type": "application/json",
        }

    async def call(self, tunnel_id: str) -> Any:
        async with self.session.post(
            self.prefix + tunnel_id + "/psk_generate", data=b"{}", headers=self.headers
        ) as resp:
            data = self.json_loads(await resp.read())
        result = data["result"]
        assert result["psk"]
        return result

    async def aclose(self) -> None:
        await self.session.close()


class CloudflareClient:
    """Cloudflare's official SDK (``AsyncCloudflare``) with its defaults (max_retries=2)."""

    name = "cloudflare"

    @staticmethod
    def import_sdk() -> None:
        import cloudflare  # noqa: F401

    def __init__(self, args: argparse.Namespace) -> None:
        from cloudflare import AsyncCloudflare

        self.client = AsyncCloudflare(api_token=args.token, base_url=args.base_url)
        self.account_id = args.account_id
        self.generate = self.client.magic_transit.ipsec_tunnels.psk_generate

    async def call(self, tunnel_id: str) -> Any:
        # extra_body={}: without it the SDK sends no body, which the API refuses.
        result = await self.generate(tunnel_id, account_id=self.account_id, extra_body={})
        assert result is not None
        assert result.psk
        return result

    async def aclose(self) -> None:
        await self.client.close()


CLIENTS = {c.name: c for c in (MagicWANClient, RawClient, CloudflareClient)}


# -- the modes --------------------------------------------------------------------------------


async def _generate(args: argparse.Namespace, out: dict[str, Any]) -> None:
    cls = CLIENTS[args.client]
    t = time.perf_counter()
    cls.import_sdk()
    out["import_s"] = time.perf_counter() - t
    ids = _ids(args)
    first, ids = ids[0], ids[1 : args.n + 1]
    client = cls(args)
    try:
        await client.call(first)
        out["first_call_s"] = time.perf_counter() - t
        out["process_to_first_call_s"] = time.time() - args.t0
        await _reset_connections(args)
        rss0 = _maxrss_kib()
        cpu0 = _cpu()
        t0 = time.perf_counter()
        with _profiled(args.profile):
            await _drive(client.call, ids, args.concurrency)
        wall = time.perf_counter() - t0
        cpu = _cpu() - cpu0
    finally:
        await client.aclose()
    out.update(_figures(len(ids), wall, cpu, rss0))
    out["connections"] = await _connections(args)


async def _budget(args: argparse.Namespace, out: dict[str, Any]) -> None:
    """One rotation paced by the client's limiter, the emulator enforcing the same budget.

    A warm-up call (on a spare tunnel, from a client without a limiter, the emulator's limit
    off) loads and exercises the code first, so it spends nothing of the measured budget.
    Then the emulator gets the budget (a fresh, full bucket) and zeroed request counters, a
    new client is made with the same budget (``--budget default``: the client's default
    limiter, Cloudflare's budget), and the rotation runs with a fresh journal. The emulator's
    counters say how many requests arrived and how many were refused with a 429.
    """
    from magicwan import MagicWAN
    from magicwan.ratelimit import CLOUDFLARE_BUDGET, parse_rate_limit

    all_ids = _ids(args)
    ids, spare = all_ids[: args.n], all_ids[args.n]
    budget = CLOUDFLARE_BUDGET if args.budget == "default" else parse_rate_limit(args.budget)
    assert budget is not None, "the budget benchmark needs a budget"
    limit, period = budget
    await _admin(args, "POST", "/rate_limit", {"limit": None})
    async with MagicWAN(api_token=args.token, base_url=args.base_url, rate_limit=None) as warm:
        await warm.tunnels.ipsec.psk.generate(args.account_id, spare)
    await _admin(args, "POST", "/rate_limit", {"limit": limit, "window": period})
    await _admin(args, "POST", "/reset")  # request counters to zero, the bucket full
    await _reset_connections(args)
    try:
        if args.budget == "default":
            client = MagicWAN(api_token=args.token, base_url=args.base_url)
        else:
            client = MagicWAN(api_token=args.token, base_url=args.base_url, rate_limit=budget)
        limiter = client.rate_limiter
        assert (limiter.limit, limiter.period) == (limit, period), "the client's budget differs"
        psk = client.tunnels.ipsec.psk
        ok = retried = 0
        async with client:
            rss0 = _maxrss_kib()
            cpu0 = _cpu()
            t0 = time.perf_counter()
            with _profiled(args.profile):
                async with psk.rotate(
                    args.account_id,
                    ids,
                    method=args.method,
                    concurrency=args.concurrency,
                    batch_size=args.batch_size,
                    journal=args.journal,
                ) as rotation:
                    async for outcome in rotation:
                        ok += outcome.ok
                        retried += outcome.attempts > 1
            wall = time.perf_counter() - t0  # the journal is closed: every line is on disk
            cpu = _cpu() - cpu0
        counters = await _admin(args, "GET", "/bench/requests")
        out["connections"] = await _connections(args)
    finally:
        await _admin(args, "POST", "/rate_limit", {"limit": None})
    out.update(_figures(len(ids), wall, cpu, rss0))
    with open(args.journal, "rb") as fh:
        out["journal_lines"] = sum(1 for _ in fh)
    out["journal_bytes"] = os.path.getsize(args.journal)
    out["ok"] = ok
    out["retried_tunnels"] = retried
    out["requests_sent"] = counters["total"]
    out["by_status"] = counters["by_status"]
    out["by_route"] = counters["by_route"]
    out["dropped"] = counters["dropped"]
    out["status_429"] = counters["by_status"].get("429", 0)


async def _bulk(args: argparse.Namespace, out: dict[str, Any]) -> None:
    from magicwan import MagicWAN

    ids = _ids(args)[: args.n]
    client = MagicWAN(api_token=args.token, base_url=args.base_url, rate_limit=None)
    psk = client.tunnels.ipsec.psk
    async with client:
        await psk.generate(args.account_id, ids[0], validate_only=True)  # connect, warm up
        await _reset_connections(args)
        rss0 = _maxrss_kib()
        cpu0 = _cpu()
        t0 = time.perf_counter()
        with _profiled(args.profile):
            if args.mode == "bulk-rotate":
                ok = 0
                async for outcome in psk.rotate(
                    args.account_id, ids, concurrency=args.concurrency, journal=args.journal
                ):
                    ok += outcome.ok
            else:
                slots = asyncio.Semaphore(args.concurrency)

                async def one(tunnel_id: str) -> Any:
                    async with slots:
                        return await psk.generate(args.account_id, tunnel_id)

                results = await asyncio.gather(*(one(t) for t in ids), return_exceptions=True)
                ok = sum(1 for r in results if not isinstance(r, BaseException))
                del results
        wall = time.perf_counter() - t0
        cpu = _cpu() - cpu0
    out.update(_figures(len(ids), wall, cpu, rss0))
    out["ok"] = ok
    out["connections"] = await _connections(args)


def _figures(n: int, wall: float, cpu: float, rss0: int) -> dict[str, Any]:
    rss = _maxrss_kib()
    return {
        "n": n,
        "wall_s": wall,
        "rps": n / wall,
        "cpu_per_req_ms": cpu / n * 1000,
        "cpu_s": cpu,
        "peak_rss_mib": rss / 1024,
        "rss_growth_mib": (rss - rss0) / 1024,
    }


def _ids(args: argparse.Namespace) -> list[str]:
    with open(args.ids_file) as fh:
        ids: list[str] = json.load(fh)
    return ids


async def _admin(
    args: argparse.Namespace, method: str, path: str, body: Any = None
) -> dict[str, Any]:
    # Plain asyncio streams, so the admin calls import nothing the clients would not.
    host, _, port = args.admin_url.removeprefix("http://").partition("/")[0].partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    prefix = "/" + args.admin_url.removeprefix("http://").partition("/")[2]
    data = b"" if body is None else json.dumps(body).encode()
    writer.write(
        f"{method} {prefix}{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(data)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + data
    )
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()
    result: dict[str, Any] = json.loads(raw.partition(b"\r\n\r\n")[2])
    return result


async def _reset_connections(args: argparse.Namespace) -> None:
    if args.admin_url:
        await _admin(args, "POST", "/bench/reset")


async def _connections(args: argparse.Namespace) -> int | None:
    if not args.admin_url:
        return None
    return int((await _admin(args, "GET", "/bench/connections"))["connections"])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("client", choices=sorted(CLIENTS))
    parser.add_argument("mode", choices=["generate", "bulk-rotate", "bulk-gather", "budget"])
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--ids-file")
    parser.add_argument("--base-url")
    parser.add_argument("--admin-url", default="")
    parser.add_argument("--account-id")
    parser.add_argument("--token")
    parser.add_argument("--journal")
    parser.add_argument("--t0", type=float, default=None)
    parser.add_argument("--method", choices=["generate", "set"], default="generate")
    parser.add_argument("--budget", default="default", help="default, or N/SECONDS")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--profile", help="write a pyinstrument profile of the measured section")
    args = parser.parse_args()
    out: dict[str, Any] = {"client": args.client, "mode": args.mode}
    if args.t0 is None:
        args.t0 = time.time() - (time.perf_counter() - _T_START)
    out["concurrency"] = args.concurrency
    runners = {"generate": _generate, "budget": _budget}
    runner = runners.get(args.mode, _bulk)
    asyncio.run(runner(args, out))
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
