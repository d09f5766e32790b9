"""The progress display of the command line (``magicwan._progress``), on a fake clock."""

from __future__ import annotations

import io

import pytest

from magicwan._progress import Progress, format_duration
from tests.support.clock import FakeClock


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
