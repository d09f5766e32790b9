"""The asyncio driver: starts tunnels and performs the effects of their runs.

One scheduler starts tunnels while the concurrency, the rollout window and the caller's
pace allow; each started unit (a tunnel, or a ``set`` batch) is a task that performs its
run's effects (fsyncs, the request, the read-back, the delivery) and feeds what came of
each back through the :class:`~magicwan.rotation.ledger.Ledger`. A run's state is updated
before every wait, so cancelling a task anywhere leaves a state that says what the tunnel
may hold.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from magicwan.delivery import Delivery, DeliveryTarget, group_key
from magicwan.errors import MagicWANError
from magicwan.internal.clock import Clock, Sleep
from magicwan.internal.keygen import new_psk
from magicwan.internal.redaction import redact, scrub_error
from magicwan.journal import JournalError
from magicwan.rotation import machine
from magicwan.rotation.effects import (
    DelivererStoppedRotation,
    GenerateCall,
    ReadBackCall,
    SetCall,
    deliver_with_retries,
    send_set,
)
from magicwan.rotation.ledger import Ledger

__all__ = ["Driver"]

logger = logging.getLogger("magicwan")


class Driver:
    """The tasks of one rotation (see the module docstring)."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        generate: GenerateCall,
        set_psks: SetCall,
        read_back: ReadBackCall,
        clock: Clock,
        sleep: Sleep,
        psks: Mapping[str, str] | None = None,
    ) -> None:
        self.ledger = ledger
        options = ledger.options
        self._options = options
        self._account_id = ledger.rules.account_id
        self._generate = generate
        self._set = set_psks
        self._read_back = read_back
        self.clock = clock
        self._sleep = sleep
        self._psks = {key.lower(): psk for key, psk in (psks or {}).items()}
        self._lookahead = 2 * options.concurrency * options.unit
        self.tasks: set[asyncio.Task[None]] = set()
        self._scheduler: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(options.concurrency)
        self._deliveries = asyncio.Semaphore(options.deliver_concurrency or options.concurrency)
        self._group_of = group_key(options.deliver_group_by) if options.deliver_group_by else None
        self._groups: collections.defaultdict[str, asyncio.Lock] = collections.defaultdict(
            asyncio.Lock
        )

    def start(self) -> None:
        if self.ledger.runs:
            self._scheduler = self._spawn(self._schedule)

    def idle(self) -> bool:
        """Nothing runs but the scheduler (or every tunnel has its outcome)."""
        ledger = self.ledger
        return ledger.emitted >= len(ledger.runs) or not any(
            not task.done() for task in self.tasks if task is not self._scheduler
        )

    # -- tasks ----------------------------------------------------------------------------

    def _spawn(
        self, work: Callable[..., Coroutine[Any, Any, None]], *args: Any, **kwargs: Any
    ) -> asyncio.Task[None]:
        task = asyncio.create_task(self._guard(work, *args, **kwargs))
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.ledger.mark_changed()

    async def _guard(
        self, work: Callable[..., Coroutine[Any, Any, None]], *args: Any, **kwargs: Any
    ) -> None:
        # The coroutine is made inside the task: a task cancelled before it ever ran
        # leaves no coroutine that was never awaited.
        ledger = self.ledger
        try:
            await work(*args, **kwargs)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug, or the deliverer's SystemExit: stop and tell
            if ledger.crash is None:
                ledger.crash = exc
            ledger.stopping = True
            ledger.mark_changed()

    async def wait_for_change(self, at_most: float | None = None) -> None:
        """Wait until something changes, or ``at_most`` seconds of the injected clock."""
        changed = self.ledger.changed
        changed.clear()
        if at_most is None:
            await changed.wait()
            return
        waiter = asyncio.ensure_future(changed.wait())
        sleeper = asyncio.ensure_future(self._sleep(max(at_most, 0.0)))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            sleeper.cancel()

    # -- starting tunnels -------------------------------------------------------------------

    def _room(self) -> int:
        """How many tunnels may start now (the caller's pace and the rollout window)."""
        ledger = self.ledger
        # Bounded look-ahead: a caller who stops reading (a plain ``async for`` left by
        # ``break``) stops the rotation within 2 x ``concurrency`` units.
        room = self._lookahead - (ledger.exposed - ledger.unsettled) - len(ledger.ready)
        if ledger.rules.delivering:
            room = min(room, ledger.window.room(ledger.exposed))
        return min(room, self._options.unit, len(ledger.pending))

    async def _schedule(self) -> None:
        ledger = self.ledger
        while True:
            cut = ledger.cut_reason()
            if cut is not None and ledger.pending:
                while ledger.pending:
                    ledger.apply(ledger.pending.popleft(), cut, counted=False)
                continue
            if self._room() <= 0:
                await self.wait_for_change()
                continue
            if ledger.runs[ledger.pending[0]].resumed:
                # Its PSK is in the journal already: handed on without a request.
                key = ledger.pending.popleft()
                self._spawn(self._drive, key, ledger.apply(key, machine.Begin(self.clock())))
                continue
            await self._slots.acquire()
            if ledger.cut_reason() is not None or self._room() <= 0:
                self._slots.release()
                continue
            self._start_unit(self._dequeue_requestable(self._room()))

    def _start_unit(self, keys: list[str]) -> None:
        ledger, now = self.ledger, self.clock()
        if ledger.rules.method == "set":
            effects = {
                key: ledger.apply(key, machine.Begin(now, self._psk_for(key))) for key in keys
            }
            self._spawn(self._send_batch, effects)
        else:
            (key,) = keys
            self._spawn(self._drive, key, ledger.apply(key, machine.Begin(now)), slot=True)

    def _dequeue_requestable(self, size: int) -> list[str]:
        """Up to ``size`` tunnels to request, never one the journal already rotated."""
        ledger = self.ledger
        keys: list[str] = []
        while ledger.pending and len(keys) < size and not ledger.runs[ledger.pending[0]].resumed:
            keys.append(ledger.pending.popleft())
        return keys

    def _psk_for(self, key: str) -> str:
        """The PSK a ``set`` sends: the caller's, else the one a run before left unanswered
        (resent: it may be live), else a new one."""
        return self._psks.get(key) or self.ledger.runs[key].sending or new_psk()

    # -- performing effects -------------------------------------------------------------------

    async def _drive(self, key: str, effects: list[machine.Effect], *, slot: bool = False) -> None:
        """Perform a run's effects in order, each answer fed back, until none is left."""
        holding = [slot]
        try:
            queue = collections.deque(effects)
            while queue:
                queue.extend(await self._perform(key, queue.popleft(), holding))
        finally:
            if holding[0]:
                self._slots.release()

    async def _perform(
        self, key: str, effect: machine.Effect, holding: list[bool]
    ) -> list[machine.Effect]:
        ledger = self.ledger
        if isinstance(effect, machine.Sync):
            return ledger.apply(key, await self._sync(key))
        if isinstance(effect, machine.Request):
            return await self._request(key, holding)
        if isinstance(effect, machine.ReadBackAt):
            logger.info(
                "tunnel %s: doubt left by a retry or an earlier run; reading it back in %gs",
                ledger.runs[key].tunnel_id,
                max(0.0, effect.due - self.clock()),
            )
            return ledger.apply(key, await self._read_back_at(key, effect.due))
        if isinstance(effect, machine.Deliver):
            # A turn is taken before the deadline starts: waiting is not a timeout.
            async with self._group(key), self._deliveries:
                return ledger.apply(key, await self._deliver(key, effect))
        raise AssertionError(f"unexpected effect {effect!r}")

    async def _sync(self, key: str) -> machine.Synced | machine.SyncFailed:
        ledger = self.ledger
        journal = ledger.journal
        assert journal is not None
        try:
            await journal.sync(ledger.seq(key))
        except JournalError as exc:
            ledger.journal_failed(exc)
            return machine.SyncFailed(exc)
        return machine.Synced()

    async def _request(self, key: str, holding: list[bool]) -> list[machine.Effect]:
        ledger = self.ledger
        if ledger.journal_error is not None:  # a journal that failed sends nothing more
            return ledger.apply(key, machine.Cut(ledger.journal_error), counted=False)
        ledger.apply(key, machine.Sent())
        run = ledger.runs[key]
        try:
            reply = await self._generate(
                self._account_id, run.tunnel_id, ledger.rules.validate_only
            )
        except MagicWANError as exc:
            # The request carried no PSK, so the decoder scrubbed none; its answer may quote
            # one this tunnel holds (an earlier run's, a doubtful one): never shown.
            scrub_error(exc, _psks_of(run))
            event: machine.Event = machine.Failed(exc, unknown=exc.outcome_unknown)
        else:
            event = machine.Answered(reply.value, reply.attempts, reply.uncertain, self.clock())
        finally:
            if holding[0]:
                holding[0] = False
                self._slots.release()
        return ledger.apply(key, event)

    async def _send_batch(self, effects: dict[str, list[machine.Effect]]) -> None:
        """A ``set`` batch: the intents made durable together, then one request."""
        ledger = self.ledger
        try:
            waiting = [key for key, todo in effects.items() if machine.Sync() in todo]
            if waiting:
                synced = await self._sync(waiting[-1])
                for key in waiting:
                    self._go_on(key, ledger.apply(key, synced))
            ready = [key for key in effects if ledger.runs[key].stage is machine.Stage.READY]
            if ready:
                await self._send_set(ready)
        finally:
            self._slots.release()

    def _go_on(self, key: str, effects: list[machine.Effect]) -> None:
        """What follows for ``key`` goes on in a task of its own (while the rest is sent)."""
        if effects:
            self._spawn(self._drive, key, effects)

    async def _send_set(self, keys: list[str]) -> None:
        """One request for ``keys``; its answer goes to their runs at once (never held
        while a later request waits), and a batch refused as too large goes in halves."""
        ledger = self.ledger
        if ledger.journal_error is not None:  # a journal that failed sends nothing more
            for key in keys:
                ledger.apply(key, machine.Cut(ledger.journal_error), counted=False)
            return
        for key in keys:
            ledger.apply(key, machine.Sent())
        runs = [ledger.runs[key] for key in keys]
        events = await send_set(
            self._set,
            self._account_id,
            runs,
            validate_only=ledger.rules.validate_only,
            clock=self.clock,
        )
        if events is None:  # refused whole as too large: each half in turn
            for key in keys:
                ledger.apply(key, machine.Unsent())
            half = len(keys) // 2
            await self._send_set(keys[:half])
            await self._send_set(keys[half:])
            return
        for key, run in zip(keys, runs, strict=True):
            self._go_on(key, ledger.apply(key, events[run.tunnel_id]))

    async def _read_back_at(
        self, key: str, due: float
    ) -> machine.ReadBack | machine.ReadBackFailed:
        # A broken journal stops new requests, not read-backs: a doubtful PSK that could
        # not be recorded is still checked against a late store before it is handed over.
        ledger = self.ledger
        while not ledger.stopping and self.clock() < due:
            await self.wait_for_change(due - self.clock())
        if ledger.stopping:
            return machine.ReadBackFailed("not read back: the rotation stopped", stopped=True)
        async with self._slots:
            try:
                edge = (await self._read_back(self._account_id, ledger.runs[key].tunnel_id)).value
            except MagicWANError as exc:
                # The server's words may quote the PSK this tunnel holds: never shown.
                text = redact(f"{type(exc).__name__}: {exc}", _psks_of(ledger.runs[key]))
                return machine.ReadBackFailed(f"read-back failed: {text}")
        return machine.ReadBack(edge)

    def _group(self, key: str) -> contextlib.AbstractAsyncContextManager[Any]:
        """One delivery at a time per group (``deliver_group_by``), else no bound."""
        if self._group_of is None:
            return contextlib.nullcontext()
        run = self.ledger.runs[key]
        target = DeliveryTarget(
            account_id=self._account_id, tunnel_id=run.tunnel_id, tunnel=run.tunnel
        )
        return self._groups[self._group_of(target)]

    async def _deliver(
        self, key: str, effect: machine.Deliver
    ) -> machine.Delivered | machine.Undelivered:
        options = self._options
        assert options.deliver is not None
        run = self.ledger.runs[key]
        delivery = Delivery(
            account_id=self._account_id,
            tunnel_id=run.tunnel_id,
            psk=effect.psk,
            ipsec_id=effect.result.ipsec_id or (run.tunnel.ipsec_id if run.tunnel else None),
            tunnel=run.tunnel,
        )
        try:
            return await deliver_with_retries(
                options.deliver,
                delivery,
                retries=options.deliver_retries,
                per_try=options.deliver_timeout,
                sleep=self._sleep,
            )
        except DelivererStoppedRotation as stopped:
            # The deliverer raised SystemExit or the like: finish the tunnel (its PSK in
            # the outcome), then the rotation stops with that exception.
            self.ledger.apply(key, stopped.event)
            raise stopped.cause from None


def _psks_of(run: machine.TunnelRun) -> list[str]:
    """The PSKs ``run`` may hold or has sent: what no error about it may show."""
    held = [h.psk for h in (run.may_hold, run.before) if h is not None and h.psk]
    return [*held, run.sending] if run.sending else held
