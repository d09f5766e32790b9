"""The progress of a run on stderr: a redrawn bar on a terminal, one line per item
elsewhere (CI logs), nothing with ``--progress off``.

:class:`Progress` only counts and formats; its clock is injected, so rate and ETA are
testable without waiting; what the rest of the run waits for (the rate limiter's pace,
read-backs, a 429 cooldown) comes from its caller as an :class:`Outlook`. It never sees a
PSK: callers hand it finished text.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import Literal, TextIO

import attrs

from magicwan.cli.text import write_text

__all__ = ["Outlook", "Progress", "ProgressMode", "format_duration"]

ProgressMode = Literal["bar", "lines", "off"]

#: Seconds between two redraws of the bar (the last one is always drawn).
_REDRAW_INTERVAL = 0.1
_BAR_WIDTH = 20


def format_duration(seconds: float) -> str:
    """``7s``, ``2m05s``, ``1h02m``: short, for an ETA or an elapsed time."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@attrs.frozen(kw_only=True)
class Outlook:
    """What the rest of a run must wait for, in seconds from now: ``requests`` until its
    remaining requests may go at the rate limiter's pace, ``cooldown`` of a 429 pause,
    and ``reading`` items waiting for their read-back (a settle window), the last of
    them in ``read_in``."""

    requests: float = 0.0
    cooldown: float = 0.0
    reading: int = 0
    read_in: float = 0.0

    @property
    def wait(self) -> float:
        """The longest of the waits: the run cannot end sooner."""
        return max(self.requests, self.cooldown, self.read_in if self.reading else 0.0)


class Progress:
    """Counts finished items out of ``total`` and shows it.

    ``mode="bar"`` redraws one line in place (``\\r``), at most every 0.1 s of ``clock``;
    ``mode="lines"`` writes each item's line as it is added (for CI logs);
    ``mode="off"`` writes nothing. ``start()`` begins the clock, ``add()`` records one
    item, ``tick()`` redraws the bar (a wait shows time passing), ``finish()`` draws the
    final state and ends the bar's line. ``outlook``, when given, says what the rest
    waits for: the ETA is never shorter than that, and a wait is shown as one.
    """

    def __init__(
        self,
        total: int,
        *,
        stream: TextIO,
        mode: ProgressMode = "lines",
        label: str = "rotating",
        clock: Callable[[], float] = time.monotonic,
        width: int | None = None,
        outlook: Callable[[], Outlook] | None = None,
    ) -> None:
        self.total = total
        self.outlook = outlook
        self.stream = stream
        self.mode = mode
        self.label = label
        self.clock = clock
        self.width = width
        self.ok = 0
        self.failed = 0
        self._started: float | None = None
        self._stopped: float | None = None
        self._drawn_at: float | None = None
        self._on_screen = False  # the bar's line is on screen, without its newline

    @property
    def done(self) -> int:
        """Items finished, ok or not."""
        return self.ok + self.failed

    @property
    def elapsed(self) -> float:
        """Seconds since ``start()`` (frozen at ``finish()``)."""
        if self._started is None:
            return 0.0
        end = self._stopped if self._stopped is not None else self.clock()
        return max(0.0, end - self._started)

    @property
    def rate(self) -> float | None:
        """Items per second so far, or None before any item finished."""
        elapsed = self.elapsed
        if not self.done or elapsed <= 0:
            return None
        return self.done / elapsed

    @property
    def eta(self) -> float | None:
        """Seconds left: at the current rate, but never less than the outlook's longest
        wait (the rate limiter's pace, read-backs); None while neither says anything."""
        return self._eta(self._outlook())

    def _eta(self, outlook: Outlook | None) -> float | None:
        rate = self.rate
        at_rate = None if rate is None else max(0, self.total - self.done) / rate
        wait = outlook.wait if outlook is not None and self.done < self.total else 0.0
        if at_rate is None:
            return wait if wait > 0 else None
        return max(at_rate, wait)

    def _outlook(self) -> Outlook | None:
        return self.outlook() if self.outlook is not None and self._stopped is None else None

    def start(self) -> None:
        """Start the clock (and draw the empty bar)."""
        self._started = self.clock()
        self._draw(force=True)

    def add(self, ok: bool, line: str | None = None) -> None:
        """Record one finished item; ``line`` is what ``lines`` mode prints for it."""
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        if self.mode == "lines":
            if line is not None:
                self._write(line + "\n")
        else:
            self._draw(force=self.done >= self.total)

    def tick(self) -> None:
        """Redraw the bar if it is due (while the run waits and nothing else draws it)."""
        self._draw(force=False)

    def note(self, text: str) -> None:
        """Write a message (a log line) on its own line, keeping the bar below it."""
        self.clear()
        self._write(text.rstrip("\n") + "\n")
        self._draw(force=True)

    def redraw(self) -> None:
        """Draw the bar again (after something else was written)."""
        self._draw(force=True)

    def clear(self) -> None:
        """Wipe the bar's line, so something else can be written there."""
        if self._on_screen:
            self._write("\r\x1b[K")
            self._on_screen = False

    def finish(self) -> None:
        """Stop the clock; the bar is drawn one last time and its line ended."""
        if self._stopped is None:
            self._stopped = self.clock()
        if self.mode == "bar":
            self._draw(force=True)
            if self._on_screen:
                self._write("\n")
                self._on_screen = False

    def render(self) -> str:
        """The bar's text: ``rotating  345/1000  [#######.............]  34%  ok 340 ...``."""
        total = max(self.total, 0)
        fraction = min(1.0, self.done / total) if total else 1.0
        filled = int(fraction * _BAR_WIDTH)
        bar = "#" * filled + "." * (_BAR_WIDTH - filled)
        digits = len(str(total))
        rate = self.rate
        outlook = self._outlook()
        eta = self._eta(outlook)
        rate_text = f"{rate:.1f}/s" if rate is not None else "-/s"
        if self._stopped is not None:
            elapsed = self.elapsed
            eta_text = f"in {elapsed:.1f}s" if elapsed < 60 else f"in {format_duration(elapsed)}"
        else:
            eta_text = f"ETA {format_duration(eta)}" if eta is not None else "ETA -"
            eta_text += _waiting_text(outlook)
        return (
            f"{self.label}  {self.done:>{digits}}/{total}  [{bar}]  {int(fraction * 100):3d}%  "
            f"ok {self.ok}  failed {self.failed}  {rate_text}  {eta_text}"
        )

    def _draw(self, *, force: bool) -> None:
        if self.mode != "bar":
            return
        now = self.clock()
        if not force and self._drawn_at is not None and now - self._drawn_at < _REDRAW_INTERVAL:
            return
        self._drawn_at = now
        text = self.render()
        width = self.width or shutil.get_terminal_size((100, 24)).columns
        if len(text) >= width:
            text = text[: max(1, width - 1)]
        self._write("\r\x1b[K" + text)
        self._on_screen = True

    def _write(self, text: str) -> None:
        write_text(self.stream, text)
        self.stream.flush()


def _waiting_text(outlook: Outlook | None) -> str:
    """What the bar says the run is waiting for, if anything: a 429 cooldown, read-backs."""
    if outlook is None:
        return ""
    if outlook.cooldown >= 1:
        return f"  waiting {format_duration(outlook.cooldown)} (rate limited)"
    if outlook.reading:
        noun = "read-back" if outlook.reading == 1 else "read-backs"
        return f"  waiting {format_duration(outlook.read_in)} for {outlook.reading} {noun}"
    return ""
