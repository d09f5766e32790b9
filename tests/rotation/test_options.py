"""``RotationOptions``: every option declared once, its flag with it."""

from __future__ import annotations

import argparse
import typing

import attrs
import pytest

from magicwan import InvalidInputError
from magicwan.rotation import DEFAULT_HALT_AFTER, RotationKwargs, RotationOptions


def test_the_keyword_arguments_are_the_options_fields() -> None:
    keys = set(typing.get_type_hints(RotationKwargs))
    assert keys == {field.name for field in attrs.fields(RotationOptions)}


def test_halt_after_follows_the_deliverer_unless_said() -> None:
    async def deliver(_: object) -> None:
        return None

    assert RotationOptions().halt_after is None
    assert RotationOptions(deliver=deliver).halt_after == DEFAULT_HALT_AFTER
    assert RotationOptions(deliver=deliver, halt_after=None).halt_after is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("concurrency", 0),
        ("batch_size", 1001),
        ("method", "push"),
        ("settle_window", float("nan")),
        ("deliver_group_by", "name"),
        ("rollout_max", 0),
    ],
)
def test_bad_values_are_refused_when_made(field: str, value: object) -> None:
    with pytest.raises(InvalidInputError, match=field):
        RotationOptions(**{field: value})  # type: ignore[arg-type]


def test_flags_are_registered_from_the_fields_and_read_back() -> None:
    parser = argparse.ArgumentParser()
    RotationOptions.register_arguments(parser)
    args = parser.parse_args(["--concurrency", "3", "--halt-after", "off", "--method", "set"])
    options = RotationOptions.from_arguments(args, journal="j")
    assert (options.concurrency, options.halt_after, options.method) == (3, None, "set")
    defaults = RotationOptions.from_arguments(parser.parse_args([]))
    assert defaults.halt_after == DEFAULT_HALT_AFTER  # the command line's default
    assert defaults.concurrency == RotationOptions().concurrency
    with pytest.raises(SystemExit):
        parser.parse_args(["--batch-size", "0"])


def test_only_the_flags_asked_for_are_registered() -> None:
    parser = argparse.ArgumentParser()
    RotationOptions.register_arguments(parser, only=("settle_window",))
    args = parser.parse_args(["--settle-window", "2"])
    assert RotationOptions.from_arguments(args).settle_window == 2.0
    with pytest.raises(SystemExit):
        parser.parse_args(["--concurrency", "2"])
