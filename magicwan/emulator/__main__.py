"""``python -m magicwan.emulator``: serve the emulator until Ctrl-C or SIGTERM.

At startup it prints exactly three lines on stdout, flushed at once, that a POSIX shell can
source (values quoted with ``shlex.quote`` where needed)::

    export CLOUDFLARE_BASE_URL=http://127.0.0.1:8787/client/v4
    export CLOUDFLARE_API_TOKEN=emulator-token
    export CLOUDFLARE_ACCOUNT_ID=<32 hex>

Hints for people (what runs, the admin URL, the e-mail and key of the other credential
scheme) go to stderr as ``#`` comments. For example::

    python -m magicwan.emulator --tunnels 25 > emulator.env &
    sleep 1; . ./emulator.env && magicwan psk rotate --all --journal rotation.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import signal
import sys
from collections.abc import Sequence

from magicwan.emulator._server import DEFAULT_GRE_TUNNELS, DEFAULT_TUNNELS, Emulator, run
from magicwan.emulator.faults import FaultKind, Faults
from magicwan.emulator.models import is_identifier
from magicwan.emulator.state import (
    DEFAULT_API_EMAIL,
    DEFAULT_API_KEY,
    DEFAULT_API_TOKEN,
    DEFAULT_MAX_PSK_BATCH,
    DEFAULT_PSK_MAX_LENGTH,
    DEFAULT_PSK_MIN_LENGTH,
)
from magicwan.internal.budget import CLOUDFLARE_BUDGET
from magicwan.internal.env import ENV_API_KEY, ENV_API_TOKEN, ENV_EMAIL
from magicwan.internal.validation import (
    argtype,
    check_non_negative_int,
    check_positive_int,
    check_rate_limit,
)

__all__ = ["build_parser", "faults_from_args", "main", "shell_block"]


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {value}")
    return value


def _identifier(text: str) -> str:
    if not is_identifier(text):
        raise argparse.ArgumentTypeError(f"expected 32 lowercase hex characters, got {text!r}")
    return text


#: What each ``--fault-*`` flag's probability is of (docs/emulator.md says the same).
_FAULT_HELP: dict[FaultKind, str] = {
    FaultKind.SERVER_ERROR: "of a 500/502/503 envelope",
    FaultKind.RATE_LIMITED: "of a spurious 429 (Retry-After: 1)",
    FaultKind.RESET_BEFORE_STORE: "of a connection dropped before the PSK is stored",
    FaultKind.RESET_AFTER_STORE: "of a connection dropped after the PSK is stored",
    FaultKind.HTML_502: "of a proxy's HTML page",
    FaultKind.TRUNCATED_JSON: "of half the real body",
    FaultKind.LATE_STORE: "of a PSK stored only after --late-store-delay",
}


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    budget = f"{CLOUDFLARE_BUDGET[0]}/{CLOUDFLARE_BUDGET[1]:g}"
    parser = argparse.ArgumentParser(
        prog="python -m magicwan.emulator",
        description=(
            "A local emulator of Cloudflare's Magic WAN API (fake credentials). Prints three "
            "'export' lines for a shell on stdout, hints on stderr."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8787, help="port; 0 picks a free one (8787)")
    parser.add_argument(
        "--tunnels",
        type=argtype(check_non_negative_int),
        default=DEFAULT_TUNNELS,
        help=f"IPsec tunnels to create ({DEFAULT_TUNNELS})",
    )
    parser.add_argument(
        "--gre-tunnels",
        type=argtype(check_non_negative_int),
        default=DEFAULT_GRE_TUNNELS,
        help=f"GRE tunnels to create ({DEFAULT_GRE_TUNNELS})",
    )
    parser.add_argument(
        "--tunnel-id",
        dest="ipsec_ids",
        type=_identifier,
        action="append",
        default=[],
        metavar="ID",
        help="add an IPsec tunnel with this id (32 lowercase hex); repeat for more",
    )
    parser.add_argument(
        "--gre-tunnel-id",
        dest="gre_ids",
        type=_identifier,
        action="append",
        default=[],
        metavar="ID",
        help="add a GRE tunnel with this id (32 lowercase hex); repeat for more",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for ids and faults (0)")
    parser.add_argument("--account-id", default=None, help="account id (derived from the seed)")
    parser.add_argument(
        "--api-token", default=DEFAULT_API_TOKEN, help="the token it accepts (%(default)s)"
    )
    parser.add_argument(
        "--api-email",
        default=DEFAULT_API_EMAIL,
        help="the e-mail it accepts with --api-key (%(default)s)",
    )
    parser.add_argument(
        "--api-key", default=DEFAULT_API_KEY, help="the global API key it accepts (%(default)s)"
    )
    parser.add_argument(
        "--rate-limit",
        type=argtype(check_rate_limit),
        default=CLOUDFLARE_BUDGET,
        metavar="N/SECONDS|off",
        help=f"per-user budget, e.g. {budget} (the default, Cloudflare's) or off",
    )
    psk = parser.add_argument_group("bulk PSK set (assumed limits)")
    psk.add_argument(
        "--max-psk-batch",
        type=argtype(check_positive_int),
        default=DEFAULT_MAX_PSK_BATCH,
        metavar="N",
        help=f"most entries in one request; more is a 400, code 1005 ({DEFAULT_MAX_PSK_BATCH})",
    )
    psk.add_argument(
        "--psk-min-length",
        type=argtype(check_positive_int),
        default=DEFAULT_PSK_MIN_LENGTH,
        metavar="N",
        help="shortest PSK a bulk set or a tunnel's psk may have (%(default)s)",
    )
    psk.add_argument(
        "--psk-max-length",
        type=argtype(check_positive_int),
        default=DEFAULT_PSK_MAX_LENGTH,
        metavar="N",
        help="longest PSK a bulk set or a tunnel's psk may have (%(default)s)",
    )
    faults = parser.add_argument_group("fault injection (probabilities 0..1, default 0)")
    for kind in FaultKind:
        faults.add_argument(
            "--fault-" + kind.value.replace("_", "-"),
            dest=kind.value,
            type=_probability,
            default=0.0,
            metavar="P",
            help=_FAULT_HELP[kind],
        )
    faults.add_argument(
        "--late-store-delay",
        type=float,
        default=Faults().late_store_delay,
        metavar="SECONDS",
        help="how long a late_store fault stalls before it stores (%(default)g)",
    )
    faults.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="latency added to each answer (0)",
    )
    faults.add_argument(
        "--latency-probability",
        type=_probability,
        default=None,
        metavar="P",
        help="probability of the added latency (1 when --latency is given)",
    )
    return parser


def faults_from_args(args: argparse.Namespace) -> Faults:
    """The :class:`Faults` the parsed flags describe (ValueError if they are inconsistent)."""
    probability = args.latency_probability
    if probability is None:
        probability = 1.0 if args.latency > 0 else 0.0
    values = {kind.value: getattr(args, kind.value) for kind in FaultKind}
    return Faults(
        latency=args.latency,
        latency_probability=probability,
        late_store_delay=args.late_store_delay,
        **values,
    )


def shell_block(emulator: Emulator) -> str:
    """The ``export`` lines printed on stdout: ``Emulator.env()``, shell-quoted."""
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in emulator.env().items())


def _hints(emulator: Emulator, args: argparse.Namespace, faults: Faults) -> str:
    limit = args.rate_limit
    state = emulator.state
    shown_faults = {k: v for k, v in faults.to_dict().items() if v} if faults.active else "none"
    lines = [
        f"magicwan emulator: {len(emulator.tunnel_ids)} IPsec and "
        f"{len(emulator.gre_tunnel_ids)} GRE tunnels, rate limit "
        f"{f'{limit[0]}/{limit[1]:g}s' if limit else 'off'}, faults {shown_faults}; "
        "Ctrl-C to stop",
        f"PSKs set in bulk: {state.psk_min_length}..{state.psk_max_length} characters, "
        f"at most {state.max_psk_batch} per request",
        f"admin API (no auth): {emulator.admin_url}",
        "the other credential scheme (never together with the token):",
        f"  unset {ENV_API_TOKEN}; export {ENV_EMAIL}={shlex.quote(emulator.api_email)} "
        f"{ENV_API_KEY}={shlex.quote(emulator.api_key)}",
    ]
    return "".join(f"# {line}\n" for line in lines)


async def _serve(args: argparse.Namespace, faults: Faults) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C raises instead
            loop.add_signal_handler(signum, stop.set)
    async with run(
        tunnels=args.tunnels,
        gre_tunnels=args.gre_tunnels,
        ipsec_ids=args.ipsec_ids,
        gre_ids=args.gre_ids,
        rate_limit=args.rate_limit,
        seed=args.seed,
        faults=faults,
        account_id=args.account_id,
        api_token=args.api_token,
        api_email=args.api_email,
        api_key=args.api_key,
        max_psk_batch=args.max_psk_batch,
        psk_min_length=args.psk_min_length,
        psk_max_length=args.psk_max_length,
        host=args.host,
        port=args.port,
    ) as emulator:
        sys.stdout.write(shell_block(emulator))
        sys.stdout.flush()
        sys.stderr.write(_hints(emulator, args, faults))
        sys.stderr.flush()
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.account_id is not None and not is_identifier(args.account_id):
        parser.error("--account-id must be 32 lowercase hex characters")
    for flag, ids in (("--tunnel-id", args.ipsec_ids), ("--gre-tunnel-id", args.gre_ids)):
        if len(set(ids)) != len(ids):
            parser.error(f"{flag} given twice with the same id")
    if args.psk_max_length < args.psk_min_length:
        parser.error("--psk-max-length must be >= --psk-min-length")
    try:
        faults = faults_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(args, faults))
    except OSError as exc:  # the port is taken, the address is not ours
        sys.stderr.write(f"magicwan emulator: cannot listen on {args.host}:{args.port}: ")
        sys.stderr.write(f"{exc.strerror or exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
