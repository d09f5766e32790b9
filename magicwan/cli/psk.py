"""``magicwan psk generate | set | rotate``: new pre-shared keys for IPsec tunnels.

Every new PSK is recorded before it counts as done: ``generate`` and ``rotate`` journal an
intent before each request and the PSK as soon as it arrives (fsynced before anything is
reported); ``set`` and ``rotate --method set`` make the PSK here and fsync it into the
journal *before* the request that carries it is sent. PSKs reach stdout only when asked
(``--show-psk``); a PSK is never taken from the command line (``psk set --psk-stdin``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import getpass
import shlex
from typing import Any

import attrs

from magicwan._psk import new_psk
from magicwan._transport import Reply
from magicwan._validation import check_psk
from magicwan.cli import audit
from magicwan.cli.common import (
    UsageError,
    account_id,
    check_journal,
    fresh_journal,
    ipsec_tunnels,
    make_client,
    open_journal,
    read_ids,
    resume_command,
    tunnel_id,
)
from magicwan.cli.console import Console, OutputClosed
from magicwan.cli.parser import (
    ENVIRONMENT_HELP,
    Parser,
    add_account_argument,
    add_actions,
    add_api_options,
    add_command,
    add_output_options,
    halt_after,
    non_negative_int,
    non_negative_seconds,
    positive_int,
    seconds,
)
from magicwan.cli.report import describe, hint, is_access_error, outcome_json, stamp_text
from magicwan.cli.runner import RunSettings, run_rotation
from magicwan.cli.status import ExitStatus, exit_status_help
from magicwan.client import MagicWAN
from magicwan.delivery import DEFAULT_SOCKET, Command, Deliverer, StrongSwan
from magicwan.errors import (
    InvalidInputError,
    MagicWANError,
    NotAppliedError,
    UnexpectedResponseError,
)
from magicwan.journal import (
    Intent,
    Journal,
    JournalError,
    Unverified,
    Verified,
    failure,
    read_journal,
    rotated,
)
from magicwan.models.psk import PSKGenerateResult
from magicwan.models.tunnels import IPsecTunnel
from magicwan.ratelimit import CLOUDFLARE_BUDGET
from magicwan.rotation import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONCURRENCY,
    DEFAULT_DELIVER_RETRIES,
    DEFAULT_DELIVER_TIMEOUT,
    MAX_BATCH_SIZE,
    MAX_VERIFY_ROUNDS,
    OutcomeState,
    RotationFailure,
    RotationSuccess,
    Validated,
    journalled_generate,
    read_back_verdict,
    still_superseded,
    undecided_reason,
)

__all__ = ["DEFAULT_HALT_AFTER", "register"]

#: ``psk rotate`` starts no new tunnel after this many failed ones (``--halt-after``): a
#: systematic failure (a dead router behind ``--deliver-exec``, a read-only token) stops
#: after a handful of tunnels instead of breaking hundreds.
DEFAULT_HALT_AFTER = 5

_BUDGET = f"{CLOUDFLARE_BUDGET[0]:,}-per-{CLOUDFLARE_BUDGET[1]:g}-seconds"

_EXAMPLES = """\
examples:
  magicwan psk rotate ACCOUNT --all --journal-dir /var/lib/magicwan --json
  magicwan psk rotate ACCOUNT --name 'branch-*' --exclude 'branch-lab*' --journal run.jsonl
  magicwan psk rotate ACCOUNT --all --journal run.jsonl --resume     # finish that run
  magicwan psk rotate ACCOUNT --all --dry-run                         # one request: the list
  magicwan psk rotate ACCOUNT --all --journal-dir DIR --deliver-exec 'push-psk --router'
"""


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
    _register_generate(actions)
    _register_set(actions)
    _register_rotate(actions)
    audit.register(actions)


def _epilog(*parts: str) -> str:
    return "\n\n".join([*parts, ENVIRONMENT_HELP, exit_status_help()])


def _register_generate(actions: argparse._SubParsersAction[Parser]) -> None:
    parser = add_command(
        actions,
        "generate",
        _generate,
        help="generate a new PSK for one tunnel (Cloudflare makes it)",
        usage="%(prog)s [ACCOUNT] TUNNEL (--journal FILE | --show-psk) [options]",
        description=(
            "Generate a new PSK for one tunnel. Cloudflare never shows a PSK again, so "
            "record it: --journal FILE appends it to a 0600 JSON Lines journal (fsynced), "
            "--show-psk prints it alone on stdout."
        ),
        epilog=_epilog(),
    )
    add_account_argument(parser)
    parser.add_argument("tunnel", metavar="TUNNEL", help="IPsec tunnel id")
    parser.add_argument("--journal", metavar="FILE", help="record the new PSK in FILE (0600)")
    parser.add_argument("--show-psk", action="store_true", help="print the new PSK on stdout")
    parser.add_argument(
        "--validate-only", action="store_true", help="check the request; change nothing"
    )
    parser.add_argument(
        "--settle-window",
        type=non_negative_seconds,
        metavar="SECONDS",
        help="after an uncertain answer (a retry), wait this long before reading the tunnel "
        "back (default: --timeout)",
    )
    add_output_options(parser)
    add_api_options(parser)


def _register_set(actions: argparse._SubParsersAction[Parser]) -> None:
    parser = add_command(
        actions,
        "set",
        _set,
        help="set one tunnel's PSK: made here, or read from stdin",
        usage="%(prog)s [ACCOUNT] TUNNEL --journal FILE [--psk-stdin] [options]",
        description=(
            "Set one tunnel's PSK. The PSK is made here (32 random letters and digits) "
            "or read from standard input with --psk-stdin (a terminal prompts without "
            "echo); never from the command line, which other users can read. It is "
            "written to the journal and fsynced before the request that carries it is sent."
        ),
        epilog=_epilog(),
    )
    add_account_argument(parser)
    parser.add_argument("tunnel", metavar="TUNNEL", help="IPsec tunnel id")
    parser.add_argument(
        "--journal", metavar="FILE", help="the journal (0600), required unless --validate-only"
    )
    parser.add_argument(
        "--psk-stdin", action="store_true", help="read the PSK from standard input (one line)"
    )
    parser.add_argument("--show-psk", action="store_true", help="print the PSK on stdout")
    parser.add_argument(
        "--validate-only", action="store_true", help="check the request and the PSK; change nothing"
    )
    add_output_options(parser)
    add_api_options(parser)


def _register_rotate(actions: argparse._SubParsersAction[Parser]) -> None:
    parser = add_command(
        actions,
        "rotate",
        _rotate,
        help="rotate the PSKs of many tunnels, journalled and resumable",
        usage=(
            "%(prog)s [ACCOUNT] [TUNNEL ...] [--all | --name GLOB] [--exclude GLOB]\n"
            "       (--journal FILE [--resume] | --journal-dir DIR) [options]"
        ),
        description=(
            "Rotate the PSKs of many IPsec tunnels concurrently within the rate limit. "
            "The tunnel list is read first (one request); every new PSK is fsynced to the "
            "journal (0600) before it counts as done. A journal that already holds the "
            "selected tunnels is refused unless --resume is given (then tunnels already "
            "rotated are skipped); --journal-dir makes a fresh journal for every run, "
            "which is what a scheduled job wants. Options may go anywhere after "
            "'psk rotate'; the first positional argument is ACCOUNT."
        ),
        epilog=_epilog(_EXAMPLES),
    )
    add_account_argument(parser, then="; the first positional argument")
    parser.add_argument("tunnels", metavar="TUNNEL", nargs="*", help="IPsec tunnel ids")
    select = parser.add_argument_group("which tunnels")
    select.add_argument("--all", action="store_true", help="every IPsec tunnel of the account")
    select.add_argument(
        "--name",
        metavar="GLOB",
        action="append",
        default=[],
        help="tunnels whose name matches GLOB (case-sensitive; * ? [...]); may repeat",
    )
    select.add_argument(
        "--exclude",
        metavar="GLOB",
        action="append",
        default=[],
        help="leave out tunnels whose name or id matches GLOB; may repeat",
    )
    select.add_argument(
        "--from-file",
        metavar="FILE",
        action="append",
        default=[],
        help="tunnel ids, one a line (# comments; - for stdin); may repeat",
    )
    journal = parser.add_argument_group(
        "journal (one is required unless --validate-only or --dry-run)"
    )
    where = journal.add_mutually_exclusive_group()
    where.add_argument("--journal", metavar="FILE", help="the journal file (created 0600)")
    where.add_argument(
        "--journal-dir",
        metavar="DIR",
        help="a fresh journal for this run: DIR/rotate-<UTC start time>.jsonl (DIR made 0700)",
    )
    journal.add_argument(
        "--resume",
        action="store_true",
        help="continue the run recorded in --journal FILE: skip the tunnels it rotated",
    )
    how = parser.add_argument_group("how")
    how.add_argument(
        "--method",
        choices=("generate", "set"),
        default="generate",
        help="generate: Cloudflare makes each PSK, one request per tunnel (default); set: "
        "PSKs are made here, journalled before sending, and sent in batches",
    )
    how.add_argument(
        "--batch-size",
        type=positive_int,
        metavar="N",
        help=f"tunnels per request with --method set (default: {DEFAULT_BATCH_SIZE}, "
        f"at most {MAX_BATCH_SIZE})",
    )
    how.add_argument(
        "--concurrency",
        type=positive_int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help="requests in flight at once (default: %(default)s)",
    )
    how.add_argument(
        "--halt-after",
        type=halt_after,
        default=DEFAULT_HALT_AFTER,
        metavar="N|off",
        help="start no new tunnel after N failed ones (default: %(default)s)",
    )
    how.add_argument(
        "--settle-window",
        type=non_negative_seconds,
        metavar="SECONDS",
        help="after an uncertain answer, wait this long before reading the tunnel back "
        "(default: --timeout)",
    )
    how.add_argument(
        "--drain-timeout",
        type=seconds,
        metavar="SECONDS",
        help="when stopping early, how long to wait for requests in flight (default: --timeout)",
    )
    check = parser.add_argument_group("checks")
    check.add_argument(
        "--dry-run",
        action="store_true",
        help="list the tunnels that would be rotated; send nothing but the tunnel list",
    )
    check.add_argument(
        "--validate-only",
        action="store_true",
        help="ask Cloudflare to check every request; changes nothing, but costs one request "
        f"per tunnel (or batch) of the {_BUDGET} budget",
    )
    deliver = parser.add_argument_group("delivery to the tunnel's other end")
    target = deliver.add_mutually_exclusive_group()
    target.add_argument(
        "--deliver-exec",
        metavar="'CMD ARGS'",
        help="run CMD per tunnel (split like a shell, never run by one): the PSK on its "
        "stdin, MAGICWAN_TUNNEL_ID, _NAME, _ACCOUNT_ID, _IPSEC_ID, _CUSTOMER_ENDPOINT, "
        "_CLOUDFLARE_ENDPOINT in its environment; exit status 0 = delivered",
    )
    target.add_argument(
        "--deliver-strongswan",
        metavar="SOCKET",
        nargs="?",
        const=DEFAULT_SOCKET,
        help=f"load each PSK into strongSwan's charon over VICI (default socket: {DEFAULT_SOCKET})",
    )
    deliver.add_argument(
        "--reauth",
        action="store_true",
        help="with --deliver-strongswan: re-authenticate the tunnel's IKE SA to prove the PSK",
    )
    deliver.add_argument(
        "--deliver-retries",
        type=non_negative_int,
        metavar="N",
        help=f"retries of a failed delivery (default: {DEFAULT_DELIVER_RETRIES})",
    )
    deliver.add_argument(
        "--deliver-timeout",
        type=seconds,
        metavar="SECONDS",
        help=f"bound of one delivery try (default: {DEFAULT_DELIVER_TIMEOUT:g})",
    )
    out = parser.add_argument_group("what is shown")
    out.add_argument(
        "--show-psk",
        action="store_true",
        help="print 'TUNNEL_ID PSK' lines on stdout as tunnels finish (the PSK in --json lines)",
    )
    add_output_options(parser, progress=True)
    add_api_options(parser)


# -- psk generate ------------------------------------------------------------------------------


async def _generate(args: argparse.Namespace, console: Console) -> int:
    account = account_id(args)
    tunnel = tunnel_id(args.tunnel)
    if not args.validate_only and args.journal is None and not args.show_psk:
        raise UsageError(
            "refusing to generate a PSK that nobody records: Cloudflare never shows it "
            "again. Pass --journal FILE (written 0600) or --show-psk."
        )
    client = make_client(args)
    # Under --validate-only too: an answer that carries a PSK anyway (a server, or a
    # gateway that drops ?validate_only=true, generated one) is journalled.
    journal = _open_journal(args.journal)
    try:
        async with client:
            api = client.tunnels.ipsec.psk.with_reply
            unrecorded: JournalError | None = None
            try:
                if args.validate_only:
                    reply = await api.generate(account, tunnel, True)
                    if reply.value.psk is not None and journal is not None:
                        event = rotated(
                            account,
                            reply.value,
                            attempts=reply.attempts,
                            uncertain=reply.uncertain,
                        )
                        unrecorded = await _record(journal, event)
                else:
                    reply, unrecorded = await _generate_durably(
                        console, journal, api.generate, account, tunnel
                    )
            except JournalError as exc:  # the intent could not be written: nothing sent
                raise UsageError(str(exc)) from None
            except MagicWANError as exc:
                return _single_failure(console, args, tunnel, exc)
            held = _Held(result=reply.value, attempts=reply.attempts)
            if args.validate_only and held.result.psk is not None:
                return _validate_only_generated(console, args, tunnel, held.result, unrecorded)
            if not args.validate_only and unrecorded is None and reply.uncertain:
                settle = args.settle_window if args.settle_window is not None else args.timeout
                ended = await _settle(console, args, client, journal, account, tunnel, held, settle)
                if ended is not None:
                    return ended
                unrecorded = held.unrecorded
    finally:
        if journal is not None:
            with contextlib.suppress(JournalError):
                await journal.aclose()
    result = held.result
    if args.validate_only:
        return _single_validated(console, args, Validated(tunnel_id=tunnel, result=result))
    if unrecorded is not None:
        return _single_unrecorded(console, args, tunnel, result, unrecorded, "generated")
    outcome = RotationSuccess(
        tunnel_id=tunnel,
        state=OutcomeState.ROTATED,
        result=result,
        attempts=held.attempts,
        verified=held.verified,
        unverified=held.unverified,
    )
    return _single_success(console, args, outcome, "generated")


async def _generate_durably(
    console: Console,
    journal: Journal | None,
    generate: Any,
    account: str,
    tunnel: str,
) -> tuple[Reply[PSKGenerateResult], JournalError | None]:
    """The one journalled path rotation uses too (intent before sending, the PSK and
    whether a retry left doubt as soon as it arrives), then that line fsynced. Returns the
    reply and the journal's error, if it could not record the PSK."""
    try:
        reply, seq, unrecorded = await journalled_generate(journal, generate, account, tunnel)
        if journal is not None and unrecorded is None:
            unrecorded = await _sync(journal, seq)
    except asyncio.CancelledError:
        console.error(
            f"interrupted: tunnel {tunnel} may now hold a new PSK, in the journal only if "
            "its line got there ('magicwan journal show'); run the command again before "
            "relying on the tunnel"
        )
        raise
    return reply, unrecorded


async def _record(journal: Journal, event: Any) -> JournalError | None:
    """Append and fsync one line; the error if it could not be."""
    try:
        seq = journal.append(event)
    except JournalError as exc:
        return exc
    return await _sync(journal, seq)


async def _sync(journal: Journal, seq: int) -> JournalError | None:
    try:
        await journal.sync(seq)
    except JournalError as exc:
        return exc
    return None


@attrs.define
class _Held:
    """The PSK ``psk generate`` holds for its tunnel, and what a read-back made of it."""

    result: PSKGenerateResult
    attempts: int
    verified: bool = False
    unverified: str | None = None
    unrecorded: JournalError | None = None


async def _settle(
    console: Console,
    args: argparse.Namespace,
    client: MagicWAN,
    journal: Journal | None,
    account: str,
    tunnel: str,
    held: _Held,
    window: float,
) -> int | None:
    """A retry left doubt: the unanswered request may still store a PSK behind the one
    received. Rotation's way with an unsettled tunnel: read it back once ``window`` has
    passed, regenerate only when the edge's stamp is newer (at most
    :data:`MAX_VERIFY_ROUNDS` times), hand the PSK over unverified when the read-back
    cannot decide. Updates ``held``; returns an exit status when it ended the command."""
    console.say(
        f"tunnel {tunnel}: a retry left doubt (an earlier request's answer was lost, and it "
        "may still store a PSK behind the one received): reading the tunnel back in "
        f"{window:g}s (--settle-window)"
    )
    rounds = 0
    wait = window
    while True:
        try:
            await asyncio.sleep(wait)
            edge_reply = await client.tunnels.ipsec.with_reply.get(account, tunnel)
        except MagicWANError as exc:
            await _unverified(
                console, journal, account, tunnel, held, f"read-back failed: {describe(exc)}"
            )
            return None
        except asyncio.CancelledError:
            _interrupted_unsettled(console, args, tunnel, held)
            raise
        verdict = read_back_verdict(held.result, edge_reply.value)
        if verdict == 0:
            held.verified = True
            if journal is not None:
                mine = held.result.psk_metadata
                stamp = mine.last_generated_on if mine else None
                event = Verified(account_id=account, tunnel_id=tunnel, last_generated_on=stamp)
                _journal_note(console, await _record(journal, event))
            console.say(
                f"tunnel {tunnel}: read back after the retry's doubt: the edge holds the PSK "
                "received (verified). A store later than the settle window would go unseen: "
                "--settle-window waits longer, and 'psk set' cannot be superseded by one."
            )
            return None
        if verdict is None or verdict < 0:
            await _unverified(console, journal, account, tunnel, held, undecided_reason(verdict))
            return None
        # The edge holds a newer PSK than ours: the unanswered request stored one late.
        if rounds >= MAX_VERIFY_ROUNDS:
            error = still_superseded(tunnel)
            if journal is not None:
                _journal_note(console, await _record(journal, failure(account, tunnel, error)))
            return _settle_failed(console, args, journal, tunnel, held, error)
        rounds += 1
        console.warn(
            f"tunnel {tunnel}: the edge holds a newer PSK than the one received (the "
            "unanswered request stored it late); generating again"
        )
        try:
            reply, unrecorded = await _generate_durably(
                console, journal, client.tunnels.ipsec.psk.with_reply.generate, account, tunnel
            )
        except JournalError as exc:  # the intent could not be written: nothing sent
            console.error(f"{exc}; not generated again")
            return _settle_failed(console, args, journal, tunnel, held, exc)
        except MagicWANError as exc:
            return _settle_failed(console, args, journal, tunnel, held, exc)
        held.result, held.attempts = reply.value, held.attempts + reply.attempts
        if unrecorded is not None:
            held.unrecorded = unrecorded
            return None
        # Regenerated after the earlier requests settled: one read-back now proves it,
        # unless this answer too needed a retry (then the window again).
        wait = window if reply.uncertain else 0.0


def _settle_failed(
    console: Console,
    args: argparse.Namespace,
    journal: Journal | None,
    tunnel: str,
    held: _Held,
    error: MagicWANError,
) -> int:
    """The read-back's regenerations failed. The last PSK Cloudflare answered is in the
    journal, if there is one; without one it is handed over as unrecorded (never dropped:
    nothing but a stamp says it was superseded)."""
    if journal is not None:  # its rotated line is there (written before the read-back)
        return _single_failure(console, args, tunnel, error)
    console.error(f"tunnel {tunnel}: {describe(error)}")
    why = JournalError("no journal was given")
    return _single_unrecorded(console, args, tunnel, held.result, why, "generated")


async def _unverified(
    console: Console,
    journal: Journal | None,
    account: str,
    tunnel: str,
    held: _Held,
    reason: str,
) -> None:
    held.unverified = reason
    if journal is not None:
        event = Unverified(account_id=account, tunnel_id=tunnel, reason=reason)
        _journal_note(console, await _record(journal, event))
    rerun = _read_back_advice(journal is not None, " again")
    console.warn(
        f"tunnel {tunnel}: a retry left doubt and the read-back did not settle it "
        f"({reason}): the PSK received may have been superseded by a late store; {rerun}"
    )


def _journal_note(console: Console, exc: JournalError | None) -> None:
    if exc is not None:
        console.warn(f"{exc} (the PSK itself is in the journal; only the read-back's note is not)")


def _interrupted_unsettled(
    console: Console, args: argparse.Namespace, tunnel: str, held: _Held
) -> None:
    """Ctrl-C while waiting to read a doubtful tunnel back: its PSK must still reach its
    owner (stdout may be its only record)."""
    with contextlib.suppress(OutputClosed):
        if args.json:
            outcome = RotationSuccess(
                tunnel_id=tunnel,
                state=OutcomeState.ROTATED,
                result=held.result,
                attempts=held.attempts,
                unverified="not read back: interrupted",
            )
            console.json(outcome_json(outcome, name=None, show_psk=args.show_psk))
        elif args.show_psk:
            console.data(held.result.psk or "")
    where = f"in the journal {args.journal}, marked uncertain" if args.journal else "on stdout"
    console.error(
        f"interrupted before the read-back: tunnel {tunnel}'s new PSK is {where}, but a retry "
        "left doubt (a late store may supersede it); " + _read_back_advice(bool(args.journal))
    )


def _read_back_advice(journalled: bool, again: str = "") -> str:
    """What the operator does about a PSK a read-back did not settle."""
    if not journalled:
        return "check the tunnel before relying on it"
    return (
        "'magicwan psk rotate ACCOUNT TUNNEL --journal FILE --resume' with this journal "
        f"reads it back{again}"
    )


def _validate_only_generated(
    console: Console,
    args: argparse.Namespace,
    tunnel: str,
    result: PSKGenerateResult,
    unrecorded: JournalError | None,
) -> int:
    """Asked to validate only, the server generated a PSK anyway: the tunnel's old PSK no
    longer works. Reported unrecorded (exit 4), as ``psk rotate --validate-only`` does;
    the PSK is journalled with --journal and shown only with --show-psk."""
    journalled = args.journal is not None and unrecorded is None
    outcome = RotationFailure(
        tunnel_id=tunnel,
        state=OutcomeState.UNRECORDED,
        error=UnexpectedResponseError(
            "asked to validate only, the server generated a new PSK: it is live at "
            "Cloudflare" + (" and in the journal" if journalled else ", in no journal")
        ),
        result=result,
    )
    with contextlib.suppress(OutputClosed):
        if args.json:
            console.json(outcome_json(outcome, name=None, show_psk=args.show_psk))
        elif args.show_psk:
            console.data(result.psk or "")
    if unrecorded is not None:
        console.error(str(unrecorded))
    console.error(
        f"tunnel {tunnel}: asked to validate only, the server generated a NEW PSK anyway (a "
        f"gateway that drops ?validate_only=true?) at {_stamp_of(result)}; its old PSK no "
        "longer works."
    )
    if journalled:
        console.tell(
            f"The new PSK is in the journal {args.journal} ('magicwan journal export' shows "
            "it): put it on the tunnel's other end."
        )
    if args.show_psk:
        console.tell("The PSK is on stdout: store it now.")
    elif not journalled:
        console.tell(
            "It was not shown (no --show-psk) nor journalled: the tunnel is down until its "
            "PSK is rotated again."
        )
    return ExitStatus.UNRECORDED


def _open_journal(path: str | None) -> Journal | None:
    return None if path is None else open_journal(path)


def _stamp_of(result: PSKGenerateResult) -> str:
    return stamp_text(result) or "-"


def _single_success(
    console: Console, args: argparse.Namespace, outcome: RotationSuccess, made: str
) -> int:
    try:
        if args.json:
            console.json(outcome_json(outcome, name=None, show_psk=args.show_psk))
        elif args.show_psk:
            console.data(outcome.psk)
    except OutputClosed:
        if args.journal is not None:
            raise  # the journal holds it: a reader that left costs nothing
        # stdout was the PSK's only record, and its reader is gone: the PSK is live and
        # recorded nowhere. That is not "all done".
        console.error(
            f"stdout was closed before the new PSK could be written: tunnel "
            f"{outcome.tunnel_id} holds a PSK that is recorded nowhere (its old PSK no "
            "longer works); run the command again"
        )
        return ExitStatus.UNRECORDED
    where = f"recorded in the journal {args.journal} (0600)" if args.journal else "not journalled"
    shown = "; shown on stdout" if args.show_psk else "; not shown (--show-psk shows it)"
    console.say(
        f"tunnel {outcome.tunnel_id}: new PSK {made} at {_stamp_of(outcome.result)}; {where}{shown}"
    )
    return ExitStatus.OK


def _single_validated(
    console: Console, args: argparse.Namespace, outcome: Validated, *, sent: bool = False
) -> int:
    """Validated. ``sent``: the request carried a PSK made here (``psk set``), which is
    kept (journal, ``--show-psk``) in case the server applied it anyway."""
    show = sent and args.show_psk
    try:
        if args.json:
            console.json(outcome_json(outcome, name=None, show_psk=show))
        elif show:
            console.data(outcome.result.psk or "")
    except OutputClosed:
        if not sent or args.journal is not None:
            raise
        console.error(
            f"stdout was closed before the PSK sent could be written: should the server "
            f"have applied it, tunnel {outcome.tunnel_id} holds a PSK that is recorded nowhere"
        )
        return ExitStatus.UNRECORDED
    console.say(
        f"tunnel {outcome.tunnel_id}: validated: the request would be accepted (nothing changed)"
    )
    if sent:
        kept = None
        if args.journal is not None:
            kept = (
                f"in the journal {args.journal} (its intent line: 'magicwan journal export' "
                "shows it as pending_psk)"
            )
            kept += " and on stdout" if args.show_psk else ""
        elif args.show_psk:
            kept = "on stdout"
        if kept is not None:
            console.say(
                f"the PSK sent is kept {kept}, in case the server applied it anyway (as a "
                "gateway that drops ?validate_only=true would let it)"
            )
        else:
            console.say(
                "the PSK sent is kept nowhere (no --journal, no --show-psk): should the "
                "server apply it anyway (a gateway that drops ?validate_only=true), the "
                "tunnel would hold a PSK nobody has"
            )
    return ExitStatus.OK


def _single_failure(
    console: Console, args: argparse.Namespace, tunnel: str, exc: MagicWANError
) -> int:
    outcome = RotationFailure(
        tunnel_id=tunnel,
        state=OutcomeState.FAILED,
        error=exc,
        outcome_unknown=exc.outcome_unknown,
    )
    if args.json:
        console.json(outcome_json(outcome, name=None, show_psk=False))
    console.error(f"tunnel {tunnel}: {describe(exc)}")
    advice = hint(exc)
    if advice:
        console.tell(f"hint: {advice}")
    if exc.outcome_unknown and not args.validate_only:
        console.tell(
            "the outcome is unknown: Cloudflare may hold a new PSK that nobody received. "
            "Run the command again before relying on this tunnel."
        )
    return ExitStatus.ACCESS if is_access_error(exc) else ExitStatus.FAILED


def _single_unrecorded(
    console: Console,
    args: argparse.Namespace,
    tunnel: str,
    result: PSKGenerateResult,
    exc: JournalError,
    made: str,
    *,
    in_journal_intent: bool = False,
) -> int:
    """A PSK is live at Cloudflare but the journal could not record it: say so, name the
    tunnel, and still honour --show-psk (a PSK is never printed unasked)."""
    outcome = RotationFailure(
        tunnel_id=tunnel, state=OutcomeState.UNRECORDED, error=exc, result=result
    )
    if args.json:
        console.json(outcome_json(outcome, name=None, show_psk=args.show_psk))
    elif args.show_psk:
        console.data(result.psk or "")
    console.error(str(exc))
    console.error(
        f"tunnel {tunnel} holds a NEW PSK ({made} at {_stamp_of(result)}) that is NOT in "
        + (f"the journal {args.journal}" if args.journal is not None else "any journal")
        + "; its old PSK no longer works."
    )
    if args.show_psk:
        console.tell("The PSK is on stdout: store it now.")
    elif in_journal_intent:
        console.tell(
            "The PSK is in the journal's intent line (fsynced before sending): "
            "'magicwan journal export' shows it as pending_psk."
        )
    else:
        console.tell(
            "It was not shown (no --show-psk): run the command again once the journal is "
            "writable; until then the tunnel is down."
        )
    return ExitStatus.UNRECORDED


# -- psk set --------------------------------------------------------------------------------------


def _read_psk(stdin: Any) -> str:
    """One line from standard input (a terminal prompts without echo)."""
    isatty = getattr(stdin, "isatty", None)
    if isatty is not None and isatty():
        text = getpass.getpass("PSK (not echoed): ")
    else:
        text = stdin.read()
        if text.endswith("\n"):
            text = text[:-1]
        if text.endswith("\r"):
            text = text[:-1]
    if "\n" in text:
        raise UsageError("--psk-stdin reads one line; standard input holds several")
    if not text:
        raise UsageError("--psk-stdin: standard input is empty")
    try:
        return check_psk(text, "the PSK from standard input")
    except InvalidInputError as exc:
        raise UsageError(str(exc)) from None


async def _set(args: argparse.Namespace, console: Console) -> int:
    account = account_id(args)
    tunnel = tunnel_id(args.tunnel)
    if args.journal is None and not args.validate_only:
        raise UsageError(
            "--journal FILE is required: the PSK is written there (0600, fsynced) before "
            "the request that carries it is sent, so no lost answer can lose it"
        )
    psk = _read_psk(args.stdin) if args.psk_stdin else new_psk()
    client = make_client(args)
    # Under --validate-only too: the PSK sent to be validated is a real one, and a server
    # (or a gateway that drops ?validate_only=true) may apply it. Its intent line keeps it.
    journal = _open_journal(args.journal)
    try:
        async with client:
            api = client.tunnels.ipsec.psk.with_reply
            if journal is not None:
                try:
                    journal.append(
                        Intent(account_id=account, tunnel_id=tunnel, method="set", psk=psk)
                    )
                    await journal.sync()
                except JournalError as exc:
                    raise UsageError(f"{exc}; nothing was sent") from None
            try:
                reply = await _interruptible_set(console, api.set, account, tunnel, psk, args)
                applied = reply.value.applied.get(tunnel)
                if applied is None:
                    reason = reply.value.unapplied.get(tunnel, "absent from Cloudflare's answer")
                    raise NotAppliedError(reason)
            except MagicWANError as exc:
                if journal is not None:
                    with contextlib.suppress(JournalError):
                        journal.append(failure(account, tunnel, exc))
                return _single_failure(console, args, tunnel, exc)
            result = PSKGenerateResult(
                ipsec_tunnel_id=tunnel,
                psk=applied.psk,
                psk_metadata=applied.psk_metadata,
                ipsec_id=applied.ipsec_id,
            )
            # "Applied" with another PSK than the one sent (validate-only or not): Cloudflare's
            # word is what the tunnel holds. Journalled (doubtful: a rotate --resume reads
            # it back), and the command fails.
            mismatch = applied.psk != psk
            if args.validate_only and not mismatch:
                # The PSK sent stays with the operator (journal, --show-psk), as the
                # library's Validated outcome keeps it: in case the server applied it.
                validated = Validated(
                    tunnel_id=tunnel, result=attrs.evolve(result, psk=psk), attempts=reply.attempts
                )
                return _single_validated(console, args, validated, sent=True)
            unrecorded: JournalError | None = None
            if journal is None:  # validate-only without a journal: nowhere to keep it
                unrecorded = JournalError("no journal was given (--journal FILE)")
            if journal is not None:
                event = rotated(
                    account, result, attempts=reply.attempts, uncertain=mismatch, method="set"
                )
                try:
                    journal.append(event)
                    if mismatch:
                        journal.append(failure(account, tunnel, _other_psk()))
                    await journal.sync()
                except JournalError as exc:
                    unrecorded = exc
    finally:
        if journal is not None:
            with contextlib.suppress(JournalError):
                await journal.aclose()
    if unrecorded is not None:
        # The intent line holds the PSK sent: the tunnel's only if Cloudflare applied it.
        return _single_unrecorded(
            console, args, tunnel, result, unrecorded, "set", in_journal_intent=not mismatch
        )
    if mismatch:
        return _single_failure(console, args, tunnel, _other_psk())
    outcome = RotationSuccess(
        tunnel_id=tunnel, state=OutcomeState.ROTATED, result=result, attempts=reply.attempts
    )
    return _single_success(console, args, outcome, "set")


def _other_psk() -> UnexpectedResponseError:
    return UnexpectedResponseError(
        "Cloudflare applied a PSK other than the one sent: the one it says the tunnel holds "
        "is in the journal ('magicwan journal export')"
    )


async def _interruptible_set(
    console: Console, send: Any, account: str, tunnel: str, psk: str, args: argparse.Namespace
) -> Any:
    try:
        return await send(account, {tunnel: psk}, args.validate_only)
    except asyncio.CancelledError:
        if args.journal is not None:
            console.error(
                f"interrupted: tunnel {tunnel} may now hold the PSK of the journal's intent "
                "line ('magicwan journal export' shows it as pending_psk)"
            )
        raise


# -- psk rotate ----------------------------------------------------------------------------------


def _check_rotate_options(args: argparse.Namespace) -> None:
    if not (args.tunnels or args.from_file or args.all or args.name):
        hint = None
        if args.account is not None:
            hint = (
                f"{args.account} was taken as ACCOUNT: the first positional argument is "
                "always the account; give it before the tunnel ids"
            )
        raise UsageError(
            "which tunnels? give TUNNEL ids, --all, --name GLOB or --from-file FILE",
            hints=[hint],
        )
    if args.all and args.name:
        raise UsageError("--all and --name both select tunnels: give one (--exclude narrows)")
    checking = args.validate_only or args.dry_run
    if args.validate_only and args.dry_run:
        raise UsageError("--dry-run sends nothing; --validate-only sends every request: pick one")
    if args.journal is None and args.journal_dir is None and not checking:
        raise UsageError(
            "a journal is required: --journal FILE or --journal-dir DIR. It is where every "
            "new PSK is recorded (0600), and what lets a rerun resume"
        )
    if args.resume and args.journal is None:
        raise UsageError(
            "--resume continues the run recorded in one journal: give it as --journal FILE "
            "(the summary of that run names it)"
        )
    if args.batch_size is not None and args.method != "set":
        raise UsageError("--batch-size applies to --method set")
    delivering = args.deliver_exec is not None or args.deliver_strongswan is not None
    if args.reauth and args.deliver_strongswan is None:
        raise UsageError("--reauth applies to --deliver-strongswan")
    if not delivering and (args.deliver_retries is not None or args.deliver_timeout is not None):
        raise UsageError("--deliver-retries and --deliver-timeout need a --deliver-... option")
    if delivering and args.validate_only:
        raise UsageError("--validate-only changes nothing, so it delivers nothing")


def _deliverer(args: argparse.Namespace) -> Deliverer | None:
    timeout = _deliver_timeout(args)
    if args.deliver_exec is not None:
        try:
            argv = shlex.split(args.deliver_exec)
        except ValueError as exc:
            raise UsageError(f"--deliver-exec: {exc}") from None
        if not argv:
            raise UsageError("--deliver-exec needs a program")
        return Command(argv, timeout=timeout)
    if args.deliver_strongswan is not None:
        try:
            return StrongSwan(args.deliver_strongswan, reauth=args.reauth, timeout=timeout)
        except ImportError as exc:
            raise UsageError(str(exc)) from None
    return None


def _deliver_timeout(args: argparse.Namespace) -> float:
    timeout: float = args.deliver_timeout
    return timeout if timeout is not None else DEFAULT_DELIVER_TIMEOUT


def _select(
    args: argparse.Namespace, account: str, found: list[IPsecTunnel], explicit: list[str]
) -> list[IPsecTunnel]:
    """The tunnels the options select, in the order given (ids) or listed (the rest)."""
    by_id = {tunnel.id.lower(): tunnel for tunnel in found}
    unknown = [t for t in dict.fromkeys(explicit) if t.lower() not in by_id]
    if unknown:
        shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise UsageError(
            f"not IPsec tunnels of account {account}: {shown}",
            hints=["'magicwan tunnels list' shows the account's tunnels"],
        )
    chosen: dict[str, IPsecTunnel] = {t.lower(): by_id[t.lower()] for t in explicit}
    for tunnel in found:
        name = tunnel.name or ""
        if args.all or any(fnmatch.fnmatchcase(name, glob) for glob in args.name):
            chosen.setdefault(tunnel.id.lower(), tunnel)
    if args.exclude:
        chosen = {
            key: tunnel
            for key, tunnel in chosen.items()
            if not any(
                fnmatch.fnmatchcase(tunnel.name or "", glob) or fnmatch.fnmatchcase(tunnel.id, glob)
                for glob in args.exclude
            )
        }
    return list(chosen.values())


def _already_rotated(journal: str, account: str, selected: list[IPsecTunnel]) -> list[IPsecTunnel]:
    try:
        records = read_journal(journal)
    except JournalError as exc:
        raise UsageError(str(exc)) from None
    key = account.lower()
    done = []
    for tunnel in selected:
        record = records.get((key, tunnel.id.lower()))
        if record is not None and record.rotated:
            done.append(tunnel)
    return done


def _refuse_reuse(journal: str, done: int, selected: int) -> None:
    if done == selected:
        what = (
            f"the journal {journal} already records a new PSK for every one of the {selected} "
            "selected tunnels: this run would rotate nothing"
        )
    else:
        what = (
            f"the journal {journal} already records new PSKs for {done} of the {selected} "
            "selected tunnels: they would be skipped, not rotated"
        )
    raise UsageError(
        what,
        hints=[
            "to finish the run that journal records, add --resume",
            "to rotate again, use a new journal; --journal-dir DIR makes a fresh one per run",
        ],
    )


async def _rotate(args: argparse.Namespace, console: Console) -> int:
    account = account_id(args)
    _check_rotate_options(args)
    explicit = [tunnel_id(t) for t in args.tunnels]
    for source in args.from_file:
        explicit += read_ids(source, args.stdin)
    deliver = _deliverer(args)
    client = make_client(args)
    journal: str | None = args.journal
    writing = not (args.validate_only or args.dry_run)
    # --validate-only --method set sends real PSKs (made here): a server that applies them
    # anyway makes them the tunnels', so a journal given gets their intent lines.
    keeping = args.validate_only and args.method == "set"
    if not keeping and args.validate_only:
        journal = None
    if writing or (keeping and (journal is not None or args.journal_dir is not None)):
        if journal is None:
            journal = fresh_journal(args.journal_dir)
        await check_journal(journal)  # locked, not a journal: refused before anything is sent
    async with client:
        found = await ipsec_tunnels(client, account)
        selected = _select(args, account, found, explicit)
        if not selected:
            if args.all and not found:
                console.say(f"account {account} has no IPsec tunnels: nothing to rotate")
                return ExitStatus.OK
            raise UsageError(
                f"no tunnel selected: the options match none of the account's {len(found)} "
                "IPsec tunnels",
                hints=["'magicwan tunnels list' shows names and ids"],
            )
        done: list[IPsecTunnel] = []
        if journal is not None and not args.validate_only:
            done = _already_rotated(journal, account, selected)
            if done and not args.resume:
                _refuse_reuse(journal, len(done), len(selected))
            if args.resume and not done and writing:
                console.say(
                    f"nothing to resume: {journal} records none of the selected tunnels; "
                    "rotating them all"
                )
        if args.dry_run:
            return _dry_run(console, args, selected, done)
        try:
            rotation = client.tunnels.ipsec.psk.rotate(
                account,
                selected,
                method=args.method,
                concurrency=args.concurrency,
                batch_size=args.batch_size if args.batch_size is not None else DEFAULT_BATCH_SIZE,
                validate_only=args.validate_only,
                journal=journal,
                deliver=deliver,
                deliver_retries=(
                    args.deliver_retries
                    if args.deliver_retries is not None
                    else DEFAULT_DELIVER_RETRIES
                ),
                # The deliverer bounds each try itself (and says more when it does).
                deliver_timeout=_deliver_timeout(args) + 1.0,
                halt_after=args.halt_after,
                settle_window=args.settle_window,
                drain_timeout=args.drain_timeout,
            )
        except InvalidInputError as exc:
            raise UsageError(str(exc)) from None
        settings = RunSettings(
            max_retry_after=args.max_retry_after,
            validate_only=args.validate_only,
            show_psk=args.show_psk,
            json=args.json,
            progress=args.progress,
            journal=journal,
            delivering=deliver is not None,
            sent_psks=keeping,
            resume=resume_command(args.argv, journal) if journal is not None else None,
        )
        names = {tunnel.id.lower(): tunnel.name for tunnel in selected}
        return await run_rotation(console, rotation, names=names, settings=settings)


def _dry_run(
    console: Console,
    args: argparse.Namespace,
    selected: list[IPsecTunnel],
    done: list[IPsecTunnel],
) -> int:
    skipped = {tunnel.id.lower() for tunnel in done} if args.resume else set()
    for tunnel in selected:
        skip = tunnel.id.lower() in skipped
        if args.json:
            console.json(
                {
                    "event": "tunnel",
                    "tunnel_id": tunnel.id,
                    "name": tunnel.name,
                    "state": "would_skip" if skip else "would_rotate",
                }
            )
        else:
            note = "  (skipped: already rotated in the journal)" if skip else ""
            console.data(f"{tunnel.id}  {tunnel.name or '-'}{note}")
    rotating = len(selected) - len(skipped)
    where = f"; {len(skipped)} already in the journal would be skipped" if skipped else ""
    if args.journal_dir is not None:
        where += f"; a new journal would be made in {args.journal_dir}"
    console.say(
        f"dry run: {rotating} tunnel(s) would be rotated{where}. Only the tunnel list was "
        "requested; nothing changed."
    )
    if args.json:
        console.json(
            {
                "event": "summary",
                "dry_run": True,
                "would_rotate": rotating,
                "would_skip": len(skipped),
            }
        )
    return ExitStatus.OK
