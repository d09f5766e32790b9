"""Bulk PSK rotation: many tunnels at once, paced by the client's limiter, no PSK lost.

:func:`rotate` returns a :class:`Rotation`: ``async with rotation: async for outcome in
rotation:`` (a plain ``async for`` works too). Every tunnel gets exactly one outcome, in
completion order. The promise: **any outcome for a tunnel that may now hold a PSK we
received (or sent) carries that PSK** (``outcome.result.psk``), whatever ``ok`` says,
and the rotation never starts work it cannot record.

How a tunnel goes (the journal's events are in :mod:`magicwan.journal`):

- ``method="generate"``: ``intent`` -> ``psk_generate`` -> ``rotated``. When a retry made
  the outcome uncertain (an unanswered request may still store a PSK nobody saw), the
  tunnel is *unsettled*: it is read back only after ``settle_window`` seconds have passed
  since the answer, and regenerated only on positive evidence (the edge's
  ``last_generated_on`` is newer than the held PSK's, compared at the coarser precision
  of the two). A read-back that cannot decide hands the held PSK over, unverified.
- ``method="set"``: the client makes each PSK (:func:`magicwan.new_psk`) and writes it
  in an ``intent`` line that is fsynced *before* the request carrying it is sent (with
  ``validate_only`` too: a server that applies it anyway makes it the tunnel's);
  tunnels go in batches. A lost answer, a timeout, a late store or a crash can then never
  lose a PSK: a retry or a rerun resends the same PSK, and no read-back is ever needed.
- Then, with ``deliver``: the PSK, durable in the journal, goes to the tunnel's other
  end (retried with backoff, each try bounded by ``deliver_timeout``): ``delivered`` or
  ``undelivered``.

Leaving the ``async with`` block early (``break``, an exception, a cancellation) starts
no new request; requests already sent finish (bounded by ``drain_timeout``), are
journalled, delivered, and their outcomes are kept in :attr:`Rotation.unclaimed`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import heapq
import itertools
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from os import PathLike
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar

import attrs

from magicwan._envelope import printable, redact
from magicwan._psk import new_psk
from magicwan._transport import Reply
from magicwan._validation import (
    check_bool,
    check_id,
    check_non_negative_int,
    check_positive_int,
    check_seconds,
    is_printable_psk,
)
from magicwan.delivery._model import Deliverer, Delivery
from magicwan.errors import (
    APIError,
    DeliveryError,
    InvalidInputError,
    MagicWANError,
    NotAppliedError,
    RequestAbandonedError,
    RotationHaltedError,
    UnexpectedResponseError,
)
from magicwan.journal import (
    Delivered,
    Intent,
    Journal,
    JournalError,
    JournalRecord,
    Storage,
    Undelivered,
    Unverified,
    Verified,
    failure,
    read_journal,
    rotated,
)
from magicwan.models.psk import PSKGenerateResult, PSKMetadata, PSKSetResult
from magicwan.models.tunnels import IPsecTunnel
from magicwan.ratelimit import Clock, Sleep

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_DELIVER_RETRIES",
    "DEFAULT_DELIVER_TIMEOUT",
    "MAX_BATCH_SIZE",
    "MAX_VERIFY_ROUNDS",
    "Method",
    "OutcomeState",
    "Rotation",
    "RotationFailure",
    "RotationOutcome",
    "RotationSuccess",
    "Validated",
    "ValidationOutcome",
    "journalled_generate",
    "rotate",
]

logger = logging.getLogger("magicwan")

DEFAULT_CONCURRENCY = 16
DEFAULT_BATCH_SIZE = 100
#: The largest batch ``method="set"`` sends (the emulator's documented maximum).
MAX_BATCH_SIZE = 1000
DEFAULT_DELIVER_RETRIES = 2
DEFAULT_DELIVER_TIMEOUT = 30.0
#: How many times a rotation regenerates a PSK that read-back shows was superseded.
MAX_VERIFY_ROUNDS = 3
#: Cloudflare error codes (besides HTTP 413) that mean "this batch is too large": the
#: batch is split in two and both halves are sent. 1005 is the emulator's; see README.
BATCH_TOO_LARGE_CODES = frozenset({1005})
_DELIVER_BACKOFF = (1.0, 10.0)  # first wait, cap (seconds), doubled per retry, jittered

Method = Literal["generate", "set"]
#: ``(account_id, tunnel_id, validate_only) -> Reply[PSKGenerateResult]``.
GenerateCall = Callable[[str, str, bool], Awaitable[Reply[PSKGenerateResult]]]
#: ``(account_id, {tunnel_id: psk}, validate_only) -> Reply[PSKSetResult]``.
SetCall = Callable[[str, Mapping[str, str], bool], Awaitable[Reply[PSKSetResult]]]
#: ``(account_id, tunnel_id) -> Reply[IPsecTunnel]``.
ReadBackCall = Callable[[str, str], Awaitable[Reply[IPsecTunnel]]]


class OutcomeState(enum.Enum):
    """What happened to one tunnel (the value is what the CLI's JSON shows)."""

    #: A new PSK is live at Cloudflare, recorded, and delivered if ``deliver`` was given.
    ROTATED = "rotated"
    #: The journal already held this tunnel's new PSK: nothing was generated (a delivery
    #: may still have been made: see ``delivered``).
    SKIPPED = "skipped"
    #: ``validate_only``: the request would be accepted; nothing changed.
    VALIDATED = "validated"
    #: The rotation failed; ``error`` says why and ``outcome_unknown`` whether the tunnel
    #: may now hold a PSK nobody holds.
    FAILED = "failed"
    #: The new PSK is live at Cloudflare (in ``result``) but did not reach the other end.
    UNDELIVERED = "undelivered"
    #: The new PSK is live at Cloudflare and in ``result``, but the journal could not
    #: record it: keep it yourself.
    UNRECORDED = "unrecorded"
    #: Never started: the rotation halted (``halt_after``) or its journal failed first.
    NOT_ATTEMPTED = "not_attempted"


@attrs.frozen(kw_only=True)
class RotationSuccess:
    """A tunnel whose rotation did everything asked: ``ok`` is always True.

    ``result.psk`` (also ``psk``) is the tunnel's current PSK. ``verified``: a read-back
    confirmed it after a retry had made it doubtful; ``unverified`` says why a doubtful
    PSK could not be checked (it is handed over all the same, the journal says so and a
    rerun checks it). ``delivered`` is None when no deliverer was given.
    """

    ok: Literal[True] = True
    tunnel_id: str
    state: OutcomeState
    result: PSKGenerateResult
    tunnel: IPsecTunnel | None = None
    attempts: int = 0
    verified: bool = False
    unverified: str | None = None
    delivered: bool | None = None
    error: None = None
    delivery_error: None = None
    outcome_unknown: Literal[False] = False

    @property
    def psk(self) -> str:
        """The tunnel's current PSK."""
        psk = self.result.psk
        assert psk is not None
        return psk

    @property
    def skipped(self) -> bool:
        """No new PSK was made in this run: the journal already had it."""
        return self.state is OutcomeState.SKIPPED


@attrs.frozen(kw_only=True)
class RotationFailure:
    """A tunnel whose rotation did not do everything asked: ``ok`` is always False.

    ``error`` says why. ``result`` carries the PSK the tunnel may now hold whenever there
    is one (``UNDELIVERED``, ``UNRECORDED``, a set whose answer was lost, a regeneration
    that failed after an earlier PSK was received): never drop it.
    """

    ok: Literal[False] = False
    tunnel_id: str
    state: OutcomeState
    error: MagicWANError
    result: PSKGenerateResult | None = None
    tunnel: IPsecTunnel | None = None
    attempts: int = 0
    verified: bool = False
    unverified: str | None = None
    delivered: bool | None = None
    #: Your deliverer's own exception, as it raised it: it may quote anything (print
    #: ``error``, which the SDK scrubbed), so it stays out of ``repr``.
    delivery_error: BaseException | None = attrs.field(default=None, repr=False)
    #: The tunnel may now hold a PSK that nobody received (a generate whose answer was
    #: lost): rotate it again.
    outcome_unknown: bool = False

    @property
    def psk(self) -> str | None:
        """The PSK the tunnel may now hold, or None."""
        return self.result.psk if self.result is not None else None

    @property
    def skipped(self) -> bool:
        return False


@attrs.frozen(kw_only=True)
class Validated:
    """``validate_only``: Cloudflare would accept the request; nothing changed."""

    ok: Literal[True] = True
    tunnel_id: str
    state: OutcomeState = OutcomeState.VALIDATED
    result: PSKGenerateResult
    tunnel: IPsecTunnel | None = None
    attempts: int = 0
    error: None = None

    @property
    def skipped(self) -> bool:
        return False


RotationOutcome = RotationSuccess | RotationFailure
ValidationOutcome = Validated | RotationFailure
O = TypeVar("O")  # noqa: E741 - the outcome type: RotationOutcome, ValidationOutcome


# -- pieces shared with the CLI ----------------------------------------------------------


async def journalled_generate(
    journal: Journal | None,
    generate: GenerateCall,
    account_id: str,
    tunnel_id: str,
) -> tuple[Reply[PSKGenerateResult], int, JournalError | None]:
    """Generate one PSK with its journal lines: ``intent`` before the request (no request
    is sent when it cannot be written), ``rotated`` as soon as the PSK arrives.

    Returns the reply, the journal line that must be durable before the PSK is handed
    on, and the :class:`JournalError` if the ``rotated`` line could not be written (the
    PSK is in the reply all the same: never drop it). A failed generate raises, after a
    ``failed`` line. The one path for rotation and ``magicwan psk generate``.
    """
    if journal is not None:
        journal.append(Intent(account_id=account_id, tunnel_id=tunnel_id, method="generate"))
    try:
        reply = await generate(account_id, tunnel_id, False)
    except MagicWANError as exc:
        if journal is not None and journal.broken is None:
            with contextlib.suppress(JournalError):  # the caller sees journal.broken
                journal.append(failure(account_id, tunnel_id, exc))
        raise
    seq, error = 0, None
    if journal is not None:
        event = rotated(account_id, reply.value, attempts=reply.attempts, uncertain=reply.uncertain)
        try:
            seq = journal.append(event)
        except JournalError as exc:
            error = exc
    return reply, seq, error


def _precision(stamp: datetime) -> timedelta:
    """The precision of a stamp: what its text had (a :class:`Stamp`), else microseconds
    (a datetime made in code claims no less)."""
    digits = getattr(stamp, "digits", 6)
    return timedelta(microseconds=10 ** (6 - max(0, min(digits, 6))))


def compare_stamps(held: datetime | None, edge: datetime | None) -> int | None:
    """-1, 0 or 1 as the edge's stamp is older, equal or newer than the held PSK's,
    compared at the coarser precision of the two; None when either is missing.

    Cloudflare may send microseconds in one answer and milliseconds in another: equal at
    the coarser precision counts as equal (a PSK is never regenerated on a rounding). The
    precision is the one the stamp's TEXT had (``.500000`` is microseconds, not a round
    half second), never guessed from its value.
    """
    if held is None or edge is None:
        return None
    step = max(_precision(held), _precision(edge))
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    a = (held - epoch) // step
    b = (edge - epoch) // step
    return (b > a) - (b < a)


def _stamp(result: PSKGenerateResult) -> datetime | None:
    return result.psk_metadata.last_generated_on if result.psk_metadata else None


def read_back_verdict(held: PSKGenerateResult, edge: IPsecTunnel) -> int | None:
    """What a read-back says of the PSK held: 0 the edge holds it, > 0 the edge holds a
    newer one; negative (the edge's is older) or None (a stamp missing) cannot decide."""
    edge_stamp = edge.psk_metadata.last_generated_on if edge.psk_metadata else None
    return compare_stamps(_stamp(held), edge_stamp)


def undecided_reason(verdict: int | None) -> str:
    """Why a read-back whose verdict is negative or None cannot decide."""
    why = "no stamp to compare" if verdict is None else "the edge's stamp is older"
    return f"read-back cannot decide ({why})"


def still_superseded(tunnel_id: str) -> UnexpectedResponseError:
    """The error once :data:`MAX_VERIFY_ROUNDS` regenerations did not settle a tunnel."""
    return UnexpectedResponseError(
        f"tunnel {tunnel_id}: the edge still holds a newer PSK than the one received "
        f"after {MAX_VERIFY_ROUNDS} regenerations (another client is rotating it?)"
    )


def _from_record(record: JournalRecord) -> PSKGenerateResult:
    return PSKGenerateResult(
        ipsec_tunnel_id=record.tunnel_id,
        psk=record.psk,
        psk_metadata=PSKMetadata(last_generated_on=record.last_generated_on),
        ipsec_id=record.ipsec_id,
    )


# -- the engine ----------------------------------------------------------------------------


@attrs.define
class _Tunnel:
    """One tunnel's work in this run."""

    id: str
    obj: IPsecTunnel | None
    record: JournalRecord | None = None
    held: PSKGenerateResult | None = None  # the newest PSK the tunnel may hold
    held_from_journal: bool = False
    attempts: int = 0
    rounds: int = 0  # regenerations after a read-back saw a newer PSK
    verified: bool = False
    unverified: str | None = None
    unsettled: bool = False  # waiting for (or in) a read-back
    sent_psk: str | None = None  # the PSK a bulk set sent for it (set: known before the answer)
    # What a request worker is doing for it right now: "request" (a generate or a set is
    # in flight), "read-back", "answered" (a PSK in hand, its failure being made durable)
    # or None. Tells the salvage what a cut left behind.
    phase: Literal["request", "read-back", "answered"] | None = None
    failure: MagicWANError | None = None  # with phase "answered": the outcome it will get
    seq: int = 0  # journal line that must be durable before the PSK is handed on

    def hold_sent(self, psk: str) -> None:
        """The tunnel may hold ``psk``, which a bulk set sent it: carry it from now on."""
        self.held = PSKGenerateResult(ipsec_tunnel_id=self.id, psk=psk)
        self.held_from_journal = False


@attrs.frozen
class _Settings:
    account_id: str
    method: Method
    concurrency: int
    batch_size: int
    validate_only: bool
    journal: str | PathLike[str] | None
    deliver: Deliverer | None
    deliver_retries: int
    deliver_timeout: float
    halt_after: int | None
    settle_window: float
    drain_timeout: float
    storage: Storage | None = None


class Rotation(Generic[O]):
    """A running (or ready to run) rotation; see the module docstring.

    ``async with rotation:`` opens (and locks) the journal, ``async for`` yields one
    outcome per tunnel in completion order. Leaving the block early stops starting work
    and keeps what finished in :attr:`unclaimed`. :attr:`unrecorded` counts tunnels
    whose PSK is live but not in the journal (after a journal failure: the iteration
    then ends by raising :class:`~magicwan.JournalError`).
    """

    def __init__(
        self,
        settings: _Settings,
        targets: list[tuple[str, IPsecTunnel | None]],
        *,
        generate: GenerateCall,
        set_psks: SetCall,
        read_back: ReadBackCall,
        clock: Clock,
        sleep: Sleep,
    ) -> None:
        self._s = settings
        self._targets = targets
        self._generate = generate
        self._set = set_psks
        self._read_back = read_back
        self._clock = clock
        self._sleep = sleep
        self._journal: Journal | None = None
        self._started = False
        self._finished = False
        self._stopping = False
        self._halted = False
        self._salvaging = False  # outcomes of work cut short: they do not halt anything
        self._crash: BaseException | None = None
        # Work not started yet, and unsettled tunnels waiting for their read-back.
        self._pending: collections.deque[_Tunnel] = collections.deque()
        self._deferred: list[tuple[float, int, _Tunnel]] = []
        self._seq = itertools.count()
        self._busy = 0  # work units being processed by request workers
        self._busy_tunnels = 0  # the tunnels in those units
        unit = settings.batch_size if settings.method == "set" else 1
        self._lookahead = 2 * settings.concurrency * unit
        # Outcomes, and the stages between: request workers -> staged (journal sync)
        # -> to_deliver (deliverers) -> ready (the caller).
        self._staged: collections.deque[tuple[_Tunnel, OutcomeState]] = collections.deque()
        self._to_deliver: collections.deque[tuple[_Tunnel, OutcomeState]] = collections.deque()
        self._ready: collections.deque[O] = collections.deque()
        self._changed = asyncio.Event()
        self._emitted = 0
        self._failures = 0
        self._unrecorded = 0
        self._tasks: list[asyncio.Task[None]] = []
        # Items a stage took from staged/to_deliver and has not passed on yet.
        self._holding: dict[int, tuple[_Tunnel, OutcomeState]] = {}
        # Units a request worker is on (a request, a read-back, a regeneration).
        self._working: dict[int, list[_Tunnel] | _Tunnel] = {}
        self._journal_error: JournalError | None = None

    # -- public ----------------------------------------------------------------------------

    @property
    def unclaimed(self) -> list[O]:
        """Outcomes that finished but were not taken by the caller (after leaving early)."""
        return list(self._ready)

    @property
    def unrecorded(self) -> int:
        """Tunnels whose new PSK is live at Cloudflare but not in the journal."""
        return self._unrecorded

    @property
    def halted(self) -> bool:
        """True once ``halt_after`` failures stopped the rotation from starting tunnels."""
        return self._halted

    @property
    def total(self) -> int:
        """How many tunnels this rotation has (one outcome each)."""
        return len(self._targets)

    async def __aenter__(self) -> Self:
        await self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> O:
        if not self._started:
            await self._start()
        while True:
            if self._crash is not None:
                crash, self._crash = self._crash, None
                await self.aclose()
                raise crash
            if self._ready:
                outcome = self._ready.popleft()
                self._poke()  # room in the queue: a blocked stage may go on
                return outcome
            if self._emitted >= len(self._targets) or self._finished:
                await self._finish()
                raise StopAsyncIteration
            self._changed.clear()
            await self._changed.wait()

    async def aclose(self) -> None:
        """Stop starting work, let what was sent finish (within ``drain_timeout``),
        journal and deliver it, and close the journal. Outcomes not yet taken stay in
        :attr:`unclaimed`. Safe to call twice."""
        if self._finished:
            return
        if not self._started:
            self._finished = True
            return
        self._stopping = True
        self._poke()
        try:
            await self._drain()
        finally:
            await self._finish(raise_journal_error=False)

    # -- lifecycle -------------------------------------------------------------------------

    async def _start(self) -> None:
        if self._started:
            return
        self._started = True
        s = self._s
        records: dict[str, JournalRecord] = {}
        # validate_only with method="set" still sends real PSKs (made here): a server that
        # applies them anyway makes them the tunnels', so their intent lines are journalled.
        if s.journal is not None and (not s.validate_only or s.method == "set"):
            journal = Journal(s.journal, storage=s.storage)
            journal.open()  # raises JournalError before anything is sent
            self._journal = journal
        if self._journal is not None and not s.validate_only:
            journal = self._journal
            try:
                account = s.account_id.lower()
                found_records = read_journal(journal.path, storage=s.storage)
                for (acc, tunnel_id), found in found_records.items():
                    if acc == account:
                        records[tunnel_id] = found
            except BaseException:
                await journal.aclose()
                self._journal = None
                raise
        now = self._clock()
        wall = datetime.now(UTC)
        for tunnel_id, obj in self._targets:
            record = records.get(tunnel_id.lower())
            work = _Tunnel(tunnel_id, obj, record)
            if record is not None and record.psk is not None and not s.validate_only:
                # The PSK the tunnel may hold: carried by its outcome whatever happens.
                work.held = _from_record(record)
                work.held_from_journal = True
            if record is not None and record.rotated and not s.validate_only:
                if record.uncertain:
                    # A run before this one left doubt: check once the window has passed
                    # since its last word (a last word in the future, written while the
                    # clock was ahead, counts as now: never wait longer than the window).
                    last = record.last_time or wall
                    try:
                        since = (wall - last).total_seconds()
                    except OverflowError:  # pragma: no cover - datetime arithmetic bounds
                        since = 0.0
                    left = s.settle_window - min(max(since, 0.0), s.settle_window)
                    self._defer(work, now + left)
                else:
                    self._staged.append((work, OutcomeState.SKIPPED))
                continue
            self._pending.append(work)
        if not self._targets:
            return  # nothing to do: no task to start (or to cancel unstarted)
        workers = max(1, min(s.concurrency, len(self._targets)))
        self._tasks = [
            asyncio.create_task(self._guard(self._request_worker)) for _ in range(workers)
        ]
        self._tasks.append(asyncio.create_task(self._guard(self._syncer)))
        if s.deliver is not None:
            self._tasks += [
                asyncio.create_task(self._guard(self._deliverer)) for _ in range(workers)
            ]

    async def _guard(self, work: Callable[[], Awaitable[None]]) -> None:
        # The coroutine is made inside the task: a task cancelled before it ever ran
        # leaves no coroutine that was never awaited.
        try:
            await work()
        except asyncio.CancelledError:
            self._poke()
            raise
        except BaseException as exc:  # a bug: stop everything and tell the caller
            if self._crash is None:
                self._crash = exc
            self._stopping = True
            self._poke()

    async def _drain(self) -> None:
        deadline = self._s.drain_timeout
        try:
            async with asyncio.timeout(deadline):
                while not self._idle():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            logger.warning(
                "rotation: in-flight work did not finish within %gs; cancelling it", deadline
            )

    def _idle(self) -> bool:
        return (
            self._busy == 0
            and not self._holding
            and not self._staged
            and not self._to_deliver
            and not self._deferred
        )

    async def _finish(self, raise_journal_error: bool = True) -> None:
        if not self._finished:
            self._finished = True
            self._stopping = True
            self._poke()
            for task in self._tasks:
                task.cancel()
            try:
                await asyncio.gather(*self._tasks, return_exceptions=True)
                self._salvage()
            finally:
                # Even when the caller is cancelled here: the journal's file and lock must
                # not outlive the rotation (aclose closes the file whatever happens).
                journal, self._journal = self._journal, None
                if journal is not None:
                    try:
                        await journal.aclose()
                    except JournalError as exc:
                        logger.error("rotation: %s", exc)
        if raise_journal_error and self._unrecorded_error() is not None:
            raise self._unrecorded_error()  # type: ignore[misc]

    def _salvage(self) -> None:
        """Tunnels whose PSK is in hand but whose work was cut short (the drain timed
        out): hand them over anyway, never drop them."""
        left = [*self._holding.values(), *self._staged, *self._to_deliver]
        for _, _, work in self._deferred:
            work.unverified = work.unverified or "not read back: the rotation stopped first"
            left.append((work, OutcomeState.ROTATED))
        self._salvaging = True
        cut: list[_Tunnel] = []
        for unit in self._working.values():
            cut += unit if isinstance(unit, list) else [unit]
        self._holding.clear()
        self._staged.clear()
        self._to_deliver.clear()
        self._deferred.clear()
        self._working.clear()
        for work in cut:
            if work.phase == "read-back":
                # Cut during its read-back: the PSK held is most likely the live one.
                work.unverified = "not read back: the rotation stopped first"
                left.append((work, OutcomeState.ROTATED))
                continue
            if work.phase == "answered" and work.failure is not None:
                self._fail(work, work.failure, unknown=False)  # its PSK in hand, carried
                continue
            if work.phase != "request":
                continue  # its outcome was given already, or it was never sent (a split)
            sent = work.sent_psk
            # Its request was cut short: the tunnel may hold what was sent (set), or a
            # PSK nobody saw (generate). Say so, with whatever PSK is known.
            if sent is not None:
                work.hold_sent(sent)
            stopped = RequestAbandonedError(
                "the rotation stopped while this tunnel's request was in flight",
                request_sent=True,
                retryable=False,
            )
            self._fail(work, stopped, unknown=sent is None)
        for work, state in left:
            if work.held is None or work.held.psk is None:
                continue
            if state is OutcomeState.ROTATED and work.held_from_journal:
                state = OutcomeState.SKIPPED
            if self._s.deliver is not None and state is not OutcomeState.UNRECORDED:
                error = DeliveryError(
                    "not delivered: the rotation stopped first", reason="stopped", tunnel_id=work.id
                )
                self._finish_tunnel(work, state, delivered=False, error=error)
            else:
                self._finish_tunnel(work, state)

    def _unrecorded_error(self) -> JournalError | None:
        journal_error = self._journal_error
        if journal_error is None:
            return None
        if not self._unrecorded:
            return JournalError(
                f"{journal_error}; the rotation stopped starting work (every PSK made is in "
                "the journal)"
            )
        return JournalError(
            f"{journal_error}; {self._unrecorded} tunnel(s) hold PSKs that are not in the "
            "journal: their outcomes carry them (state unrecorded), keep them yourself"
        )

    # -- scheduling --------------------------------------------------------------------------

    def _poke(self) -> None:
        self._changed.set()

    def _defer(self, work: _Tunnel, due: float) -> None:
        work.unsettled = True
        heapq.heappush(self._deferred, (due, next(self._seq), work))
        self._poke()

    async def _take(self) -> list[_Tunnel] | _Tunnel | None:
        """The next unit of work: a batch (set), a tunnel (generate), or an unsettled
        tunnel whose window has passed; None when there will be none."""
        while True:
            if self._deferred:
                due, _, work = self._deferred[0]
                if self._stopping or self._journal_error is not None or due <= self._clock():
                    heapq.heappop(self._deferred)
                    return work
            if self._pending:
                if self._halted or self._journal_error is not None or self._stopping:
                    self._give_up_pending()
                    continue
                # Bounded look-ahead: a caller who stops reading (a plain ``async for``
                # left by ``break``) stops the rotation within 2 x ``concurrency`` units.
                if self._outstanding() < self._lookahead:
                    if self._s.method == "set":
                        size = min(self._s.batch_size, len(self._pending))
                        return [self._pending.popleft() for _ in range(size)]
                    return self._pending.popleft()
            elif not self._deferred and self._busy == 0:
                return None
            await self._wait_for_change(
                self._deferred[0][0] - self._clock() if self._deferred else None
            )

    def _outstanding(self) -> int:
        """Tunnels started (or finished) and not yet taken by the caller."""
        staged = len(self._staged) + len(self._to_deliver) + len(self._holding)
        return self._busy_tunnels + staged + len(self._ready)

    async def _wait_for_change(self, at_most: float | None) -> None:
        """Wait until something changes, or ``at_most`` seconds of the injected clock."""
        self._changed.clear()
        if at_most is None:
            await self._changed.wait()
            return
        waiter = asyncio.ensure_future(self._changed.wait())
        sleeper = asyncio.ensure_future(self._sleep(max(at_most, 0.0)))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            sleeper.cancel()

    def _give_up_pending(self) -> None:
        """Tunnels never started when the rotation halted or its journal failed."""
        if self._stopping and not self._halted and self._journal_error is None:
            self._pending.clear()  # the caller left: nobody wants their outcomes
            return
        if self._journal_error is not None:
            reason: MagicWANError = self._journal_error
        else:
            reason = RotationHaltedError(
                f"not attempted: the rotation halted after {self._failures} failed tunnel(s) "
                f"(halt_after={self._s.halt_after})"
            )
        while self._pending:
            self._not_attempted(self._pending.popleft(), reason)

    # -- request workers --------------------------------------------------------------------

    async def _request_worker(self) -> None:
        while True:
            unit = await self._take()
            if unit is None:
                return
            size = len(unit) if isinstance(unit, list) else 1
            self._busy += 1
            self._busy_tunnels += size
            token = object()
            self._working[id(token)] = unit
            try:
                if isinstance(unit, list):
                    await self._set_batch(unit)
                elif unit.unsettled:
                    await self._verify(unit)
                else:
                    await self._generate_one(unit)
            except asyncio.CancelledError:
                raise  # cut short: the unit stays in _working for the salvage
            else:
                self._working.pop(id(token), None)
            finally:
                self._busy -= 1
                self._busy_tunnels -= size
                self._poke()

    async def _generate_one(self, work: _Tunnel) -> None:
        s = self._s
        if s.validate_only:
            try:
                reply = await self._generate(s.account_id, work.id, True)
            except MagicWANError as exc:
                self._fail(work, exc)
                return
            if reply.value.psk is not None:
                # A validate_only answer never carries a PSK: the server (or a gateway that
                # dropped the query) generated one. It is live and recorded nowhere.
                work.held = reply.value
                self._emit(
                    RotationFailure(
                        tunnel_id=work.id,
                        state=OutcomeState.UNRECORDED,
                        error=UnexpectedResponseError(
                            "asked to validate only, the server generated a new PSK: it is "
                            "live at Cloudflare and in this outcome only (outcome.psk)"
                        ),
                        result=reply.value,
                        tunnel=work.obj,
                        attempts=reply.attempts,
                    )
                )
                self._unrecorded += 1
                return
            self._emit(
                Validated(
                    tunnel_id=work.id, result=reply.value, tunnel=work.obj, attempts=reply.attempts
                )
            )
            return
        work.phase = "request"
        try:
            reply, seq, journal_error = await journalled_generate(
                self._journal, self._generate, s.account_id, work.id
            )
        except JournalError as exc:  # the intent could not be written: nothing was sent
            work.phase = None
            self._journal_failed(exc)
            self._not_attempted(work, exc)
            return
        except MagicWANError as exc:
            work.phase = None
            self._note_journal(exc)
            # A run before this one may have left a PSK nobody saw: a certain failure now
            # does not make that doubt go away.
            self._fail(work, exc, unknown=exc.outcome_unknown or _doubt_from_before(work))
            return
        work.phase = None
        work.attempts += reply.attempts
        work.held, work.held_from_journal, work.seq = reply.value, False, seq
        if journal_error is not None:
            self._journal_failed(journal_error)
            self._stage(work, OutcomeState.UNRECORDED)
            return
        if reply.uncertain:
            logger.info(
                "tunnel %s: a retry left doubt; reading it back in %gs",
                work.id,
                s.settle_window,
            )
            self._defer(work, self._clock() + s.settle_window)
            return
        if work.rounds:
            # Regenerated because the edge held a newer PSK: the earlier requests have
            # settled, so one read-back now proves the new PSK is the one in force.
            self._defer(work, self._clock())
            return
        self._stage(work, OutcomeState.ROTATED)

    async def _verify(self, work: _Tunnel) -> None:
        """Read an unsettled tunnel back; hand its PSK on, or regenerate on evidence."""
        s = self._s
        work.unsettled = False
        state = OutcomeState.SKIPPED if work.held_from_journal else OutcomeState.ROTATED
        held = work.held
        assert held is not None
        if self._stopping or self._journal_error is not None:
            why = "the rotation stopped" if self._stopping else "the journal failed"
            self._unverified(work, f"not read back: {why}")
            self._stage(work, state)
            return
        work.phase = "read-back"
        try:
            edge = (await self._read_back(s.account_id, work.id)).value
        except MagicWANError as exc:
            work.phase = None
            self._unverified(work, f"read-back failed: {type(exc).__name__}: {exc}")
            self._stage(work, state)
            return
        work.phase = None
        verdict = read_back_verdict(held, edge)
        if verdict == 0:
            work.verified = True
            if self._journal is not None:
                event = Verified(
                    account_id=s.account_id, tunnel_id=work.id, last_generated_on=_stamp(held)
                )
                if not self._append(work, event):
                    return
            self._stage(work, state)
            return
        if verdict is None or verdict < 0:
            self._unverified(work, undecided_reason(verdict))
            self._stage(work, state)
            return
        # The edge holds a newer PSK than ours: an unanswered request stored one late.
        if work.rounds >= MAX_VERIFY_ROUNDS:
            self._fail(work, still_superseded(work.id))
            return
        work.rounds += 1
        logger.warning(
            "tunnel %s: the edge holds a newer PSK than the one received; regenerating",
            work.id,
        )
        await self._generate_one(work)

    def _unverified(self, work: _Tunnel, reason: str) -> None:
        work.unverified = reason
        logger.warning("tunnel %s: PSK handed over unverified: %s", work.id, reason)
        if self._journal is not None:  # a note, not a PSK: the caller stages the tunnel
            event = Unverified(account_id=self._s.account_id, tunnel_id=work.id, reason=reason)
            self._try_append(work, event)

    def _append(self, work: _Tunnel, event: Any) -> bool:
        """Write a line for a tunnel whose PSK is in hand; on failure stage it unrecorded."""
        assert self._journal is not None
        try:
            work.seq = self._journal.append(event)
        except JournalError as exc:
            self._journal_failed(exc)
            self._stage(work, OutcomeState.UNRECORDED)
            return False
        return True

    async def _set_batch(self, batch: list[_Tunnel]) -> None:
        s = self._s
        psks: dict[str, str] = {}
        for work in batch:
            record = work.record
            # A rerun resends the PSK of an intent that no rotated line confirmed.
            pending = record.pending_psk if record is not None and record.in_flight else None
            psks[work.id] = pending or new_psk()
        if self._journal is not None:  # validate_only too: the PSKs sent are real
            try:
                for work in batch:
                    event = Intent(
                        account_id=s.account_id, tunnel_id=work.id, method="set", psk=psks[work.id]
                    )
                    self._journal.append(event)
                await self._journal.sync()  # every PSK on disk before the request leaves
            except JournalError as exc:
                self._journal_failed(exc)
                for work in batch:
                    self._not_attempted(work, exc)
                return
        for work in batch:
            work.sent_psk = psks[work.id]
        await self._send_set(batch, psks)

    async def _send_set(self, batch: list[_Tunnel], psks: dict[str, str]) -> None:
        s = self._s
        for work in batch:
            work.phase = "request"
        try:
            mapping = {work.id: psks[work.id] for work in batch}
            reply = await self._set(s.account_id, mapping, s.validate_only)
        except MagicWANError as exc:
            for work in batch:
                work.phase = None
            if _batch_too_large(exc) and len(batch) > 1:
                half = len(batch) // 2
                logger.info("batch of %d refused as too large; splitting it", len(batch))
                await self._send_set(batch[:half], psks)
                await self._send_set(batch[half:], psks)
                return
            self._note_journal(exc)
            for work in batch:
                if exc.outcome_unknown or _resent(work, psks[work.id]):
                    # The PSK we sent may be live (this request, or a run before this one
                    # that sent the same PSK): the outcome carries it.
                    work.hold_sent(psks[work.id])
                # With set, we know every PSK the tunnel may hold: nothing is unknown.
                self._fail(work, exc, unknown=False)
            return
        result = reply.value
        answered: list[_Tunnel] = []
        for work in batch:
            work.phase = None
            work.attempts += reply.attempts
            applied = result.applied.get(work.id)
            if applied is None and work.id in result.unapplied:
                error: MagicWANError = NotAppliedError(result.unapplied[work.id])
                if _resent(work, psks[work.id]):
                    # Refused now, but a run before this one sent it: it may be live.
                    work.hold_sent(psks[work.id])
                if self._journal is not None and not s.validate_only:
                    self._try_append(work, failure(s.account_id, work.id, error))
                self._fail(work, error)
                continue
            if applied is None:
                # Neither applied nor refused: the answer is cut or partial, and the tunnel
                # may hold the PSK we sent. Carry it; a rerun resends it.
                work.hold_sent(psks[work.id])
                error = UnexpectedResponseError(
                    "tunnel absent from Cloudflare's answer: it may hold the PSK sent "
                    "(in this outcome, and in the journal's intent line)"
                )
                if self._journal is not None and not s.validate_only:
                    self._try_append(work, failure(s.account_id, work.id, error))
                self._fail(work, error, unknown=False)
                continue
            model = PSKGenerateResult(
                ipsec_tunnel_id=work.id,
                psk=applied.psk,
                psk_metadata=applied.psk_metadata,
                ipsec_id=applied.ipsec_id,
            )
            if applied.psk != psks[work.id]:
                # "Applied", with a PSK other than the one sent: the server's word is what
                # the tunnel holds. Journal it (doubtful: a rerun reads it back), carry it.
                work.held, work.held_from_journal = model, False
                error = UnexpectedResponseError(
                    "Cloudflare applied a PSK other than the one sent: the one it says the "
                    "tunnel holds is in this outcome (and the journal)"
                )
                if self._journal is not None:
                    event = rotated(
                        s.account_id, model, attempts=reply.attempts, uncertain=True, method="set"
                    )
                    if not self._append(work, event):
                        continue
                    self._try_append(work, failure(s.account_id, work.id, error))
                    # Handed over once its lines are durable, after this loop: no await
                    # here, so every tunnel of the answer is dealt with before any wait.
                    work.phase, work.failure = "answered", error  # a cut hands it over
                    answered.append(work)
                    continue
                self._fail(work, error, unknown=False)
                continue
            if s.validate_only:
                # The PSK sent to be validated stays with the caller: a server (or a
                # gateway dropping the query) that applied it anyway made it the tunnel's.
                self._emit(
                    Validated(
                        tunnel_id=work.id,
                        result=attrs.evolve(model, psk=psks[work.id]),
                        tunnel=work.obj,
                        attempts=reply.attempts,
                    )
                )
                continue
            work.held, work.held_from_journal = model, False
            if self._journal is not None:
                event = rotated(
                    s.account_id, model, attempts=reply.attempts, uncertain=False, method="set"
                )
                if not self._append(work, event):
                    continue
            self._stage(work, OutcomeState.ROTATED)
        if answered:
            await self._hand_over_answered(answered)

    async def _hand_over_answered(self, answered: list[_Tunnel]) -> None:
        """Tunnels a set answered with another PSK, journalled: fail each, carrying that
        PSK, once its lines are durable (unrecorded if they cannot be)."""
        assert self._journal is not None
        try:
            await self._journal.sync()
        except JournalError as exc:
            self._journal_failed(exc)
            for work in answered:
                work.phase = None
                self._stage(work, OutcomeState.UNRECORDED)
            return
        for work in answered:
            work.phase = None
            assert work.failure is not None
            self._fail(work, work.failure, unknown=False)

    def _note_journal(self, exc: MagicWANError) -> None:
        # journalled_generate writes the failed line; it may be what broke the journal.
        if self._journal is not None and self._journal.broken is not None:
            self._journal_failed(self._journal.broken)

    # -- the journal's sync, then delivery -------------------------------------------------

    def _stage(self, work: _Tunnel, state: OutcomeState) -> None:
        self._staged.append((work, state))
        self._poke()

    def _full(self) -> bool:
        """The caller is not keeping up: stages wait (unless the rotation is stopping)."""
        return len(self._ready) >= self._lookahead and not self._stopping

    async def _syncer(self) -> None:
        while True:
            if not self._staged or self._full():
                if self._finished_producing() and not self._staged:
                    return
                await self._wait_for_change(None)
                continue
            item = self._staged.popleft()
            work, state = item
            self._holding[id(item)] = item
            # Cut short (cancelled), the item stays in _holding for the salvage.
            with _released(self._holding, item):
                journal = self._journal
                if journal is not None and state is not OutcomeState.UNRECORDED:
                    try:
                        await journal.sync(work.seq)
                    except JournalError as exc:
                        self._journal_failed(exc)
                        state = OutcomeState.UNRECORDED
                if self._s.deliver is not None and work.held is not None:
                    record = work.record
                    if state is OutcomeState.SKIPPED and record is not None and record.delivered:
                        self._finish_tunnel(work, state, delivered=True)
                    else:
                        self._to_deliver.append((work, state))
                else:
                    self._finish_tunnel(work, state)
            self._poke()

    def _finished_producing(self) -> bool:
        return self._emitted >= len(self._targets) or (
            self._stopping and self._busy == 0 and not self._deferred and not self._pending
        )

    async def _deliverer(self) -> None:
        while True:
            if not self._to_deliver or self._full():
                idle = not self._to_deliver and not self._staged and not self._holding
                if self._finished_producing() and idle:
                    return
                await self._wait_for_change(None)
                continue
            item = self._to_deliver.popleft()
            self._holding[id(item)] = item
            with _released(self._holding, item):
                await self._deliver(*item)
            self._poke()

    async def _deliver(self, work: _Tunnel, state: OutcomeState) -> None:
        s = self._s
        deliver = s.deliver
        held = work.held
        assert deliver is not None
        assert held is not None
        assert held.psk is not None
        psk = held.psk
        delivery = Delivery(
            account_id=s.account_id,
            tunnel_id=work.id,
            psk=psk,
            ipsec_id=held.ipsec_id or (work.obj.ipsec_id if work.obj else None),
            tunnel=work.obj,
        )
        last: BaseException | None = None
        fatal: BaseException | None = None
        tries = 0
        problem = _psk_problem(psk)
        if problem is not None:
            # A PSK a device cannot take whole (a newline would cut it in two on a
            # program's stdin): never delivered, so never "delivered" half of it.
            last, tries = ValueError(f"the PSK {problem}: not delivered"), 1
        for tries in range(1, s.deliver_retries + 2) if problem is None else ():
            try:
                async with asyncio.timeout(s.deliver_timeout):
                    await deliver(delivery)
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # the rotation itself is being cancelled
                last = exc  # the deliverer's own cancelled future: a failed delivery
            except Exception as exc:  # the deliverer is the caller's code: anything may come
                last = exc
            except BaseException as exc:  # SystemExit, KeyboardInterrupt from a deliverer
                last = fatal = exc
                break
            else:
                last = None
                break
            if tries <= s.deliver_retries:
                await self._sleep(_deliver_backoff(tries))
        if last is None:
            if self._journal is not None and state is not OutcomeState.UNRECORDED:
                # Durable before the outcome is handed over, so a rerun after a crash does
                # not deliver (and, with re-authentication, interrupt) the tunnel again. The
                # PSK itself is durable already: a failure here costs this tunnel nothing.
                event = Delivered(account_id=s.account_id, tunnel_id=work.id, attempts=tries)
                if self._try_append(work, event):
                    try:
                        await self._journal.sync(work.seq)
                    except JournalError as exc:
                        self._journal_failed(exc)
            self._finish_tunnel(work, state, delivered=True)
            return
        reason = last.reason if isinstance(last, DeliveryError) else "error"
        if isinstance(last, TimeoutError):
            reason = "timeout"
        error = DeliveryError(
            f"delivery failed after {tries} tries: {_describe(last, psk)}",
            reason=reason,
            tunnel_id=work.id,
        )
        if fatal is not None:
            # Finish the tunnel (its PSK in the outcome), then stop the rotation with it.
            self._finish_tunnel(work, state, delivered=False, delivery_error=fatal, error=error)
            if self._crash is None:
                self._crash = fatal
            self._stopping = True
            self._poke()
            return
        if self._journal is not None and state is not OutcomeState.UNRECORDED:
            event_u = Undelivered(
                account_id=s.account_id, tunnel_id=work.id, error=str(error), attempts=tries
            )
            self._try_append(work, event_u)
        self._finish_tunnel(work, state, delivered=False, delivery_error=last, error=error)

    def _try_append(self, work: _Tunnel, event: Any) -> bool:
        """Write a line that records no PSK (delivered, undelivered): a failure stops the
        rotation from starting work but costs this tunnel nothing. True if written."""
        assert self._journal is not None
        if self._journal_error is not None:
            return False
        try:
            work.seq = self._journal.append(event)
        except JournalError as exc:
            self._journal_failed(exc)
            return False
        return True

    # -- outcomes -----------------------------------------------------------------------------

    def _finish_tunnel(
        self,
        work: _Tunnel,
        state: OutcomeState,
        *,
        delivered: bool | None = None,
        delivery_error: BaseException | None = None,
        error: MagicWANError | None = None,
    ) -> None:
        held = work.held
        assert held is not None
        common: dict[str, Any] = {
            "tunnel_id": work.id,
            "result": held,
            "tunnel": work.obj,
            "attempts": work.attempts,
            "verified": work.verified,
            "unverified": work.unverified,
            "delivered": delivered,
        }
        if state is OutcomeState.UNRECORDED:
            journal_error = self._journal_error or JournalError("the journal failed")
            self._unrecorded += 1
            self._emit(
                RotationFailure(
                    state=state, error=journal_error, delivery_error=delivery_error, **common
                )
            )
            return
        if error is not None:
            self._emit(
                RotationFailure(
                    state=OutcomeState.UNDELIVERED,
                    error=error,
                    delivery_error=delivery_error,
                    **common,
                )
            )
            return
        self._emit(RotationSuccess(state=state, **common))

    def _fail(self, work: _Tunnel, exc: MagicWANError, *, unknown: bool | None = None) -> None:
        self._emit(
            RotationFailure(
                tunnel_id=work.id,
                state=OutcomeState.FAILED,
                error=exc,
                result=work.held,
                tunnel=work.obj,
                attempts=work.attempts,
                verified=work.verified,
                unverified=work.unverified,
                outcome_unknown=exc.outcome_unknown if unknown is None else unknown,
            )
        )

    def _not_attempted(self, work: _Tunnel, exc: MagicWANError) -> None:
        self._emit(
            RotationFailure(
                tunnel_id=work.id,
                state=OutcomeState.NOT_ATTEMPTED,
                error=exc,
                result=work.held,
                tunnel=work.obj,
            )
        )

    def _journal_failed(self, exc: JournalError) -> None:
        if self._journal_error is None:
            self._journal_error = exc
            logger.error("rotation: %s; starting no new work", exc)
        self._poke()

    def _emit(self, outcome: Any) -> None:
        self._ready.append(outcome)
        self._emitted += 1
        if not outcome.ok and outcome.state in _COUNTED_FAILURES and not self._salvaging:
            self._failures += 1
            halt = self._s.halt_after
            if halt is not None and self._failures >= halt and not self._halted:
                self._halted = True
                logger.error(
                    "rotation: %d tunnel(s) failed; halting (halt_after=%d): no new tunnel "
                    "is started",
                    self._failures,
                    halt,
                )
        self._poke()


_COUNTED_FAILURES = frozenset(
    {OutcomeState.FAILED, OutcomeState.UNDELIVERED, OutcomeState.UNRECORDED}
)


@contextlib.contextmanager
def _released(holding: dict[int, Any], item: Any) -> Iterator[None]:
    """Drop ``item`` from ``holding`` when the block ends normally; a stage cancelled, or
    broken by a bug, leaves it there for the salvage (its PSK is handed over, not lost)."""
    yield
    holding.pop(id(item), None)


def _batch_too_large(exc: MagicWANError) -> bool:
    if not isinstance(exc, APIError):
        return False
    return exc.status == 413 or bool(BATCH_TOO_LARGE_CODES & set(exc.codes))


def _doubt_from_before(work: _Tunnel) -> bool:
    """The journal says a run before this one left a request for the tunnel unanswered
    (killed while it was in flight, or an unknown outcome): the tunnel may hold its PSK."""
    return work.record is not None and work.record.left_open


def _resent(work: _Tunnel, psk: str) -> bool:
    """``psk`` is a set intent's PSK that a run before this one may have applied."""
    record = work.record
    return _doubt_from_before(work) and record is not None and record.pending_psk == psk


def _psk_problem(psk: str) -> str | None:
    """Why a PSK received cannot be handed to a device as it is, or None."""
    if not is_printable_psk(psk):
        return "holds characters a device cannot take (only printable ASCII without spaces)"
    return None


def _deliver_backoff(retry: int) -> float:
    first, cap = _DELIVER_BACKOFF
    delay = min(cap, first * 2.0 ** min(retry - 1, 16))
    return delay / 2 + delay / 2 * random.random()  # noqa: S311 - jitter, not a secret


def _describe(exc: BaseException, psk: str) -> str:
    """A deliverer's error as text with the PSK scrubbed and control characters escaped."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    # A DeliveryError already says what failed, in words made for this message.
    try:
        text = str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
    except Exception:  # the caller's exception class: its __str__ may fail too
        text = f"{type(exc).__name__} (its message cannot be printed)"
    return printable(redact(text, (psk,)))[:300]


# -- arguments ------------------------------------------------------------------------------


def _targets(tunnels: Iterable[str | IPsecTunnel]) -> list[tuple[str, IPsecTunnel | None]]:
    if isinstance(tunnels, str | IPsecTunnel):
        raise TypeError("tunnels must be an iterable of tunnel ids or IPsecTunnel objects")
    seen: dict[str, int] = {}
    targets: list[tuple[str, IPsecTunnel | None]] = []
    for item in tunnels:
        obj = item if isinstance(item, IPsecTunnel) else None
        tunnel_id = check_id(obj.id if obj is not None else item, "tunnel_id")
        key = tunnel_id.lower()  # hex ids: two spellings are one tunnel
        if key in seen:
            index = seen[key]
            if obj is not None and targets[index][1] is None:
                targets[index] = (targets[index][0], obj)  # keep what we know of it
            continue
        seen[key] = len(targets)
        targets.append((tunnel_id, obj))
    return targets


def rotate(
    account_id: str,
    tunnels: Iterable[str | IPsecTunnel],
    *,
    generate: GenerateCall,
    set_psks: SetCall,
    read_back: ReadBackCall,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
    method: Method = "generate",
    concurrency: int = DEFAULT_CONCURRENCY,
    batch_size: int = DEFAULT_BATCH_SIZE,
    validate_only: bool = False,
    journal: str | PathLike[str] | None = None,
    unsafe_without_journal: bool = False,
    deliver: Deliverer | None = None,
    deliver_retries: int = DEFAULT_DELIVER_RETRIES,
    deliver_timeout: float = DEFAULT_DELIVER_TIMEOUT,
    halt_after: int | None = None,
    settle_window: float = 60.0,
    drain_timeout: float = 60.0,
    storage: Storage | None = None,
    resume: bool = True,
) -> Rotation[Any]:
    """Check every argument now (nothing is sent), then return the :class:`Rotation`.

    The callables are the only way it reaches Cloudflare, so it is tested with fakes.
    ``storage`` is the journal's (default: the operating system's files). ``resume`` is
    accepted and not used yet: this engine always resumes a journal.
    """
    check_id(account_id, "account_id")
    if method not in ("generate", "set"):
        raise InvalidInputError(f"method must be 'generate' or 'set', got {method!r}")
    check_positive_int(concurrency, "concurrency")
    check_positive_int(batch_size, "batch_size")
    if batch_size > MAX_BATCH_SIZE:
        raise InvalidInputError(f"batch_size must be at most {MAX_BATCH_SIZE}")
    check_bool(validate_only, "validate_only")
    check_bool(unsafe_without_journal, "unsafe_without_journal")
    if journal is not None and not isinstance(journal, str | PathLike):
        raise InvalidInputError("journal must be a path")
    if method == "set" and journal is None and not validate_only and not unsafe_without_journal:
        raise InvalidInputError(
            "method='set' needs a journal: it is where each PSK is written before it is "
            "sent (pass unsafe_without_journal=True to accept losing PSKs to a crash)"
        )
    if deliver is not None and not callable(deliver):
        raise InvalidInputError("deliver must be an async callable taking a Delivery")
    check_non_negative_int(deliver_retries, "deliver_retries")
    deliver_timeout = check_seconds(deliver_timeout, "deliver_timeout")
    if halt_after is not None:
        check_positive_int(halt_after, "halt_after")
    if isinstance(settle_window, bool) or not isinstance(settle_window, int | float):
        raise InvalidInputError("settle_window must be a number of seconds")
    if not (math.isfinite(settle_window) and settle_window >= 0):
        raise InvalidInputError("settle_window must be a finite number of seconds >= 0")
    drain_timeout = check_seconds(drain_timeout, "drain_timeout")
    settings = _Settings(
        account_id=account_id,
        method=method,
        concurrency=concurrency,
        batch_size=batch_size,
        validate_only=validate_only,
        journal=journal,
        deliver=None if validate_only else deliver,
        deliver_retries=deliver_retries,
        deliver_timeout=deliver_timeout,
        halt_after=halt_after,
        settle_window=float(settle_window),
        drain_timeout=drain_timeout,
        storage=storage,
    )
    del resume  # accepted for the engine to come; this one always resumes
    return Rotation(
        settings,
        _targets(tunnels),
        generate=generate,
        set_psks=set_psks,
        read_back=read_back,
        clock=clock,
        sleep=sleep,
    )
