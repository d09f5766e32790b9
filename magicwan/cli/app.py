"""The command tree and the entry points: :func:`amain` (in a running loop), :func:`main`
(a process: signals, exit status) and :func:`console_main` (the console script).

A new command is one module with a ``register(commands)`` function, listed in
:data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import secrets
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TextIO

from magicwan import __version__
from magicwan.cli import demo, journal, psk, tunnels
from magicwan.cli.common import CLIError, account_id
from magicwan.cli.console import Console, OutputClosed, colour_wanted, logging_to
from magicwan.cli.parser import Handler, Parser, top_level_epilog, wrap
from magicwan.cli.report import describe
from magicwan.cli.status import ExitStatus

__all__ = ["COMMANDS", "amain", "build_parser", "console_main", "main"]

#: The command modules, in the order ``magicwan --help`` lists them.
COMMANDS = (psk, tunnels, journal, demo)


def build_parser() -> Parser:
    """The ``magicwan`` argument parser."""
    parser = Parser(
        prog="magicwan",
        description=wrap(
            "Generate, set and rotate Cloudflare Magic WAN IPsec pre-shared keys; list "
            "tunnels; read rotation journals. Options go after the command words, in any "
            "order among the positional arguments; 'magicwan COMMAND --help' tells more."
        ),
        epilog=top_level_epilog(),
    )
    parser.add_argument("--version", action="version", version=f"magicwan {__version__}")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, prog=parser.prog
    )
    for module in COMMANDS:
        module.register(commands)
    return parser


async def amain(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    stdin: TextIO | None = None,
    exit_on_cancel: bool = False,
) -> int:
    """Run the command line in the running event loop; return the exit status.

    Cancelling it (what :func:`main` does on SIGINT or SIGTERM) stops starting work, lets
    what was sent finish and be journalled, prints the summary so far and re-raises the
    cancellation; with ``exit_on_cancel`` it returns the exit status instead (130, or 4
    when PSKs went unrecorded).
    """
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = _parse(args_list, out, err)
    if not isinstance(args, argparse.Namespace):
        return args
    args.argv = args_list
    args.stdin = stdin if stdin is not None else sys.stdin
    console = Console(out, err, quiet=getattr(args, "quiet", False), colour=colour_wanted(err))
    _bind_run(console, args)
    handler: Handler = args.handler
    log_format = getattr(args, "log_format", "text")
    with logging_to(console, getattr(args, "verbose", 0), log_format):
        return await _handle(handler, args, console, exit_on_cancel=exit_on_cancel)


def _parse(args_list: list[str], out: TextIO, err: TextIO) -> argparse.Namespace | int:
    """The parsed command line, or the exit status of one argparse ended (--help,
    --version, a usage error), its text already written."""
    parser = build_parser()
    usage = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(usage):
            args = parser.parse_args(args_list)  # --help and usage errors print to sys.std*
    except SystemExit as exc:  # --help, --version or a usage error already printed
        status = exc.code if isinstance(exc.code, int) else ExitStatus.USAGE
        err.write(usage.getvalue())
        err.flush()
        if status == ExitStatus.USAGE and "--json" in args_list:
            _usage_json(out, usage.getvalue())
        return status
    if usage.getvalue():  # pragma: no cover - argparse writes nothing on success
        err.write(usage.getvalue())
    return args


async def _handle(
    handler: Handler, args: argparse.Namespace, console: Console, *, exit_on_cancel: bool
) -> int:
    """Run the command's handler; turn how it ended into an exit status (see :func:`amain`)."""
    try:
        if getattr(args, "show_psk", False):  # PSKs on stdout: as `journal export` does
            journal.protect_output(console, force=True)
        return await handler(args, console)
    except OutputClosed as exc:
        if exc.reason is None:  # the reader of stdout left (| head): nothing more to say
            return ExitStatus.OK
        # A full disk under `> file`: what was asked for did not all reach stdout.
        console.error(f"cannot write to standard output: {exc.reason}")
        return ExitStatus.FAILED
    except CLIError as exc:
        return _refused(args, console, exc)
    except asyncio.CancelledError:
        if not exit_on_cancel:
            raise
        return _interrupted(console)
    except Exception as exc:  # a bug, or an error nobody expected: one line, no traceback
        console.error(f"unexpected {describe(exc)}")
        raise


def _refused(args: argparse.Namespace, console: Console, exc: CLIError) -> int:
    """Say why a command ended before its run (with its hints, and its JSON line under
    --json); its exit status."""
    console.error(exc.message)
    for hint in exc.hints:
        console.tell(f"hint: {hint}")
    if getattr(args, "json", False) and not console.out_closed:
        # A script reading --json sees why there is nothing else (exit 2 or 3).
        with contextlib.suppress(OutputClosed):
            console.json(error_line(exc))
    return exc.status


def _interrupted(console: Console) -> int:
    """The exit status of a run cancelled in the current task, whose cancellation is then
    taken back (130, or the summary's status when one was printed)."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
    if console.final_status is None:
        console.tell("magicwan: interrupted")
        return ExitStatus.INTERRUPTED
    return console.final_status


def new_run_id(now: datetime | None = None) -> str:
    """A run's id, made once when the process starts: its start time, sortable, and random
    digits (two runs in one microsecond). Every log line and ``--json`` line of the run
    carries it; a rotation's journal has a field of its own (``journal``), since one
    journal may hold several runs."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def _bind_run(console: Console, args: argparse.Namespace) -> None:
    """``run_id`` and (when the command line or the environment names a valid one)
    ``account_id`` on every JSON line from the start; a bad ACCOUNT is the command's to
    report."""
    console.bind(run_id=new_run_id())
    if hasattr(args, "account"):
        with contextlib.suppress(CLIError):
            console.bind(account_id=account_id(args))


def _usage_json(out: TextIO, text: str) -> None:
    """The JSON line of a command line argparse refused (its message is on stderr)."""
    lines = [line for line in text.splitlines() if line.strip()]
    message = lines[-1].split(": error: ", 1)[-1] if lines else "usage error"
    console = Console(out, io.StringIO())
    console.bind(run_id=new_run_id())
    with contextlib.suppress(OutputClosed):
        console.json(
            {
                "event": "error",
                "exit_status": int(ExitStatus.USAGE),
                "message": message,
                "hints": [],
            }
        )


def error_line(exc: CLIError) -> dict[str, object]:
    """The JSON line of a command that ended before its run (exit 2 or 3)."""
    return {
        "event": "error",
        "exit_status": int(exc.status),
        "message": exc.message,
        "hints": list(exc.hints),
    }


async def _main(argv: Sequence[str] | None) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        # A signal the caller ignores (nohup, a shell's background job) stays ignored.
        if signal.getsignal(signum) is signal.SIG_IGN:
            continue
        # The first signal stops starting work and waits for what was sent; a second one
        # stops waiting.
        loop.add_signal_handler(signum, task.cancel)
        installed.append(signum)
    try:
        return await amain(argv, exit_on_cancel=True)
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line as a process; return the exit status (see ``--help``)."""
    try:
        return asyncio.run(_main(argv))
    except KeyboardInterrupt:  # a Ctrl-C before the handlers were installed
        sys.stderr.write("magicwan: interrupted\n")
        return ExitStatus.INTERRUPTED


def console_main() -> None:
    """The console script: :func:`main` with its status as the process's exit status."""
    sys.exit(main())
