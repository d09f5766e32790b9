"""``magicwan psk generate | set | rotate``: new pre-shared keys for IPsec tunnels.

Each command is a run of the one rotation engine (:mod:`magicwan.rotation`): ``generate``
and ``set`` for one tunnel, ``rotate`` for many. Every new PSK is recorded before it
counts as done: an intent before each request and the PSK as soon as it arrives (fsynced
before anything is reported); ``set`` and ``rotate --method set`` make the PSK here and
fsync it into the journal *before* the request that carries it is sent. PSKs reach
stdout only when asked (``--show-psk``); a PSK is never taken from the command line
(``psk set --psk-stdin``).
"""

from __future__ import annotations

import argparse

from magicwan.cli import audit
from magicwan.cli.parser import ENVIRONMENT_HELP, Parser, add_actions, add_command
from magicwan.cli.psk import generate, rotate, set_psk
from magicwan.cli.status import exit_status_help
from magicwan.rotation import DEFAULT_HALT_AFTER

__all__ = ["DEFAULT_HALT_AFTER", "register"]


def register(commands: argparse._SubParsersAction[Parser]) -> None:
    """Add ``psk`` and its actions to the command tree."""
    psk = add_command(
        commands,
        "psk",
        None,
        help="generate, set or rotate IPsec tunnel PSKs",
        description="Generate, set or rotate the pre-shared keys of IPsec tunnels.",
    )
    actions = add_actions(psk, "psk_command")
    generate.register(actions, _epilog())
    set_psk.register(actions, _epilog())
    rotate.register(actions, _epilog(rotate.EXAMPLES))
    audit.register(actions)


def _epilog(*parts: str) -> str:
    return "\n\n".join([*parts, ENVIRONMENT_HELP, exit_status_help()])
