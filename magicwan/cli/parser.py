"""The argument parser's rules, its value types, and the option groups commands share.

:class:`Parser` is argparse with four changes, for every command:

- no abbreviations (``--conc`` is not ``--concurrency``), and "did you mean" for an
  unknown option;
- an error shows the usage of the (sub)command that has it, not the top level's;
- options may come anywhere after the command words, among the positionals
  (``psk rotate ACCOUNT --all TUNNEL`` works), as ``parse_intermixed_args`` allows;
- a value that starts with ``-`` and a digit (``--rate-limit -5/1``) is a value, so its
  type check can say what is wrong with it.

A command module calls :func:`add_command` and the ``add_*_options`` helpers; it never
builds option groups of its own for what is shared (the API connection, the output).
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import textwrap
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from magicwan.cli.status import exit_status_help
from magicwan.client import MagicWAN
from magicwan.errors import InvalidInputError
from magicwan.internal.env import (
    ENV_ACCOUNT_ID,
    ENV_API_KEY,
    ENV_API_TOKEN,
    ENV_BASE_URL,
    ENV_EMAIL,
)
from magicwan.internal.validation import (
    argtype,
    check_duration,
    check_non_negative_int,
    check_non_negative_seconds,
    check_positive_int,
    check_rate_limit,
    check_seconds,
    read_seconds,
)
from magicwan.ratelimit import CLOUDFLARE_BUDGET, MAX_COOLDOWN

if TYPE_CHECKING:
    from magicwan.cli.console import Console

__all__ = [
    "ENVIRONMENT_HELP",
    "Handler",
    "Parser",
    "add_account_argument",
    "add_actions",
    "add_api_options",
    "add_command",
    "add_output_options",
    "add_request_options",
    "client_default",
    "duration",
    "halt_after",
    "non_negative_int",
    "non_negative_seconds",
    "positive_int",
    "rate_limit",
    "seconds",
    "top_level_epilog",
    "wrap",
]

#: ``async def handler(args, console) -> int``: runs a command, returns its exit status.
Handler = Callable[[argparse.Namespace, "Console"], Coroutine[Any, Any, int]]

ENVIRONMENT_HELP = f"""\
environment (credentials are never taken as flags: other users can read them in ps):
  {ENV_API_TOKEN}                   an API token, or
  {ENV_EMAIL} + {ENV_API_KEY}  an e-mail and global API key
  {ENV_BASE_URL}                    the API base URL (default: Cloudflare's)
  {ENV_ACCOUNT_ID}                  the account when ACCOUNT is not given"""


def client_default(name: str) -> Any:
    """The default of a :class:`~magicwan.MagicWAN` argument: the help shows the client's own."""
    return inspect.signature(MagicWAN).parameters[name].default


class Parser(argparse.ArgumentParser):
    """argparse without abbreviations, with suggestions and intermixed options (see the
    module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self._intermixing = False

    def _has_subcommands(self) -> bool:
        return any(isinstance(a, argparse._SubParsersAction) for a in self._actions)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._intermixing or self._has_subcommands():
            return super().parse_known_args(args, namespace)
        # A command (a leaf): options anywhere among the positionals, and an unknown
        # argument is its error, shown with its usage.
        self._intermixing = True
        try:
            parsed, extras = super().parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False
        if extras:
            self._unrecognized(extras)
        return parsed, extras

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = getattr(parsed, "parser", None)
            if isinstance(command, Parser):
                known = [e for e in extras if command._option_for(e) is not None]
                if known:
                    command.error(
                        f"options go after the command: {command.prog} ... {' '.join(known)}"
                    )
            self._unrecognized(extras)
        return parsed

    def _option_for(self, arg: str) -> str | None:
        name = arg.split("=", 1)[0]
        return name if name in self._option_string_actions else None

    def _unrecognized(self, extras: list[str]) -> NoReturn:
        # A value that follows an unknown option is not echoed: it may be a secret someone
        # tried to pass as a flag (a PSK, a token).
        parts = []
        after_option = False
        for arg in extras:
            if arg.startswith("-"):
                name, sep, _ = arg.partition("=")
                hint = self._suggest(name)
                shown = f"{name}=..." if sep else name
                parts.append(f"{shown} (did you mean {hint}?)" if hint else shown)
                after_option = not sep
            elif after_option:
                parts.append("<its value, not shown>")
                after_option = False
            else:
                parts.append(arg)
        self.error("unrecognized arguments: " + " ".join(parts))

    def _suggest(self, arg: str) -> str | None:
        name = arg.split("=", 1)[0]
        options = [o for o in self._option_string_actions if o.startswith("--")]
        starting = sorted(o for o in options if o.startswith(name) and len(name) > 2)
        if len(starting) == 1:
            return starting[0]
        close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
        return close[0] if close else None

    def _parse_optional(self, arg_string: str) -> Any:
        # "-5/1", "-3", "-.5": a value (for the type check to judge), never an option.
        if len(arg_string) > 1 and arg_string[0] == "-" and arg_string[1] in "0123456789.":
            return None
        return super()._parse_optional(arg_string)


def wrap(text: str) -> str:
    """A description as help shows it: wrapped to 88 columns (epilogs keep their lines)."""
    return textwrap.fill(text, 88)


def add_actions(parser: Parser, dest: str) -> argparse._SubParsersAction[Parser]:
    """The subcommands of ``parser`` (``ACTION``), one of which must be given."""
    return parser.add_subparsers(dest=dest, metavar="ACTION", required=True, prog=parser.prog)


def add_command(
    commands: argparse._SubParsersAction[Parser],
    name: str,
    handler: Handler | None,
    *,
    help: str,
    description: str,
    usage: str | None = None,
    epilog: str | None = None,
) -> Parser:
    """A (sub)command: its parser, listed by its parent with ``help``. A leaf names the
    ``handler`` that runs it; its ``usage`` line puts the positional arguments first."""
    parser = commands.add_parser(
        name, help=help, description=wrap(description), usage=usage, epilog=epilog
    )
    if handler is not None:
        parser.set_defaults(handler=handler, parser=parser)
    return parser


# -- value types -------------------------------------------------------------------------


# Each an argparse type of one rule of magicwan.internal.validation: the same check, and the
# same words, as the library's.
positive_int = argtype(check_positive_int)
non_negative_int = argtype(check_non_negative_int)
#: A whole number >= 1, or ``off`` (None): never halt.
halt_after = argtype(check_positive_int, off=True)
seconds = argtype(check_seconds)
non_negative_seconds = argtype(check_non_negative_seconds)
#: ``N/SECONDS`` or ``off`` (None), by the one parser both command lines use.
rate_limit = argtype(check_rate_limit)
#: ``90d``, ``12h``, ``30m`` or ``45s``.
duration = argtype(check_duration, name="DURATION")


def _check_max_retry_after(value: object, name: str) -> float:
    """Seconds > 0, at most the longest 429 cooldown the client keeps (the library takes
    more, and then keeps a longer cooldown; the command line does not offer that)."""
    wait = check_seconds(value, name)
    if wait > MAX_COOLDOWN:
        raise InvalidInputError(
            f"{name} must be at most {MAX_COOLDOWN:g} seconds "
            "(the longest 429 cooldown the client keeps)"
        )
    return wait


_max_retry_after = argtype(_check_max_retry_after, read_seconds)


# -- shared arguments and option groups ------------------------------------------------------


def add_account_argument(parser: Parser, *, then: str = "") -> None:
    """``[ACCOUNT]``: optional, ``CLOUDFLARE_ACCOUNT_ID`` otherwise."""
    parser.add_argument(
        "account",
        metavar="ACCOUNT",
        nargs="?",
        help=f"account id (default: ${ENV_ACCOUNT_ID}){then}",
    )


def add_request_options(parser: Parser | argparse._ArgumentGroup) -> None:
    """``--timeout`` and ``--max-retries``: how one request is tried (demo has them too)."""
    parser.add_argument(
        "--timeout",
        type=seconds,
        metavar="SECONDS",
        default=client_default("timeout"),
        help="timeout of one request (default: %(default)g)",
    )
    parser.add_argument(
        "--max-retries",
        type=non_negative_int,
        metavar="N",
        default=client_default("max_retries"),
        help="retries of a failed request (default: %(default)s)",
    )


def add_api_options(parser: Parser) -> None:
    """How to reach Cloudflare: base URL, timeouts, retries, the request budget."""
    budget = f"{CLOUDFLARE_BUDGET[0]}/{CLOUDFLARE_BUDGET[1]:g}"
    group = parser.add_argument_group("Cloudflare API")
    group.add_argument(
        "--base-url",
        metavar="URL",
        help=f"API base URL (default: ${ENV_BASE_URL}, else Cloudflare's)",
    )
    add_request_options(group)
    group.add_argument(
        "--rate-limit",
        type=rate_limit,
        metavar="N/SECONDS|off",
        default=CLOUDFLARE_BUDGET,
        help=f"client-side request budget, or off (default: Cloudflare's {budget})",
    )
    group.add_argument(
        "--max-retry-after",
        type=_max_retry_after,
        metavar="SECONDS",
        default=client_default("max_retry_after"),
        help=(
            "wait out a 429 whose Retry-After is at most this long; a longer one stops "
            f"the run (default: %(default)g, at most {MAX_COOLDOWN:g})"
        ),
    )


def add_output_options(parser: Parser, *, json: bool = True, progress: bool = False) -> None:
    """``--json``, ``--progress``, ``-v`` and ``-q``: what is written where."""
    group = parser.add_argument_group("output")
    if json:
        group.add_argument(
            "--json",
            action="store_true",
            help="results as JSON Lines on stdout (text for people goes to stderr)",
        )
    if progress:
        group.add_argument(
            "--progress",
            choices=("auto", "bar", "lines", "off"),
            default="auto",
            help="progress on stderr: a bar on a terminal, one line per tunnel otherwise (auto)",
        )
    group.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help=(
            "log lines on stderr as text, or one JSON object a line (ts, level, run_id, "
            "account_id, tunnel_id, event, message; never a secret) (default: text)"
        ),
    )
    loudness = group.add_mutually_exclusive_group()
    loudness.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log retries and 429 pauses (-vv: every request) to stderr; never a secret",
    )
    loudness.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="nothing on stderr unless something went wrong",
    )


def top_level_epilog() -> str:
    return ENVIRONMENT_HELP + "\n\n" + exit_status_help()
