"""One rotation as the command line follows it (:class:`RunTracker`): each outcome counted,
written on stdout (``--json``, ``--show-psk``) and shown in the progress; what the ETA
waits for; what a first interrupt waits for; a 429 that stops the run.
:func:`magicwan.cli.runner.run_rotation` drives it and reports the run's end.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from magicwan.cli.console import Console, OutputClosed, escape
from magicwan.cli.pace import outlook
from magicwan.cli.progress import Outlook, Progress, format_duration
from magicwan.cli.report import FailureGroup, Tally, describe, outcome_json, stamp_text
from magicwan.delivery import Deliverer, Delivery
from magicwan.errors import RateLimitError
from magicwan.journal import JournalError
from magicwan.ratelimit import MAX_COOLDOWN, RateLimiter
from magicwan.rotation import OutcomeState, Rotation

__all__ = ["RunSettings", "RunTracker", "TrackedDeliverer"]


@attrs.frozen(kw_only=True)
class RunSettings:
    """How to report one rotation."""

    max_retry_after: float
    validate_only: bool = False
    show_psk: bool = False
    json: bool = False
    progress: str = "auto"
    journal: str | None = None
    delivering: bool = False
    #: ``--validate-only --method set``: the requests carried real PSKs made here, kept
    #: (journal, ``--show-psk``) in case the server applied them anyway.
    sent_psks: bool = False
    #: The command line that resumes this run (for the hint), when there is a journal.
    resume: str | None = None
    #: Where to write the run's Prometheus metrics at the end, if anywhere.
    metrics_file: str | None = None
    #: Tunnels per request (``--batch-size`` with ``--method set``, else 1): the ETA's
    #: count of requests to go.
    unit: int = 1
    #: How long a stop waits for what is in flight (``--drain-timeout``, resolved).
    drain_timeout: float | None = None


class TrackedDeliverer:
    """A deliverer that remembers which tunnels it was handed, so an interrupt can say
    how many deliveries it waits for."""

    def __init__(self, deliver: Deliverer) -> None:
        self._deliver = deliver
        #: Lower-case ids of the tunnels handed over (retries included).
        self.tunnels: set[str] = set()

    async def __call__(self, delivery: Delivery) -> None:
        self.tunnels.add(delivery.tunnel_id.lower())
        await self._deliver(delivery)


_WORDS = {
    OutcomeState.ROTATED: ("ok", "green"),
    OutcomeState.VALIDATED: ("ok", "green"),
    OutcomeState.SKIPPED: ("skipped", None),
    OutcomeState.FAILED: ("failed", "red"),
    OutcomeState.UNDELIVERED: ("undelivered", "red"),
    OutcomeState.UNRECORDED: ("UNRECORDED", "red"),
    OutcomeState.NOT_ATTEMPTED: ("not-tried", "yellow"),
}
_WORD_WIDTH = max(len(word) for word, _ in _WORDS.values()) + 1


class RunTracker:
    """The state of one rotation run while it is reported: the tally, the progress, why
    it ended."""

    def __init__(
        self,
        console: Console,
        rotation: Rotation[Any],
        names: Mapping[str, str | None],
        settings: RunSettings,
        clock: Callable[[], float],
        limiter: RateLimiter | None = None,
        deliveries: TrackedDeliverer | None = None,
    ) -> None:
        self.console = console
        self.rotation = rotation
        self.names = names
        self.settings = settings
        self.clock = clock
        self.limiter = limiter
        self.deliveries = deliveries
        self.tally = Tally(requested=rotation.total, delivering=settings.delivering)
        label = "validating" if settings.validate_only else "rotating"
        mode = console.progress_mode(settings.progress)
        self.progress = Progress(
            rotation.total,
            stream=console.err,
            mode=mode,
            label=label,
            clock=clock,
            outlook=self.outlook,
        )
        #: Lower-case ids of the tunnels whose outcome was taken.
        self.taken: set[str] = set()
        self.interrupted = False
        self.forced = False
        self.rate_limited: RateLimitError | None = None
        self.output_closed = False
        self.journal_error: JournalError | None = None
        self.crash: BaseException | None = None
        self.started_at = datetime.now(UTC)
        self.rate_limited_tunnels = 0

    def take_outcome(self, outcome: Any) -> None:
        """Count, print and show one outcome. OutputClosed when stdout's reader left."""
        group = self.tally.add(outcome)
        self.taken.add(outcome.tunnel_id.lower())
        if isinstance(outcome.error, RateLimitError):
            self.rate_limited_tunnels += 1
        name = self.names.get(outcome.tunnel_id.lower())
        console = self.console
        psk = outcome.result.psk if outcome.result is not None else None
        self.progress.add(outcome.ok, self.line(outcome, name, group))
        if console.out_closed:
            return
        try:
            if self.settings.json:
                console.json(outcome_json(outcome, name=name, show_psk=self.settings.show_psk))
            elif self.settings.show_psk and psk:
                console.data(f"{outcome.tunnel_id} {psk}")
        except OutputClosed as exc:
            if not self.output_closed:
                self.output_closed = True
                why = (
                    f"cannot write to standard output ({exc.reason})"
                    if exc.reason
                    else "standard output was closed"
                )
                self.console.warn(
                    f"{why}: no new tunnel is started; what is in flight finishes and is journalled"
                )

    def line(self, outcome: Any, name: str | None, group: FailureGroup | None) -> str:
        """The progress line of one tunnel (escaped, maybe painted; never a secret)."""
        console = self.console
        word, colour = _WORDS[outcome.state]
        text = outcome.tunnel_id + (f"  {name}" if name else "")
        if outcome.state is OutcomeState.VALIDATED:
            text += "  (validated)"
        elif outcome.state is OutcomeState.SKIPPED:
            text += "  (already rotated in the journal)"
        elif outcome.ok:
            text += f"  {stamp_text(outcome.result) or '-'}"
        if getattr(outcome, "verified", False):
            text += "  (verified by read-back)"
        if getattr(outcome, "delivered", None) is True:
            text += "  delivered"
        if outcome.error is not None:
            if group is not None and group.names_its_example:
                text += (
                    f"  {type(outcome.error).__name__} (as above for {group.example}, with "
                    "this tunnel's id)"
                )
            elif group is not None and group.count > 1:
                text += f"  {type(outcome.error).__name__} (as above)"
            else:
                text += f"  {describe(outcome.error)}"
        padded = word.ljust(_WORD_WIDTH)
        return console.paint(padded, colour) + escape(text)

    def outlook(self) -> Outlook:
        return outlook(
            self.rotation,
            done=self.progress.done,
            unit=self.settings.unit,
            limiter=self.limiter,
            now=self.clock(),
        )

    def say_waiting(self) -> None:
        """At the first interrupt: what the stop waits for, how long at most, and that a
        second one stops waiting."""
        rotation = self.rotation
        reading = rotation.waiting
        delivering = 0
        if self.deliveries is not None:
            finished = self.taken | {o.tunnel_id.lower() for o in rotation.unclaimed}
            delivering = len(self.deliveries.tunnels - finished - reading.keys())
        requests = max(0, rotation.exposed - len(reading) - delivering)
        parts = []
        if requests:
            parts.append(f"{requests} with a request in flight")
        if reading:
            due = format_duration(max(reading.values()))
            parts.append(f"{len(reading)} waiting for a read-back (due within {due})")
        if delivering:
            parts.append(f"{delivering} being delivered")
        if not parts:
            self.console.tell("interrupted: no new tunnel is started; nothing is in flight")
            return
        count = requests + len(reading) + delivering
        drain = self.settings.drain_timeout
        bound = f" at most {format_duration(drain)} (--drain-timeout)" if drain else ""
        self.console.tell(
            f"interrupted: no new tunnel is started; waiting{bound} for {count} "
            f"tunnel(s): {', '.join(parts)}, so that what they hold is journalled. A second "
            "interrupt (Ctrl-C or SIGTERM) stops waiting (what it cuts short is journalled as "
            "left open: --resume settles it)"
        )

    def long_429(self, outcome: Any) -> RateLimitError | None:
        error = outcome.error
        if outcome.state is not OutcomeState.FAILED or not isinstance(error, RateLimitError):
            return None
        wait = error.retry_after
        return error if wait is None or wait > self.settings.max_retry_after else None

    def say_rate_limited(self, error: RateLimitError) -> None:
        wait = error.retry_after
        if wait is None:
            what = "without saying how long to wait"
            when = f"in {MAX_COOLDOWN:g} seconds"
        else:
            limit = self.settings.max_retry_after
            what = f"to wait {wait:.0f}s, more than --max-retry-after {limit:g}s"
            at = datetime.now(UTC) + timedelta(seconds=wait)
            when = f"after {at:%H:%M:%S} UTC"
        longest = f"{MAX_COOLDOWN:g}"
        self.console.warn(
            f"Cloudflare's rate limit stopped the run: it asked {what}. No new tunnel is "
            f"started. Rerun with --resume {when}, or pass --max-retry-after (up to "
            f"{longest}) to wait it out."
        )
