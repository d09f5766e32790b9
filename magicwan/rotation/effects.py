"""The I/O of a few effects, as plain functions: a bulk set's batch (split when too
large) and a delivery with its retries. Each returns the machine's events."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
from collections.abc import Awaitable, Callable, Mapping

from magicwan.delivery import Deliverer, Delivery
from magicwan.errors import (
    APIError,
    DeliveryError,
    InvalidInputError,
    MagicWANError,
    NotAppliedError,
    UnexpectedResponseError,
)
from magicwan.internal.clock import Sleep
from magicwan.internal.redaction import describe_error, printable
from magicwan.internal.validation import is_printable_psk
from magicwan.models.psk import PSKGenerateResult, PSKSetResult
from magicwan.models.tunnels import IPsecTunnel
from magicwan.reply import Reply
from magicwan.rotation import machine

__all__ = [
    "BATCH_TOO_LARGE_CODES",
    "GenerateCall",
    "ReadBackCall",
    "SetCall",
    "deliver_with_retries",
    "send_set",
]

logger = logging.getLogger("magicwan")

#: ``(account_id, tunnel_id, validate_only) -> Reply[PSKGenerateResult]``.
GenerateCall = Callable[[str, str, bool], Awaitable[Reply[PSKGenerateResult]]]
#: ``(account_id, {tunnel_id: psk}, validate_only) -> Reply[PSKSetResult]``.
SetCall = Callable[[str, Mapping[str, str], bool], Awaitable[Reply[PSKSetResult]]]
#: ``(account_id, tunnel_id) -> Reply[IPsecTunnel]``.
ReadBackCall = Callable[[str, str], Awaitable[Reply[IPsecTunnel]]]

#: Cloudflare error codes (besides HTTP 413) that mean "this batch is too large": the
#: batch is split in two and both halves are sent. 1005 is the emulator's; see docs/rotation.md.
BATCH_TOO_LARGE_CODES = frozenset({1005})
_DELIVER_BACKOFF = (1.0, 10.0)  # first wait, cap (seconds), doubled per retry, jittered


async def send_set(
    call: SetCall,
    account_id: str,
    runs: list[machine.TunnelRun],
    *,
    validate_only: bool,
    clock: Callable[[], float],
) -> dict[str, machine.Event] | None:
    """Send one batch; what the answer says of each tunnel, by tunnel id, or None when
    Cloudflare refused the batch as too large (the caller splits it)."""
    mapping = {run.tunnel_id: run.sending or "" for run in runs}
    try:
        reply = await call(account_id, mapping, validate_only)
    except MagicWANError as exc:
        if _batch_too_large(exc) and len(runs) > 1:
            logger.info("batch of %d refused as too large; splitting it", len(runs))
            return None
        return {run.tunnel_id: machine.Failed(exc, unknown=exc.outcome_unknown) for run in runs}
    now = clock()
    return {run.tunnel_id: set_event(run, reply, now) for run in runs}


def set_event(run: machine.TunnelRun, reply: Reply[PSKSetResult], now: float) -> machine.Event:
    """What a bulk set's answer says of one tunnel of its batch."""
    result = reply.value
    applied = result.applied.get(run.tunnel_id)
    if applied is None and run.tunnel_id in result.unapplied:
        # Refused now; after an attempt whose outcome was unknown it may be live all the same.
        refused = NotAppliedError(result.unapplied[run.tunnel_id])
        return machine.Failed(refused, unknown=reply.uncertain, attempts=reply.attempts)
    if applied is None:
        missing = UnexpectedResponseError(
            "tunnel absent from Cloudflare's answer: it may hold the PSK sent (in this "
            "outcome, and in the journal's intent line)"
        )
        return machine.Failed(missing, unknown=True, attempts=reply.attempts)
    model = PSKGenerateResult(
        ipsec_tunnel_id=run.tunnel_id,
        psk=applied.psk,
        psk_metadata=applied.psk_metadata,
        ipsec_id=applied.ipsec_id,
    )
    if applied.psk != run.sending:
        return machine.OtherPsk(model, reply.attempts)
    return machine.Answered(model, reply.attempts, False, now)


def _batch_too_large(exc: MagicWANError) -> bool:
    if not isinstance(exc, APIError):
        return False
    return exc.status == 413 or bool(BATCH_TOO_LARGE_CODES & set(exc.codes))


async def deliver_with_retries(
    deliver: Deliverer,
    delivery: Delivery,
    *,
    retries: int,
    per_try: float,
    sleep: Sleep,
) -> machine.Delivered | machine.Undelivered:
    """Deliver, retrying with backoff, each try bounded by ``per_try`` seconds; a permanent
    failure is not retried. A deliverer raising SystemExit or the like: that exception
    is raised as :class:`DelivererStoppedRotation`, carrying the tunnel's
    :class:`~machine.Undelivered`."""
    psk = delivery.psk
    if not is_printable_psk(psk):
        # A PSK a device cannot take whole (a newline would cut it in two on a program's
        # stdin): never delivered, so never "delivered" half of it.
        error = DeliveryError(
            "delivery failed after 1 try: the PSK holds characters a device cannot take "
            "(only printable ASCII without spaces): not delivered",
            reason="error",
            tunnel_id=delivery.tunnel_id,
        )
        return machine.Undelivered(error, 1)
    last: BaseException | None = None
    tries = 0
    for tries in range(1, retries + 2):
        last = await _try_once(deliver, delivery, per_try, tries)
        if last is None:
            return machine.Delivered(tries)
        if isinstance(last, DeliveryError) and last.permanent:
            break  # misconfigured, rejected: another try cannot help
        if tries <= retries:
            await sleep(_deliver_backoff(tries))
    assert last is not None
    return machine.Undelivered(delivery_error(delivery.tunnel_id, last, psk, tries), tries, last)


async def _try_once(
    deliver: Deliverer, delivery: Delivery, per_try: float, tries: int
) -> BaseException | None:
    """One try: None when it delivered, else what it failed with. A deliverer that raises
    SystemExit or the like, or returns no awaitable, stops the rotation:
    :class:`DelivererStoppedRotation`."""
    try:
        call = deliver(delivery)
        if inspect.isawaitable(call):
            await _bounded(call, per_try)
            return None
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the rotation itself is being cancelled
        return exc  # the deliverer's own cancelled future: a failed delivery
    except Exception as exc:  # the deliverer is the caller's code: anything may come
        return exc
    except BaseException as exc:  # SystemExit, KeyboardInterrupt from a deliverer
        error = delivery_error(delivery.tunnel_id, exc, delivery.psk, tries)
        raise DelivererStoppedRotation(machine.Undelivered(error, tries, exc), exc) from exc
    raise _not_awaitable(delivery, call)


def _not_awaitable(delivery: Delivery, returned: object) -> DelivererStoppedRotation:
    """A deliverer returned no awaitable (a plain ``def``): wrong for every tunnel, so the
    rotation stops with an :class:`~magicwan.errors.InvalidInputError`, this tunnel's
    outcome carrying its PSK. Not retried: the call may have done its work already."""
    wrong = InvalidInputError(
        f"deliver must return an awaitable (define it with async def); it returned "
        f"{type(returned).__name__}: the rotation stopped"
    )
    error = DeliveryError(
        f"delivery failed after 1 tries: {describe_error(wrong)}",
        reason="error",
        tunnel_id=delivery.tunnel_id,
        permanent=True,
    )
    return DelivererStoppedRotation(machine.Undelivered(error, 1, wrong), wrong)


async def _bounded(call: Awaitable[None], seconds: float) -> None:
    """``call`` within ``seconds``; past them it is cancelled and abandoned (a deliverer
    that swallows its cancellation cannot hold the rotation: TimeoutError all the same).
    What it raises is raised here, SystemExit and KeyboardInterrupt included (a task
    would let those escape the event loop)."""

    async def caught() -> None:
        try:
            await call
        except (Exception, asyncio.CancelledError):
            raise
        except BaseException as exc:
            raise _EscapedBaseException(exc) from None

    task = asyncio.ensure_future(caught())
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        await _stop(task, min(_GRACE, seconds))
        raise
    if not done:
        await _stop(task, min(_GRACE, seconds))
        raise TimeoutError
    try:
        task.result()
    except _EscapedBaseException as escaped:
        raise escaped.exception from None


class _EscapedBaseException(Exception):
    """Carries a deliverer's SystemExit or KeyboardInterrupt out of its task."""

    def __init__(self, exception: BaseException) -> None:
        super().__init__(type(exception).__name__)
        self.exception = exception


#: How long a cancelled delivery may take to clean up (its program, its socket) before
#: it is abandoned (never more than one try's bound).
_GRACE = 5.0


async def _stop(task: asyncio.Future[None], grace: float) -> None:
    """Cancel ``task`` and give it ``grace`` seconds to clean up; past that, abandon it."""
    task.cancel()
    task.add_done_callback(_consume)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait({task}, timeout=grace)


def _consume(task: asyncio.Future[None]) -> None:
    """An abandoned delivery's end: whatever it raised is already reported as a timeout."""
    if not task.cancelled():
        task.exception()


class DelivererStoppedRotation(Exception):
    """A deliverer raised a BaseException: the tunnel's event, then the rotation stops
    with ``cause``."""

    def __init__(self, event: machine.Undelivered, cause: BaseException) -> None:
        super().__init__("the deliverer stopped the rotation")
        self.event = event
        self.cause = cause


def _deliver_backoff(retry: int) -> float:
    first, cap = _DELIVER_BACKOFF
    delay = min(cap, first * 2.0 ** min(retry - 1, 16))
    return delay / 2 + delay / 2 * random.random()  # noqa: S311 - jitter, not a secret


def delivery_error(tunnel_id: str, exc: BaseException, psk: str, tries: int) -> DeliveryError:
    """The SDK's error for a delivery that failed with ``exc`` (the PSK scrubbed)."""
    reason = exc.reason if isinstance(exc, DeliveryError) else "error"
    if isinstance(exc, TimeoutError):
        reason = "timeout"
    return DeliveryError(
        f"delivery failed after {_tries(tries)}: {_delivery_failure_text(exc, psk)}",
        reason=reason,
        tunnel_id=tunnel_id,
        permanent=exc.permanent if isinstance(exc, DeliveryError) else None,
    )


def _tries(count: int) -> str:
    return "1 try" if count == 1 else f"{count} tries"


def _delivery_failure_text(exc: BaseException, psk: str) -> str:
    """A deliverer's error as text with the PSK scrubbed and control characters escaped."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    # A DeliveryError already says what failed, in words made for this message.
    text = describe_error(exc, (psk,), typed=not isinstance(exc, DeliveryError))
    return printable(text)[:300]
