"""Bulk PSK rotation: many tunnels at once, paced by the client's limiter, no PSK lost.

:func:`rotate` returns a :class:`Rotation`: ``async with rotation: async for outcome in
rotation:`` (a plain ``async for`` works too). Every tunnel gets exactly one outcome, in
completion order, and **any outcome for a tunnel that may now hold a PSK we received (or
sent) carries that PSK** (``outcome.result.psk``), whatever ``ok`` says.

The package is layered so that the promise lives in pure code:

- :mod:`~magicwan.rotation.machine`: one tunnel's run as a state machine; every state
  says which PSK the tunnel may hold and where it is recorded, and a cut from any state
  hands it over;
- :mod:`~magicwan.rotation.window`: the rollout window (one tunnel first, wider as
  deliveries succeed), which bounds what a broken router costs;
- :mod:`~magicwan.rotation.options`: every option, declared once, with its flag;
- :mod:`~magicwan.rotation.engine`: the asyncio driver that performs the effects.

How a tunnel goes (the journal's events are in :mod:`magicwan.journal`):

- ``method="generate"``: ``intent`` (fsynced) -> ``psk_generate`` -> ``rotated``. When a
  retry made the answer uncertain, or a run before this one left a request unanswered,
  the tunnel is read back once ``settle_window`` has passed and regenerated only on
  positive evidence (the edge's ``last_generated_on`` is newer); a read-back that cannot
  decide hands the PSK over, unverified.
- ``method="set"``: the client makes each PSK (:func:`magicwan.new_psk`, or the caller's
  ``psks``) and fsyncs it in an ``intent`` line *before* the request carrying it leaves;
  a rerun resends the PSK of an intent nobody saw answered.
- Then, with ``deliver``: the durable PSK goes to the tunnel's other end: ``delivered``
  or ``undelivered``. At most the rollout window's tunnels are between their request and
  their delivery at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import Any, Unpack

import attrs

from magicwan.errors import InvalidInputError
from magicwan.internal.clock import Clock, Sleep
from magicwan.internal.redaction import shown_id
from magicwan.internal.validation import check_id, check_psk
from magicwan.journal import Storage
from magicwan.models.tunnels import IPsecTunnel
from magicwan.rotation.engine import (
    BATCH_TOO_LARGE_CODES,
    GenerateCall,
    ReadBackCall,
    Rotation,
    SetCall,
)
from magicwan.rotation.live_tunnels import LiveTunnels
from magicwan.rotation.machine import MAX_VERIFY_ROUNDS
from magicwan.rotation.options import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONCURRENCY,
    DEFAULT_DELIVER_RETRIES,
    DEFAULT_DELIVER_TIMEOUT,
    DEFAULT_HALT_AFTER,
    MAX_BATCH_SIZE,
    Method,
    RotationKwargs,
    RotationOptions,
)
from magicwan.rotation.outcomes import (
    Outcome,
    OutcomeState,
    RotationFailure,
    RotationOutcome,
    RotationSuccess,
    Validated,
    ValidationOutcome,
)
from magicwan.rotation.stamps import compare_stamps, read_back_verdict
from magicwan.rotation.window import RolloutWindow

__all__ = [
    "BATCH_TOO_LARGE_CODES",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_DELIVER_RETRIES",
    "DEFAULT_DELIVER_TIMEOUT",
    "DEFAULT_HALT_AFTER",
    "MAX_BATCH_SIZE",
    "MAX_VERIFY_ROUNDS",
    "GenerateCall",
    "LiveTunnels",
    "Method",
    "Outcome",
    "OutcomeState",
    "ReadBackCall",
    "RolloutWindow",
    "Rotation",
    "RotationFailure",
    "RotationKwargs",
    "RotationOptions",
    "RotationOutcome",
    "RotationSuccess",
    "SetCall",
    "Validated",
    "ValidationOutcome",
    "compare_stamps",
    "read_back_verdict",
    "rotate",
]


def _targets(tunnels: Iterable[str | IPsecTunnel]) -> list[tuple[str, IPsecTunnel | None]]:
    if isinstance(tunnels, str | IPsecTunnel):
        raise TypeError("tunnels must be an iterable of tunnel ids or IPsecTunnel objects")
    seen: dict[str, int] = {}
    targets: list[tuple[str, IPsecTunnel | None]] = []
    for item in tunnels:
        obj = item if isinstance(item, IPsecTunnel) else None
        tunnel_id = check_id(obj.id if obj is not None else item, "tunnel_id")
        key = tunnel_id.lower()  # hex ids: two spellings are one tunnel
        if key in seen:
            index = seen[key]
            if obj is not None and targets[index][1] is None:
                targets[index] = (targets[index][0], obj)  # keep what we know of it
            continue
        seen[key] = len(targets)
        targets.append((tunnel_id, obj))
    return targets


def _check_psks(
    psks: Mapping[str, str] | None, options: RotationOptions, targets: list[tuple[str, Any]]
) -> Mapping[str, str] | None:
    if psks is None:
        return None
    if options.method != "set":
        raise InvalidInputError("psks are sent with method='set' only")
    if not isinstance(psks, Mapping):
        raise InvalidInputError("psks must be a mapping of tunnel id to PSK")
    selected = {tunnel_id.lower() for tunnel_id, _ in targets}
    seen: set[str] = set()
    for tunnel_id, psk in psks.items():
        check_id(tunnel_id, "a tunnel id of psks")
        tunnel = shown_id(tunnel_id, "tunnel")  # a PSK is a well-formed id too
        check_psk(psk, f"the PSK for {tunnel}")
        if tunnel_id.lower() not in selected:
            swapped = " (the wrong way round? psks maps tunnel id to PSK)"
            if psk.lower() not in selected:
                swapped = ""
            raise InvalidInputError(f"psks names {tunnel}, which is not selected{swapped}")
        if tunnel_id.lower() in seen:  # hex ids: two spellings are one tunnel
            raise InvalidInputError(f"psks gives {tunnel} a PSK twice")
        seen.add(tunnel_id.lower())
    return psks


def rotate(
    account_id: str,
    tunnels: Iterable[str | IPsecTunnel],
    *,
    generate: GenerateCall,
    set_psks: SetCall,
    read_back: ReadBackCall,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
    options: RotationOptions | None = None,
    psks: Mapping[str, str] | None = None,
    client_timeout: float = 60.0,
    storage: Storage | None = None,
    live_tunnels: LiveTunnels | None = None,
    **kwargs: Unpack[RotationKwargs],
) -> Rotation[Any]:
    """Check every argument now (nothing is sent), then return the :class:`Rotation`.

    ``options`` (a :class:`RotationOptions`) or its fields as keyword arguments (these
    win). ``psks``: with ``method="set"``, the PSK to send for some tunnels (the rest get
    a new one). The callables are the only way it reaches Cloudflare, so it is tested with
    fakes; ``settle_window`` and ``drain_timeout`` left None mean ``client_timeout``.
    ``storage`` is the journal's (default: the operating system's files): a seam for tests
    that fail, tear or crash its writes. ``live_tunnels`` (one per client) refuses, when the
    rotation starts, a tunnel that another live rotation of the same client holds.
    """
    check_id(account_id, "account_id")
    given: dict[str, Any] = dict(kwargs)
    chosen = attrs.evolve(options, **given) if options else RotationOptions(**given)
    chosen = chosen.with_client_defaults(client_timeout)
    if chosen.resume and chosen.journal is None and not chosen.validate_only:
        raise InvalidInputError(
            "resume=True continues the run recorded in a journal: give journal="
        )
    targets = _targets(tunnels)
    return Rotation(
        account_id,
        targets,
        chosen,
        generate=generate,
        set_psks=set_psks,
        read_back=read_back,
        clock=clock,
        sleep=sleep,
        psks=_check_psks(psks, chosen, targets),
        storage=storage,
        live_tunnels=live_tunnels,
    )
