"""The one cattrs converter: every (un)structuring rule lives here, none in models."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Optional, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, override
from cattrs.preconf.json import make_converter

from magicwan.errors import UnexpectedResponseError
from magicwan.internal.timestamps import format_datetime, parse_datetime
from magicwan.models.psk import AppliedPSK, PSKGenerateResult, PSKSetResult
from magicwan.models.tunnels import HealthCheckTarget

__all__ = ["converter", "structure", "structure_member"]

T = TypeVar("T")

logger = logging.getLogger("magicwan")


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


def _lenient_datetime(value: object, _: Any) -> datetime | None:
    # A stamp is metadata: an answer that carries a PSK is never discarded because its
    # stamp is in a form we do not read (an epoch number, Go's time.String()). The stamp
    # is left unset and the caller is told; the value itself is not logged (a hostile
    # server could put anything there).
    if value is None:
        return None
    try:
        return parse_datetime(value)
    except (TypeError, ValueError):
        logger.warning(
            "ignoring a timestamp that is not RFC 3339 (a %s of %d characters); left unset",
            type(value).__name__,
            len(value) if isinstance(value, str) else 0,
        )
        return None


def _is_optional_datetime(cls: Any) -> bool:
    return bool(cls == (datetime | None) or cls == Optional[datetime])  # noqa: UP045


def _optional_str(value: object) -> str | None:
    return None if value is None else _strict_str(value, str)


#: Metadata of the answers that carry a PSK. Like an unreadable stamp, a value of the wrong
#: type here is left unset (never the PSK's answer discarded); the PSK and the tunnel id
#: stay strict.
_METADATA_FIELDS: dict[type, tuple[str, ...]] = {
    PSKGenerateResult: ("psk_metadata", "ipsec_id"),
    AppliedPSK: ("psk_metadata", "ipsec_id"),
}

_STRUCTURE_ERRORS = (cattrs.BaseValidationError, TypeError, ValueError, KeyError, AttributeError)


def _lenient(conv: cattrs.Converter, name: str, kind: Any) -> Callable[[Any, Any], Any]:
    # As _lenient_datetime: the field is left unset and the caller is told; the value
    # itself is not logged (a hostile server could put anything there).
    def hook(value: Any, _: Any) -> Any:
        try:
            return conv.structure(value, kind)
        except _STRUCTURE_ERRORS:
            pass
        logger.warning(
            "ignoring %s of the wrong type (a %s); left unset", name, type(value).__name__
        )
        return None

    return hook


def _attrs_hook(conv: cattrs.Converter, cls: Any) -> Callable[[Any, Any], Any]:
    lenient = _METADATA_FIELDS.get(cls)
    if not lenient:
        return conv.gen_structure_attrs_fromdict(cls)
    kinds = attrs.fields_dict(attrs.resolve_types(cls))
    overrides: dict[str, Any] = {
        name: override(struct_hook=_lenient(conv, name, kinds[name].type)) for name in lenient
    }
    return make_dict_structure_fn(cls, conv, **overrides)


def _objects_only(conv: cattrs.Converter) -> Callable[[Any], Callable[[Any, Any], Any]]:
    # cattrs' generated attrs hooks test ``"field" in value``, which a string or a list
    # also answers: a ``psk_metadata: "oops"`` would silently become defaults.
    def factory(cls: Any) -> Callable[[Any, Any], Any]:
        inner = _attrs_hook(conv, cls)

        def hook(value: Any, _: Any) -> Any:
            if not isinstance(value, Mapping):
                raise TypeError(f"expected an object, got {type(value).__name__}")
            return inner(value, cls)

        return hook

    return factory


def _psk_set_result(conv: cattrs.Converter) -> Callable[[Any, Any], PSKSetResult]:
    # The API's names are long; the model's (a public contract) are short. Either map may
    # come as null when it is empty.
    inner = make_dict_structure_fn(
        PSKSetResult,
        conv,
        applied=override(rename="successfully_applied_psks"),
        unapplied=override(rename="unapplied_psks"),
    )

    def hook(value: Any, _: Any) -> PSKSetResult:
        if not isinstance(value, Mapping):
            raise TypeError(f"expected an object, got {type(value).__name__}")
        cleaned = {k: v for k, v in value.items() if v is not None}
        reasons = cleaned.get("unapplied_psks")
        if isinstance(reasons, Mapping):
            # A reason is words for people: one that is not a string (an error object) is
            # kept as its JSON text, never a reason to throw the whole answer away.
            cleaned["unapplied_psks"] = {
                k: v if isinstance(v, str) else json.dumps(v, default=str)
                for k, v in reasons.items()
            }
        return inner(cleaned, PSKSetResult)

    return hook


def _make() -> cattrs.Converter:
    conv = make_converter(forbid_extra_keys=False, prefer_attrib_converters=False)
    # The primitives first: a hook generated eagerly (PSKSetResult's, below) takes the
    # hooks registered when it is made, and cattrs' own str hook turns 5 into "5".
    conv.register_structure_hook(str, _strict_str)
    conv.register_structure_hook(bool, _strict_bool)
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook_factory(attrs.has, _objects_only(conv))
    conv.register_structure_hook(HealthCheckTarget, _health_check_target)
    conv.register_structure_hook(datetime, lambda v, _: parse_datetime(v))
    conv.register_structure_hook_func(_is_optional_datetime, _lenient_datetime)
    conv.register_unstructure_hook(datetime, lambda d: format_datetime(d))
    conv.register_structure_hook(PSKSetResult, _psk_set_result(conv))
    return conv


converter = _make()


def _structure_problem(exc: BaseException) -> str:
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
    except _STRUCTURE_ERRORS as exc:
        problem = _structure_problem(exc)
    # Raised outside the except block so no exception chain keeps the raw values.
    raise UnexpectedResponseError(f"result has the wrong shape: {problem}")
