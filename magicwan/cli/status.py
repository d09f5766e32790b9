"""The command line's exit statuses: one table, used by the help, the docs and the code.

When several apply to one run, the most urgent wins: :data:`PRECEDENCE` orders them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

__all__ = ["PRECEDENCE", "ExitStatus", "describe", "exit_status_help", "most_urgent"]


class ExitStatus(enum.IntEnum):
    """What a ``magicwan`` run ended with. Each member's docstring is its help text."""

    #: Everything asked was done (every tunnel rotated, skipped as already done, or validated).
    OK = 0
    #: Some tunnels failed or were not attempted; the others were done.
    FAILED = 1
    #: A usage or input error: nothing was changed. A bad option or id, no credentials, a
    #: journal that is locked, not a journal, or already holds the tunnels (without
    #: ``--resume``), a tunnel that is not in the account, ``journal export`` to a terminal.
    USAGE = 2
    #: Cloudflare refused the credentials, their permissions or the account, or the tunnel
    #: list could not be read: nothing was rotated.
    ACCESS = 3
    #: New PSKs are live at Cloudflare but the journal could not record them.
    UNRECORDED = 4
    #: PSKs were rotated (and journalled) but did not reach the tunnel's other end.
    UNDELIVERED = 5
    #: Interrupted (SIGINT or SIGTERM) after the summary and a resume hint.
    INTERRUPTED = 130


_TEXT = {
    ExitStatus.OK: "all done",
    ExitStatus.FAILED: "some tunnels failed or were not attempted",
    ExitStatus.USAGE: "usage or input error; nothing was changed",
    ExitStatus.ACCESS: "authentication, permission, account or discovery failed; nothing rotated",
    ExitStatus.UNRECORDED: "new PSKs are live but the journal could not record them",
    ExitStatus.UNDELIVERED: "rotated, but some PSKs were not delivered",
    ExitStatus.INTERRUPTED: "interrupted (SIGINT/SIGTERM); rerun with --resume to finish",
}

#: Most urgent first. An unrecorded PSK needs a human now; an interrupted run is not finished;
#: an undelivered PSK is a tunnel down; a failed tunnel still holds its old, working PSK.
PRECEDENCE = (
    ExitStatus.UNRECORDED,
    ExitStatus.INTERRUPTED,
    ExitStatus.UNDELIVERED,
    ExitStatus.ACCESS,
    ExitStatus.FAILED,
    ExitStatus.USAGE,
    ExitStatus.OK,
)


def most_urgent(statuses: Iterable[ExitStatus]) -> ExitStatus:
    """The status a run with all of ``statuses`` exits with (OK when there are none)."""
    found = set(statuses)
    return next((status for status in PRECEDENCE if status in found), ExitStatus.OK)


def describe(status: ExitStatus) -> str:
    """One line about ``status``."""
    return _TEXT[status]


def exit_status_help() -> str:
    """The exit status table for ``--help`` epilogs."""
    lines = ["exit status:"]
    lines += [f"  {int(status):>3}  {_TEXT[status]}" for status in ExitStatus]
    order = " > ".join(str(int(s)) for s in PRECEDENCE if s not in (ExitStatus.OK,))
    lines.append(f"  when several apply, the first of {order} wins")
    return "\n".join(lines)
