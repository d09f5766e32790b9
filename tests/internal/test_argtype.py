"""``argtype(rule)``: a command line refuses a value by the library's rule, in its words."""

from __future__ import annotations

import argparse
from datetime import timedelta

import pytest

from magicwan.internal.validation import (
    argtype,
    check_duration,
    check_positive_int,
    check_rate_limit,
    check_seconds,
    read_whole,
)


def _refusal(convert: object, text: str) -> str:
    assert callable(convert)
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        convert(text)
    return str(caught.value)


def test_the_rule_reads_its_own_kind_of_text() -> None:
    assert argtype(check_positive_int)("7") == 7
    assert argtype(check_seconds)("0.5") == 0.5
    assert argtype(check_rate_limit)("1200/300") == (1200, 300.0)
    assert argtype(check_rate_limit)("off") is None


def test_a_refusal_says_what_was_expected_and_what_came() -> None:
    assert _refusal(argtype(check_positive_int), "0") == "expected a whole number >= 1, got 0"
    assert _refusal(argtype(check_positive_int), "x") == "expected a whole number, got 'x'"
    assert _refusal(argtype(check_seconds), "-1") == "expected a number of seconds > 0, got -1"
    assert _refusal(argtype(check_seconds), "inf") == (
        "expected a finite number of seconds, got inf"
    )
    assert _refusal(argtype(check_rate_limit), "0").startswith("invalid rate limit '0'")


def test_a_named_value_is_refused_in_the_library_form() -> None:
    duration = argtype(check_duration, name="DURATION")
    assert duration("12h") == timedelta(hours=12)
    assert _refusal(duration, "1y").startswith("DURATION must be a whole number and a unit")


def test_off_is_none_and_the_refusal_offers_it() -> None:
    halt_after = argtype(check_positive_int, read_whole, off=True)
    assert halt_after(" OFF ") is None
    assert halt_after("3") == 3
    assert _refusal(halt_after, "0") == "expected a whole number >= 1 or off, got 0"


def test_the_type_is_named_after_its_rule() -> None:
    assert argtype(check_positive_int).__name__ == "positive_int"
