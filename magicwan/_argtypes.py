"""Argument types shared by both command lines (``magicwan`` and ``python -m
magicwan.emulator``): one definition each, and the same words for the same mistake."""

from __future__ import annotations

import argparse
import math
from datetime import timedelta

from magicwan._validation import check_duration
from magicwan.errors import InvalidInputError
from magicwan.ratelimit import parse_rate_limit

__all__ = [
    "duration",
    "halt_after",
    "non_negative_int",
    "non_negative_seconds",
    "positive_int",
    "rate_limit",
    "seconds",
    "whole",
]


def whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    value = whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = whole(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value}")
    return value


def rate_limit(text: str) -> tuple[int, float] | None:
    """``N/SECONDS`` or ``off`` (None), by the one parser both command lines use."""
    try:
        return parse_rate_limit(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m`` or ``45s``, by :func:`magicwan._validation.check_duration`."""
    try:
        return check_duration(text, "DURATION")
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds, got {text!r}")
    return value


def seconds(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text}")
    return value


def non_negative_seconds(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text}")
    return value


def halt_after(text: str) -> int | None:
    """A whole number >= 1, or ``off`` (None): never halt."""
    if text.strip().lower() == "off":
        return None
    value = whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a whole number >= 1 or off (never halt), got {value}"
        )
    return value
