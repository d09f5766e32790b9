"""``psk generate`` and ``psk set``: a one-tunnel run of the rotation engine, reported.

The engine does everything (the intent, the request, the settle window and read-back,
the journal's fsyncs); this module only says what came of the one outcome. Whatever stops
the run (Ctrl-C, a crash, a closed stdout), the outcome's PSK reaches stdout when asked
and is named on stderr, never silently nowhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

from magicwan.cli.common import UsageError, make_client
from magicwan.cli.console import Console, OutputClosed
from magicwan.cli.report import describe, hint, is_access_error, outcome_json, stamp_text
from magicwan.cli.status import ExitStatus
from magicwan.errors import InvalidInputError
from magicwan.journal import JournalError, read_journal
from magicwan.rotation import (
    Outcome,
    OutcomeState,
    Rotation,
    RotationFailure,
    RotationOptions,
    RotationSuccess,
    Validated,
)

__all__ = ["run_single"]

Made = Literal["generated", "set"]


async def run_single(
    console: Console,
    args: argparse.Namespace,
    *,
    account: str,
    tunnel: str,
    options: RotationOptions,
    psks: Mapping[str, str] | None = None,
) -> int:
    """Run the engine for ``tunnel`` and report its one outcome; the exit status."""
    made: Made = "set" if options.method == "set" else "generated"
    client = make_client(args)
    async with client:
        try:
            rotation = client.tunnels.ipsec.psk.rotate(account, [tunnel], options, psks=psks)
        except InvalidInputError as exc:
            raise UsageError(str(exc)) from None
        outcomes: list[Outcome] = []
        opened = False
        try:
            async with rotation:
                opened = True
                async with _saying_waits(console, rotation, tunnel):
                    async for outcome in rotation:
                        outcomes.append(outcome)
        except JournalError as exc:
            if not opened:  # locked, not a journal: refused before anything was sent
                raise UsageError(str(exc)) from None
        except BaseException:
            # Ctrl-C, SIGTERM, a crash (a lazy import failing for lack of descriptors):
            # the outcome, with its PSK, is handed over before anything else is said.
            _interrupted(console, args, made, [*outcomes, *rotation.unclaimed])
            raise
        outcomes += rotation.unclaimed
    if not outcomes:  # pragma: no cover - the engine gives every tunnel an outcome
        raise UsageError(f"tunnel {tunnel}: no outcome")
    return _report(console, args, outcomes[0], made)


@contextlib.asynccontextmanager
async def _saying_waits(
    console: Console, rotation: Rotation[Any], tunnel: str
) -> AsyncIterator[None]:
    """Say at once when the run waits for a read-back: a settle window can be minutes."""

    async def watch() -> None:
        while True:
            waiting = rotation.waiting
            if waiting:
                console.say(
                    f"tunnel {tunnel}: a retry left doubt (an earlier request's answer was "
                    "lost, and it may still store a PSK behind the one received): reading the "
                    f"tunnel back in {max(waiting.values()):.3g}s (--settle-window)"
                )
                return
            await asyncio.sleep(_WATCH_EVERY)

    watcher = asyncio.ensure_future(watch())
    try:
        yield
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


#: How often (seconds) a one-tunnel run looks whether it waits for a read-back.
_WATCH_EVERY = 0.05


def _report(console: Console, args: argparse.Namespace, outcome: Outcome, made: Made) -> int:
    if isinstance(outcome, Validated):
        return _validated(console, args, outcome, sent=made == "set")
    if isinstance(outcome, RotationSuccess):
        _read_back_notes(console, args, outcome)
        return _success(console, args, outcome, made)
    assert isinstance(outcome, RotationFailure)
    if outcome.state is OutcomeState.NOT_ATTEMPTED:
        raise UsageError(f"{outcome.error}; nothing was sent")
    if args.validate_only and made == "generated" and outcome.psk is not None:
        return _validate_only_generated(console, args, outcome)
    if outcome.state is OutcomeState.UNRECORDED:
        return _unrecorded(console, args, outcome, made)
    if outcome.psk is not None and args.journal is None and outcome.result is not None:
        # A PSK the tunnel may hold, and no journal to keep it: stdout is its only home.
        console.error(f"tunnel {outcome.tunnel_id}: {describe(outcome.error)}")
        why = RotationFailure(
            tunnel_id=outcome.tunnel_id,
            state=OutcomeState.UNRECORDED,
            error=JournalError("no journal was given"),
            result=outcome.result,
        )
        return _unrecorded(console, args, why, made)
    return _failure(console, args, outcome)


def _read_back_notes(console: Console, args: argparse.Namespace, outcome: Outcome) -> None:
    tunnel = outcome.tunnel_id
    if outcome.verified:
        console.say(
            f"tunnel {tunnel}: read back after the retry's doubt: the edge holds the PSK "
            "received (verified). A store later than the settle window would go unseen: "
            "--settle-window waits longer, and 'psk set' cannot be superseded by one."
        )
    elif outcome.unverified is not None:
        console.warn(
            f"tunnel {tunnel}: a retry left doubt and the read-back did not settle it "
            f"({outcome.unverified}): the PSK received may have been superseded by a late "
            f"store; {_read_back_advice(args.journal is not None, ' again')}"
        )


def _read_back_advice(journalled: bool, again: str = "") -> str:
    """What the operator does about a PSK a read-back did not settle."""
    if not journalled:
        return "check the tunnel before relying on it"
    return (
        "'magicwan psk rotate ACCOUNT TUNNEL --journal FILE --resume' with this journal "
        f"reads it back{again}"
    )


def _show(console: Console, args: argparse.Namespace, outcome: Outcome, *, show: bool) -> None:
    """The outcome on stdout: a JSON line, or the PSK alone when asked."""
    if args.json:
        console.json(outcome_json(outcome, name=None, show_psk=show))
    elif show and outcome.psk is not None:
        console.data(outcome.psk)


def _interrupted(
    console: Console, args: argparse.Namespace, made: Made, outcomes: list[Outcome]
) -> None:
    """The run was stopped: its PSK must still reach its owner (stdout may be its only
    record), and stderr says where it is."""
    for outcome in outcomes:
        with contextlib.suppress(OutputClosed):
            _show(console, args, outcome, show=args.show_psk)
        psk = outcome.psk
        if psk is None or outcome.state is OutcomeState.VALIDATED:
            continue
        where = "on stdout" if args.show_psk else "not shown (no --show-psk)"
        if args.journal is not None and outcome.state is not OutcomeState.UNRECORDED:
            where = f"in the journal {args.journal}" + (" and on stdout" if args.show_psk else "")
        console.error(
            f"interrupted: tunnel {outcome.tunnel_id} may now hold a new PSK ({made} at "
            f"{stamp_text(outcome.result) or '-'}, {where}): "
            + _read_back_advice(args.journal is not None)
        )
    if not any(o.psk is not None for o in outcomes):
        console.error(
            "interrupted: the tunnel may now hold a new PSK, in the journal only if its line "
            "got there ('magicwan journal show'); run the command again before relying on "
            "the tunnel"
        )


def _success(console: Console, args: argparse.Namespace, outcome: Outcome, made: Made) -> int:
    try:
        _show(console, args, outcome, show=args.show_psk)
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
        f"tunnel {outcome.tunnel_id}: new PSK {made} at {stamp_text(outcome.result) or '-'}; "
        f"{where}{shown}"
    )
    return ExitStatus.OK


def _validated(
    console: Console, args: argparse.Namespace, outcome: Validated, *, sent: bool
) -> int:
    """Validated. ``sent``: the request carried a PSK made here (``psk set``), which is
    kept (journal, ``--show-psk``) in case the server applied it anyway."""
    show = sent and args.show_psk
    try:
        _show(console, args, outcome, show=show)
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
        console.say(_sent_kept(args))
    return ExitStatus.OK


def _sent_kept(args: argparse.Namespace) -> str:
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
        return (
            f"the PSK sent is kept {kept}, in case the server applied it anyway (as a "
            "gateway that drops ?validate_only=true would let it)"
        )
    return (
        "the PSK sent is kept nowhere (no --journal, no --show-psk): should the server "
        "apply it anyway (a gateway that drops ?validate_only=true), the tunnel would hold "
        "a PSK nobody has"
    )


def _failure(console: Console, args: argparse.Namespace, outcome: RotationFailure) -> int:
    exc = outcome.error
    status = ExitStatus.ACCESS if is_access_error(exc) else ExitStatus.FAILED
    with contextlib.suppress(OutputClosed):  # the failure's own status, whoever reads
        _show(console, args, outcome, show=args.show_psk)
    console.error(f"tunnel {outcome.tunnel_id}: {describe(exc)}")
    advice = hint(exc)
    if advice:
        console.tell(f"hint: {advice}")
    if outcome.psk is not None and args.journal is not None:
        console.tell(
            f"the tunnel may hold the PSK this outcome carries; it is in the journal "
            f"{args.journal} ('magicwan journal export' shows it)"
        )
    if outcome.outcome_unknown and not args.validate_only:
        console.tell(
            "the outcome is unknown: Cloudflare may hold a new PSK that nobody received. "
            "Run the command again before relying on this tunnel."
        )
    return status


def _unrecorded(
    console: Console, args: argparse.Namespace, outcome: RotationFailure, made: Made
) -> int:
    """A PSK is live at Cloudflare but the journal could not record it: say so, name the
    tunnel, and still honour --show-psk (a PSK is never printed unasked)."""
    with contextlib.suppress(OutputClosed):  # stderr below still names it
        _show(console, args, outcome, show=args.show_psk)
    console.error(str(outcome.error))
    tunnel = outcome.tunnel_id
    console.error(
        f"tunnel {tunnel} holds a NEW PSK ({made} at {stamp_text(outcome.result) or '-'}) "
        "that is NOT in "
        + (f"the journal {args.journal}" if args.journal is not None else "any journal")
        + "; its old PSK no longer works."
    )
    if args.show_psk:
        console.tell("The PSK is on stdout: store it now.")
    elif made == "set" and _in_intent_line(args.journal, outcome):
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


def _in_intent_line(journal: str | None, outcome: Outcome) -> bool:
    """The outcome's PSK is the one the journal's intent line holds (the PSK sent, which
    Cloudflare applied), not another one Cloudflare said it applied."""
    if journal is None or outcome.psk is None:
        return False
    try:
        records = read_journal(journal)
    except JournalError:
        return False
    return any(
        record.tunnel_id.lower() == outcome.tunnel_id.lower() and record.pending_psk == outcome.psk
        for record in records.values()
    )


def _validate_only_generated(
    console: Console, args: argparse.Namespace, outcome: RotationFailure
) -> int:
    """Asked to validate only, the server generated a PSK anyway: the tunnel's old PSK no
    longer works. Exit 4, as ``psk rotate --validate-only`` does; the PSK is journalled
    with --journal and shown only with --show-psk."""
    journalled = args.journal is not None and not isinstance(outcome.error, JournalError)
    with contextlib.suppress(OutputClosed):
        _show(console, args, outcome, show=args.show_psk)
    if not journalled and args.journal is not None:
        console.error(str(outcome.error))
    console.error(
        f"tunnel {outcome.tunnel_id}: asked to validate only, the server generated a NEW PSK "
        f"anyway (a gateway that drops ?validate_only=true?) at "
        f"{stamp_text(outcome.result) or '-'}; its old PSK no longer works."
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
