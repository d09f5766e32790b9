"""The command line's exit statuses (``magicwan.cli.status``)."""

from __future__ import annotations

import itertools

import pytest

from magicwan.cli.status import PRECEDENCE, ExitStatus, exit_status_help, most_urgent


def test_the_statuses_are_fixed() -> None:
    assert {s.name: int(s) for s in ExitStatus} == {
        "OK": 0,
        "FAILED": 1,
        "USAGE": 2,
        "ACCESS": 3,
        "UNRECORDED": 4,
        "UNDELIVERED": 5,
        "INTERRUPTED": 130,
    }


def test_precedence_covers_every_status_once() -> None:
    assert sorted(PRECEDENCE) == sorted(ExitStatus)


@pytest.mark.parametrize(
    ("found", "wins"),
    [
        ((), ExitStatus.OK),
        ((ExitStatus.FAILED, ExitStatus.UNDELIVERED), ExitStatus.UNDELIVERED),
        ((ExitStatus.FAILED, ExitStatus.UNRECORDED, ExitStatus.UNDELIVERED), ExitStatus.UNRECORDED),
        ((ExitStatus.INTERRUPTED, ExitStatus.UNDELIVERED), ExitStatus.INTERRUPTED),
        ((ExitStatus.INTERRUPTED, ExitStatus.UNRECORDED), ExitStatus.UNRECORDED),
        ((ExitStatus.ACCESS, ExitStatus.FAILED), ExitStatus.ACCESS),
    ],
)
def test_the_most_urgent_status_wins(found: tuple[ExitStatus, ...], wins: ExitStatus) -> None:
    for order in itertools.permutations(found):
        assert most_urgent(order) is wins


def test_the_help_lists_each_status() -> None:
    text = exit_status_help()
    for status in ExitStatus:
        assert f"  {int(status):>3}  " in text
