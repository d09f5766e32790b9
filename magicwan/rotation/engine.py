"""The asyncio driver: performs what :mod:`magicwan.rotation.machine` asks, nothing more.

One scheduler starts tunnels while the concurrency, the rollout window and the caller's
pace allow; each started unit (a tunnel, or a ``set`` batch) is a task that performs its
run's effects (journal lines, fsyncs, the request, the read-back, the delivery) and feeds
what came of each back to the machine. The run's state is updated before every wait, so
cancelling a task anywhere leaves a state that says what the tunnel may hold; stopping is
the machine's :class:`~magicwan.rotation.machine.Cut` applied to every run not done.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import attrs

from magicwan._envelope import printable, redact
from magicwan._psk import new_psk
from magicwan._transport import Reply
from magicwan._validation import is_printable_psk
from magicwan.delivery._limit import group_key
from magicwan.delivery._model import Delivery, DeliveryTarget
from magicwan.errors import (
    APIError,
    DeliveryError,
    InvalidInputError,
    MagicWANError,
    NotAppliedError,
    RotationHaltedError,
    UnexpectedResponseError,
)
from magicwan.journal import Journal, JournalError, JournalRecord, read_journal
from magicwan.models.psk import PSKGenerateResult, PSKSetResult
from magicwan.models.tunnels import IPsecTunnel
from magicwan.ratelimit import Clock, Sleep
from magicwan.rotation import machine as m
from magicwan.rotation.options import RotationOptions
from magicwan.rotation.outcomes import Outcome, OutcomeState
from magicwan.rotation.window import RolloutWindow

__all__ = ["BATCH_TOO_LARGE_CODES", "GenerateCall", "ReadBackCall", "Rotation", "SetCall"]

logger = logging.getLogger("magicwan")

#: ``(account_id, tunnel_id, validate_only) -> Reply[PSKGenerateResult]``.
GenerateCall = Callable[[str, str, bool], Awaitable[Reply[PSKGenerateResult]]]
#: ``(account_id, {tunnel_id: psk}, validate_only) -> Reply[PSKSetResult]``.
SetCall = Callable[[str, Mapping[str, str], bool], Awaitable[Reply[PSKSetResult]]]
#: ``(account_id, tunnel_id) -> Reply[IPsecTunnel]``.
ReadBackCall = Callable[[str, str], Awaitable[Reply[IPsecTunnel]]]

#: Cloudflare error codes (besides HTTP 413) that mean "this batch is too large": the
#: batch is split in two and both halves are sent. 1005 is the emulator's; see README.
BATCH_TOO_LARGE_CODES = frozenset({1005})
_DELIVER_BACKOFF = (1.0, 10.0)  # first wait, cap (seconds), doubled per retry, jittered
_COUNTED_FAILURES = frozenset(
    {OutcomeState.FAILED, OutcomeState.UNDELIVERED, OutcomeState.UNRECORDED}
)

O = TypeVar("O")  # noqa: E741 - the outcome type: RotationOutcome, ValidationOutcome


class Rotation(Generic[O]):
    """A running (or ready to run) rotation; see :func:`magicwan.rotation.rotate`.

    ``async with rotation:`` opens (and locks) the journal, ``async for`` yields one
    outcome per tunnel in completion order. Leaving the block early starts no new tunnel,
    lets what was sent finish (within ``drain_timeout``), and keeps the outcomes not taken
    in :attr:`unclaimed`. :attr:`unrecorded` counts tunnels whose PSK is live but not in
    the journal (after a journal failure: the iteration then ends by raising
    :class:`~magicwan.JournalError`).
    """

    def __init__(
        self,
        account_id: str,
        targets: list[tuple[str, IPsecTunnel | None]],
        options: RotationOptions,
        *,
        generate: GenerateCall,
        set_psks: SetCall,
        read_back: ReadBackCall,
        clock: Clock,
        sleep: Sleep,
        psks: Mapping[str, str] | None = None,
    ) -> None:
        self._options = options
        self._account_id = account_id
        self._generate = generate
        self._set = set_psks
        self._read_back = read_back
        self._clock = clock
        self._sleep = sleep
        self._psks = {key.lower(): psk for key, psk in (psks or {}).items()}
        delivering = options.deliver is not None and not options.validate_only
        # validate_only journals too: the PSKs a set sends are real, and a generate answer
        # that carries a PSK anyway (a gateway that drops the query) is recorded.
        journalled = options.journal is not None
        self._rules = m.Rules(
            account_id=account_id,
            method=options.method,
            validate_only=options.validate_only,
            journalled=journalled,
            delivering=delivering,
            settle_window=float(options.settle_window or 0.0),
        )
        self._runs: dict[str, m.TunnelRun] = {
            tunnel_id.lower(): m.TunnelRun(tunnel_id=tunnel_id, tunnel=obj)
            for tunnel_id, obj in targets
        }
        self._pending: collections.deque[str] = collections.deque()
        self._ready: collections.deque[O] = collections.deque()
        self._seq: dict[str, int] = {}
        self._journal: Journal | None = None
        self._journal_error: JournalError | None = None
        self._window = RolloutWindow(
            limit=options.rollout_max or options.concurrency * options.unit
        )
        self._exposed = 0
        self._lookahead = 2 * options.concurrency * options.unit
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(options.concurrency)
        self._deliveries = asyncio.Semaphore(options.deliver_concurrency or options.concurrency)
        self._group_of = group_key(options.deliver_group_by) if options.deliver_group_by else None
        self._groups: collections.defaultdict[str, asyncio.Lock] = collections.defaultdict(
            asyncio.Lock
        )
        self._started = self._finished = self._stopping = self._halted = False
        self._crash: BaseException | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._emitted = self._failures = self._unrecorded = 0
        self._unsettled = 0  # runs waiting for a read-back: not the caller's to take yet

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
        return len(self._runs)

    @property
    def window(self) -> int:
        """The rollout window now: how many tunnels may have a new PSK live at the edge
        and not yet delivered (with a deliverer; see :class:`RolloutWindow`)."""
        return self._window.size

    @property
    def waiting(self) -> dict[str, float]:
        """The tunnels waiting for their read-back (a retry or an earlier run left doubt),
        and in how many seconds of the rotation's clock each is read back."""
        now = self._clock()
        return {
            run.tunnel_id: max(0.0, (run.read_back_due or now) - now)
            for run in self._runs.values()
            if run.stage is m.Stage.UNSETTLED
        }

    @property
    def exposed(self) -> int:
        """How many tunnels are between their request and their outcome right now."""
        return self._exposed

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
                self._poke()  # room for the look-ahead: the scheduler may go on
                return outcome
            if self._emitted >= len(self._runs) or self._finished:
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

    # -- start and finish -------------------------------------------------------------------

    async def _start(self) -> None:
        if self._started:
            return
        self._started = True
        records = self._open_journal()
        now, wall = self._clock(), datetime.now(UTC)
        for key in self._runs:
            record = records.get(key)
            since = (wall - record.last_time).total_seconds() if record and record.last_time else 0
            self._runs[key] = m.start(
                self._rules,
                self._runs[key],
                record,
                now=now,
                since_last=since,
                again=self._options.again,
            )
            self._pending.append(key)
        if self._runs:
            self._scheduler = self._spawn(self._schedule)

    def _open_journal(self) -> dict[str, JournalRecord]:
        """Open (and lock) the journal; what it says of the selected tunnels. Raises
        before anything is sent."""
        options = self._options
        if not self._rules.journalled or options.journal is None:
            return {}
        journal = Journal(options.journal)
        journal.open()
        self._journal = journal
        if options.validate_only:
            return {}
        try:
            account = self._account_id.lower()
            records = {
                tunnel: record
                for (acc, tunnel), record in read_journal(journal.path).items()
                if acc == account and tunnel in self._runs
            }
            done = sum(1 for record in records.values() if record.rotated)
            if done and not (options.resume or options.again):
                raise InvalidInputError(
                    f"the journal {journal.path} already records new PSKs for {done} of the "
                    f"{len(self._runs)} selected tunnels: pass resume=True to finish the run "
                    "it records (they are skipped, not rotated), or use a new journal"
                )
        except BaseException:
            journal.close_now()
            self._journal = None
            raise
        return records

    async def _drain(self) -> None:
        deadline = self._options.drain_timeout
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
        return self._emitted >= len(self._runs) or not any(
            not task.done() for task in self._tasks if task is not self._scheduler
        )

    async def _finish(self, raise_journal_error: bool = True) -> None:
        if not self._finished:
            self._finished = self._stopping = True
            durable = False
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            try:
                await asyncio.gather(*tasks, return_exceptions=True)
                durable = await self._last_sync()
            finally:
                self._cut_all(durable)
                await self._close_journal()
        error = self._unrecorded_error()
        if raise_journal_error and error is not None:
            raise error

    async def _last_sync(self) -> bool:
        journal = self._journal
        if journal is None or journal.broken is not None:
            return False
        try:
            await journal.sync()
        except JournalError as exc:
            self._journal_failed(exc)
            return False
        return True

    def _cut_all(self, durable: bool) -> None:
        """Every run not done is cut: its outcome carries what it may hold."""
        cut = self._cut_reason() or m.Cut(self._stopped(), caller_left=True)
        cut = attrs.evolve(cut, durable=durable)
        self._pending.clear()
        for key, run in self._runs.items():
            if run.stage is not m.Stage.DONE:
                self._apply(key, cut, counted=False)

    async def _close_journal(self) -> None:
        # Even when the caller is cancelled here: the journal's file and lock must not
        # outlive the rotation (aclose closes the file whatever happens).
        journal, self._journal = self._journal, None
        if journal is not None:
            try:
                await journal.aclose()
            except JournalError as exc:
                logger.error("rotation: %s", exc)

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

    # -- the machine ------------------------------------------------------------------------

    def _apply(self, key: str, event: m.Event, *, counted: bool = True) -> list[m.Effect]:
        """Step ``key``'s run; perform the effects that need no wait (journal appends,
        outcomes, requeues) at once and return the others."""
        before = self._runs[key]
        run, effects = m.step(self._rules, before, event)
        self._runs[key] = run
        self._track(before.stage, run.stage)
        return self._perform_now(key, effects, counted=counted)

    def _perform_now(self, key: str, effects: list[m.Effect], *, counted: bool) -> list[m.Effect]:
        later: list[m.Effect] = []
        for effect in effects:
            if isinstance(effect, m.Append):
                later += self._apply(key, self._append(key, effect.line), counted=counted)
            elif isinstance(effect, m.Note):
                self._note(key, effect.line)
            elif isinstance(effect, m.Emit):
                self._emit(effect.outcome, counted=counted)
            elif isinstance(effect, m.Requeue):
                logger.warning(
                    "tunnel %s: the edge holds a newer PSK than the one received; generating again",
                    self._runs[key].tunnel_id,
                )
                self._pending.appendleft(key)
                self._poke()
            else:
                later.append(effect)
        return later

    def _track(self, was: m.Stage, now: m.Stage) -> None:
        self._exposed += (now in m.EXPOSED) - (was in m.EXPOSED)
        unsettled = m.Stage.UNSETTLED
        self._unsettled += (now is unsettled) - (was is unsettled)

    def _append(self, key: str, line: Any) -> m.Written | m.WriteFailed:
        journal = self._journal
        assert journal is not None
        try:
            self._seq[key] = journal.append(line)
        except JournalError as exc:
            self._journal_failed(exc)
            return m.WriteFailed(exc)
        return m.Written()

    def _note(self, key: str, line: Any) -> None:
        """A line no PSK depends on: a failure stops new work, costs the tunnel nothing."""
        journal = self._journal
        if journal is None or self._journal_error is not None:
            return
        try:
            self._seq[key] = journal.append(line)
        except JournalError as exc:
            self._journal_failed(exc)

    def _emit(self, outcome: Outcome, *, counted: bool) -> None:
        if outcome.unverified is not None:
            logger.warning(
                "tunnel %s: PSK handed over unverified: %s", outcome.tunnel_id, outcome.unverified
            )
        self._ready.append(outcome)  # type: ignore[arg-type]
        self._emitted += 1
        if outcome.state is OutcomeState.UNRECORDED:
            self._unrecorded += 1
        if self._rules.delivering and outcome.delivered:
            self._window.widen()
        if not outcome.ok and outcome.state in _COUNTED_FAILURES and counted:
            self._window.narrow()
            self._failures += 1
            halt = self._options.halt_after
            if halt is not None and self._failures >= halt and not self._halted:
                self._halted = True
                logger.error(
                    "rotation: %d tunnel(s) failed; halting (halt_after=%d): no new tunnel "
                    "is started",
                    self._failures,
                    halt,
                )
        self._poke()

    def _journal_failed(self, exc: JournalError) -> None:
        if self._journal_error is None:
            self._journal_error = exc
            logger.error("rotation: %s; starting no new work", exc)
        self._poke()

    # -- scheduling ---------------------------------------------------------------------------

    def _spawn(
        self, work: Callable[..., Coroutine[Any, Any, None]], *args: Any, **kwargs: Any
    ) -> asyncio.Task[None]:
        task = asyncio.create_task(self._guard(work, *args, **kwargs))
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._poke()

    async def _guard(
        self, work: Callable[..., Coroutine[Any, Any, None]], *args: Any, **kwargs: Any
    ) -> None:
        # The coroutine is made inside the task: a task cancelled before it ever ran
        # leaves no coroutine that was never awaited.
        try:
            await work(*args, **kwargs)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug, or the deliverer's SystemExit: stop and tell
            if self._crash is None:
                self._crash = exc
            self._stopping = True
            self._poke()

    def _poke(self) -> None:
        self._changed.set()

    async def _wait_for_change(self, at_most: float | None = None) -> None:
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

    def _halt_error(self) -> RotationHaltedError:
        return RotationHaltedError(
            f"not attempted: the rotation halted after {self._failures} failed tunnel(s) "
            f"(halt_after={self._options.halt_after})"
        )

    @staticmethod
    def _stopped() -> RotationHaltedError:
        return RotationHaltedError("not attempted: the rotation stopped first")

    def _cut_reason(self) -> m.Cut | None:
        """Why no new tunnel may start (as the cut of those never started), or None."""
        if self._journal_error is not None:
            return m.Cut(self._journal_error)
        if self._halted:
            return m.Cut(self._halt_error())
        if self._stopping:
            return m.Cut(self._stopped(), caller_left=self._crash is None)
        return None

    def _room(self) -> int:
        """How many tunnels may start now (the caller's pace and the rollout window)."""
        # Bounded look-ahead: a caller who stops reading (a plain ``async for`` left by
        # ``break``) stops the rotation within 2 x ``concurrency`` units.
        room = self._lookahead - (self._exposed - self._unsettled) - len(self._ready)
        if self._rules.delivering:
            room = min(room, self._window.room(self._exposed))
        return min(room, self._options.unit, len(self._pending))

    async def _schedule(self) -> None:
        while True:
            cut = self._cut_reason()
            if cut is not None and self._pending:
                while self._pending:
                    self._apply(self._pending.popleft(), cut, counted=False)
                continue
            if self._room() <= 0:
                await self._wait_for_change()
                continue
            if self._runs[self._pending[0]].resumed:
                # Its PSK is in the journal already: handed on without a request.
                key = self._pending.popleft()
                self._spawn(self._drive, key, self._apply(key, m.Begin(self._clock())))
                continue
            await self._slots.acquire()
            if self._cut_reason() is not None or self._room() <= 0:
                self._slots.release()
                continue
            keys = self._take(self._room())
            now = self._clock()
            if self._rules.method == "set":
                effects = {key: self._apply(key, m.Begin(now, self._psk_for(key))) for key in keys}
                self._spawn(self._send_batch, effects)
            else:
                (key,) = keys
                self._spawn(self._drive, key, self._apply(key, m.Begin(now)), slot=True)

    def _take(self, size: int) -> list[str]:
        """Up to ``size`` tunnels to request, never one the journal already rotated."""
        keys: list[str] = []
        while self._pending and len(keys) < size and not self._runs[self._pending[0]].resumed:
            keys.append(self._pending.popleft())
        return keys

    def _psk_for(self, key: str) -> str:
        """The PSK a ``set`` sends: the caller's, else the one a run before left unanswered
        (resent: it may be live), else a new one."""
        return self._psks.get(key) or self._runs[key].sending or new_psk()

    # -- performing effects -------------------------------------------------------------------

    async def _drive(self, key: str, effects: list[m.Effect], *, slot: bool = False) -> None:
        """Perform a run's effects in order, each answer fed back, until none is left."""
        holding = [slot]
        try:
            queue = collections.deque(effects)
            while queue:
                queue.extend(await self._perform(key, queue.popleft(), holding))
        finally:
            if holding[0]:
                self._slots.release()

    async def _perform(self, key: str, effect: m.Effect, holding: list[bool]) -> list[m.Effect]:
        if isinstance(effect, m.Sync):
            return self._apply(key, await self._sync(key))
        if isinstance(effect, m.Request):
            return await self._request(key, holding)
        if isinstance(effect, m.ReadBackAt):
            logger.info(
                "tunnel %s: doubt left by a retry or an earlier run; reading it back in %gs",
                self._runs[key].tunnel_id,
                max(0.0, effect.due - self._clock()),
            )
            return self._apply(key, await self._read_back_at(key, effect.due))
        if isinstance(effect, m.Deliver):
            # A turn is taken before the deadline starts: waiting is not a timeout.
            async with self._group(key), self._deliveries:
                return self._apply(key, await self._deliver(key, effect))
        raise AssertionError(f"unexpected effect {effect!r}")

    def _group(self, key: str) -> contextlib.AbstractAsyncContextManager[Any]:
        """One delivery at a time per group (``deliver_group_by``), else no bound."""
        if self._group_of is None:
            return contextlib.nullcontext()
        run = self._runs[key]
        target = DeliveryTarget(
            account_id=self._account_id, tunnel_id=run.tunnel_id, tunnel=run.tunnel
        )
        return self._groups[self._group_of(target)]

    async def _sync(self, key: str) -> m.Synced | m.SyncFailed:
        journal = self._journal
        assert journal is not None
        try:
            await journal.sync(self._seq.get(key))
        except JournalError as exc:
            self._journal_failed(exc)
            return m.SyncFailed(exc)
        return m.Synced()

    async def _request(self, key: str, holding: list[bool]) -> list[m.Effect]:
        reason = self._blocked_for_requests()
        if reason is not None:
            return self._apply(key, m.Cut(reason), counted=False)
        self._apply(key, m.Sent())
        run = self._runs[key]
        try:
            reply = await self._generate(self._account_id, run.tunnel_id, self._rules.validate_only)
        except MagicWANError as exc:
            event: m.Event = m.Failed(exc, unknown=exc.outcome_unknown)
        else:
            event = m.Answered(reply.value, reply.attempts, reply.uncertain, self._clock())
        finally:
            if holding[0]:
                holding[0] = False
                self._slots.release()
        return self._apply(key, event)

    def _blocked_for_requests(self) -> MagicWANError | None:
        """A journal that failed sends nothing more (a stop lets what was ready go)."""
        return self._journal_error

    async def _send_batch(self, effects: dict[str, list[m.Effect]]) -> None:
        """A ``set`` batch: the intents made durable together, then one request."""
        follow: dict[str, list[m.Effect]] = {}
        try:
            waiting = [key for key, todo in effects.items() if m.Sync() in todo]
            if waiting:
                synced = await self._sync(waiting[-1])
                for key in waiting:
                    follow[key] = self._apply(key, synced)
            ready = [key for key in effects if self._runs[key].stage is m.Stage.READY]
            reason = self._blocked_for_requests()
            if reason is not None:
                for key in ready:
                    self._apply(key, m.Cut(reason), counted=False)
            elif ready:
                for key in ready:
                    self._apply(key, m.Sent())
                follow.update(await self._send_set(ready))
        finally:
            self._slots.release()
        for key, todo in follow.items():
            if todo:
                self._spawn(self._drive, key, todo)

    async def _send_set(self, keys: list[str]) -> dict[str, list[m.Effect]]:
        runs = [self._runs[key] for key in keys]
        mapping = {run.tunnel_id: run.sending or "" for run in runs}
        try:
            reply = await self._set(self._account_id, mapping, self._rules.validate_only)
        except MagicWANError as exc:
            if _batch_too_large(exc) and len(keys) > 1:
                half = len(keys) // 2
                logger.info("batch of %d refused as too large; splitting it", len(keys))
                first = await self._send_set(keys[:half])
                return first | await self._send_set(keys[half:])
            return {
                key: self._apply(key, m.Failed(exc, unknown=exc.outcome_unknown)) for key in keys
            }
        now = self._clock()
        return {
            key: self._apply(key, _set_event(run, reply, now))
            for key, run in zip(keys, runs, strict=True)
        }

    async def _read_back_at(self, key: str, due: float) -> m.ReadBack | m.ReadBackFailed:
        while not self._stopping and self._journal_error is None and self._clock() < due:
            await self._wait_for_change(due - self._clock())
        if self._stopping or self._journal_error is not None:
            why = "the rotation stopped" if self._stopping else "the journal failed"
            return m.ReadBackFailed(f"not read back: {why}")
        async with self._slots:
            try:
                edge = (await self._read_back(self._account_id, self._runs[key].tunnel_id)).value
            except MagicWANError as exc:
                return m.ReadBackFailed(f"read-back failed: {type(exc).__name__}: {exc}")
        return m.ReadBack(edge)

    async def _deliver(self, key: str, effect: m.Deliver) -> m.Delivered | m.Undelivered:
        options = self._options
        deliver = options.deliver
        assert deliver is not None
        run = self._runs[key]
        psk = effect.psk
        delivery = Delivery(
            account_id=self._account_id,
            tunnel_id=run.tunnel_id,
            psk=psk,
            ipsec_id=effect.result.ipsec_id or (run.tunnel.ipsec_id if run.tunnel else None),
            tunnel=run.tunnel,
        )
        if not is_printable_psk(psk):
            # A PSK a device cannot take whole (a newline would cut it in two on a
            # program's stdin): never delivered, so never "delivered" half of it.
            error = DeliveryError(
                "delivery failed after 1 tries: the PSK holds characters a device cannot take "
                "(only printable ASCII without spaces): not delivered",
                reason="error",
                tunnel_id=run.tunnel_id,
            )
            return m.Undelivered(error, 1)
        last: BaseException | None = None
        tries = 0
        for tries in range(1, options.deliver_retries + 2):
            try:
                async with asyncio.timeout(options.deliver_timeout):
                    await deliver(delivery)
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # the rotation itself is being cancelled
                last = exc  # the deliverer's own cancelled future: a failed delivery
            except Exception as exc:  # the deliverer is the caller's code: anything may come
                last = exc
                if isinstance(exc, DeliveryError) and exc.permanent:
                    break  # misconfigured, rejected: another try cannot help
            except BaseException as exc:  # SystemExit, KeyboardInterrupt from a deliverer
                self._fatal(key, exc, psk, tries)
                raise
            else:
                return m.Delivered(tries)
            if tries <= options.deliver_retries:
                await self._sleep(_deliver_backoff(tries))
        assert last is not None
        return m.Undelivered(_delivery_error(run.tunnel_id, last, psk, tries), tries, last)

    def _fatal(self, key: str, exc: BaseException, psk: str, tries: int) -> None:
        """The deliverer raised SystemExit or the like: finish the tunnel (its PSK in the
        outcome), then the rotation stops with that exception."""
        error = _delivery_error(self._runs[key].tunnel_id, exc, psk, tries)
        self._apply(key, m.Undelivered(error, tries, exc))


def _set_event(run: m.TunnelRun, reply: Reply[PSKSetResult], now: float) -> m.Event:
    """What a bulk set's answer says of one tunnel of its batch."""
    result = reply.value
    applied = result.applied.get(run.tunnel_id)
    if applied is None and run.tunnel_id in result.unapplied:
        # Refused now; after an attempt whose outcome was unknown it may be live all the same.
        refused = NotAppliedError(result.unapplied[run.tunnel_id])
        return m.Failed(refused, unknown=reply.uncertain, attempts=reply.attempts)
    if applied is None:
        missing = UnexpectedResponseError(
            "tunnel absent from Cloudflare's answer: it may hold the PSK sent (in this "
            "outcome, and in the journal's intent line)"
        )
        return m.Failed(missing, unknown=True, attempts=reply.attempts)
    model = PSKGenerateResult(
        ipsec_tunnel_id=run.tunnel_id,
        psk=applied.psk,
        psk_metadata=applied.psk_metadata,
        ipsec_id=applied.ipsec_id,
    )
    if applied.psk != run.sending:
        return m.OtherPsk(model, reply.attempts)
    return m.Answered(model, reply.attempts, False, now)


def _batch_too_large(exc: MagicWANError) -> bool:
    if not isinstance(exc, APIError):
        return False
    return exc.status == 413 or bool(BATCH_TOO_LARGE_CODES & set(exc.codes))


def _deliver_backoff(retry: int) -> float:
    first, cap = _DELIVER_BACKOFF
    delay = min(cap, first * 2.0 ** min(retry - 1, 16))
    return delay / 2 + delay / 2 * random.random()  # noqa: S311 - jitter, not a secret


def _delivery_error(tunnel_id: str, exc: BaseException, psk: str, tries: int) -> DeliveryError:
    reason = exc.reason if isinstance(exc, DeliveryError) else "error"
    if isinstance(exc, TimeoutError):
        reason = "timeout"
    return DeliveryError(
        f"delivery failed after {tries} tries: {_describe(exc, psk)}",
        reason=reason,
        tunnel_id=tunnel_id,
        permanent=exc.permanent if isinstance(exc, DeliveryError) else None,
    )


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
