"""Pieces every command uses: its errors, the client, the account, tunnel ids, journals.

A command ends early by raising :class:`CLIError` (one message, optional hints, an exit
status); :class:`UsageError` is the one for bad input, which exits 2 with nothing sent.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shlex
import stat
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from magicwan.cli.report import describe, hint
from magicwan.cli.status import ExitStatus
from magicwan.client import MagicWAN
from magicwan.errors import InvalidInputError, MagicWANError
from magicwan.internal.env import ENV_ACCOUNT_ID, ENV_API_KEY, ENV_API_TOKEN, ENV_EMAIL
from magicwan.internal.redaction import shown_id
from magicwan.internal.validation import check_id
from magicwan.journal import Journal, JournalError
from magicwan.models.gre import GRETunnel
from magicwan.models.tunnels import IPsecTunnel

__all__ = [
    "CLIError",
    "UsageError",
    "account_id",
    "check_journal",
    "fresh_journal",
    "gre_tunnels",
    "ipsec_tunnels",
    "journal_directory",
    "make_client",
    "next_run_number",
    "open_journal",
    "read_ids",
    "resume_command",
    "run_number",
    "tunnel_id",
]

_CREDENTIAL_VARS = (ENV_API_TOKEN, ENV_EMAIL, ENV_API_KEY)


class CLIError(Exception):
    """Ends a command with ``message`` (and ``hints``) on stderr and exit ``status``."""

    def __init__(
        self,
        message: str,
        *,
        status: ExitStatus = ExitStatus.USAGE,
        hints: Iterable[str | None] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.hints = [h for h in hints if h]


class UsageError(CLIError):
    """A bad command line or input: exit status 2, nothing was sent or changed."""

    def __init__(self, message: str, *, hints: Iterable[str | None] = ()) -> None:
        super().__init__(message, status=ExitStatus.USAGE, hints=hints)


def make_client(args: argparse.Namespace) -> MagicWAN:
    """A client from the environment's credentials and the API options."""
    if not any(os.environ.get(name) for name in _CREDENTIAL_VARS):
        raise UsageError(
            f"no credentials: set {ENV_API_TOKEN} (or {ENV_EMAIL} and {ENV_API_KEY}) in "
            "the environment; they are never taken as flags"
        )
    try:
        return MagicWAN(
            base_url=args.base_url,
            timeout=args.timeout,
            max_retries=args.max_retries,
            rate_limit=args.rate_limit,
            max_retry_after=args.max_retry_after,
        )
    except InvalidInputError as exc:
        raise UsageError(str(exc)) from None


def account_id(args: argparse.Namespace) -> str:
    """ACCOUNT if given, else ``CLOUDFLARE_ACCOUNT_ID``; a usage error without either."""
    if args.account is not None:
        try:
            return check_id(args.account, "ACCOUNT")
        except InvalidInputError as exc:
            raise UsageError(
                str(exc),
                hints=[
                    "the first positional argument is always ACCOUNT; tunnels go after it, "
                    "by id ('magicwan tunnels list' shows them)"
                ],
            ) from None
    try:
        from_env = os.environ.get(ENV_ACCOUNT_ID)
        if not from_env:
            raise UsageError(f"which account? give ACCOUNT or set {ENV_ACCOUNT_ID}")
        return check_id(from_env, ENV_ACCOUNT_ID)
    except InvalidInputError as exc:
        raise UsageError(str(exc)) from None


def tunnel_id(text: str, what: str = "TUNNEL") -> str:
    """A tunnel id from the command line; a usage error that points to ``--name`` otherwise."""
    try:
        return check_id(text, what)
    except InvalidInputError as exc:
        raise UsageError(
            f"{exc}: tunnels are given by id",
            hints=["'magicwan tunnels list' shows ids; 'psk rotate --name GLOB' selects by name"],
        ) from None


def read_ids(source: str, stdin: TextIO) -> list[str]:
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


def open_journal(path: str) -> Journal:
    """Create (0600) or open and lock the journal; a path that cannot be one is a usage
    error, before anything is sent."""
    journal = Journal(path)
    try:
        journal.open()
    except JournalError as exc:
        raise UsageError(str(exc)) from None
    return journal


async def check_journal(path: str) -> None:
    """Create (0600) or open and lock the journal now, then let it go: a path that cannot
    be a journal, or one another rotation holds, fails before anything is sent."""
    journal = open_journal(path)
    try:
        await journal.aclose()
    except JournalError as exc:
        raise UsageError(str(exc)) from None


def journal_directory(directory: str) -> Path:
    """``directory`` as a home for journals: created 0700 if missing, used as it is if it
    exists (its mode is the operator's), refused if other users can write to it or it
    belongs to another user (but root)."""
    path = Path(directory)
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass  # an existing directory keeps its mode: checked below, never changed
    except OSError as exc:
        raise UsageError(f"cannot use journal directory {directory}: {exc.strerror}") from None
    try:
        info = path.stat()
    except OSError as exc:
        raise UsageError(f"cannot use journal directory {directory}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise UsageError(f"journal directory {directory} is not a directory")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        # Even with the sticky bit (/tmp), others can plant names there (a symlink, a file
        # named like the next journal) and list the journals; chmod'ing a shared directory
        # would lock its other users out (a 1777 /tmp losing its sticky bit).
        raise UsageError(
            f"journal directory {directory} is one other users can write to (mode "
            f"{mode:04o}): journals hold PSKs, so they go in a directory of your own; "
            "it was left as it is",
            hints=[
                "give a directory that does not exist yet (it is created 0700), or make "
                "one: mkdir -m 700 DIR"
            ],
        )
    if info.st_uid not in (os.geteuid(), 0):
        # Its owner can remove or rename what is in it, journals included.
        raise UsageError(
            f"journal directory {directory} belongs to another user (uid {info.st_uid}), "
            "who could remove or replace journals there: journals hold PSKs, so they go in "
            "a directory of your own",
            hints=["give a directory that does not exist yet (it is created 0700)"],
        )
    return path


def fresh_journal(directory: str, *, prefix: str = "rotate") -> str:
    """A new, empty journal file (0600) named after the run and the time, in
    ``directory`` (see :func:`journal_directory`)."""
    path = journal_directory(directory)
    # The run number orders the runs of a directory whatever the clock did (it may step
    # back: a boot before time sync); the time is for people.
    run = f"{next_run_number(path):06d}"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    for number in itertools.count(1):
        name = f"{prefix}-{run}-{stamp}"
        name += ".jsonl" if number == 1 else f"-{number}.jsonl"
        try:
            os.close(os.open(path / name, flags | getattr(os, "O_CLOEXEC", 0), 0o600))
        except FileExistsError:
            continue
        except OSError as exc:
            raise UsageError(f"cannot create a journal in {directory}: {exc.strerror}") from None
        return str(path / name)
    raise AssertionError("unreachable")  # pragma: no cover


_RUN_NAME = re.compile(r"^[A-Za-z]+-(\d{6,})-\d{8}T")


def run_number(path: Path) -> int | None:
    """The run number in a journal's name (``rotate-000042-20261205T...Z.jsonl``, see
    :func:`fresh_journal`), or None for a name without one."""
    match = _RUN_NAME.match(path.name)
    return int(match.group(1)) if match else None


def next_run_number(directory: Path) -> int:
    """One more than the highest run number of ``directory``'s journals (1 if none): a run
    after another gets a higher number. Two runs started at once may share one."""
    numbers = (run_number(path) for path in directory.glob("*.jsonl"))
    return max((n for n in numbers if n is not None), default=0) + 1


def resume_command(argv: Sequence[str], journal: str) -> str:
    """The command line that resumes this run: the same arguments, with ``--journal
    JOURNAL --resume`` instead of any journal, dry-run or resume option."""
    drop_with_value = {"--journal", "--journal-dir"}
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in drop_with_value:
            skip = "=" not in arg
            continue
        if arg in ("--resume", "--dry-run"):
            continue
        kept.append(arg)
    return shlex.join(["magicwan", *kept, "--journal", journal, "--resume"])


async def ipsec_tunnels(client: MagicWAN, account: str) -> list[IPsecTunnel]:
    """The account's IPsec tunnels; exit 3 (with a hint) when they cannot be listed."""
    try:
        return await client.tunnels.ipsec.list(account)
    except MagicWANError as exc:
        raise CLIError(
            f"cannot list the IPsec tunnels of {shown_id(account, 'account')}: {describe(exc)}",
            status=ExitStatus.ACCESS,
            hints=[hint(exc)],
        ) from None


async def gre_tunnels(client: MagicWAN, account: str) -> list[GRETunnel]:
    """The account's GRE tunnels; exit 3 (with a hint) when they cannot be listed."""
    try:
        return await client.tunnels.gre.list(account)
    except MagicWANError as exc:
        raise CLIError(
            f"cannot list the GRE tunnels of {shown_id(account, 'account')}: {describe(exc)}",
            status=ExitStatus.ACCESS,
            hints=[hint(exc)],
        ) from None
