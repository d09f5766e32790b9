"""``RotationOptions``: every option declared once, its flag with it."""

from __future__ import annotations

import argparse
import functools
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import attrs
import pytest

from magicwan import Delivery, InvalidInputError
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


async def _push(delivery: Delivery) -> None:
    return None


def _returns_a_coroutine(delivery: Delivery) -> Awaitable[None]:
    return _push(delivery)


def _sync_decorator(
    function: Callable[[Delivery], Awaitable[None]],
) -> Callable[[Delivery], Awaitable[None]]:
    @functools.wraps(function)
    def wrapper(delivery: Delivery) -> Awaitable[None]:
        return function(delivery)

    return wrapper


class _Router:
    async def push(self, delivery: Delivery) -> None:
        return None

    async def __call__(self, delivery: Delivery) -> None:
        return None

    def plain(self, delivery: Delivery) -> None:
        return None


def _declared_none(delivery: Delivery) -> None:
    return None


def _unannotated(delivery):  # type: ignore[no-untyped-def]
    return None


def _generator(delivery: Delivery) -> Iterator[None]:
    yield None


async def _async_generator(delivery: Delivery) -> AsyncIterator[None]:
    yield None


@pytest.mark.parametrize(
    "deliver",
    [
        _push,
        _returns_a_coroutine,  # a def that returns a coroutine: legitimate
        lambda delivery: _push(delivery),
        functools.partial(_push),
        _sync_decorator(_push),  # functools.wraps copies `-> None` from the async def
        _Router(),
        _Router().push,
        _unannotated,  # only a call can tell
    ],
    ids=["async", "def", "lambda", "partial", "decorated", "object", "method", "unannotated"],
)
def test_a_deliverer_that_may_return_an_awaitable_is_taken(deliver: object) -> None:
    assert RotationOptions(deliver=deliver).deliver is deliver  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("deliver", "what"),
    [
        (_declared_none, "declared to return None"),
        (_Router().plain, "declared to return None"),
        (_generator, "a generator function"),
        (_async_generator, "an async generator function"),
    ],
)
def test_a_deliverer_that_never_returns_an_awaitable_is_refused(deliver: object, what: str) -> None:
    with pytest.raises(InvalidInputError, match=what):
        RotationOptions(deliver=deliver)  # type: ignore[arg-type]


def test_a_return_annotation_evaluated_to_none_is_read_too() -> None:
    def push(delivery: Delivery):  # type: ignore[no-untyped-def]
        return None

    push.__annotations__["return"] = None  # no `from __future__ import annotations`
    with pytest.raises(InvalidInputError, match="declared to return None"):
        RotationOptions(deliver=push)
