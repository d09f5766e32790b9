"""Every option of a rotation, declared once: :class:`RotationOptions`.

The library takes it (``rotate(..., options=RotationOptions(...))`` or the same names as
keyword arguments); the command line registers its flags from the same declarations
(:meth:`RotationOptions.register_arguments`) and builds it back
(:meth:`RotationOptions.from_arguments`). A new option is one field here, with its flag.
"""

from __future__ import annotations

import argparse
import inspect
import types
from collections.abc import Callable, Iterable, Mapping
from os import PathLike
from typing import Any, Literal, TypedDict

import attrs

from magicwan.delivery import GROUP_KEYS, Deliverer
from magicwan.errors import InvalidInputError
from magicwan.internal.validation import (
    argtype,
    check_bool,
    check_non_negative_int,
    check_non_negative_seconds,
    check_positive_int,
    check_seconds,
    read_seconds,
    read_whole,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_DELIVER_RETRIES",
    "DEFAULT_DELIVER_TIMEOUT",
    "DEFAULT_HALT_AFTER",
    "MAX_BATCH_SIZE",
    "Method",
    "OptionKwargs",
    "RotationKwargs",
    "RotationOptions",
]

Method = Literal["generate", "set"]
DEFAULT_CONCURRENCY = 16
DEFAULT_BATCH_SIZE = 100
#: The largest batch ``method="set"`` sends (the emulator's documented maximum).
MAX_BATCH_SIZE = 1000
DEFAULT_DELIVER_RETRIES = 2
DEFAULT_DELIVER_TIMEOUT = 30.0
#: ``halt_after`` when a deliverer is given and none is said (the command line's always).
DEFAULT_HALT_AFTER = 5


# -- rules of rotation's own options (the shared ones: magicwan.internal.validation) -----


def _method(value: object, name: str) -> str:
    if value not in ("generate", "set"):
        raise InvalidInputError(f"{name} must be 'generate' or 'set', got {value!r}")
    return str(value)


def _batch_size(value: object, name: str) -> int:
    size = check_positive_int(value, name)
    if size > MAX_BATCH_SIZE:
        raise InvalidInputError(f"{name} must be at most {MAX_BATCH_SIZE}")
    return size


def _journal(value: object, name: str) -> object:
    if not isinstance(value, str | PathLike):
        raise InvalidInputError(f"{name} must be a path")
    return value


def _deliverer(value: object, name: str) -> object:
    if not callable(value):
        raise InvalidInputError(f"{name} must be an async callable taking a Delivery")
    never = _never_awaitable(value)
    if never is not None:
        raise InvalidInputError(
            f"{name} must be an async callable taking a Delivery; this one is {never}"
        )
    return value


def _never_awaitable(value: object) -> str | None:
    """What makes ``value`` certainly return no awaitable, or None when only a call can
    tell. Only a plain function (or bound method) is judged: a generator, an async
    generator, or a ``def`` declared ``-> None`` (an ``async def`` was meant). A lambda, a
    partial, a decorated function or a callable object may return a coroutine: the
    delivery of the first tunnel finds out (and stops the rotation)."""
    if inspect.iscoroutinefunction(value):
        return None
    function = value.__func__ if isinstance(value, types.MethodType) else value
    if not isinstance(function, types.FunctionType) or hasattr(function, "__wrapped__"):
        return None
    flags = function.__code__.co_flags
    if flags & inspect.CO_ITERABLE_COROUTINE:  # @types.coroutine: awaitable
        return None
    if flags & inspect.CO_ASYNC_GENERATOR:
        return "an async generator function (its calls return no awaitable)"
    if flags & inspect.CO_GENERATOR:
        return "a generator function (its calls return no awaitable)"
    try:
        returns = function.__annotations__.get("return", "")
    except Exception:  # an annotation that cannot be evaluated (Python 3.14's lazy ones)
        return None
    if returns is None or returns == "None":
        return "a plain function declared to return None (define it with async def)"
    return None


def _group(value: object, name: str) -> str:
    if value not in GROUP_KEYS:
        choices = ", ".join(sorted(GROUP_KEYS))
        raise InvalidInputError(f"{name} must be one of: {choices}; got {value!r}")
    return str(value)


def _option(
    default: Any,
    check: Callable[[Any, str], Any],
    *,
    flag: str | None = None,
    help: str = "",
    group: str = "how",
    parse: Callable[[str], Any] = str,
    off: bool = False,
    metavar: str | None = None,
    cli_default: Any = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A field checked by ``check`` (None is always allowed where the default is None),
    and, with ``flag``, the command-line flag that sets it: its text read by ``parse``,
    then checked by ``check`` (``argtype``); with ``off``, the word ``off`` is None."""

    nullable = default is None or isinstance(default, type(attrs.Factory(list)))

    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None and nullable:
            return
        check(value, attribute.name)

    meta: dict[str, Any] = {"check": check, "flag": flag, "help": help, "group": group}
    meta.update(parse=parse, off=off)
    meta.update(metavar=metavar, cli_default=cli_default, choices=choices)
    return attrs.field(default=default, validator=validate, metadata=meta)


def _halt_default(options: RotationOptions) -> int | None:
    return DEFAULT_HALT_AFTER if options.deliver is not None else None


@attrs.frozen(kw_only=True)
class RotationOptions:
    """How a rotation runs. Every value is checked here, before anything is sent.

    ``method``: ``"generate"`` (Cloudflare makes each PSK, one request per tunnel) or
    ``"set"`` (PSKs are made here, journalled *before* sending, ``batch_size`` per
    request; needs ``journal``). ``journal``: the JSON Lines file (0600, locked) where
    every PSK is fsynced before its outcome is handed over. ``resume``: continue the run
    a journal records (without it, a journal that already records a new PSK for a
    selected tunnel is refused); ``again``: rotate such tunnels once more (what ``magicwan
    psk generate`` and ``psk set`` do). ``deliver``: an async callable given each durable PSK.
    ``halt_after``: no new tunnel after that many failed ones (default: 5 with a
    deliverer, never without). ``rollout_max``: the most tunnels whose new PSK may be
    live but undelivered at once (the rollout window starts at one and widens as
    deliveries succeed; default: ``concurrency``, times ``batch_size`` for ``set``).
    ``deliver_concurrency`` (default: ``concurrency``) bounds deliveries at once and
    ``deliver_group_by="customer_endpoint"`` makes them one at a time per device; waiting
    for a turn never counts against ``deliver_timeout``, and a permanent delivery failure
    (:attr:`~magicwan.DeliveryError.permanent`) is not retried. ``settle_window`` and
    ``drain_timeout``: None means the client's timeout.
    """

    method: Method = _option(
        "generate",
        _method,
        flag="--method",
        help="generate: Cloudflare makes each PSK, one request per tunnel (default); set: "
        "PSKs are made here, journalled before sending, and sent in batches",
        choices=("generate", "set"),
    )
    concurrency: int = _option(
        DEFAULT_CONCURRENCY,
        check_positive_int,
        flag="--concurrency",
        help=f"requests in flight at once (default: {DEFAULT_CONCURRENCY})",
        parse=read_whole,
        metavar="N",
    )
    batch_size: int = _option(
        DEFAULT_BATCH_SIZE,
        _batch_size,
        flag="--batch-size",
        help=f"tunnels per request with --method set (default: {DEFAULT_BATCH_SIZE}, "
        f"at most {MAX_BATCH_SIZE})",
        parse=read_whole,
        metavar="N",
    )
    validate_only: bool = _option(False, check_bool)
    journal: str | PathLike[str] | None = _option(None, _journal)
    resume: bool = _option(False, check_bool)
    again: bool = _option(False, check_bool)
    unsafe_without_journal: bool = _option(False, check_bool)
    deliver: Deliverer | None = _option(None, _deliverer)
    deliver_retries: int = _option(
        DEFAULT_DELIVER_RETRIES,
        check_non_negative_int,
        flag="--deliver-retries",
        help=f"retries of a failed delivery (default: {DEFAULT_DELIVER_RETRIES}; a permanent "
        "failure, such as a missing connection, is not retried)",
        group="deliver",
        parse=read_whole,
        metavar="N",
    )
    deliver_timeout: float = _option(
        DEFAULT_DELIVER_TIMEOUT,
        check_seconds,
        flag="--deliver-timeout",
        help=f"bound of one delivery try (default: {DEFAULT_DELIVER_TIMEOUT:g})",
        group="deliver",
        parse=read_seconds,
        metavar="SECONDS",
    )
    halt_after: int | None = _option(
        attrs.Factory(_halt_default, takes_self=True),
        check_positive_int,
        flag="--halt-after",
        help=f"start no new tunnel after N failed ones (default: {DEFAULT_HALT_AFTER})",
        parse=read_whole,
        off=True,
        metavar="N|off",
        cli_default=DEFAULT_HALT_AFTER,
    )
    deliver_concurrency: int | None = _option(
        None,
        check_positive_int,
        flag="--deliver-concurrency",
        help="deliveries at once (default: --concurrency)",
        group="deliver",
        parse=read_whole,
        metavar="N",
    )
    deliver_group_by: str | None = _option(
        None,
        _group,
        flag="--deliver-group-by",
        help="one delivery at a time per group: customer_endpoint (for routers that carry "
        "several tunnels)",
        group="deliver",
        choices=tuple(sorted(GROUP_KEYS)),
    )
    rollout_max: int | None = _option(
        None,
        check_positive_int,
        flag="--rollout-max",
        help="with delivery: the most tunnels whose new PSK may be live but not yet "
        "delivered at once; the window starts at 1 and widens as deliveries succeed "
        "(default: --concurrency, times --batch-size with --method set)",
        group="deliver",
        parse=read_whole,
        metavar="N",
    )
    settle_window: float | None = _option(
        None,
        check_non_negative_seconds,
        flag="--settle-window",
        help="after an uncertain answer, wait this long before reading the tunnel back "
        "(default: --timeout)",
        parse=read_seconds,
        metavar="SECONDS",
    )
    drain_timeout: float | None = _option(
        None,
        check_seconds,
        flag="--drain-timeout",
        help="when stopping early, how long to wait for requests in flight (default: --timeout)",
        parse=read_seconds,
        metavar="SECONDS",
    )

    def __attrs_post_init__(self) -> None:
        if (
            self.method == "set"
            and self.journal is None
            and not self.validate_only
            and not self.unsafe_without_journal
        ):
            raise InvalidInputError(
                "method='set' needs a journal: it is where each PSK is written before it is "
                "sent (pass unsafe_without_journal=True to accept losing PSKs to a crash)"
            )

    @property
    def unit(self) -> int:
        """Tunnels per request: ``batch_size`` for ``set``, else one."""
        return self.batch_size if self.method == "set" else 1

    def with_client_defaults(self, timeout: float) -> RotationOptions:
        """These options with "the client's timeout" filled in where None says so."""
        return attrs.evolve(
            self,
            settle_window=timeout if self.settle_window is None else self.settle_window,
            drain_timeout=timeout if self.drain_timeout is None else self.drain_timeout,
        )

    # -- the command line ----------------------------------------------------------------

    @classmethod
    def register_arguments(
        cls,
        parser: argparse.ArgumentParser,
        groups: Mapping[str, Any] | None = None,
        *,
        only: Iterable[str] | None = None,
    ) -> None:
        """Add the flag of every option that has one (or of those named in ``only``), to
        ``groups[its group]`` or else ``parser``. A flag not given stays absent from the
        namespace, so the option keeps its default."""
        wanted = None if only is None else set(only)
        names: list[str] = []
        for field in attrs.fields(cls):
            meta = field.metadata
            if meta.get("flag") is None or (wanted is not None and field.name not in wanted):
                continue
            names.append(field.name)
            target = (groups or {}).get(meta["group"], parser)
            target.add_argument(
                meta["flag"],
                dest=field.name,
                # A choice is checked by argparse itself (its words: "invalid choice").
                type=None
                if meta["choices"]
                else argtype(meta["check"], meta["parse"], off=meta["off"]),
                choices=meta["choices"],
                metavar=meta["metavar"],
                help=meta["help"],
                default=argparse.SUPPRESS,
            )
        parser.set_defaults(**{_REGISTERED: tuple(names)})

    @classmethod
    def from_arguments(cls, args: argparse.Namespace, **given: Any) -> RotationOptions:
        """The options the parsed flags say, plus ``given`` (what no flag carries: the
        deliverer, the journal's path, what the command fixes)."""
        values: dict[str, Any] = {}
        for field in attrs.fields(cls):
            if field.name not in getattr(args, _REGISTERED, ()):
                continue
            if hasattr(args, field.name):
                values[field.name] = getattr(args, field.name)
            elif field.metadata["cli_default"] is not None:
                values[field.name] = field.metadata["cli_default"]
        values.update(given)
        return cls(**values)


#: Where a parser keeps the names of the options whose flags it registered.
_REGISTERED = "_rotation_options"


class OptionKwargs(TypedDict, total=False):
    """:class:`RotationOptions`'s fields as keyword arguments, but ``validate_only`` (which
    types a rotation's outcomes, so ``rotate()`` names it apart)."""

    method: Method
    concurrency: int
    batch_size: int
    journal: str | PathLike[str] | None
    resume: bool
    again: bool
    unsafe_without_journal: bool
    deliver: Deliverer | None
    deliver_retries: int
    deliver_timeout: float
    deliver_concurrency: int | None
    deliver_group_by: str | None
    halt_after: int | None
    rollout_max: int | None
    settle_window: float | None
    drain_timeout: float | None


class RotationKwargs(OptionKwargs, total=False):
    """:class:`RotationOptions`'s fields as keyword arguments (a test keeps the two in
    step)."""

    validate_only: bool
