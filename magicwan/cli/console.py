"""Where the command line writes: data on stdout, people's text on stderr, never raw server text.

- :func:`escape` shows every character that is not printable (ANSI and OSC sequences,
  ``\\r``, bidi overrides, ...) as a Python escape. Every line for people goes through it,
  so nothing a server wrote (an error message, a tunnel name) can drive the terminal.
- :class:`Console` holds the two streams: :meth:`Console.data` and :meth:`Console.json`
  write results on stdout; :meth:`Console.say` (quiet with ``-q``) and
  :meth:`Console.tell` (always) write lines for people on stderr, stepping around the
  progress bar.
- :class:`Progress` (from :mod:`magicwan.cli.progress`) counts finished items and shows
  them: a redrawn bar on a terminal, one line per item elsewhere (CI logs), nothing with
  ``--progress off``.
- :func:`logging_to` routes the ``magicwan`` logger's records through the console, as
  text or (``--log-format json``) one JSON object a line (:class:`JSONLogFormatter`).

Every JSON line on stdout carries ``ts`` (RFC 3339, UTC) and what the command bound with
:meth:`Console.bind` (``run_id``, ``account_id``, a rotation's ``journal``) once known; log
lines carry them too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from magicwan.cli.progress import Outlook, Progress, ProgressMode, format_duration
from magicwan.cli.text import escape, write_text
from magicwan.internal.timestamps import format_datetime

__all__ = [
    "LOG_FIELDS",
    "Console",
    "JSONLogFormatter",
    "Outlook",
    "OutputClosed",
    "Progress",
    "ProgressMode",
    "colour_wanted",
    "escape",
    "format_duration",
    "logging_to",
    "now_text",
    "write_text",
]


_COLOURS = {"red": "31", "green": "32", "yellow": "33", "bold": "1"}


class OutputClosed(Exception):
    """Standard output was closed by its reader (``| head``), or cannot be written (a full
    disk under ``>> file``, an I/O error): results can no longer be delivered, so a run
    stops starting work. ``reason`` says why it cannot be written; None when the reader
    left."""

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason or "standard output was closed")
        self.reason = reason


def now_text(utcnow: Callable[[], datetime] | None = None) -> str:
    """The time now as RFC 3339 UTC with microseconds: ``2026-12-05T21:01:28.123456Z``."""
    now = utcnow() if utcnow is not None else datetime.now(UTC)
    return format_datetime(now.astimezone(UTC))


def colour_wanted(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Colours on ``stream``: a terminal, ``NO_COLOR`` unset (https://no-color.org), and a
    ``TERM`` that is not ``dumb``."""
    env = os.environ if environ is None else environ
    if "NO_COLOR" in env or env.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


def _isatty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


class Console:
    """The two output streams of one run, and the progress bar while one is drawn."""

    def __init__(
        self,
        out: TextIO,
        err: TextIO,
        *,
        quiet: bool = False,
        colour: bool = False,
        utcnow: Callable[[], datetime] | None = None,
    ) -> None:
        self.out = out
        self.err = err
        self.quiet = quiet
        self.colour = colour
        self.progress: Progress | None = None
        #: Standard output's reader went away, or it failed; nothing more is written there.
        self.out_closed = False
        #: Why standard output failed (``No space left on device``); None if it did not.
        self.out_error: str | None = None
        #: The exit status a cancelled command settled on before re-raising the cancellation.
        self.final_status: int | None = None
        #: What every JSON line (and JSON log line) says about the run: see :meth:`bind`.
        self.context: dict[str, Any] = {}
        self.utcnow = utcnow

    def bind(self, **fields: Any) -> None:
        """Add ``fields`` (``run_id=...``, ``account_id=...``, ``journal=...``) to every JSON
        line from now on; a field given None is dropped. A line's own field of the same name
        wins."""
        for name, value in fields.items():
            if value is None:
                self.context.pop(name, None)
            else:
                self.context[name] = value

    def stamped(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """``obj`` with ``ts`` and the bound context in front of its own fields."""
        return {"ts": now_text(self.utcnow), **self.context, **obj}

    # -- stdout: results ------------------------------------------------------------------

    def data(self, text: str) -> None:
        """One line of results on stdout, escaped."""
        self.raw(escape(text) + "\n")

    def table(self, rows: Sequence[Sequence[str]]) -> None:
        """Rows of cells on stdout, each column as wide as its widest cell."""
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.data("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())

    def json(self, obj: Mapping[str, Any], *, stamp: bool = True) -> None:
        """One JSON line on stdout (JSON escapes every control character itself), with
        ``ts``, ``run_id`` and ``account_id`` (when bound) unless ``stamp=False`` (a data
        format of its own: ``journal export``)."""
        line = self.stamped(obj) if stamp else obj
        self.raw(json.dumps(line, separators=(",", ":")) + "\n")

    def raw(self, text: str) -> None:
        """Exact text on stdout (``journal export`` formats, already quoted)."""
        if self.out_closed:
            raise OutputClosed(self.out_error)
        progress = self.progress
        if progress is not None:
            progress.clear()  # stdout and stderr may be the same terminal
        try:
            write_text(self.out, text)
            self.out.flush()
        except BrokenPipeError:
            self._closed()
            raise OutputClosed from None
        except OSError as exc:  # ENOSPC, EIO, ...: no later line can be trusted to land
            self.out_error = exc.strerror or type(exc).__name__
            self._closed()
            raise OutputClosed(self.out_error) from None
        if progress is not None:
            progress.redraw()

    def _closed(self) -> None:
        self.out_closed = True
        # Whatever is still buffered must not fail again when the process exits.
        with contextlib.suppress(Exception):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.out.fileno())
            os.close(devnull)

    def out_is_terminal(self) -> bool:
        return _isatty(self.out)

    # -- stderr: people -------------------------------------------------------------------

    def say(self, text: str = "", *, colour: str | None = None) -> None:
        """A line for people on stderr, unless ``-q``."""
        if not self.quiet:
            self.tell(text, colour=colour)

    def tell(self, text: str = "", *, colour: str | None = None) -> None:
        """A line for people on stderr, even with ``-q`` (warnings, a failed run's summary)."""
        self.human(self.paint(escape(text), colour))

    def warn(self, text: str) -> None:
        self.tell(f"magicwan: warning: {text}", colour="yellow")

    def error(self, text: str) -> None:
        self.tell(f"magicwan: error: {text}", colour="red")

    def human(self, line: str) -> None:
        """Write an already escaped line on stderr, keeping the progress bar below it."""
        if self.progress is not None:
            self.progress.note(line)
        else:
            write_text(self.err, line + "\n")
            self.err.flush()

    def paint(self, text: str, colour: str | None) -> str:
        """``text`` in ``colour`` when colours are on."""
        if not self.colour or colour is None:
            return text
        return f"\x1b[{_COLOURS[colour]}m{text}\x1b[0m"

    def progress_mode(self, wanted: str) -> ProgressMode:
        """``auto``: a bar on a terminal, lines elsewhere; off with ``-q``."""
        if self.quiet:
            return "off"
        if wanted == "auto":
            return "bar" if _isatty(self.err) else "lines"
        mode: ProgressMode = wanted  # type: ignore[assignment]
        return mode


# -- logging ------------------------------------------------------------------------------


#: The fields of a JSON log line, in order (those without a value are left out).
LOG_FIELDS = (
    "ts",
    "level",
    "run_id",
    "account_id",
    "journal",
    "tunnel_id",
    "event",
    "message",
)


class JSONLogFormatter(logging.Formatter):
    """A log record as one JSON object: ``ts`` (RFC 3339 UTC), ``level``, ``run_id``,
    ``account_id`` and ``journal`` (from the console's context), ``tunnel_id`` and
    ``event`` (from the record's ``extra``, when it has them), ``message``. Nothing else
    of the record is read: the SDK logs no secret, and this adds none (no arguments, no
    exception text)."""

    def __init__(self, context: Callable[[], Mapping[str, Any]] = dict) -> None:
        super().__init__()
        self._context = context

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC)
        context = self._context()
        values = {
            "ts": format_datetime(stamp),
            "level": record.levelname.lower(),
            "run_id": context.get("run_id"),
            "account_id": getattr(record, "account_id", None) or context.get("account_id"),
            "journal": context.get("journal"),
            "tunnel_id": getattr(record, "tunnel_id", None),
            "event": getattr(record, "event", None) or record.name,
            "message": record.getMessage(),
        }
        line = {name: values[name] for name in LOG_FIELDS if values[name] is not None}
        return json.dumps(line, separators=(",", ":"))


class _LogHandler(logging.Handler):
    """The SDK's log records on stderr, escaped, without garbling the progress bar."""

    def __init__(self, console: Console, log_format: str = "text") -> None:
        super().__init__()
        self.console = console
        self.json = log_format == "json"
        if self.json:
            self.setFormatter(JSONLogFormatter(lambda: console.context))
        else:
            self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if self.json:  # already escaped by JSON, and never painted
                self.console.human(text)
            else:
                self.console.tell(text)
        except Exception:  # pragma: no cover - logging must never break the run
            self.handleError(record)


@contextlib.contextmanager
def logging_to(console: Console, verbosity: int, log_format: str = "text") -> Iterator[None]:
    """The ``magicwan`` logger's records on the console: warnings by default, INFO (retries,
    429 pauses) with ``-v``, DEBUG (every request, with its duration) with ``-vv``; as
    text, or one JSON object a line with ``log_format="json"``. Never a secret: the SDK
    logs none."""
    level = logging.DEBUG if verbosity >= 2 else logging.INFO if verbosity == 1 else logging.WARNING
    logger = logging.getLogger("magicwan")
    handler = _LogHandler(console, log_format)
    handler.setLevel(level)
    previous = logger.level
    logger.addHandler(handler)
    if verbosity >= 1:
        logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
