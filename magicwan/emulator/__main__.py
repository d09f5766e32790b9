"""``python -m magicwan.emulator``: serve the emulator until Ctrl-C or SIGTERM.

At startup it prints, one per line and flushed at once::

    MAGICWAN_BASE_URL=http://127.0.0.1:8787/client/v4
    MAGICWAN_ACCOUNT_ID=<32 hex>
    CLOUDFLARE_API_TOKEN=emulator-token
    CLOUDFLARE_EMAIL=emulator@example.com
    CLOUDFLARE_API_KEY=emulator-key
    MAGICWAN_EMULATOR_ADMIN_URL=http://127.0.0.1:8787/__emulator__
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence

import attrs

from magicwan.emulator._server import run
from magicwan.emulator.faults import FaultKind, Faults
from magicwan.emulator.state import (
    DEFAULT_API_EMAIL,
    DEFAULT_API_KEY,
    DEFAULT_API_TOKEN,
    DEFAULT_RATE_LIMIT,
)

__all__ = ["build_parser", "main", "parse_rate_limit"]


def parse_rate_limit(text: str) -> tuple[int, float] | None:
    """``"1200/300"`` -> ``(1200, 300.0)``; ``"off"`` -> None."""
    if text.strip().lower() in ("off", "none", "0"):
        return None
    limit, sep, window = text.partition("/")
    try:
        if not sep:
            raise ValueError
        result = (int(limit), float(window))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected LIMIT/WINDOW_SECONDS (e.g. 1200/300) or 'off', got {text!r}"
        ) from None
    if result[0] < 1 or result[1] <= 0:
        raise argparse.ArgumentTypeError("rate limit needs LIMIT >= 1 and WINDOW > 0")
    return result


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="python -m magicwan.emulator",
        description="A local emulator of Cloudflare's Magic WAN API (fake credentials).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8787, help="port; 0 picks a free one (8787)")
    parser.add_argument("--tunnels", type=int, default=10, help="tunnels to create (10)")
    parser.add_argument("--seed", type=int, default=0, help="seed for ids and faults (0)")
    parser.add_argument("--account-id", default=None, help="account id (derived from the seed)")
    parser.add_argument("--api-token", default=DEFAULT_API_TOKEN)
    parser.add_argument("--api-email", default=DEFAULT_API_EMAIL)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument(
        "--rate-limit",
        type=parse_rate_limit,
        default=DEFAULT_RATE_LIMIT,
        metavar="LIMIT/WINDOW|off",
        help="per-user budget, e.g. 1200/300 (the default, Cloudflare's) or 'off'",
    )
    faults = parser.add_argument_group("fault injection (probabilities 0..1, default 0)")
    for kind in FaultKind:
        faults.add_argument(
            "--fault-" + kind.value.replace("_", "-"),
            dest=kind.value,
            type=_probability,
            default=0.0,
            metavar="P",
        )
    faults.add_argument("--latency", type=float, default=0.0, metavar="SECONDS")
    faults.add_argument(
        "--latency-probability",
        type=_probability,
        default=None,
        metavar="P",
        help="probability of the added latency (1 when --latency is given)",
    )
    return parser


def _faults(args: argparse.Namespace) -> Faults:
    probability = args.latency_probability
    if probability is None:
        probability = 1.0 if args.latency > 0 else 0.0
    values = {kind.value: getattr(args, kind.value) for kind in FaultKind}
    return Faults(latency=args.latency, latency_probability=probability, **values)


async def _serve(args: argparse.Namespace, faults: Faults) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C raises instead
            loop.add_signal_handler(signum, stop.set)
    async with run(
        tunnels=args.tunnels,
        rate_limit=args.rate_limit,
        seed=args.seed,
        faults=faults,
        account_id=args.account_id,
        api_token=args.api_token,
        api_email=args.api_email,
        api_key=args.api_key,
        host=args.host,
        port=args.port,
    ) as emulator:
        lines = [f"{k}={v}" for k, v in emulator.env().items()]
        lines.append(f"MAGICWAN_EMULATOR_ADMIN_URL={emulator.admin_url}")
        print("\n".join(lines), flush=True)
        limit = args.rate_limit
        print(
            f"magicwan emulator: {len(emulator.tunnel_ids)} tunnels, rate limit "
            f"{f'{limit[0]}/{limit[1]:g}s' if limit else 'off'}, faults "
            f"{attrs.asdict(faults) if faults.active else 'none'}; Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.tunnels < 0:
        parser.error("--tunnels must be >= 0")
    try:
        faults = _faults(args)
    except ValueError as exc:
        parser.error(str(exc))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args, faults))
    return 0


if __name__ == "__main__":
    sys.exit(main())
