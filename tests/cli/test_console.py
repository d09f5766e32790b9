"""The console of the command line (``magicwan.cli.console``): escaping, colours, the two
streams, the progress display on a fake clock, and the log handler."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from magicwan.cli.console import (
    Console,
    OutputClosed,
    Progress,
    colour_wanted,
    escape,
    format_duration,
    logging_to,
)
from tests.support.clock import FakeClock

NOW = datetime(2026, 12, 5, 21, 3, 36, 490773, tzinfo=UTC)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text, with spaces", "plain text, with spaces"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
        ("over\rwrite", "over\\rwrite"),
        ("two\nlines", "two\\nlines"),
        ("\x9b31m", "\\x9b31m"),  # the one-byte CSI
        ("\u202eevil", "\\u202eevil"),  # a bidi override
        ("del\x7f", "del\\x7f"),
        ("caf\u00e9 \u2713", "caf\u00e9 \u2713"),  # printable non-ASCII stays
    ],
)
def test_escape_shows_every_non_printable_character(raw: str, shown: str) -> None:
    assert escape(raw) == shown
    assert escape(escape(raw)) == shown  # escaping twice changes nothing


def test_every_line_for_people_is_escaped_and_results_go_to_stdout() -> None:
    out, err = io.StringIO(), io.StringIO()
    console = Console(out, err)
    console.say("name: \x1b[2J")
    console.tell("\rmessage")
    console.error("bad \x1b[31m")
    console.data("id  \x1b]8;;http://x\x07")
    console.json({"name": "\x1b[31m"}, stamp=False)

    assert "\x1b" not in err.getvalue()
    assert "\r" not in err.getvalue()
    assert err.getvalue().splitlines() == [
        "name: \\x1b[2J",
        "\\rmessage",
        "magicwan: error: bad \\x1b[31m",
    ]
    assert out.getvalue() == 'id  \\x1b]8;;http://x\\x07\n{"name":"\\u001b[31m"}\n'


def test_quiet_keeps_say_but_not_tell() -> None:
    err = io.StringIO()
    console = Console(io.StringIO(), err, quiet=True)
    console.say("news")
    console.warn("trouble")
    assert err.getvalue() == "magicwan: warning: trouble\n"
    assert console.progress_mode("auto") == "off"


def test_colours_only_on_a_terminal_without_no_color() -> None:
    assert colour_wanted(_Terminal(), {"TERM": "xterm"})
    assert not colour_wanted(_Terminal(), {"TERM": "xterm", "NO_COLOR": ""})
    assert not colour_wanted(_Terminal(), {"TERM": "dumb"})
    assert not colour_wanted(io.StringIO(), {"TERM": "xterm"})
    err = io.StringIO()
    Console(io.StringIO(), err, colour=True).warn("x\x1b")
    assert err.getvalue() == "\x1b[33mmagicwan: warning: x\\x1b\x1b[0m\n"  # ours, around escaped


def test_progress_mode_follows_the_terminal() -> None:
    assert Console(io.StringIO(), _Terminal()).progress_mode("auto") == "bar"
    assert Console(io.StringIO(), io.StringIO()).progress_mode("auto") == "lines"
    assert Console(io.StringIO(), _Terminal()).progress_mode("lines") == "lines"


def test_a_closed_stdout_raises_output_closed_once_and_stays_closed(tmp_path: Path) -> None:
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "w") as out:
        console = Console(out, io.StringIO())
        with pytest.raises(OutputClosed):
            console.data("x")
        assert console.out_closed
        with pytest.raises(OutputClosed):
            console.json({})


def test_a_full_stdout_raises_output_closed_with_why_and_stays_closed() -> None:
    # `>> log` on a full disk: ENOSPC (not EPIPE) is handled like a closed stdout.
    with open("/dev/full", "w") as out:  # a real full device
        console = Console(out, io.StringIO())
        with pytest.raises(OutputClosed) as info:
            console.data("x")
        assert info.value.reason == os.strerror(errno.ENOSPC)
        assert console.out_closed
        assert console.out_error == os.strerror(errno.ENOSPC)
        with pytest.raises(OutputClosed):
            console.json({})


def test_data_lines_step_around_the_bar() -> None:
    out = err = _Terminal()  # stdout and stderr on one terminal
    console = Console(out, err)
    progress = Progress(2, stream=err, mode="bar", clock=FakeClock(), width=200)
    console.progress = progress
    progress.start()
    console.data("abc psk")
    text = out.getvalue()
    assert "\r\x1b[Kabc psk\n\r\x1b[Krotating" in text


def test_log_records_reach_stderr_escaped_at_the_chosen_level() -> None:
    logger = logging.getLogger("magicwan")
    for verbosity, shown in (
        (0, {"WARNING"}),
        (1, {"WARNING", "INFO"}),
        (2, {"WARNING", "INFO", "DEBUG"}),
    ):
        err = io.StringIO()
        with logging_to(Console(io.StringIO(), err), verbosity):
            logger.debug("debug")
            logger.info("info \x1b[2J")
            logger.warning("warning")
        seen = {line.split()[0] for line in err.getvalue().splitlines()}
        assert seen == shown, verbosity
        assert "\x1b" not in err.getvalue()
    assert logger.handlers == [] or all(type(h).__name__ != "_LogHandler" for h in logger.handlers)


# -- progress ---------------------------------------------------------------------------------


def test_progress_rate_and_eta_follow_the_clock() -> None:
    clock = FakeClock()
    progress = Progress(1000, stream=io.StringIO(), mode="off", clock=clock)
    assert progress.rate is None
    assert progress.eta is None

    progress.start()
    for _ in range(340):
        progress.add(True)
    for _ in range(5):
        progress.add(False)
    clock.advance(2.0)

    assert progress.done == 345
    assert progress.rate == pytest.approx(172.5)
    assert progress.eta == pytest.approx(655 / 172.5)
    assert progress.render() == (
        "rotating   345/1000  [######..............]   34%  ok 340  failed 5  172.5/s  ETA 4s"
    )
    progress.finish()
    clock.advance(60.0)
    assert progress.elapsed == pytest.approx(2.0)  # frozen at finish


def test_progress_bar_redraws_in_place_at_most_every_tenth_of_a_second() -> None:
    clock = FakeClock()
    stream = io.StringIO()
    progress = Progress(3, stream=stream, mode="bar", clock=clock, width=200)
    progress.start()
    progress.add(True)  # within 0.1 s of the first draw: not drawn
    clock.advance(0.5)
    progress.add(False)
    progress.note("a log line")
    progress.add(True)  # the last item is always drawn
    progress.finish()

    text = stream.getvalue()
    assert text.count("\r\x1b[K") == 6  # start, 2nd item, note (clear + redraw), last, final
    assert "\r\x1b[Ka log line\n" in text
    assert "3/3  [####################]  100%  ok 2  failed 1" in text
    assert text.endswith("in 0.5s\n")


def test_progress_lines_mode_writes_one_line_per_item() -> None:
    stream = io.StringIO()
    progress = Progress(2, stream=stream, mode="lines", clock=FakeClock())
    progress.start()
    progress.add(True, "ok a")
    progress.add(False, "failed b")
    progress.finish()
    assert stream.getvalue() == "ok a\nfailed b\n"


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.4, "0s"), (59.6, "1m00s"), (125, "2m05s"), (3720, "1h02m")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_every_json_line_carries_ts_and_the_bound_run_and_account() -> None:
    out = io.StringIO()
    console = Console(out, io.StringIO(), utcnow=lambda: NOW)
    console.json({"event": "tunnel", "tunnel_id": "t1"})
    console.bind(run_id="rotate-20261205T210336.490773Z", account_id="a" * 32)
    console.json({"event": "tunnel", "tunnel_id": "t2"})
    console.json({"account_id": "b" * 32, "event": "tunnel"})  # a line's own field wins
    console.bind(account_id=None)
    console.json({"event": "summary"})
    console.json({"psk": "exported as is"}, stamp=False)

    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    ts = "2026-12-05T21:03:36.490773Z"
    run = "rotate-20261205T210336.490773Z"
    assert lines == [
        {"ts": ts, "event": "tunnel", "tunnel_id": "t1"},
        {"ts": ts, "run_id": run, "account_id": "a" * 32, "event": "tunnel", "tunnel_id": "t2"},
        {"ts": ts, "run_id": run, "account_id": "b" * 32, "event": "tunnel"},
        {"ts": ts, "run_id": run, "event": "summary"},
        {"psk": "exported as is"},
    ]
    assert list(lines[1]) == ["ts", "run_id", "account_id", "event", "tunnel_id"]


def test_ts_is_utc_whatever_the_clock_s_zone() -> None:
    out = io.StringIO()
    east = timezone(timedelta(hours=2))
    Console(out, io.StringIO(), utcnow=lambda: NOW.astimezone(east)).json({})
    assert json.loads(out.getvalue())["ts"] == "2026-12-05T21:03:36.490773Z"


def test_json_log_lines_have_the_fields_and_the_context() -> None:
    err = io.StringIO()
    console = Console(io.StringIO(), err)
    console.bind(run_id="r1", account_id="a" * 32)
    logger = logging.getLogger("magicwan")
    with logging_to(console, 2, "json"):
        logger.debug("POST /x -> 200 in 0.012s", extra={"event": "request", "tunnel_id": "t" * 32})
        logger.warning("plain \x1b[31m")

    first, second = (json.loads(line) for line in err.getvalue().splitlines())
    assert list(first) == ["ts", "level", "run_id", "account_id", "tunnel_id", "event", "message"]
    assert first["ts"].endswith("Z")
    assert first["level"] == "debug"
    assert (first["run_id"], first["account_id"], first["tunnel_id"]) == ("r1", "a" * 32, "t" * 32)
    assert (first["event"], first["message"]) == ("request", "POST /x -> 200 in 0.012s")
    assert second["level"] == "warning"
    assert second["event"] == "magicwan"
    assert "tunnel_id" not in second
    assert second["message"] == "plain \x1b[31m"
    assert "\x1b" not in err.getvalue()
