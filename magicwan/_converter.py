"""The one cattrs converter: every (un)structuring rule lives here, none in models."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, TypeVar

import cattrs
from cattrs.preconf.json import make_converter

from magicwan.errors import UnexpectedResponseError

__all__ = ["converter", "parse_datetime", "structure"]

T = TypeVar("T")

# Python's fromisoformat takes at most 6 fractional digits; Cloudflare may send more.
_LONG_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_datetime(value: object) -> datetime:
    """An RFC 3339 timestamp as a timezone-aware datetime (naive ones are UTC)."""
    if not isinstance(value, str):
        raise TypeError(f"expected an RFC 3339 timestamp string, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(_LONG_FRACTION.sub(r"\1", value))
    except ValueError:
        raise ValueError("not an RFC 3339 timestamp") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _strict_str(value: object, _: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _strict_bool(value: object, _: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected a boolean, got {type(value).__name__}")
    return value


def _strict_int(value: object, _: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _make() -> cattrs.Converter:
    conv = make_converter(forbid_extra_keys=False, prefer_attrib_converters=False)
    conv.register_structure_hook(datetime, lambda v, _: parse_datetime(v))
    conv.register_unstructure_hook(datetime, lambda d: d.isoformat().replace("+00:00", "Z"))
    conv.register_structure_hook(str, _strict_str)
    conv.register_structure_hook(bool, _strict_bool)
    conv.register_structure_hook(int, _strict_int)
    return conv


converter = _make()


def _describe(exc: BaseException) -> str:
    # Paths and types only: values may be secrets.
    try:
        return "; ".join(cattrs.transform_error(exc, path="result"))
    except Exception:  # pragma: no cover - defensive
        return type(exc).__name__


def structure(data: object, cls: type[T]) -> T:
    """Structure an API result, turning any mismatch into UnexpectedResponseError."""
    if not isinstance(data, dict):
        raise UnexpectedResponseError(
            f"result has the wrong shape: expected an object, got {type(data).__name__}"
        )
    try:
        return converter.structure(data, cls)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError, AttributeError) as exc:
        problem = _describe(exc)
    # Raised outside the except block so no exception chain keeps the raw values.
    raise UnexpectedResponseError(f"result has the wrong shape: {problem}")
