"""The public face of a running rotation: iteration, leaving early, the journal's life.

:class:`Rotation` opens (and locks) the journal, loads every tunnel's run from it into the
:class:`~magicwan.rotation.ledger.Ledger`, lets the
:class:`~magicwan.rotation.driver.Driver` start and perform the runs, hands the outcomes
out, and on any stop ends every run not done with the machine's cut.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Generic, Self, TypeVar

from magicwan.errors import InvalidInputError
from magicwan.internal.clock import Clock, Sleep
from magicwan.journal import (
    Finished,
    Journal,
    JournalError,
    JournalRecord,
    Storage,
    read_journal,
)
from magicwan.models.tunnels import IPsecTunnel
from magicwan.rotation import machine
from magicwan.rotation.driver import Driver
from magicwan.rotation.effects import (
    BATCH_TOO_LARGE_CODES,
    GenerateCall,
    ReadBackCall,
    SetCall,
)
from magicwan.rotation.ledger import Ledger
from magicwan.rotation.live_tunnels import LiveTunnels
from magicwan.rotation.options import RotationOptions

__all__ = ["BATCH_TOO_LARGE_CODES", "GenerateCall", "ReadBackCall", "Rotation", "SetCall"]

logger = logging.getLogger("magicwan")

OutcomeT = TypeVar("OutcomeT")  # the outcome type: RotationOutcome, ValidationOutcome


class Rotation(Generic[OutcomeT]):
    """A running (or ready to run) rotation; see :func:`magicwan.rotation.rotate`.

    ``async with rotation:`` opens (and locks) the journal, ``async for`` yields one
    outcome per tunnel in completion order. Leaving the block early starts no new tunnel,
    lets what was sent finish (within ``drain_timeout``), and keeps the outcomes not taken
    in :attr:`unclaimed`. :attr:`unrecorded` counts tunnels whose PSK is live but not in
    the journal (after a journal failure: the iteration then ends by raising
    :class:`~magicwan.JournalError`). An iteration that ends with every outcome taken and
    nothing stopping it early (no halt, no leaving early, no journal failure) writes the
    journal's ``finished`` line (:class:`~magicwan.journal.Finished`).
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
        storage: Storage | None = None,
        live_tunnels: LiveTunnels | None = None,
    ) -> None:
        self._options = options
        self._storage = storage
        self._live_tunnels = live_tunnels
        self._holding = False
        self._ledger = Ledger(account_id, targets, options)
        self._driver = Driver(
            self._ledger,
            generate=generate,
            set_psks=set_psks,
            read_back=read_back,
            clock=clock,
            sleep=sleep,
            psks=psks,
        )
        self._started = self._finished = False

    # -- public ----------------------------------------------------------------------------

    @property
    def unclaimed(self) -> list[OutcomeT]:
        """Outcomes that finished but were not taken by the caller (after leaving early)."""
        return list(self._ledger.ready)  # type: ignore[arg-type]

    @property
    def unrecorded(self) -> int:
        """Tunnels whose new PSK is live at Cloudflare but not in the journal."""
        return self._ledger.unrecorded

    @property
    def halted(self) -> bool:
        """True once ``halt_after`` failures stopped the rotation from starting tunnels."""
        return self._ledger.halted

    @property
    def total(self) -> int:
        """How many tunnels this rotation has (one outcome each)."""
        return len(self._ledger.runs)

    @property
    def window(self) -> int:
        """The rollout window now: how many tunnels may have a new PSK live at the edge
        and not yet delivered (with a deliverer; see :class:`RolloutWindow`)."""
        return self._ledger.window.size

    @property
    def exposed(self) -> int:
        """How many tunnels are between their request and their outcome right now."""
        return self._ledger.exposed

    @property
    def waiting(self) -> dict[str, float]:
        """The tunnels waiting for their read-back (a retry or an earlier run left doubt),
        and in how many seconds of the rotation's clock each is read back."""
        now = self._driver.clock()
        return {
            run.tunnel_id: max(0.0, (run.read_back_due or now) - now)
            for run in self._ledger.runs.values()
            if run.stage is machine.Stage.UNSETTLED
        }

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

    async def __anext__(self) -> OutcomeT:
        if not self._started:
            await self._start()
        ledger = self._ledger
        while True:
            if ledger.crash is not None:
                crash, ledger.crash = ledger.crash, None
                await self.aclose()
                raise crash
            if ledger.ready:
                outcome = ledger.ready.popleft()
                ledger.mark_changed()  # room for the look-ahead: the scheduler may go on
                return outcome  # type: ignore[return-value]
            if ledger.emitted >= len(ledger.runs) or self._finished:
                if not self._finished:
                    await self._record_finished()
                await self._finish()
                raise StopAsyncIteration
            ledger.changed.clear()
            await ledger.changed.wait()

    async def aclose(self) -> None:
        """Stop starting work, let what was sent finish (within ``drain_timeout``),
        journal and deliver it, and close the journal. Outcomes not yet taken stay in
        :attr:`unclaimed`. Safe to call twice."""
        if self._finished:
            return
        if not self._started:
            self._finished = True
            return
        self._ledger.stopping = True
        self._ledger.mark_changed()
        try:
            await self._drain()
        finally:
            await self._finish(raise_journal_error=False)

    # -- start and finish -------------------------------------------------------------------

    async def _start(self) -> None:
        if self._started:
            return
        self._started = True
        if self._live_tunnels is not None:
            self._live_tunnels.hold(self._ledger.rules.account_id, self._ledger.runs.keys())
            self._holding = True
        try:
            records = self._open_journal()
        except BaseException:
            self._let_go()
            raise
        self._ledger.load(records, self._driver.clock(), datetime.now(UTC))
        self._driver.start()

    def _let_go(self) -> None:
        if self._holding and self._live_tunnels is not None:
            self._holding = False
            self._live_tunnels.let_go(self._ledger.rules.account_id, self._ledger.runs.keys())

    def _open_journal(self) -> dict[str, JournalRecord]:
        """Open (and lock) the journal; what it says of the selected tunnels. Raises
        before anything is sent."""
        options, ledger = self._options, self._ledger
        if not ledger.rules.journalled or options.journal is None:
            return {}
        journal = Journal(options.journal, storage=self._storage)
        journal.open()
        ledger.journal = journal
        if options.validate_only:
            return {}
        try:
            account = ledger.rules.account_id.lower()
            records = {
                tunnel: record
                for (acc, tunnel), record in read_journal(
                    journal.path, storage=self._storage
                ).items()
                if acc == account and tunnel in ledger.runs
            }
            done = sum(1 for record in records.values() if record.rotated)
            if done and not (options.resume or options.again):
                raise InvalidInputError(
                    f"the journal {journal.path} already records new PSKs for {done} of the "
                    f"{len(ledger.runs)} selected tunnels: pass resume=True to finish the run "
                    "it records (they are skipped, not rotated), or use a new journal"
                )
        except BaseException:
            journal.close_now()
            ledger.journal = None
            raise
        return records

    async def _drain(self) -> None:
        deadline = self._options.drain_timeout
        try:
            async with asyncio.timeout(deadline):
                while not self._driver.idle():
                    await self._driver.wait_for_change()
        except TimeoutError:
            logger.warning(
                "rotation: in-flight work did not finish within %gs; cancelling it", deadline
            )

    async def _finish(self, raise_journal_error: bool = True) -> None:
        ledger = self._ledger
        if not self._finished:
            self._finished = True
            ledger.stopping = True
            durable = False
            tasks = list(self._driver.tasks)
            for task in tasks:
                task.cancel()
            try:
                await asyncio.gather(*tasks, return_exceptions=True)
                durable = await self._last_sync()
            finally:
                ledger.cut_all(durable)
                self._let_go()
                await self._close_journal()
        error = ledger.unrecorded_error()
        if raise_journal_error and error is not None:
            raise error

    async def _record_finished(self) -> None:
        """Every outcome was handed out and nothing stopped the run early: the journal's
        ``finished`` line says so (a ``--resume`` on a journal without one continues it).
        Every PSK is durable already, so a journal that fails now costs no tunnel
        anything: it is logged, and the next resume finds the run unfinished."""
        ledger = self._ledger
        journal = ledger.journal
        if journal is None or ledger.cut_reason() is not None or ledger.unrecorded:
            return
        line = Finished(account_id=ledger.rules.account_id, tunnels=len(ledger.runs))
        try:
            journal.append(line)
            await journal.sync()
        except JournalError as exc:
            logger.warning("rotation: the journal could not record that the run finished: %s", exc)

    async def _last_sync(self) -> bool:
        """Make every line written durable before the cut decides what was recorded."""
        ledger = self._ledger
        journal = ledger.journal
        if journal is None or journal.broken is not None:
            return False
        try:
            await journal.sync()
        except JournalError as exc:
            ledger.journal_failed(exc)
            return False
        return True

    async def _close_journal(self) -> None:
        # Even when the caller is cancelled here: the journal's file and lock must not
        # outlive the rotation (aclose closes the file whatever happens).
        ledger = self._ledger
        journal, ledger.journal = ledger.journal, None
        if journal is not None:
            try:
                await journal.aclose()
            except JournalError as exc:
                logger.error("rotation: %s", exc)
