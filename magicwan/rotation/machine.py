"""Pure: one tunnel's run as a state machine, ``step(rules, run, event) -> (run, effects)``.

No I/O, no clock, no randomness: the driver (:mod:`magicwan.rotation.driver`) performs the
effects and feeds what came of them back as events. Every state says which PSK the tunnel
may hold at Cloudflare's edge and where that PSK is recorded (:attr:`TunnelRun.may_hold`),
and a :class:`Cut` from any state hands that PSK over in an outcome. So a run stopped at
any point, by the caller, a timeout, a crash of the driver or a broken journal, loses no
PSK: there is no other place a PSK can be.

The stages, and what ``may_hold`` is in each:

==============  ==============================================================
``PENDING``     nothing sent in this run: the journal's PSK from a run before, or None
``INTENT``      its intent line is being made durable; nothing sent yet (as PENDING)
``READY``       intent durable, the request not sent yet (as PENDING)
``REQUESTING``  a request is in flight: generate, the journal's PSK (and maybe a new one
                nobody has: ``outcome_unknown``); set, the PSK sent (durable in its intent)
``RECORDING``   Cloudflare answered a PSK: held, its line being written and fsynced
``UNSETTLED``   the answered PSK, doubtful: read back after the settle window (durable,
                or unrecorded after a journal failure); kept only on proof, else begun again
``DELIVERING``  the PSK is durable and on its way to the tunnel's other end
``DONE``        the outcome, carrying ``may_hold``, was handed over
==============  ==============================================================
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Literal

import attrs

from magicwan.errors import (
    DeliveryError,
    MagicWANError,
    RequestAbandonedError,
    UnexpectedResponseError,
)
from magicwan.journal import (
    Delivered as DeliveredLine,
)
from magicwan.journal import (
    Intent,
    JournalError,
    JournalEvent,
    JournalRecord,
    Verified,
    failure,
    rotated,
)
from magicwan.journal import (
    Undelivered as UndeliveredLine,
)
from magicwan.models.psk import PSKGenerateResult, PSKMetadata
from magicwan.models.tunnels import IPsecTunnel
from magicwan.rotation.outcomes import (
    Outcome,
    OutcomeState,
    RotationFailure,
    RotationSuccess,
    Validated,
)
from magicwan.rotation.stamps import read_back_verdict, undecided_reason

__all__ = [
    "MAX_VERIFY_ROUNDS",
    "Append",
    "Begin",
    "Cut",
    "Deliver",
    "Delivered",
    "Effect",
    "Emit",
    "Event",
    "Failed",
    "Held",
    "Note",
    "OtherPsk",
    "ReadBack",
    "ReadBackAt",
    "ReadBackFailed",
    "Request",
    "Requeue",
    "Rules",
    "Sent",
    "Source",
    "Stage",
    "Sync",
    "SyncFailed",
    "Synced",
    "TunnelRun",
    "Undelivered",
    "Unsent",
    "Where",
    "WriteFailed",
    "Written",
    "start",
    "step",
]

#: How many times a rotation regenerates a PSK that read-back shows was superseded.
MAX_VERIFY_ROUNDS = 3


class Stage(enum.Enum):
    """Where one tunnel's run is (see the module docstring)."""

    PENDING = "pending"
    INTENT = "intent"
    READY = "ready"
    REQUESTING = "requesting"
    RECORDING = "recording"
    UNSETTLED = "unsettled"
    DELIVERING = "delivering"
    DONE = "done"


#: The stages of a tunnel whose new PSK may be live but not yet delivered.
EXPOSED = frozenset(
    {
        Stage.INTENT,
        Stage.READY,
        Stage.REQUESTING,
        Stage.RECORDING,
        Stage.UNSETTLED,
        Stage.DELIVERING,
    }
)


class Source(enum.Enum):
    """Where a PSK the tunnel may hold came from."""

    JOURNAL = "journal"  # a run before this one recorded it
    SENT = "sent"  # a set request carried it (made here, journalled before sending)
    ANSWERED = "answered"  # Cloudflare's answer carried it


class Where(enum.Enum):
    """Where that PSK is recorded, besides this run's state."""

    DURABLE = "durable"  # fsynced in the journal
    WRITTEN = "written"  # appended to the journal, not yet fsynced
    NOWHERE = "nowhere"  # in no journal (none given, or it failed): only the outcome keeps it


@attrs.frozen(kw_only=True)
class Held:
    """A PSK the tunnel may hold at the edge, where it came from and where it is kept."""

    result: PSKGenerateResult
    source: Source
    where: Where

    @property
    def psk(self) -> str | None:
        return self.result.psk


@attrs.frozen(kw_only=True)
class Rules:
    """What every tunnel's run of one rotation shares."""

    account_id: str
    method: Literal["generate", "set"]
    validate_only: bool
    journalled: bool
    delivering: bool
    settle_window: float


@attrs.frozen(kw_only=True)
class TunnelRun:
    """One tunnel's run: its stage and the one PSK it may hold (``may_hold``)."""

    tunnel_id: str
    tunnel: IPsecTunnel | None = None
    stage: Stage = Stage.PENDING
    #: The PSK the tunnel may hold at the edge, and where it is recorded; what any outcome
    #: of this run carries.
    may_hold: Held | None = None
    #: What the tunnel held before this run's request: restored when Cloudflare refuses it.
    before: Held | None = None
    #: ``set``: the PSK this run's request carries (or will).
    sending: str | None = attrs.field(default=None, repr=False)
    #: A run before this one left a request unanswered: it may still store a PSK.
    doubt_from_before: bool = False
    #: Until this time (the driver's clock) that request may still store one.
    doubt_until: float | None = None
    #: When the PSK answered must be read back (a retry or an earlier request left doubt).
    read_back_due: float | None = None
    #: The journal already records that ``may_hold`` was delivered.
    delivered_before: bool = False
    #: The journal already records this tunnel's new PSK: beginning hands it on.
    resumed: bool = False
    attempts: int = 0
    rounds: int = 0
    verified: bool = False
    unverified: str | None = None
    #: Set when the answer is a failure that must be recorded before it is handed over,
    #: and the state its outcome will have.
    error: MagicWANError | None = None
    error_state: OutcomeState = OutcomeState.FAILED
    delivered: bool | None = None
    delivery_error: DeliveryError | None = None
    delivery_cause: BaseException | None = None


# -- events: what happened -----------------------------------------------------------------


@attrs.frozen
class Begin:
    """Start the tunnel's request; ``psk`` is the one a ``set`` sends."""

    now: float
    psk: str | None = attrs.field(default=None, repr=False)


@attrs.frozen
class Written:
    """The line asked for was appended (not yet durable)."""


@attrs.frozen
class WriteFailed:
    error: JournalError


@attrs.frozen
class Synced:
    """Every line written for the tunnel so far is durable."""


@attrs.frozen
class SyncFailed:
    error: JournalError


@attrs.frozen
class Sent:
    """The request is leaving (for ``set``: the batch carrying the tunnel's PSK)."""


@attrs.frozen
class Unsent:
    """The request was refused whole before anything was applied (a batch too large)."""


@attrs.frozen
class Answered:
    """Cloudflare answered the PSK the tunnel now holds (generate, or set applied)."""

    result: PSKGenerateResult
    attempts: int
    uncertain: bool
    now: float


@attrs.frozen
class OtherPsk:
    """A set "applied", with another PSK than the one sent: Cloudflare's word wins."""

    result: PSKGenerateResult
    attempts: int


@attrs.frozen
class Failed:
    """The request failed. ``unknown``: it may have changed the tunnel's PSK all the same."""

    error: MagicWANError
    unknown: bool
    attempts: int = 0


@attrs.frozen
class ReadBack:
    edge: IPsecTunnel


@attrs.frozen
class ReadBackFailed:
    """No read-back: it failed, or (``stopped``) the rotation stopped before it."""

    reason: str
    stopped: bool = False


@attrs.frozen
class Delivered:
    tries: int


@attrs.frozen
class Undelivered:
    error: DeliveryError
    tries: int
    cause: BaseException | None = None


@attrs.frozen
class Cut:
    """The run is stopped (left early, halted, its journal failed, cancelled, a crash).

    ``reason`` is the error a tunnel never started gets; ``durable``: every line written
    so far was made durable before the cut (the driver's last sync); ``caller_left``: the
    caller stopped reading, so a tunnel never started that holds nothing gets no outcome.
    """

    reason: MagicWANError
    durable: bool = False
    caller_left: bool = False


Event = (
    Begin
    | Written
    | WriteFailed
    | Synced
    | SyncFailed
    | Sent
    | Unsent
    | Answered
    | OtherPsk
    | Failed
    | ReadBack
    | ReadBackFailed
    | Delivered
    | Undelivered
    | Cut
)


# -- effects: what the driver must do --------------------------------------------------------


@attrs.frozen
class Append:
    """Append a line that a PSK depends on; answer :class:`Written` or :class:`WriteFailed`."""

    line: JournalEvent


@attrs.frozen
class Note:
    """Append a line no PSK depends on; its failure stops new work, not this tunnel."""

    line: JournalEvent


@attrs.frozen
class Sync:
    """Make every line written so far durable; answer :class:`Synced` or :class:`SyncFailed`."""


@attrs.frozen
class Request:
    """Send the tunnel's request, after :class:`Sent` (``generate``; a ``set`` goes with
    its batch)."""


@attrs.frozen
class ReadBackAt:
    """Read the tunnel back once the driver's clock reaches ``due``."""

    due: float


@attrs.frozen
class Requeue:
    """Start the tunnel again: the read-back did not prove the PSK answered (``why``)."""

    why: str = ""


@attrs.frozen
class Deliver:
    psk: str = attrs.field(repr=False)
    result: PSKGenerateResult


@attrs.frozen
class Emit:
    """Hand this outcome over: the run is done."""

    outcome: Outcome


Effect = Append | Note | Sync | Request | ReadBackAt | Requeue | Deliver | Emit
Step = tuple[TunnelRun, list[Effect]]


# -- the start of a run, from what the journal says ---------------------------------------------


def _from_record(record: JournalRecord, psk: str | None) -> PSKGenerateResult:
    return PSKGenerateResult(
        ipsec_tunnel_id=record.tunnel_id,
        psk=psk,
        psk_metadata=PSKMetadata(last_generated_on=record.last_generated_on),
        ipsec_id=record.ipsec_id,
    )


def start(
    rules: Rules,
    run: TunnelRun,
    record: JournalRecord | None,
    *,
    now: float,
    since_last: float,
    again: bool = False,
) -> TunnelRun:
    """The run as the journal leaves it (``record``, None for a tunnel it does not know).

    ``since_last`` is how many seconds ago the record's last line was written. A PSK the
    journal records is what the run may hold from the start; a rotated one is handed on
    when the run begins (read back first if it was doubtful); a request a run before left
    unanswered is doubt until the settle window has passed since its last word. With
    ``again`` a rotated tunnel is rotated once more (its PSK is what it holds before).
    """
    if record is None or rules.validate_only:
        return run
    left = rules.settle_window - min(max(since_last, 0.0), rules.settle_window)
    held = None
    if record.psk is not None:
        result = _from_record(record, record.psk)
        held = Held(result=result, source=Source.JOURNAL, where=Where.DURABLE)
    if record.rotated and not again:
        return attrs.evolve(
            run,
            may_hold=held,
            delivered_before=record.delivered,
            resumed=True,
            read_back_due=now + left if record.uncertain else None,
        )
    if record.left_open and record.pending_psk is not None:
        # A set a run before sent and never saw answered: the tunnel may hold its PSK.
        sent = _from_record(record, record.pending_psk)
        held = Held(result=sent, source=Source.SENT, where=Where.DURABLE)
    # A request left open may have been retried inside the client long after its intent
    # line (its last word): its doubt lasts a whole window from now.
    return attrs.evolve(
        run,
        may_hold=held,
        sending=record.pending_psk if record.in_flight else None,
        doubt_from_before=record.left_open,
        doubt_until=now + rules.settle_window if record.left_open else None,
    )


# -- the transitions -----------------------------------------------------------------------------


def step(rules: Rules, run: TunnelRun, event: Event) -> Step:
    """The next state of ``run`` after ``event``, and the effects to perform."""
    if isinstance(event, Cut):
        return _cut(rules, run, event)
    handler = _HANDLERS.get((run.stage, type(event)))
    if handler is None:
        raise AssertionError(f"tunnel {run.tunnel_id}: {type(event).__name__} in {run.stage}")
    return handler(rules, run, event)


def _begin(rules: Rules, run: TunnelRun, event: Begin) -> Step:
    if run.resumed:
        # The journal already holds this tunnel's new PSK: hand it on (doubtful: read
        # it back first). Nothing is generated.
        run = attrs.evolve(run, resumed=False)
        if run.read_back_due is not None:
            return attrs.evolve(run, stage=Stage.UNSETTLED), [ReadBackAt(run.read_back_due)]
        return _hand_over(rules, run)
    run = attrs.evolve(run, before=run.may_hold, error=None, read_back_due=None)
    if rules.method == "set":
        assert event.psk is not None
        run = attrs.evolve(run, sending=event.psk)
        if not rules.journalled:
            return attrs.evolve(run, stage=Stage.READY), []
        line = Intent(
            account_id=rules.account_id, tunnel_id=run.tunnel_id, method="set", psk=event.psk
        )
        return attrs.evolve(run, stage=Stage.INTENT), [Append(line)]
    if not rules.journalled or rules.validate_only:
        return attrs.evolve(run, stage=Stage.READY), [Request()]
    line = Intent(account_id=rules.account_id, tunnel_id=run.tunnel_id, method="generate")
    return attrs.evolve(run, stage=Stage.INTENT), [Append(line)]


def _intent_written(rules: Rules, run: TunnelRun, event: Written) -> Step:
    return run, [Sync()]


def _intent_synced(rules: Rules, run: TunnelRun, event: Synced) -> Step:
    # Ready to send; a generate sends on its own, a set goes with its batch.
    return attrs.evolve(run, stage=Stage.READY), [] if rules.method == "set" else [Request()]


def _not_sent(rules: Rules, run: TunnelRun, event: WriteFailed | SyncFailed) -> Step:
    # The intent could not be made durable: nothing was sent. A tunnel begun again after
    # its read-back saw a newer PSK (or left open by a run before) still holds that PSK,
    # which nobody has: the outcome says so.
    unknown = run.doubt_from_before or run.rounds > 0
    outcome = _failure(run, OutcomeState.NOT_ATTEMPTED, event.error, run.before, unknown=unknown)
    return _done(run, outcome)


def _sent(rules: Rules, run: TunnelRun, event: Sent) -> Step:
    if rules.method == "generate":
        return attrs.evolve(run, stage=Stage.REQUESTING), []
    assert run.sending is not None
    where = Where.DURABLE if rules.journalled else Where.NOWHERE
    sent = PSKGenerateResult(ipsec_tunnel_id=run.tunnel_id, psk=run.sending)
    held = Held(result=sent, source=Source.SENT, where=where)
    return attrs.evolve(run, stage=Stage.REQUESTING, may_hold=held), []


def _unsent(rules: Rules, run: TunnelRun, event: Unsent) -> Step:
    return attrs.evolve(run, stage=Stage.READY, may_hold=run.before), []


def _answered(rules: Rules, run: TunnelRun, event: Answered) -> Step:
    run = attrs.evolve(run, attempts=run.attempts + event.attempts)
    result = event.result
    if rules.validate_only:
        return _validated(rules, run, result)
    if rules.method == "set":
        result = attrs.evolve(result, psk=run.sending)
    held = Held(result=result, source=Source.ANSWERED, where=Where.NOWHERE)
    due = event.now + rules.settle_window if event.uncertain else None
    if run.doubt_until is not None and event.now < run.doubt_until and not _resent(rules, run):
        due = max(due or event.now, run.doubt_until)
    run = attrs.evolve(run, may_hold=held, read_back_due=due)
    if not rules.journalled:
        return _durable(rules, run)
    line = rotated(
        rules.account_id,
        result,
        attempts=event.attempts,
        uncertain=due is not None,
        method=rules.method,
    )
    return attrs.evolve(run, stage=Stage.RECORDING), [Append(line)]


def _resent(rules: Rules, run: TunnelRun) -> bool:
    """This set sent again the PSK a run before left unanswered: should that request
    still land, it stores the same PSK, so it leaves no doubt."""
    held = run.before
    return (
        rules.method == "set"
        and held is not None
        and held.source is Source.SENT
        and held.psk == run.sending
    )


def _validated(rules: Rules, run: TunnelRun, result: PSKGenerateResult) -> Step:
    if rules.method == "set":
        # The PSK sent to be validated stays with the caller: a server (or a gateway that
        # drops the query) that applied it anyway made it the tunnel's.
        result = attrs.evolve(result, psk=run.sending)
    elif result.psk is not None:
        # A validate_only answer never carries a PSK: the server generated one anyway. It
        # is live: recorded (a failure, carrying it) or, without a journal, unrecorded.
        held = Held(result=result, source=Source.ANSWERED, where=Where.NOWHERE)
        where = "in the journal and this outcome" if rules.journalled else "in this outcome only"
        error = UnexpectedResponseError(
            f"asked to validate only, the server generated a new PSK: it is live at "
            f"Cloudflare and {where} (outcome.psk)"
        )
        # Unrecorded as the caller sees it: it asked that nothing change.
        run = attrs.evolve(run, may_hold=held, error=error, error_state=OutcomeState.UNRECORDED)
        if not rules.journalled:
            return _done(run, _failure(run, OutcomeState.UNRECORDED, error, held))
        line = rotated(rules.account_id, result, attempts=run.attempts, uncertain=False)
        return attrs.evolve(run, stage=Stage.RECORDING), [Append(line)]
    outcome = Validated(
        tunnel_id=run.tunnel_id, result=result, tunnel=run.tunnel, attempts=run.attempts
    )
    return attrs.evolve(run, stage=Stage.DONE), [Emit(outcome)]


def _other_psk(rules: Rules, run: TunnelRun, event: OtherPsk) -> Step:
    held = Held(result=event.result, source=Source.ANSWERED, where=Where.NOWHERE)
    error = UnexpectedResponseError(
        "Cloudflare applied a PSK other than the one sent: the one it says the tunnel holds "
        "is in this outcome"
        + (
            " (and the journal, with the one sent: a rerun resends that)"
            if rules.journalled
            else ""
        )
    )
    run = attrs.evolve(run, may_hold=held, error=error, attempts=run.attempts + event.attempts)
    if not rules.journalled:
        return _done(run, _failure(run, OutcomeState.FAILED, error, held, unknown=True))
    line = rotated(
        rules.account_id, event.result, attempts=event.attempts, uncertain=True, method="set"
    )
    effects: list[Effect] = [Append(line)]
    return attrs.evolve(run, stage=Stage.RECORDING), effects


def _failed(rules: Rules, run: TunnelRun, event: Failed) -> Step:
    run = attrs.evolve(run, attempts=run.attempts + event.attempts)
    # A set whose outcome is unknown may have applied the PSK sent: carry that one.
    held = run.may_hold if rules.method == "set" and event.unknown else run.before
    unknown = event.unknown or run.doubt_from_before
    effects: list[Effect] = []
    if rules.journalled and not rules.validate_only:
        effects.append(Note(failure(rules.account_id, run.tunnel_id, event.error)))
    run = attrs.evolve(run, may_hold=held)
    outcome = _failure(run, OutcomeState.FAILED, event.error, held, unknown=unknown)
    return attrs.evolve(run, stage=Stage.DONE), [*effects, Emit(outcome)]


def _recorded_written(rules: Rules, run: TunnelRun, event: Written) -> Step:
    run = _with_held_kept_in(run, Where.WRITTEN)
    effects: list[Effect] = []
    if run.error is not None:
        effects.append(Note(failure(rules.account_id, run.tunnel_id, run.error)))
    held = run.may_hold
    if run.sending is not None and held is not None and held.psk != run.sending:
        # Cloudflare said it applied another PSK than the one sent: the tunnel may hold
        # either. The PSK sent is recorded as pending again (its intent line is behind
        # the rotated one now), so a rerun resends it and ends the doubt.
        line = Intent(
            account_id=rules.account_id, tunnel_id=run.tunnel_id, method="set", psk=run.sending
        )
        effects.append(Note(line))
    return run, [*effects, Sync()]


def _recorded_synced(rules: Rules, run: TunnelRun, event: Synced) -> Step:
    return _durable(rules, _with_held_kept_in(run, Where.DURABLE))


def _unrecorded(rules: Rules, run: TunnelRun, event: WriteFailed | SyncFailed) -> Step:
    due = run.read_back_due
    if due is not None and run.error is None:
        # Doubtful and unrecorded: a late store may still supersede the PSK in hand, so it
        # is read back after the settle window all the same (its outcome carries it
        # whatever the read-back says; a cut hands it over at once).
        run = attrs.evolve(
            run, stage=Stage.UNSETTLED, error=event.error, error_state=OutcomeState.UNRECORDED
        )
        return run, [ReadBackAt(due)]
    return _done(run, _failure(run, OutcomeState.UNRECORDED, event.error, run.may_hold))


def _durable(rules: Rules, run: TunnelRun) -> Step:
    """The PSK answered is as kept as it will be: fail, read back, or hand it on."""
    if run.error is not None:
        outcome = _failure(
            run, run.error_state, run.error, run.may_hold, unknown=_may_hold_other_than_sent(run)
        )
        return _done(run, outcome)
    if run.read_back_due is not None:
        return attrs.evolve(run, stage=Stage.UNSETTLED), [ReadBackAt(run.read_back_due)]
    return _hand_over(rules, run)


def _may_hold_other_than_sent(run: TunnelRun) -> bool:
    """The tunnel may hold the PSK sent or the other one Cloudflare answered."""
    held = run.may_hold
    return run.sending is not None and held is not None and held.psk != run.sending


def _hand_over(rules: Rules, run: TunnelRun) -> Step:
    held = run.may_hold
    assert held is not None
    assert held.psk is not None
    if rules.delivering and not (held.source is Source.JOURNAL and run.delivered_before):
        return attrs.evolve(run, stage=Stage.DELIVERING), [Deliver(held.psk, held.result)]
    delivered = True if rules.delivering else None
    return _done(attrs.evolve(run, delivered=delivered), _success(run, delivered))


def _read_back(rules: Rules, run: TunnelRun, event: ReadBack) -> Step:
    held = run.may_hold
    assert held is not None
    verdict = read_back_verdict(held.result, event.edge)
    if run.error is not None:  # unrecorded: nothing more is sent, whatever it says
        why = None if verdict == 0 else undecided_reason(held.result, event.edge)
        if verdict is not None and verdict > 0:
            why = "the edge holds a newer PSK than this one (a late store), which nobody has"
        return _unrecorded_read_back(run, verified=verdict == 0, why=why)
    if verdict == 0:
        stamp = held.result.psk_metadata.last_generated_on if held.result.psk_metadata else None
        note = Verified(
            account_id=rules.account_id, tunnel_id=run.tunnel_id, last_generated_on=stamp
        )
        run, effects = _hand_over(rules, attrs.evolve(run, verified=True))
        return run, [*_notes(rules, note), *effects]
    if run.rounds < MAX_VERIFY_ROUNDS:
        # Not proven: the settle window has passed, so a new PSK now supersedes every
        # earlier request (a late store cannot land after it), where keeping this one
        # could hand over (and deliver) a PSK the edge no longer holds.
        why = (
            "the edge holds a newer PSK than the one received"
            if verdict is not None and verdict > 0
            else undecided_reason(held.result, event.edge)
        )
        return _begin_again(run, why)
    why = (
        "the edge still holds a newer PSK than the one received"
        if verdict is not None and verdict > 0
        else undecided_reason(held.result, event.edge)
    )
    return _unproven(rules, run, why)


def _unproven(rules: Rules, run: TunnelRun, why: str) -> Step:
    """Still not proven after :data:`MAX_VERIFY_ROUNDS` regenerations: the tunnel fails,
    carrying the PSK held, its doubt said; nothing unproven is delivered."""
    held = run.may_hold
    error = UnexpectedResponseError(
        f"tunnel {run.tunnel_id}: {why} after {MAX_VERIFY_ROUNDS} regenerations (late "
        "stores, or another client rotating it?)"
    )
    notes = _notes(rules, failure(rules.account_id, run.tunnel_id, error))
    run = attrs.evolve(run, unverified=why)
    run, effects = _done(run, _failure(run, OutcomeState.FAILED, error, held, unknown=True))
    return run, [*notes, *effects]


def _begin_again(run: TunnelRun, why: str) -> Step:
    """Begin the tunnel again: a new PSK, once its turn comes."""
    run = attrs.evolve(run, stage=Stage.PENDING, rounds=run.rounds + 1, sending=None)
    return run, [Requeue(why)]


def _read_back_failed(rules: Rules, run: TunnelRun, event: ReadBackFailed) -> Step:
    if run.error is not None:
        return _unrecorded_read_back(run, verified=False, why=event.reason)
    if event.stopped:  # as a cut: handed over unverified, never delivered unproven
        return _cut_handed_over(rules, attrs.evolve(run, unverified=event.reason))
    if run.rounds < MAX_VERIFY_ROUNDS:
        return _begin_again(run, event.reason)
    return _unproven(rules, run, event.reason)


def _unrecorded_read_back(run: TunnelRun, *, verified: bool, why: str | None) -> Step:
    """An unrecorded, doubtful PSK after its read-back: handed over, with the doubt."""
    error = run.error
    assert error is not None
    run = attrs.evolve(run, verified=verified, unverified=why)
    outcome = _failure(run, run.error_state, error, run.may_hold, unknown=not verified)
    return _done(run, outcome)


def _delivered(rules: Rules, run: TunnelRun, event: Delivered) -> Step:
    # Durable before the outcome is handed over, so a rerun after a crash does not deliver
    # (and, with re-authentication, interrupt) the tunnel again.
    line = DeliveredLine(account_id=rules.account_id, tunnel_id=run.tunnel_id, attempts=event.tries)
    run = attrs.evolve(run, delivered=True)
    if not _journals_notes(rules, run):
        return _done(run, _success(run, True))
    return run, [Note(line), Sync()]


def _delivered_synced(rules: Rules, run: TunnelRun, event: Synced | SyncFailed) -> Step:
    return _done(run, _success(run, True))


def _undelivered(rules: Rules, run: TunnelRun, event: Undelivered) -> Step:
    run = attrs.evolve(run, delivered=False, delivery_error=event.error, delivery_cause=event.cause)
    notes: list[Effect] = []
    if _journals_notes(rules, run):
        line = UndeliveredLine(
            account_id=rules.account_id,
            tunnel_id=run.tunnel_id,
            error=str(event.error),
            attempts=event.tries,
        )
        notes.append(Note(line))
    run, effects = _done(run, _undelivered_outcome(run, event.error))
    return run, [*notes, *effects]


def _cut(rules: Rules, run: TunnelRun, event: Cut) -> Step:
    """Stopped: hand over whatever the tunnel may hold, from any stage."""
    stage = run.stage
    if stage is Stage.DONE:
        return run, []
    if run.resumed:  # never begun, its PSK in the journal: handed over as such
        stage = Stage.UNSETTLED if run.read_back_due is not None else Stage.DELIVERING
        run = attrs.evolve(run, resumed=False, stage=stage)
    if stage in (Stage.PENDING, Stage.INTENT, Stage.READY):
        doubt = run.doubt_from_before or run.rounds > 0  # a PSK nobody has may be live
        # A tunnel never begun, holding nothing, needs no outcome once the caller left;
        # one begun (its intent written) gets one whatever happens.
        if event.caller_left and run.may_hold is None and not doubt and stage is Stage.PENDING:
            return attrs.evolve(run, stage=Stage.DONE), []
        outcome = _failure(
            run, OutcomeState.NOT_ATTEMPTED, event.reason, run.may_hold, unknown=doubt
        )
        return _done(run, outcome)
    if stage is Stage.REQUESTING:
        stopped = RequestAbandonedError(
            "the rotation stopped while this tunnel's request was in flight",
            request_sent=True,
            retryable=False,
        )
        held = run.may_hold if rules.method == "set" else run.before
        run = attrs.evolve(run, may_hold=held)
        return _done(run, _failure(run, OutcomeState.FAILED, stopped, held, unknown=True))
    if stage is Stage.RECORDING:
        if not event.durable or run.may_hold is None or run.may_hold.where is Where.NOWHERE:
            journal_error = JournalError("the rotation stopped before this PSK's line was durable")
            return _done(run, _failure(run, OutcomeState.UNRECORDED, journal_error, run.may_hold))
        run = _with_held_kept_in(run, Where.DURABLE)
        if run.error is not None:
            return _done(run, _failure(run, run.error_state, run.error, run.may_hold))
    return _cut_handed_over(rules, run)


def _cut_handed_over(rules: Rules, run: TunnelRun) -> Step:
    """Cut once its PSK is as kept as it will be (unsettled, delivering)."""
    reason = "not read back: the rotation stopped first"
    if run.stage is Stage.UNSETTLED or (run.read_back_due is not None and not run.verified):
        run = attrs.evolve(run, unverified=run.unverified or reason)
    if run.error is not None:  # unrecorded, waiting for its read-back
        return _unrecorded_read_back(run, verified=False, why=run.unverified)
    if rules.delivering and not (run.delivered or run.delivered_before):
        error = DeliveryError(
            "not delivered: the rotation stopped first", reason="stopped", tunnel_id=run.tunnel_id
        )
        return _done(attrs.evolve(run, delivered=False), _undelivered_outcome(run, error))
    delivered = True if rules.delivering else None
    return _done(run, _success(run, delivered))


_Handler = Callable[[Rules, TunnelRun, Any], Step]
_HANDLERS: dict[tuple[Stage, type], _Handler] = {
    (Stage.PENDING, Begin): _begin,
    (Stage.INTENT, Written): _intent_written,
    (Stage.INTENT, WriteFailed): _not_sent,
    (Stage.INTENT, Synced): _intent_synced,
    (Stage.INTENT, SyncFailed): _not_sent,
    (Stage.READY, Sent): _sent,
    (Stage.REQUESTING, Unsent): _unsent,
    (Stage.REQUESTING, Answered): _answered,
    (Stage.REQUESTING, OtherPsk): _other_psk,
    (Stage.REQUESTING, Failed): _failed,
    (Stage.RECORDING, Written): _recorded_written,
    (Stage.RECORDING, WriteFailed): _unrecorded,
    (Stage.RECORDING, Synced): _recorded_synced,
    (Stage.RECORDING, SyncFailed): _unrecorded,
    (Stage.UNSETTLED, ReadBack): _read_back,
    (Stage.UNSETTLED, ReadBackFailed): _read_back_failed,
    (Stage.DELIVERING, Delivered): _delivered,
    (Stage.DELIVERING, Synced): _delivered_synced,
    (Stage.DELIVERING, SyncFailed): _delivered_synced,
    (Stage.DELIVERING, Undelivered): _undelivered,
}


# -- pieces ------------------------------------------------------------------------------------


def _with_held_kept_in(run: TunnelRun, where: Where) -> TunnelRun:
    held = run.may_hold
    assert held is not None
    return attrs.evolve(run, may_hold=attrs.evolve(held, where=where))


def _journals_notes(rules: Rules, run: TunnelRun) -> bool:
    """Notes about the PSK go to the journal only when the PSK itself is there."""
    held = run.may_hold
    return rules.journalled and held is not None and held.where is Where.DURABLE


def _notes(rules: Rules, line: JournalEvent) -> list[Effect]:
    return [Note(line)] if rules.journalled else []


def _done(run: TunnelRun, outcome: Outcome) -> Step:
    return attrs.evolve(run, stage=Stage.DONE), [Emit(outcome)]


def _outcome_fields(run: TunnelRun) -> dict[str, Any]:
    return {
        "tunnel_id": run.tunnel_id,
        "tunnel": run.tunnel,
        "attempts": run.attempts,
        "verified": run.verified,
        "unverified": run.unverified,
    }


def _success(run: TunnelRun, delivered: bool | None) -> Outcome:
    held = run.may_hold
    assert held is not None
    state = OutcomeState.SKIPPED if held.source is Source.JOURNAL else OutcomeState.ROTATED
    return RotationSuccess(
        state=state, result=held.result, delivered=delivered, **_outcome_fields(run)
    )


def _undelivered_outcome(run: TunnelRun, error: DeliveryError) -> Outcome:
    held = run.may_hold
    assert held is not None
    return RotationFailure(
        state=OutcomeState.UNDELIVERED,
        error=error,
        result=held.result,
        delivered=False,
        delivery_error=run.delivery_cause,
        **_outcome_fields(run),
    )


def _failure(
    run: TunnelRun,
    state: OutcomeState,
    error: MagicWANError,
    held: Held | None,
    *,
    unknown: bool = False,
) -> Outcome:
    return RotationFailure(
        state=state,
        error=error,
        result=held.result if held is not None else None,
        outcome_unknown=unknown,
        **_outcome_fields(run),
    )
