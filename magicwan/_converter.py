"""The one cattrs converter: every (un)structuring rule lives here, none in models."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.preconf.json import make_converter

from magicwan.errors import UnexpectedResponseError
from magicwan.models.tunnels import HealthCheckTarget

__all__ = ["converter", "format_datetime", "parse_datetime", "structure", "structure_member"]

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


def format_datetime(value: datetime) -> str:
    """RFC 3339 with ``Z`` for UTC, as Cloudflare writes its timestamps."""
    return value.isoformat().replace("+00:00", "Z")


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


def _health_check_target(value: object, _: Any) -> HealthCheckTarget:
    # Older answers give the target as a plain address; newer ones as an object.
    if isinstance(value, str):
        return HealthCheckTarget(effective=value, saved=value)
    if isinstance(value, dict):
        return HealthCheckTarget(
            effective=_optional_str(value.get("effective")), saved=_optional_str(value.get("saved"))
        )
    raise TypeError(f"expected a string or an object, got {type(value).__name__}")


def _optional_str(value: object) -> str | None:
    return None if value is None else _strict_str(value, str)


def _objects_only(conv: cattrs.Converter) -> Callable[[Any], Callable[[Any, Any], Any]]:
    # cattrs' generated attrs hooks test ``"field" in value``, which a string or a list
    # also answers: a ``psk_metadata: "oops"`` would silently become defaults.
    def factory(cls: Any) -> Callable[[Any, Any], Any]:
        inner = conv.gen_structure_attrs_fromdict(cls)

        def hook(value: Any, _: Any) -> Any:
            if not isinstance(value, Mapping):
                raise TypeError(f"expected an object, got {type(value).__name__}")
            return inner(value, cls)

        return hook

    return factory


def _make() -> cattrs.Converter:
    conv = make_converter(forbid_extra_keys=False, prefer_attrib_converters=False)
    conv.register_structure_hook_factory(attrs.has, _objects_only(conv))
    conv.register_structure_hook(HealthCheckTarget, _health_check_target)
    conv.register_structure_hook(datetime, lambda v, _: parse_datetime(v))
    conv.register_unstructure_hook(datetime, lambda d: format_datetime(d))
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


def structure_member(data: object, key: str, cls: Any) -> Any:
    """Structure ``data[key]`` (``result.ipsec_tunnels`` and the like) as ``cls``."""
    if not isinstance(data, dict) or key not in data:
        raise UnexpectedResponseError(f"result has the wrong shape: no {key!r} member")
    return getattr(structure({key: data[key]}, _member_class(key, cls)), key)


_MEMBER_CLASSES: dict[tuple[str, Any], Any] = {}


def _member_class(key: str, cls: Any) -> Any:
    # A one-field attrs class per (key, type), so cattrs reports paths like result.key[3].id.
    made = _MEMBER_CLASSES.get((key, cls))
    if made is None:
        made = attrs.make_class("Result", {key: attrs.field(type=cls)}, frozen=True)
        _MEMBER_CLASSES[(key, cls)] = made
    return made


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
