"""Runs a :class:`~magicwan.rotation.Rotation` for the command line: progress, one JSON
line per tunnel, the 429 stop, the summary, the exit status.

Leaving early (a signal, a long 429) goes through the rotation's own way out: no new
tunnel starts, what was sent finishes and is journalled, and the outcomes that finished
meanwhile are reported like the others.

Each outcome is taken by a :class:`~magicwan.cli.tracker.RunTracker`; the ETA's outlook is
:func:`magicwan.cli.pace.outlook`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from magicwan.cli.common import UsageError
from magicwan.cli.console import Console, OutputClosed
from magicwan.cli.metrics import ROTATION_OUTCOMES, MetricsError, write_rotation_metrics
from magicwan.cli.pace import limiter_wait, outlook
from magicwan.cli.progress import Progress
from magicwan.cli.report import describe
from magicwan.cli.status import ExitStatus, most_urgent
from magicwan.cli.tracker import RunSettings, RunTracker, TrackedDeliverer
from magicwan.internal.clock import Sleep
from magicwan.internal.timestamps import format_datetime
from magicwan.journal import JournalError
from magicwan.ratelimit import RateLimiter
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
    run = RunTracker(console, rotation, names, settings, clock, limiter, deliveries)
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


async def _consume(run: RunTracker) -> None:
    """Take every outcome, then what a stop left unclaimed; note why it ended."""
    rotation = run.rotation
    try:
        async for outcome in rotation:
            run.take_outcome(outcome)
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
        run.take_outcome(outcome)


def _write_metrics(run: RunTracker, status: ExitStatus) -> None:
    path = run.settings.metrics_file
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


def _status(run: RunTracker) -> ExitStatus:
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


def _summary(run: RunTracker, status: ExitStatus) -> None:
    console, tally, settings = run.console, run.tally, run.settings
    show = console.say if status is ExitStatus.OK else console.tell
    elapsed = run.progress.elapsed
    worked = tally.seen - tally.count(OutcomeState.SKIPPED)
    rate = f", {worked / elapsed:.1f} tunnels/s" if worked and elapsed > 0 else ""
    show("")
    show(f"summary: {tally.requested} tunnels in {elapsed:.2f}s{rate}")
    rows = tally.rows(validate_only=settings.validate_only)
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
    if settings.validate_only and settings.sent_psks:
        _say_where_sent_psks_are(run)
    if settings.journal is not None and not settings.validate_only:
        show(f"journal: {settings.journal} (mode 0600; it holds the new PSKs: keep it secret)")
        if settings.resume is not None and (run.interrupted or tally.rerun_helps):
            console.tell(f"to finish: {settings.resume}")
    if settings.json and not console.out_closed:
        console.json(
            {
                "event": "summary",
                **tally.to_json(),
                "interrupted": run.interrupted,
                "halted": run.rotation.halted,
                "rate_limited": run.rate_limited is not None,
                "journal": settings.journal,
                "started_at": format_datetime(run.started_at),
                "finished_at": format_datetime(datetime.now(UTC)),
                "elapsed_seconds": round(elapsed, 3),
                "exit_status": int(status),
            }
        )


def _failure_groups(run: RunTracker, show: Callable[[str], None]) -> None:
    if not run.tally.groups:
        return
    show("failures:")
    for group in run.tally.groups.values():
        examples = ", ".join(group.tunnels) + (", ..." if group.count > len(group.tunnels) else "")
        noun = "tunnel" if group.count == 1 else "tunnels"
        show(f"  {group.count} {noun} ({group.state.value}): {group.text()}")
        if group.names_its_example:
            show(f"    the text of {group.example}; the others' name their own tunnel")
        show(f"    {noun}: {examples}")
        if group.hint:
            show(f"    hint: {group.hint}")


def _say_where_sent_psks_are(run: RunTracker) -> None:
    """Where the PSKs a ``--validate-only --method set`` sent are, should the server have
    applied them anyway (a gateway that drops ?validate_only=true would let it)."""
    settings, say = run.settings, run.console.say
    if settings.journal is not None:
        say(
            f"journal: {settings.journal} (mode 0600) keeps the PSKs sent, in intent lines, "
            "in case the server applied them anyway ('magicwan journal export' shows them as "
            "pending_psk): keep it secret"
        )
    elif settings.show_psk:
        say("the PSKs sent are on stdout above, kept in case the server applied them anyway")
    else:
        say(
            "the PSKs sent are kept nowhere (no --journal, no --show-psk): should the server "
            "apply them anyway (a gateway that drops ?validate_only=true), those tunnels "
            "would hold PSKs nobody has"
        )


def _unrecorded(run: RunTracker) -> None:
    console, tally = run.console, run.tally
    ids = ", ".join(tally.unrecorded)
    count = len(tally.unrecorded)
    console.error(
        f"{count} tunnel(s) hold a NEW PSK that the journal could not record; their old "
        f"PSKs no longer work: {ids}"
    )
    if run.settings.show_psk:
        console.tell("their PSKs are on stdout above (state unrecorded): store them now")
    else:
        console.tell(
            "their PSKs were not shown (no --show-psk): once the journal is writable again, "
            "rotate them again (rerun with --resume); until then they are down"
        )
