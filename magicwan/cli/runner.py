"""Runs a :class:`~magicwan.rotation.Rotation` for the command line: progress, one JSON
line per tunnel, the 429 stop, the summary, the exit status.

Leaving early (a signal, a long 429) goes through the rotation's own way out: no new
tunnel starts, what was sent finishes and is journalled, and the outcomes that finished
meanwhile are reported like the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import attrs

from magicwan._converter import format_datetime
from magicwan.cli.common import UsageError
from magicwan.cli.console import Console, OutputClosed, escape
from magicwan.cli.metrics import ROTATION_OUTCOMES, MetricsError, write_rotation_metrics
from magicwan.cli.progress import Outlook, Progress, format_duration
from magicwan.cli.report import FailureGroup, Tally, describe, outcome_json, stamp_text
from magicwan.cli.status import ExitStatus, most_urgent
from magicwan.delivery import Deliverer, Delivery
from magicwan.errors import RateLimitError
from magicwan.journal import JournalError
from magicwan.ratelimit import MAX_COOLDOWN, RateLimiter, Sleep
from magicwan.rotation import OutcomeState, Rotation

__all__ = [
    "RunSettings",
    "TrackedDeliverer",
    "limiter_wait",
    "outlook",
    "run_rotation",
]

#: Seconds between two redraws of the bar while nothing else draws it (a wait).
_TICK = 1.0


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


class _Watched(Protocol):
    """What :func:`outlook` reads of a rotation (see :class:`~magicwan.rotation.Rotation`)."""

    @property
    def total(self) -> int: ...
    @property
    def waiting(self) -> dict[str, float]: ...


def limiter_wait(limiter: RateLimiter, requests: int, now: float) -> float:
    """Seconds until ``limiter`` lets ``requests`` more requests go: its 429 cooldown,
    then its pace (``now`` on the limiter's clock)."""
    cooldown = max(0.0, limiter.paused_until - now)
    if not limiter.limit or requests <= 0:
        return cooldown
    interval = limiter.period / limiter.limit
    if cooldown > 0:  # after a pause it resumes at its pace, one request per interval
        return cooldown + (requests - 1) * interval
    return max(0.0, (requests - limiter.available()) * interval)


def outlook(
    rotation: _Watched, *, done: int, unit: int, limiter: RateLimiter | None, now: float
) -> Outlook:
    """What the rest of ``rotation`` waits for, ``done`` of its tunnels finished: the
    requests of the tunnels not finished (``unit`` a request) and the read-backs, at the
    limiter's pace; the read-backs' settle windows; a 429 cooldown.

    The requests already sent and not answered are counted too (which ones passed the
    limiter is not known here): the estimate is at most ``concurrency`` requests long."""
    waiting = rotation.waiting
    unfinished = max(0, rotation.total - done - len(waiting))
    requests = math.ceil(unfinished / max(1, unit)) + len(waiting)
    if limiter is None:
        paced = cooldown = 0.0
    else:
        paced = limiter_wait(limiter, requests, now)
        cooldown = max(0.0, limiter.paused_until - now)
    return Outlook(
        requests=paced,
        cooldown=cooldown,
        reading=len(waiting),
        read_in=max(waiting.values(), default=0.0),
    )


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


class _Run:
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
        self.s = settings
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

    def take(self, outcome: Any) -> None:
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
            if self.s.json:
                console.json(outcome_json(outcome, name=name, show_psk=self.s.show_psk))
            elif self.s.show_psk and psk:
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
            if group is not None and group.count > 1:
                text += f"  {type(outcome.error).__name__} (as above)"
            else:
                text += f"  {describe(outcome.error)}"
        padded = word.ljust(_WORD_WIDTH)
        return console.paint(padded, colour) + escape(text)

    def outlook(self) -> Outlook:
        return outlook(
            self.rotation,
            done=self.progress.done,
            unit=self.s.unit,
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
        drain = self.s.drain_timeout
        bound = f" at most {format_duration(drain)} (--drain-timeout)" if drain else ""
        self.console.tell(
            f"interrupted: no new tunnel is started; waiting{bound} for {count} "
            f"tunnel(s): {', '.join(parts)}, so that what they hold is journalled. A second "
            "Ctrl-C stops waiting (what it cuts short is journalled as left open: --resume "
            "settles it)"
        )

    def long_429(self, outcome: Any) -> RateLimitError | None:
        error = outcome.error
        if outcome.state is not OutcomeState.FAILED or not isinstance(error, RateLimitError):
            return None
        wait = error.retry_after
        return error if wait is None or wait > self.s.max_retry_after else None

    def say_rate_limited(self, error: RateLimitError) -> None:
        wait = error.retry_after
        if wait is None:
            what = "without saying how long to wait"
            when = f"in {MAX_COOLDOWN:g} seconds"
        else:
            what = f"to wait {wait:.0f}s, more than --max-retry-after {self.s.max_retry_after:g}s"
            at = datetime.now(UTC) + timedelta(seconds=wait)
            when = f"after {at:%H:%M:%S} UTC"
        longest = f"{MAX_COOLDOWN:g}"
        self.console.warn(
            f"Cloudflare's rate limit stopped the run: it asked {what}. No new tunnel is "
            f"started. Rerun with --resume {when}, or pass --max-retry-after (up to "
            f"{longest}) to wait it out."
        )


async def run_rotation(
    console: Console,
    rotation: Rotation[Any],
    *,
    names: Mapping[str, str | None],
    settings: RunSettings,
    clock: Callable[[], float] = time.monotonic,
    sleep: Sleep = asyncio.sleep,
    limiter: RateLimiter | None = None,
    deliveries: TrackedDeliverer | None = None,
) -> ExitStatus:
    """Run ``rotation`` to the end (or until interrupted), report it, return the status.

    The progress ETA follows ``limiter``'s pace (the client's, on ``clock``) and the
    read-backs' settle windows. Cancelled (Ctrl-C, SIGTERM), it says at once what it
    waits for (``deliveries`` counts the deliveries), stops starting tunnels, lets what
    was sent finish, prints the summary and the resume hint, sets
    ``console.final_status`` and re-raises the cancellation; cancelled again, it stops
    waiting.
    """
    run = _Run(console, rotation, names, settings, clock, limiter, deliveries)
    try:
        await rotation.__aenter__()  # opens and locks the journal: nothing is sent before
    except JournalError as exc:
        raise UsageError(str(exc)) from None
    console.progress = run.progress
    run.progress.start()
    ticker = asyncio.create_task(_tick(run.progress, sleep)) if run.progress.mode == "bar" else None
    try:
        await _consume(run)
    finally:
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        run.progress.finish()
        console.progress = None
    status = _status(run)
    with contextlib.suppress(OutputClosed):  # the status stands, whoever reads stdout
        _summary(run, status)
    _write_metrics(run, status)
    console.final_status = status
    if run.interrupted:
        raise asyncio.CancelledError
    return status


async def _tick(progress: Progress, sleep: Sleep) -> None:
    """Redraw the bar while the run waits (a settle window, the rate limit), so its ETA
    and its wait count down."""
    while True:
        await sleep(_TICK)
        progress.tick()


async def _consume(run: _Run) -> None:
    """Take every outcome, then what a stop left unclaimed; note why it ended."""
    rotation = run.rotation
    try:
        async for outcome in rotation:
            run.take(outcome)
            if run.output_closed:
                break
            stop = run.long_429(outcome)
            if stop is not None:
                run.rate_limited = stop
                run.say_rate_limited(stop)
                break
    except asyncio.CancelledError:
        run.interrupted = True
        run.say_waiting()
    except JournalError as exc:  # after every outcome was handed over
        run.journal_error = exc
    except Exception as exc:  # a crash: every PSK in hand is still reported below
        run.crash = exc
    finally:
        try:
            await rotation.aclose()
        except asyncio.CancelledError:  # a second signal: stop waiting for the drain
            run.interrupted = run.forced = True
    for outcome in rotation.unclaimed:
        run.take(outcome)


def _write_metrics(run: _Run, status: ExitStatus) -> None:
    path = run.s.metrics_file
    if path is None:
        return
    tally = run.tally
    counts: dict[str, int] = {
        state.value: tally.count(state)
        for state in OutcomeState
        if state.value in ROTATION_OUTCOMES
    }
    counts["not_attempted"] = tally.not_attempted
    counts["delivered"], counts["undelivered"] = tally.delivered, tally.undelivered
    try:
        write_rotation_metrics(
            path,
            counts=counts,
            started_at=run.started_at,
            finished_at=datetime.now(UTC),
            succeeded=status is ExitStatus.OK,
            rate_limited=run.rate_limited_tunnels + (run.rate_limited is not None),
        )
    except MetricsError as exc:
        run.console.error(f"the metrics could not be written: {exc}")


def _status(run: _Run) -> ExitStatus:
    tally = run.tally
    found: list[ExitStatus] = []
    if tally.unrecorded or (run.crash is not None and tally.carried):
        found.append(ExitStatus.UNRECORDED)
    if run.crash is not None:
        found.append(ExitStatus.FAILED)
    if run.interrupted:
        found.append(ExitStatus.INTERRUPTED)
    if tally.count(OutcomeState.UNDELIVERED):
        found.append(ExitStatus.UNDELIVERED)
    if tally.failed or tally.not_attempted or run.journal_error is not None:
        nothing_done = tally.done == 0
        if nothing_done and tally.access_failures and tally.access_failures == tally.failed:
            found.append(ExitStatus.ACCESS)
        else:
            found.append(ExitStatus.FAILED)
    return most_urgent(found)


def _summary(run: _Run, status: ExitStatus) -> None:
    console, tally, s = run.console, run.tally, run.s
    show = console.say if status is ExitStatus.OK else console.tell
    elapsed = run.progress.elapsed
    worked = tally.seen - tally.count(OutcomeState.SKIPPED)
    rate = f", {worked / elapsed:.1f} tunnels/s" if worked and elapsed > 0 else ""
    show("")
    show(f"summary: {tally.requested} tunnels in {elapsed:.2f}s{rate}")
    rows = tally.rows(validate_only=s.validate_only)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        show(f"  {name:<{width}}  {value}")
    _failure_groups(run, show)
    if run.journal_error is not None:
        console.error(f"the journal failed: {run.journal_error}")
    if run.crash is not None:
        console.error(
            f"the run stopped on an unexpected error ({describe(run.crash)}); every PSK it "
            "made is in the outcomes above and in the journal if its line got there"
        )
    if tally.unrecorded:
        _unrecorded(run)
    if run.interrupted:
        how = (
            "stopped waiting for requests in flight"
            if run.forced
            else "requests in flight finished"
        )
        console.tell(f"interrupted: no new tunnel was started; {how}")
    if s.validate_only and s.sent_psks:
        _kept(run)
    if s.journal is not None and not s.validate_only:
        show(f"journal: {s.journal} (mode 0600; it holds the new PSKs: keep it secret)")
        if s.resume is not None and (run.interrupted or tally.rerun_helps):
            console.tell(f"to finish: {s.resume}")
    if s.json and not console.out_closed:
        console.json(
            {
                "event": "summary",
                **tally.to_json(),
                "interrupted": run.interrupted,
                "halted": run.rotation.halted,
                "rate_limited": run.rate_limited is not None,
                "journal": s.journal,
                "started_at": format_datetime(run.started_at),
                "finished_at": format_datetime(datetime.now(UTC)),
                "elapsed_seconds": round(elapsed, 3),
                "exit_status": int(status),
            }
        )


def _failure_groups(run: _Run, show: Callable[[str], None]) -> None:
    if not run.tally.groups:
        return
    show("failures:")
    for group in run.tally.groups.values():
        examples = ", ".join(group.tunnels) + (", ..." if group.count > len(group.tunnels) else "")
        noun = "tunnel" if group.count == 1 else "tunnels"
        show(f"  {group.count} {noun} ({group.state.value}): {group.text()}")
        show(f"    {noun}: {examples}")
        if group.hint:
            show(f"    hint: {group.hint}")


def _kept(run: _Run) -> None:
    """Where the PSKs a ``--validate-only --method set`` sent are, should the server have
    applied them anyway (a gateway that drops ?validate_only=true would let it)."""
    s, say = run.s, run.console.say
    if s.journal is not None:
        say(
            f"journal: {s.journal} (mode 0600) keeps the PSKs sent, in intent lines, in case "
            "the server applied them anyway ('magicwan journal export' shows them as "
            "pending_psk): keep it secret"
        )
    elif s.show_psk:
        say("the PSKs sent are on stdout above, kept in case the server applied them anyway")
    else:
        say(
            "the PSKs sent are kept nowhere (no --journal, no --show-psk): should the server "
            "apply them anyway (a gateway that drops ?validate_only=true), those tunnels "
            "would hold PSKs nobody has"
        )


def _unrecorded(run: _Run) -> None:
    console, tally = run.console, run.tally
    ids = ", ".join(tally.unrecorded)
    count = len(tally.unrecorded)
    console.error(
        f"{count} tunnel(s) hold a NEW PSK that the journal could not record; their old "
        f"PSKs no longer work: {ids}"
    )
    if run.s.show_psk:
        console.tell("their PSKs are on stdout above (state unrecorded): store them now")
    else:
        console.tell(
            "their PSKs were not shown (no --show-psk): once the journal is writable again, "
            "rotate them again (rerun with --resume); until then they are down"
        )
