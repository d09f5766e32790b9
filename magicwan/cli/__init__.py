"""The ``magicwan`` command line (also ``python -m magicwan``)::

    magicwan psk generate [ACCOUNT] TUNNEL (--journal FILE | --show-psk) [--validate-only]
    magicwan psk set [ACCOUNT] TUNNEL --journal FILE [--psk-stdin] [--show-psk]
    magicwan psk rotate [ACCOUNT] [TUNNEL ...] (--all | --name GLOB | --from-file F)
                        (--journal FILE [--resume] | --journal-dir DIR) [options]
    magicwan tunnels list [ACCOUNT] [--type all|ipsec|gre] [--json]
    magicwan journal show FILE [--json]
    magicwan journal export FILE [--format json|csv|env] [--force]
    magicwan demo [--tunnels N] [--faults]

Credentials come only from the environment, never from flags. Results go to stdout (JSON
Lines with ``--json``; PSKs only with ``--show-psk`` or ``journal export``); progress,
summaries and errors go to stderr, with anything a server wrote escaped. Exit statuses:
:class:`~magicwan.cli.status.ExitStatus`.

Modules: ``app`` (the command tree, entry points, signals), ``parser`` (argparse rules,
value types, shared options), ``console`` (streams, escaping, colours, progress, logging),
``report`` (JSON lines, failure groups, hints, the tally), ``runner`` (drives a rotation),
``common`` (client, account, ids, journals), ``status`` (exit statuses), and one module per
command group: ``psk``, ``tunnels``, ``journal``, ``demo``.
"""

from magicwan.cli.app import COMMANDS, amain, build_parser, console_main, main
from magicwan.cli.status import ExitStatus

__all__ = ["COMMANDS", "ExitStatus", "amain", "build_parser", "console_main", "main"]
