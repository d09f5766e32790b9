"""Every tunnel's run of one rotation, and what stepping them does at once.

:class:`Ledger` keeps the runs, steps them through the machine, and performs the effects
that need no wait: journal appends (whose answers it feeds straight back), outcomes,
requeues. It counts what the rollout window, ``halt_after`` and the look-ahead need, and
its :meth:`Ledger.cut_all` is the only way a stopped rotation ends: the machine's cut
applied to every run not done.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
from datetime import datetime
from typing import Any

from magicwan.errors import RotationHaltedError
from magicwan.journal import Journal, JournalError, JournalRecord
from magicwan.rotation import machine
from magicwan.rotation.options import RotationOptions
from magicwan.rotation.outcomes import Outcome, OutcomeState
from magicwan.rotation.window import RolloutWindow

__all__ = ["Ledger"]

logger = logging.getLogger("magicwan")

_COUNTED_FAILURES = frozenset(
    {OutcomeState.FAILED, OutcomeState.UNDELIVERED, OutcomeState.UNRECORDED}
)


class Ledger:
    """The runs of one rotation and their counts (see the module docstring)."""

    def __init__(
        self,
        account_id: str,
        targets: list[tuple[str, Any]],
        options: RotationOptions,
    ) -> None:
        self.options = options
        self.rules = machine.Rules(
            account_id=account_id,
            method=options.method,
            validate_only=options.validate_only,
            # validate_only journals too: the PSKs a set sends are real, and a generate
            # answer that carries a PSK anyway (a gateway dropping the query) is recorded.
            journalled=options.journal is not None,
            delivering=options.deliver is not None and not options.validate_only,
            settle_window=float(options.settle_window or 0.0),
        )
        self.runs: dict[str, machine.TunnelRun] = {
            tunnel_id.lower(): machine.TunnelRun(tunnel_id=tunnel_id, tunnel=obj)
            for tunnel_id, obj in targets
        }
        self.pending: collections.deque[str] = collections.deque()
        self.ready: collections.deque[Outcome] = collections.deque()
        self.window = RolloutWindow(limit=options.rollout_max or options.concurrency * options.unit)
        self.journal: Journal | None = None
        self.journal_error: JournalError | None = None
        self.changed = asyncio.Event()
        self.stopping = self.halted = False
        self.crash: BaseException | None = None
        self.emitted = self.failures = self.unrecorded = 0
        self.exposed = 0  # runs between their request and their outcome
        self.unsettled = 0  # of those, runs waiting for a read-back
        self._seq: dict[str, int] = {}

    # -- the runs ---------------------------------------------------------------------------

    def load(self, records: dict[str, JournalRecord], now: float, wall: datetime) -> None:
        """Every run as the journal leaves it, queued to begin."""
        for key, run in self.runs.items():
            record = records.get(key)
            since = _whole_seconds(wall, record.last_time) if record is not None else 0.0
            self.runs[key] = machine.start(
                self.rules, run, record, now=now, since_last=since, again=self.options.again
            )
            self.pending.append(key)

    def apply(
        self, key: str, event: machine.Event, *, counted: bool = True
    ) -> list[machine.Effect]:
        """Step ``key``'s run; perform the effects that need no wait (journal appends,
        outcomes, requeues) at once and return the others."""
        before = self.runs[key]
        run, effects = machine.step(self.rules, before, event)
        self.runs[key] = run
        self._track(before.stage, run.stage)
        later: list[machine.Effect] = []
        for effect in effects:
            if isinstance(effect, machine.Append):
                later += self.apply(key, self._append(key, effect.line), counted=counted)
            elif isinstance(effect, machine.Note):
                self._note(key, effect.line)
            elif isinstance(effect, machine.Emit):
                self._emit(effect.outcome, counted=counted)
            elif isinstance(effect, machine.Requeue):
                logger.warning(
                    "tunnel %s: the read-back did not prove the PSK received (%s); "
                    "generating again",
                    run.tunnel_id,
                    effect.why,
                )
                self.pending.appendleft(key)
                self.mark_changed()
            else:
                later.append(effect)
        return later

    def seq(self, key: str) -> int | None:
        """The journal line of ``key`` that must be durable, if any."""
        return self._seq.get(key)

    def cut_all(self, durable: bool) -> None:
        """Every run not done is cut: its outcome carries what it may hold."""
        cut = self.cut_reason() or machine.Cut(_stopped(), caller_left=True)
        cut = machine.Cut(cut.reason, durable=durable, caller_left=cut.caller_left)
        self.pending.clear()
        for key, run in self.runs.items():
            if run.stage is not machine.Stage.DONE:
                self.apply(key, cut, counted=False)

    def cut_reason(self) -> machine.Cut | None:
        """Why no new tunnel may start (as the cut of those never started), or None."""
        if self.journal_error is not None:
            return machine.Cut(self.journal_error)
        if self.halted:
            return machine.Cut(self.halt_error())
        if self.stopping:
            return machine.Cut(_stopped(), caller_left=self.crash is None)
        return None

    def halt_error(self) -> RotationHaltedError:
        return RotationHaltedError(
            f"not attempted: the rotation halted after {self.failures} failed tunnel(s) "
            f"(halt_after={self.options.halt_after})"
        )

    def journal_failed(self, exc: JournalError) -> None:
        if self.journal_error is None:
            self.journal_error = exc
            logger.error("rotation: %s; starting no new work", exc)
        self.mark_changed()

    def unrecorded_error(self) -> JournalError | None:
        """The error the iteration ends with after a journal failure, or None."""
        journal_error = self.journal_error
        if journal_error is None:
            return None
        if not self.unrecorded:
            return JournalError(
                f"{journal_error}; the rotation stopped starting work (every PSK made is in "
                "the journal)"
            )
        return JournalError(
            f"{journal_error}; {self.unrecorded} tunnel(s) hold PSKs that are not in the "
            "journal: their outcomes carry them (state unrecorded), keep them yourself"
        )

    def mark_changed(self) -> None:
        """Wake whoever waits on :attr:`changed` (the scheduler, the iteration)."""
        self.changed.set()

    # -- what stepping does at once -----------------------------------------------------------

    def _track(self, was: machine.Stage, now: machine.Stage) -> None:
        self.exposed += (now in machine.EXPOSED) - (was in machine.EXPOSED)
        unsettled = machine.Stage.UNSETTLED
        self.unsettled += (now is unsettled) - (was is unsettled)

    def _append(self, key: str, line: Any) -> machine.Written | machine.WriteFailed:
        journal = self.journal
        assert journal is not None
        try:
            self._seq[key] = journal.append(line)
        except JournalError as exc:
            self.journal_failed(exc)
            return machine.WriteFailed(exc)
        return machine.Written()

    def _note(self, key: str, line: Any) -> None:
        """A line no PSK depends on: a failure stops new work, costs the tunnel nothing."""
        journal = self.journal
        if journal is None or self.journal_error is not None:
            return
        try:
            self._seq[key] = journal.append(line)
        except JournalError as exc:
            self.journal_failed(exc)

    def _emit(self, outcome: Outcome, *, counted: bool) -> None:
        if outcome.unverified is not None:
            logger.warning(
                "tunnel %s: PSK handed over unverified: %s", outcome.tunnel_id, outcome.unverified
            )
        self.ready.append(outcome)
        self.emitted += 1
        if outcome.state is OutcomeState.UNRECORDED:
            self.unrecorded += 1
        if self.rules.delivering and outcome.delivered:
            self.window.widen()
        if not outcome.ok and outcome.state in _COUNTED_FAILURES and counted:
            self.window.narrow()
            self.failures += 1
            halt = self.options.halt_after
            if halt is not None and self.failures >= halt and not self.halted:
                self.halted = True
                logger.error(
                    "rotation: %d tunnel(s) failed; halting (halt_after=%d): no new tunnel "
                    "is started",
                    self.failures,
                    halt,
                )
        self.mark_changed()


def _whole_seconds(wall: datetime, last: datetime | None) -> float:
    """Whole seconds since the journal's last word (rounded down: a wait is never cut
    short, and a run replayed within a second computes the same wait)."""
    if last is None:
        return 0.0
    try:
        return float(math.floor((wall - last).total_seconds()))
    except OverflowError:  # pragma: no cover - datetime arithmetic bounds
        return 0.0


def _stopped() -> RotationHaltedError:
    return RotationHaltedError("not attempted: the rotation stopped first")
