"""The ``magicwan`` command line: generate and rotate IPsec PSKs, and a self-contained demo.

::

    magicwan psk generate [ACCOUNT] TUNNEL (--journal FILE | --show-psk) [--validate-only]
    magicwan psk rotate [ACCOUNT [TUNNEL ...]] [--all] [--from-file F] --journal FILE
    magicwan demo [--tunnels 300] [--concurrency 32] [--journal FILE] [--faults]

Credentials come only from the environment (``CLOUDFLARE_API_TOKEN``, or
``CLOUDFLARE_EMAIL`` and ``CLOUDFLARE_API_KEY``), never from flags, which other users
can read in ``ps``. Without ACCOUNT, ``CLOUDFLARE_ACCOUNT_ID`` names the account. New
PSKs go to the journal (mode 0600); they reach the screen only with ``--show-psk``.
Progress goes to stderr, results and the summary to stdout.

Exit status: 0 when every tunnel was rotated (or validated), 1 when any failed,
2 for a usage or input error (nothing was sent), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs

from magicwan._converter import format_datetime
from magicwan._env import ENV_ACCOUNT_ID, ENV_API_KEY, ENV_API_TOKEN, ENV_BASE_URL, ENV_EMAIL
from magicwan._progress import Progress, ProgressMode
from magicwan._validation import check_id
from magicwan._version import __version__
from magicwan.client import MagicWAN
from magicwan.errors import InvalidInputError, MagicWANError
from magicwan.journal import Journal, JournalError, read_journal
from magicwan.models.psk import PSKGenerateResult
from magicwan.rotation import DEFAULT_CONCURRENCY, journalled_generate

__all__ = ["amain", "build_parser", "console_main", "main"]

logger = logging.getLogger("magicwan")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNRECORDED = 4
EXIT_INTERRUPTED = 130

_OFF = "off"
_CREDENTIAL_VARS = (ENV_API_TOKEN, ENV_EMAIL, ENV_API_KEY)
_CLOUDFLARE_BUDGET = (1200, 300.0)
_ENV_HELP = f"""\
credentials (environment only, never flags):
  {ENV_API_TOKEN}                   an API token, or
  {ENV_EMAIL} + {ENV_API_KEY}  an e-mail and global API key
  {ENV_BASE_URL}                    the API base URL (default Cloudflare's)
  {ENV_ACCOUNT_ID}                  the account when ACCOUNT is not given

exit status: 0 all ok, 1 some tunnel failed, 2 usage or input error,
  4 a new PSK is live but the journal could not record it, 130 interrupted
"""


class UsageError(Exception):
    """A bad command line or input file: reported in one line, exit status 2."""


# -- argument parsing ------------------------------------------------------------------


RateLimitArg = tuple[int, float] | str


def _rate_limit_arg(text: str) -> RateLimitArg:
    if text.strip().lower() in ("off", "none", "0"):
        return _OFF
    requests, sep, seconds = text.partition("/")
    try:
        if not sep:
            raise ValueError
        parsed = (int(requests), float(seconds))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected REQUESTS/SECONDS (e.g. 1200/300) or off, got {text!r}"
        ) from None
    if parsed[0] < 1 or not parsed[1] > 0:
        raise argparse.ArgumentTypeError("rate limit needs REQUESTS >= 1 and SECONDS > 0")
    return parsed


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def _add_global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The options every command takes, before or after the command name.

    On the subcommands their default is SUPPRESS, so an option given before the
    command is not overwritten by the subcommand's default.
    """

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("global options")
    group.add_argument(
        "--base-url",
        metavar="URL",
        default=default(None),
        help="API base URL (default: $CLOUDFLARE_BASE_URL, else Cloudflare's)",
    )
    group.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=default(60.0),
        help="timeout of one request (default: 60)",
    )
    group.add_argument(
        "--max-retries",
        type=int,
        metavar="N",
        default=default(2),
        help="retries of a failed request (default: 2)",
    )
    group.add_argument(
        "--rate-limit",
        type=_rate_limit_arg,
        metavar="N/SECONDS|off",
        default=default(None),
        help="client-side request budget (default: Cloudflare's 1200/300; demo: off)",
    )
    group.add_argument(
        "--progress",
        choices=("auto", "bar", "lines", "off"),
        default=default("auto"),
        help="progress on stderr: a bar on a terminal, one line per tunnel otherwise (auto)",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default(False),
        help="log every request to stderr (never a secret)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``magicwan`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="magicwan",
        description="Generate and rotate Cloudflare Magic WAN IPsec pre-shared keys.",
        epilog=_ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"magicwan {__version__}")
    _add_global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, suppress=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    psk = commands.add_parser(
        "psk",
        parents=[common],
        help="generate or rotate IPsec tunnel PSKs",
        description="Generate or rotate IPsec tunnel pre-shared keys.",
    )
    psk_commands = psk.add_subparsers(dest="psk_command", metavar="ACTION", required=True)

    generate = psk_commands.add_parser(
        "generate",
        parents=[common],
        help="generate a new PSK for one tunnel",
        description=(
            "Generate a new PSK for one tunnel. Cloudflare never shows a PSK again, so "
            "record it: --journal FILE appends it to a 0600 JSON Lines journal, "
            "--show-psk prints it."
        ),
        epilog=_ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    generate.add_argument(
        "account", metavar="ACCOUNT", nargs="?", help=f"account id (default: ${ENV_ACCOUNT_ID})"
    )
    generate.add_argument("tunnel", metavar="TUNNEL", help="IPsec tunnel id")
    generate.add_argument("--journal", metavar="FILE", help="append the new PSK to FILE (0600)")
    generate.add_argument(
        "--validate-only", action="store_true", help="check the request; change nothing"
    )
    generate.add_argument("--show-psk", action="store_true", help="print the new PSK")
    generate.set_defaults(handler=_cmd_generate)

    rotate = psk_commands.add_parser(
        "rotate",
        parents=[common],
        help="rotate the PSKs of many tunnels, journalled and resumable",
        description=(
            "Rotate the PSKs of many tunnels concurrently within the rate limit. Every new "
            "PSK is fsynced to the journal (0600) before it counts as done; rerun the same "
            "command with the same journal to resume: rotated tunnels are skipped."
        ),
        epilog=_ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rotate.add_argument(
        "account",
        metavar="ACCOUNT",
        nargs="?",
        help=f"account id (default: ${ENV_ACCOUNT_ID}); give it to name TUNNELs",
    )
    rotate.add_argument("tunnels", metavar="TUNNEL", nargs="*", help="IPsec tunnel ids")
    rotate.add_argument("--all", action="store_true", help="every IPsec tunnel of the account")
    rotate.add_argument(
        "--from-file",
        metavar="FILE",
        action="append",
        default=[],
        help="tunnel ids, one a line (# comments; - for stdin); may repeat",
    )
    rotate.add_argument(
        "--journal", metavar="FILE", help="the rotation journal (required unless --validate-only)"
    )
    rotate.add_argument(
        "--concurrency",
        type=_positive_int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"tunnels in flight at once (default: {DEFAULT_CONCURRENCY})",
    )
    rotate.add_argument(
        "--validate-only", action="store_true", help="check every request; change nothing"
    )
    rotate.add_argument(
        "--show-psk", action="store_true", help="also print 'tunnel_id psk' lines to stdout"
    )
    rotate.set_defaults(handler=_cmd_rotate)

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="rotate every tunnel of a local emulator of the Cloudflare API",
        description=(
            "Start the embedded Cloudflare emulator, discover its tunnels, rotate them all "
            "with a journal, and check every journalled PSK against the emulator. "
            "Nothing leaves this machine."
        ),
    )
    demo.add_argument(
        "--tunnels", type=_positive_int, default=300, metavar="N", help="tunnels (default: 300)"
    )
    demo.add_argument(
        "--concurrency",
        type=_positive_int,
        default=32,
        metavar="N",
        help="tunnels in flight at once (default: 32)",
    )
    demo.add_argument("--journal", metavar="FILE", help="journal path (default: in a temp dir)")
    demo.add_argument(
        "--faults",
        action="store_true",
        help="inject seeded faults (5xx, connection resets, cut bodies) to show the retries",
    )
    demo.add_argument(
        "--latency",
        type=float,
        default=0.05,
        metavar="SECONDS",
        help="simulated round-trip time of each request (default: 0.05)",
    )
    demo.set_defaults(handler=_cmd_demo)
    return parser


# -- output -----------------------------------------------------------------------------


@attrs.define
class _Console:
    """Where things are written; the live progress bar, so log lines can step around it."""

    out: TextIO
    err: TextIO
    progress_mode: str = "auto"
    progress: Progress | None = None

    def print(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def info(self, text: str) -> None:
        if self.progress is not None:
            self.progress.note(text)
        else:
            self.err.write(text + "\n")
            self.err.flush()

    def error(self, text: str) -> None:
        self.info(f"magicwan: error: {text}")

    def mode(self) -> ProgressMode:
        if self.progress_mode == "auto":
            isatty = getattr(self.err, "isatty", None)
            return "bar" if isatty is not None and isatty() else "lines"
        mode: ProgressMode = self.progress_mode  # type: ignore[assignment]
        return mode


class _LogHandler(logging.Handler):
    """Writes the SDK's log records to stderr without garbling the progress bar."""

    def __init__(self, console: _Console) -> None:
        super().__init__()
        self.console = console
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.info(self.format(record))
        except Exception:  # pragma: no cover - logging must never break the run
            self.handleError(record)


@contextlib.contextmanager
def _logging(console: _Console, verbose: bool) -> Iterator[None]:
    handler = _LogHandler(console)
    handler.setLevel(logging.DEBUG if verbose else logging.WARNING)
    previous = logger.level
    logger.addHandler(handler)
    if verbose:
        logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def _timestamp(result: PSKGenerateResult | None) -> str:
    stamp = result.psk_metadata.last_generated_on if result and result.psk_metadata else None
    return format_datetime(stamp) if stamp else "-"


def _describe(exc: BaseException) -> str:
    """``ErrorType: message``. SDK errors never carry a secret in their text."""
    return f"{type(exc).__name__}: {exc}"


# -- shared pieces ----------------------------------------------------------------------


def _rate_limit(args: argparse.Namespace, default: tuple[int, float] | None) -> Any:
    value = args.rate_limit
    if value is None:
        return default
    return None if value == _OFF else value


def _client(args: argparse.Namespace) -> MagicWAN:
    """A client from the environment's credentials; InvalidInputError (exit 2) when absent."""
    if not any(os.environ.get(name) for name in _CREDENTIAL_VARS):
        raise UsageError(
            f"no credentials: set {ENV_API_TOKEN} (or {ENV_EMAIL} and "
            f"{ENV_API_KEY}) in the environment; they are never taken as flags"
        )
    return MagicWAN(
        base_url=args.base_url,
        timeout=args.timeout,
        max_retries=args.max_retries,
        rate_limit=_rate_limit(args, _CLOUDFLARE_BUDGET),
    )


def _account_id(args: argparse.Namespace) -> str:
    """ACCOUNT if given, else ``CLOUDFLARE_ACCOUNT_ID``; a usage error without either."""
    if args.account is not None:
        return check_id(args.account, "ACCOUNT")
    from_env = os.environ.get(ENV_ACCOUNT_ID)
    if not from_env:
        raise UsageError(f"which account? give ACCOUNT or set {ENV_ACCOUNT_ID}")
    return check_id(from_env, ENV_ACCOUNT_ID)


def _read_ids(source: str, stdin: TextIO) -> list[str]:
    """Tunnel ids from a file (or ``-``): one a line, ``#`` comments and blanks ignored."""
    name = "<stdin>" if source == "-" else source
    try:
        if source == "-":
            lines = stdin.read().splitlines()
        else:
            lines = Path(source).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UsageError(f"cannot read tunnel ids from {name}: {reason}") from None
    ids = []
    for number, raw in enumerate(lines, 1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            ids.append(check_id(text, "tunnel id"))
        except InvalidInputError as exc:
            raise UsageError(f"{name}, line {number}: {exc}") from None
    return ids


async def _check_journal(path: str) -> None:
    """Create (0600) or open the journal now, so a bad path fails before anything is sent."""
    journal = Journal(path)
    journal.open()
    await journal.aclose()


@attrs.define
class _Tally:
    """What a rotation did, for the summary."""

    requested: int
    rotated: int = 0
    skipped: int = 0
    verified: int = 0
    failures: list[tuple[str, str]] = attrs.field(factory=list)
    psks: list[tuple[str, str]] = attrs.field(factory=list, repr=False)

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def done(self) -> int:
        return self.rotated + self.skipped + self.failed

    def add(self, outcome: Any, show_psk: bool) -> None:
        if not outcome.ok:
            error = outcome.error
            self.failures.append(
                (outcome.tunnel_id, _describe(error) if error else "unknown error")
            )
            return
        if outcome.skipped:
            self.skipped += 1
        else:
            self.rotated += 1
        if getattr(outcome, "verified", False):
            self.verified += 1
        psk = outcome.result.psk if outcome.result else None
        if show_psk and psk:
            self.psks.append((outcome.tunnel_id, psk))


def _outcome_line(outcome: Any, validate_only: bool) -> str:
    """The plain progress line of one tunnel (no secret in it)."""
    if not outcome.ok:
        error = outcome.error
        return f"failed   {outcome.tunnel_id}  {_describe(error) if error else 'unknown error'}"
    if validate_only:
        return f"ok       {outcome.tunnel_id}  (validated)"
    if outcome.skipped:
        return f"skipped  {outcome.tunnel_id}  (already rotated in the journal)"
    line = f"ok       {outcome.tunnel_id}  {_timestamp(outcome.result)}"
    if outcome.verified:
        line += "  (verified by read-back after an uncertain outcome)"
    return line


def _print_summary(
    console: _Console,
    tally: _Tally,
    progress: Progress,
    *,
    validate_only: bool,
    journal: str | None,
    interrupted: bool,
    crash: BaseException | None,
) -> None:
    if tally.psks:
        console.print()
        console.print("new PSKs (shown because of --show-psk):")
        for tunnel_id, psk in tally.psks:
            console.print(f"{tunnel_id} {psk}")
    # Tunnels that took requests, per second: journal skips cost nothing and would inflate it.
    worked = tally.rotated + tally.failed
    elapsed = progress.elapsed
    rate = worked / elapsed if worked and elapsed > 0 else None
    rows = [
        ("tunnels requested", str(tally.requested)),
        ("validated" if validate_only else "rotated", str(tally.rotated)),
    ]
    if not validate_only:
        rows += [
            ("skipped (already in journal)", str(tally.skipped)),
            ("verified after uncertain outcome", str(tally.verified)),
        ]
    rows.append(("failed", str(tally.failed)))
    if interrupted or crash is not None:
        rows.append(("not finished", str(tally.requested - tally.done)))
    rows += [
        ("elapsed", f"{elapsed:.2f}s"),
        ("rate", f"{rate:.1f} tunnels/s" if rate is not None else "-"),
    ]
    width = max(len(name) for name, _ in rows)
    console.print()
    console.print("summary")
    for name, value in rows:
        console.print(f"  {name:<{width}}  {value}")
    if tally.failures:
        console.print()
        console.print("failed tunnels:")
        for tunnel_id, reason in tally.failures:
            console.print(f"  {tunnel_id}  {reason}")
    if journal is not None and not validate_only:
        console.print()
        console.print(f"journal: {journal} (mode 0600; PSKs are recorded only there)")
        if interrupted or crash is not None or tally.failures:
            console.print("rerun the same command with the same journal to resume.")
    if interrupted:
        console.print("interrupted: in-flight requests were cancelled.")
    if crash is not None:
        console.print(f"rotation stopped: {_describe(crash)}")


async def _rotate(
    console: _Console,
    client: MagicWAN,
    account_id: str,
    tunnel_ids: list[str],
    *,
    concurrency: int,
    validate_only: bool,
    journal: str | None,
    show_psk: bool,
    clock: Callable[[], float] = time.monotonic,
    settle_window: float | None = None,
) -> int:
    """Rotate with progress and print the summary; the exit status."""
    tally = _Tally(requested=len(tunnel_ids))
    progress = Progress(
        len(tunnel_ids),
        stream=console.err,
        mode=console.mode(),
        label="validating" if validate_only else "rotating",
        clock=clock,
    )
    outcomes = client.tunnels.ipsec.psk.rotate(
        account_id,
        tunnel_ids,
        concurrency=concurrency,
        validate_only=validate_only,
        journal=None if validate_only else journal,
        settle_window=settle_window,
    )
    interrupted = False
    crash: BaseException | None = None
    console.progress = progress
    progress.start()
    try:
        async for outcome in outcomes:
            tally.add(outcome, show_psk)
            progress.add(outcome.ok, _outcome_line(outcome, validate_only))
    except asyncio.CancelledError:
        interrupted = True
        raise
    except MagicWANError as exc:  # the journal could not be written: the run stopped
        crash = exc
    finally:
        progress.finish()
        console.progress = None
        _print_summary(
            console,
            tally,
            progress,
            validate_only=validate_only,
            journal=journal,
            interrupted=interrupted,
            crash=crash,
        )
    return EXIT_OK if not tally.failures and crash is None else EXIT_FAILED


# -- commands ---------------------------------------------------------------------------


async def _cmd_generate(args: argparse.Namespace, console: _Console) -> int:
    account_id = _account_id(args)
    tunnel_id = check_id(args.tunnel, "TUNNEL")
    if not args.validate_only and args.journal is None and not args.show_psk:
        raise UsageError(
            "refusing to generate a PSK that nobody records: Cloudflare never shows it "
            "again. Pass --journal FILE (written 0600) or --show-psk."
        )
    client = _client(args)
    journal = None
    if args.journal is not None and not args.validate_only:
        journal = Journal(args.journal)
        journal.open()
    try:
        async with client:
            psk_api = client.tunnels.ipsec.psk.with_reply
            try:
                if args.validate_only:
                    result = (await psk_api.generate(account_id, tunnel_id, True)).value
                else:
                    # The one journalled path rotation uses too: intent before sending,
                    # rotated (with whether a retry left doubt) as soon as the PSK arrives.
                    reply, seq, unrecorded = await journalled_generate(
                        journal, psk_api.generate, account_id, tunnel_id
                    )
                    result = reply.value
            except JournalError:
                raise  # the intent could not be written: nothing was sent (exit 2)
            except MagicWANError as exc:
                console.error(_describe(exc))
                if exc.outcome_unknown and not args.validate_only:
                    console.error(
                        "the outcome is unknown: Cloudflare may hold a new PSK that nobody "
                        "received. Generate again before relying on this tunnel."
                    )
                return EXIT_FAILED
            if journal is not None and not args.validate_only:
                if unrecorded is None:
                    try:
                        await journal.sync(seq)
                    except JournalError as exc:
                        unrecorded = exc
                if unrecorded is not None:
                    return _unrecorded(console, args, tunnel_id, result, unrecorded)
    finally:
        if journal is not None:
            with contextlib.suppress(JournalError):
                await journal.aclose()
    console.print(f"tunnel_id          {tunnel_id}")
    if args.validate_only:
        console.print("validated          yes: a new PSK can be generated (nothing changed)")
        return EXIT_OK
    console.print(f"last_generated_on  {_timestamp(result)}")
    if args.show_psk:
        console.print(f"psk                {result.psk}")
    else:
        console.print(
            f"psk                not shown; recorded in the journal {args.journal} "
            "(mode 0600). Pass --show-psk to print it."
        )
    return EXIT_OK


def _unrecorded(
    console: _Console,
    args: argparse.Namespace,
    tunnel_id: str,
    result: PSKGenerateResult,
    exc: JournalError,
) -> int:
    """A PSK is live at Cloudflare but the journal could not record it: say so, name the
    tunnel, and still honour --show-psk (the PSK is never dropped)."""
    console.error(f"{exc}")
    console.error(
        f"tunnel {tunnel_id} holds a NEW PSK that is NOT in the journal {args.journal}. "
        + (
            "It is printed below: store it now."
            if args.show_psk
            else "Generate again once the journal is writable (pass --show-psk to see it)."
        )
    )
    console.print(f"tunnel_id          {tunnel_id}")
    console.print(f"last_generated_on  {_timestamp(result)}")
    if args.show_psk:
        console.print(f"psk                {result.psk}")
    return EXIT_UNRECORDED


async def _cmd_rotate(args: argparse.Namespace, console: _Console) -> int:
    account_id = _account_id(args)
    tunnel_ids = [check_id(t, "TUNNEL") for t in args.tunnels]
    for source in args.from_file:
        tunnel_ids += _read_ids(source, sys.stdin)
    if not tunnel_ids and not args.all and not args.from_file:
        raise UsageError("which tunnels? give TUNNEL ids, --from-file FILE or --all")
    if args.journal is None and not args.validate_only:
        raise UsageError(
            "--journal FILE is required: it is where every new PSK is recorded (0600), "
            "and what makes a rerun resume"
        )
    client = _client(args)
    if args.journal is not None and not args.validate_only:
        await _check_journal(args.journal)
    async with client:
        if args.all:
            console.info(f"discovering the IPsec tunnels of account {account_id} ...")
            try:
                found = await client.tunnels.ipsec.list(account_id)
            except MagicWANError as exc:
                console.error(f"cannot list the tunnels: {_describe(exc)}")
                return EXIT_FAILED
            console.info(f"found {len(found)} tunnels")
            tunnel_ids += [tunnel.id for tunnel in found]
        tunnel_ids = list(dict.fromkeys(tunnel_ids))
        if not tunnel_ids:
            console.print("no tunnels to rotate.")
            return EXIT_OK
        return await _rotate(
            console,
            client,
            account_id,
            tunnel_ids,
            concurrency=args.concurrency,
            validate_only=args.validate_only,
            journal=args.journal,
            show_psk=args.show_psk,
        )


def _demo_faults(args: argparse.Namespace) -> Any:
    from magicwan.emulator import Faults

    if args.faults:
        return Faults(
            server_error=0.02,
            reset_before_store=0.01,
            reset_after_store=0.01,
            truncated_json=0.005,
            latency=args.latency,
            latency_probability=1.0 if args.latency > 0 else 0.0,
        )
    if args.latency > 0:
        return Faults(latency=args.latency, latency_probability=1.0)
    return None


async def _cmd_demo(args: argparse.Namespace, console: _Console) -> int:
    from magicwan import emulator

    if args.latency < 0:
        raise UsageError("--latency must be >= 0 seconds")
    journal = args.journal
    if journal is None:
        journal = str(Path(tempfile.mkdtemp(prefix="magicwan-demo-")) / "journal.jsonl")
    await _check_journal(journal)
    limit = _rate_limit(args, None)
    faults = _demo_faults(args)
    async with emulator.run(tunnels=args.tunnels, rate_limit=limit, seed=0, faults=faults) as emu:
        console.print(
            f"magicwan {__version__} demo: rotate every IPsec PSK of an account, against a "
            "local emulator of the Cloudflare API (nothing leaves this machine)"
        )
        console.print()
        console.print(f"  emulator     {emu.base_url}")
        console.print(f"  account      {emu.account_id}")
        console.print(f"  tunnels      {args.tunnels}")
        console.print(
            f"  rate limit   {f'{limit[0]} requests / {limit[1]:g}s' if limit else 'off'}"
        )
        shown = "on (seeded: 5xx, resets before/after the PSK is stored, cut bodies)"
        console.print(f"  faults       {shown if args.faults else 'off'}")
        console.print(f"  latency      {args.latency * 1000:g} ms per request")
        console.print(f"  journal      {journal}")
        console.print()
        client = MagicWAN(
            api_token=emu.api_token,
            base_url=emu.base_url,
            timeout=args.timeout,
            max_retries=args.max_retries,
            rate_limit=limit,
            environ={},
        )
        async with client:
            try:
                found = await client.tunnels.ipsec.list(emu.account_id)
            except MagicWANError as exc:
                console.error(f"cannot list the tunnels: {_describe(exc)}")
                return EXIT_FAILED
            console.print(
                f"discovered {len(found)} tunnels; rotating with concurrency {args.concurrency}"
            )
            status = await _rotate(
                console,
                client,
                emu.account_id,
                [tunnel.id for tunnel in found],
                concurrency=args.concurrency,
                validate_only=False,
                journal=journal,
                show_psk=False,
                # The emulator's faults never store late: a short window shows the
                # read-back without a minute's wait.
                settle_window=0.5,
            )
        requests = emu.state.requests
        injected = sum(requests.faults.values())
        console.print()
        answered = f"the emulator answered {requests.total} requests"
        if injected:
            kinds = ", ".join(f"{name} {count}" for name, count in sorted(requests.faults.items()))
            answered += f", {injected} of them with an injected fault ({kinds})"
        console.print(answered)
        records = read_journal(journal)
        journalled = {
            tunnel_id: record.psk
            for (account, tunnel_id), record in records.items()
            if account == emu.account_id and record.psk
        }
        matching = sum(
            1
            for tunnel in found
            if journalled.get(tunnel.id) is not None
            and journalled[tunnel.id] == emu.state.current_psk(emu.account_id, tunnel.id)
        )
        console.print(f"verified: {matching}/{len(found)} journalled PSKs match the emulator")
    if status != EXIT_OK or matching != len(found):
        return EXIT_FAILED
    return EXIT_OK


# -- entry points -----------------------------------------------------------------------


Handler = Callable[[argparse.Namespace, _Console], Coroutine[Any, Any, int]]


async def amain(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run the command line in the running event loop; return the exit status.

    Cancelling it (Ctrl-C under :func:`main`) cancels the requests in flight, prints
    the summary so far and re-raises the cancellation.
    """
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)  # --help and usage errors print to sys.std*
    except SystemExit as exc:  # --help, --version or a usage error already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    console = _Console(out=out, err=err, progress_mode=args.progress)
    handler: Handler = args.handler
    with _logging(console, args.verbose):
        try:
            return await handler(args, console)
        except (UsageError, InvalidInputError, ValueError) as exc:
            console.error(str(exc))
            return EXIT_USAGE
        except JournalError as exc:  # e.g. the journal cannot be opened
            console.error(str(exc))
            return EXIT_USAGE
        except MagicWANError as exc:
            console.error(_describe(exc))
            return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (130 when interrupted)."""
    try:
        return asyncio.run(amain(argv))
    except KeyboardInterrupt:
        sys.stderr.write("magicwan: interrupted\n")
        return EXIT_INTERRUPTED


def console_main() -> None:
    """The console script: :func:`main` with its status as the process's exit status."""
    sys.exit(main())


if __name__ == "__main__":
    console_main()
