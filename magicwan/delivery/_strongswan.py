"""Deliver a PSK into a running strongSwan charon over VICI, and prove it with IKE."""

from __future__ import annotations

import asyncio
import contextlib
import string
import time
from collections.abc import Callable
from typing import Any

import attrs

from magicwan.delivery._errors import DeliveryError, DeliveryFailure
from magicwan.delivery._model import Delivery, DeliveryTarget
from magicwan.delivery._text import scrub
from magicwan.delivery._vici import Channel, Secret, ViciError, decoded, import_vici, iter_sas
from magicwan.errors import InvalidInputError
from magicwan.internal.validation import check_positive_int, check_seconds

__all__ = ["DEFAULT_SOCKET", "FIELDS", "StrongSwan"]

DEFAULT_SOCKET = "/var/run/charon.vici"

#: The names a template given to :class:`StrongSwan` may use, as ``{name}``.
#: Each is the :class:`~magicwan.delivery.DeliveryTarget` attribute of that name; the
#: PSK is not one of them.
FIELDS = frozenset(
    {"tunnel_id", "account_id", "ipsec_id", "name", "cloudflare_endpoint", "customer_endpoint"}
)

#: A value :class:`StrongSwan` derives from each delivery: a template (a format string
#: over :data:`FIELDS`, such as ``"{name}"``), or a callable given the delivery's
#: :class:`~magicwan.delivery.DeliveryTarget`.
Derived = str | Callable[[DeliveryTarget], "str | None"]

#: What to run to see the connections charon has (named in the hint of an error).
_LIST_CONNS = "swanctl --list-conns"

#: How long charon may wait for the peer to confirm the old IKE SA's deletion before it
#: drops the SA anyway (the new SA's INITIAL_CONTACT tells the peer to drop it, too).
_TERMINATE_WAIT = 2.0
#: How long before the delivery's deadline charon must give up on an initiation, so
#: that its own answer (which says why) arrives before we stop waiting.
_INITIATE_MARGIN = 0.5
#: How long past the deadline a delivery's thread may run before it is abandoned.
_BACKSTOP = 1.0
#: Signs in charon's log that IKE authentication failed, and what each means.
_AUTH_FAILURES = (
    ("AUTHENTICATION_FAILED", "the peer refused our authentication (AUTHENTICATION_FAILED)"),
    ("MAC mismatched", "the peer's authentication did not match the new PSK"),
    ("no shared key found", "charon found no shared key for the connection's identities"),
)


def _placeholders(template: str) -> list[str]:
    """The fields ``template`` uses, format specs included (``{name:{tunnel_id}}``)."""
    fields: list[str] = []
    for _, field, spec, _ in string.Formatter().parse(template):
        if field is not None:
            fields.append(field)
        if spec and "{" in spec:
            fields.extend(_placeholders(spec))
    return fields


def _check_format(what: str, value: Derived | None, *, optional: bool = False) -> None:
    """Refuse a template that could not be filled in, before anything is sent."""
    if value is None:
        if not optional:
            raise TypeError(f"{what} may not be None")
        return
    if callable(value):
        return
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a template string or a callable taking the delivery")
    allowed = ", ".join(f"{{{name}}}" for name in sorted(FIELDS))
    try:
        fields = _placeholders(value)
    except ValueError as exc:  # "Single '}' encountered in format string", ...
        raise InvalidInputError(
            f"{what} template {value!r} is malformed ({exc}); write a literal brace as "
            f"{{{{ or }}}}, and a placeholder as one of {allowed}"
        ) from None
    for field in fields:
        if field not in FIELDS:
            shown = f"{{{field}}}" if field else "{}"
            raise InvalidInputError(
                f"{what} template {value!r} uses the unknown placeholder {shown}; "
                f"it may use: {allowed}"
            )
    try:  # a format spec or conversion that no text accepts ("{name:d}")
        value.format_map(dict.fromkeys(FIELDS, "x"))
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"{what} template {value!r} cannot be filled in: {exc}") from None


def _derive(what: str, value: Derived, delivery: DeliveryTarget) -> str:
    """The value of a template or callable for ``delivery``; DeliveryError if unknown."""
    if callable(value):
        result = value(delivery)
    else:
        fields = {name: getattr(delivery, name) for name in FIELDS}
        missing = sorted({field for field in _placeholders(value) if fields[field] is None})
        result = None if missing else value.format_map(fields)
        if missing:
            what = f"{what} (needs {', '.join(missing)})"
    if not result:
        raise DeliveryError(
            f"tunnel {delivery.tunnel_id}: the {what} is unknown for this tunnel",
            reason="misconfigured",
            tunnel_id=delivery.tunnel_id,
        )
    if not isinstance(result, str):
        raise TypeError(f"the {what} callable must return a string")
    return result


@attrs.frozen
class _Plan:
    """What one delivery will do, all derived before any I/O (and holding no secret)."""

    tunnel_id: str
    shared_id: str
    owners: tuple[str, ...]
    connection: str | None  # None: load the key only


class StrongSwan:
    """Load a tunnel's new PSK into a running strongSwan (charon) through its VICI socket.

    The key is loaded as an IKE shared secret with the unique id ``shared_id`` (by
    default ``magicwan-<tunnel_id>``), so delivering again replaces it instead of piling
    up keys. Its owners are the router's own IKE identity ``local_id`` (default: the
    tunnel's ``ipsec_id``) and Cloudflare's ``remote_id`` (default: the tunnel's
    ``cloudflare_endpoint``; ``None`` leaves it out). Each of ``local_id``,
    ``remote_id``, ``connection`` and ``shared_id`` is a template over :data:`FIELDS`
    (``"{ipsec_id}"``, ``"cf-{name}"``) or a callable given the
    :class:`~magicwan.delivery.DeliveryTarget`. A template with an unknown placeholder
    raises :class:`~magicwan.InvalidInputError` (a ``ValueError``) here, before
    anything is sent; a placeholder whose fact a tunnel lacks fails that tunnel's
    delivery with reason ``"misconfigured"``.

    With ``reauth=True`` the deliverer then proves the key: it closes the IKE SAs of the
    charon connection named ``connection`` (default: the tunnel's name) and initiates
    it again, bringing back the CHILD_SAs that were up; an IKE authentication failure
    raises :class:`~magicwan.delivery.DeliveryError` with reason
    ``"authentication_failed"``. This is break-before-make: the tunnel is down for the
    length of one IKE exchange. Without ``reauth`` charon uses the new key the next
    time the SA authenticates (a reauthentication, or the peer initiating).

    ``timeout`` bounds one whole delivery. Each blocking VICI command holds one of
    charon's worker threads (16 by default), so at most ``max_concurrency`` deliveries
    of this deliverer talk to charon at once; keep it well under charon's thread count.

    A key loaded over VICI lives in charon's memory only: a restart of charon, or
    ``swanctl --load-creds`` (which unloads keys it did not load), drops it. Persist
    the PSK too (for instance with a :class:`~magicwan.delivery.Command`).

    :meth:`check` (the :class:`~magicwan.delivery.Checkable` protocol) asks charon
    whether it has the tunnel's connection, without a PSK.
    """

    def __init__(
        self,
        socket: str = DEFAULT_SOCKET,
        *,
        local_id: Derived = "{ipsec_id}",
        remote_id: Derived | None = "{cloudflare_endpoint}",
        connection: Derived = "{name}",
        shared_id: Derived = "magicwan-{tunnel_id}",
        reauth: bool = False,
        timeout: float = 30.0,
        max_concurrency: int = 4,
    ) -> None:
        import_vici()  # fail now, with the install hint, rather than at the first delivery
        _check_format("local_id", local_id)
        _check_format("remote_id", remote_id, optional=True)
        _check_format("connection", connection)
        _check_format("shared_id", shared_id)
        check_seconds(timeout, "timeout")
        check_positive_int(max_concurrency, "max_concurrency")
        self.socket = str(socket)
        self.local_id = local_id
        self.remote_id = remote_id
        self.connection = connection
        self.shared_id = shared_id
        self.reauth = reauth
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self._limit: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    def __repr__(self) -> str:
        return f"StrongSwan(socket={self.socket!r}, reauth={self.reauth!r})"

    def plan(self, delivery: DeliveryTarget, *, connection: bool | None = None) -> _Plan:
        """What delivering to ``delivery`` will do; DeliveryError if a needed fact is unknown.

        The plan names the charon connection when ``connection`` is true (by default,
        with ``reauth``).
        """
        owners = [_derive("local identity", self.local_id, delivery)]
        if self.remote_id is not None:
            owners.append(_derive("remote identity", self.remote_id, delivery))
        named = self.reauth if connection is None else connection
        return _Plan(
            tunnel_id=delivery.tunnel_id,
            shared_id=_derive("shared key id", self.shared_id, delivery),
            owners=tuple(owners),
            connection=_derive("connection name", self.connection, delivery) if named else None,
        )

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._limit is None or self._limit[0] is not loop:
            self._limit = (loop, asyncio.Semaphore(self.max_concurrency))
        return self._limit[1]

    async def __call__(self, delivery: Delivery) -> None:
        """Load ``delivery``'s PSK into charon (and prove it, with ``reauth``)."""
        await self._run(_deliver, self.plan(delivery), Secret(delivery.psk))

    async def check(self, target: DeliveryTarget) -> None:
        """Check, without a PSK, that a delivery to ``target`` could be made.

        Every fact the templates need is known, charon answers on its socket, and it
        has the connection named by ``connection`` (``swanctl --list-conns`` shows it),
        whether or not deliveries re-authenticate. Nothing is loaded or closed.
        Raises :class:`~magicwan.delivery.DeliveryError` saying what is wrong.
        """
        await self._run(_check, self.plan(target, connection=True), Secret(""))

    async def _run(
        self,
        steps: Callable[[Channel, _Plan, Secret, float], None],
        plan: _Plan,
        secret: Secret,
    ) -> None:
        async with self._semaphore():
            deadline = time.monotonic() + self.timeout
            channel = Channel(self.socket)
            work = asyncio.to_thread(_in_thread, steps, channel, plan, secret, deadline)
            worker = asyncio.ensure_future(work)
            try:
                # The worker keeps to the deadline itself; this is the backstop.
                done, _ = await asyncio.wait([worker], timeout=self.timeout + _BACKSTOP)
            finally:
                if not worker.done():  # stuck, or we are cancelled: unblock its thread now
                    channel.abort()
                    worker.cancel()
            if not done:
                raise DeliveryError(
                    f"tunnel {plan.tunnel_id}: charon at {self.socket} did not answer "
                    f"within {self.timeout:g}s",
                    reason="timeout",
                    tunnel_id=plan.tunnel_id,
                )
            worker.result()


def _remaining(deadline: float) -> float:
    return deadline - time.monotonic()


def _in_thread(
    steps: Callable[[Channel, _Plan, Secret, float], None],
    channel: Channel,
    plan: _Plan,
    secret: Secret,
    deadline: float,
) -> None:
    """A whole delivery or check, in a worker thread: connect, then ``steps``."""
    try:
        channel.connect(max(_remaining(deadline), 0.001))
        channel.set_timeout(max(_remaining(deadline), 0.001))
        steps(channel, plan, secret, deadline)
    except ViciError as error:
        failure = _failure(error, plan, channel.path, secret)
    else:
        return
    finally:
        channel.close()
    raise failure


def _check(channel: Channel, plan: _Plan, secret: Secret, deadline: float) -> None:
    """Ask charon for the planned connection (``swanctl --list-conns --ike NAME``)."""
    assert plan.connection is not None
    events, _ = channel.streamed("list-conns", "list-conn", {"ike": plan.connection})
    if not any(plan.connection in decoded(event) for event in events):
        raise ViciError("command", "list-conns: not found")


def _deliver(channel: Channel, plan: _Plan, secret: Secret, deadline: float) -> None:
    """Load the key, then (with a connection in the plan) reauthenticate."""
    channel.request(
        "load-shared",
        {"id": plan.shared_id, "type": "IKE", "data": secret, "owners": list(plan.owners)},
    )
    if plan.connection is not None:
        _reauthenticate(channel, plan.connection, deadline)


def _ike_sas(channel: Channel, conn: str) -> list[dict[str, Any]]:
    events, _ = channel.streamed("list-sas", "list-sa", {"ike": conn})
    return [sa for name, sa in iter_sas(events) if name == conn]


def _reauthenticate(channel: Channel, conn: str, deadline: float) -> None:
    """Close ``conn``'s IKE SAs and initiate it again, with the CHILD_SAs that were up."""
    old = _ike_sas(channel, conn)
    old_ids = {sa.get("uniqueid") for sa in old}
    children: list[str] = []
    for sa in old:
        for child in (sa.get("child-sas") or {}).values():
            name = child.get("name") if isinstance(child, dict) else None
            if isinstance(name, str) and name not in children:
                children.append(name)
    for sa in old:
        wait = min(_TERMINATE_WAIT, max(_remaining(deadline) / 2, 0.001))
        terminate = {"ike-id": sa.get("uniqueid", ""), "force": "yes", "timeout": int(wait * 1000)}
        # A failure here shows below: initiating would reuse an SA that is still up, and
        # the check after initiating refuses to call that a proof.
        with contextlib.suppress(ViciError):
            channel.streamed("terminate", "control-log", terminate)
    # The first initiation brings the IKE SA up (with a CHILD_SA, if any was up before);
    # the others add the remaining CHILD_SAs to it.
    targets: list[dict[str, Any]] = [{"ike": conn, "child": child} for child in children]
    for initiate in targets or [{"ike": conn}]:
        remaining = _remaining(deadline)
        if remaining <= _INITIATE_MARGIN:
            raise ViciError("timeout", f"no time left to initiate {conn!r}")
        channel.set_timeout(remaining)
        initiate["timeout"] = int((remaining - _INITIATE_MARGIN) * 1000)
        channel.streamed("initiate", "control-log", initiate)
    channel.set_timeout(max(_remaining(deadline), 0.001))
    if not any(
        sa.get("state") == "ESTABLISHED" and sa.get("uniqueid") not in old_ids
        for sa in _ike_sas(channel, conn)
    ):
        raise ViciError(
            "command", "the old IKE SA could not be replaced, so the new PSK is not proven"
        )


def _failure(error: ViciError, plan: _Plan, path: str, secret: Secret) -> DeliveryError:
    """The DeliveryError for a failed VICI call, in words and with nothing secret."""
    detail = scrub(error.detail, secret.reveal())
    reason: DeliveryFailure
    where = f"connection {plan.connection!r}" if plan.connection else "charon"
    if error.kind == "unreachable":
        reason, text = (
            "unreachable",
            f"charon's VICI socket is unreachable ({detail}); is charon running?",
        )
    elif error.kind == "timeout" or "not established after" in error.detail:
        reason, text = "timeout", f"{where}: timed out ({detail})"
    elif error.kind == "protocol":
        reason, text = "rejected", f"{path}: {detail}"
    else:
        reason, text = "rejected", f"{where}: charon refused: {detail}"
        for sign, meaning in _AUTH_FAILURES:
            line = next((line for line in error.log if sign in line), None)
            if line is not None:
                reason = "authentication_failed"
                text = (
                    f"{where}: IKE authentication with the new PSK failed: {meaning} "
                    f"(charon: {detail}; {scrub(line, secret.reveal())})"
                )
                break
        else:
            if "not found" in error.detail and plan.connection is not None:
                reason = "misconfigured"
                text = (
                    f"{where}: charon has no such connection ({detail}); "
                    f"'{_LIST_CONNS}' lists the connections charon has loaded, and the "
                    "connection template must give this tunnel's name there"
                )
    return DeliveryError(
        f"tunnel {plan.tunnel_id}: {text}", reason=reason, tunnel_id=plan.tunnel_id
    )
