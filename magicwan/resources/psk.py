"""``client.tunnels.ipsec.psk``: IPsec tunnels' pre-shared keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import Any, Literal, Unpack, overload

from magicwan._converter import structure  # private: resources structure results
from magicwan._routes import (  # private: resources compile routes
    IPSEC_PSK_GENERATE,
    IPSEC_PSK_SET,
    IPSEC_PSK_SET_VALIDATE,
    IPSEC_PSK_VALIDATE,
)
from magicwan._transport import Transport  # private: resources send requests
from magicwan.errors import InvalidInputError, UnexpectedResponseError
from magicwan.internal.redaction import EXCERPT_CHARS, printable, redact, shown_id
from magicwan.internal.validation import check_bool, check_id, check_psk
from magicwan.models.psk import PSKGenerateResult, PSKSetResult
from magicwan.models.tunnels import IPsecTunnel
from magicwan.reply import Reply
from magicwan.rotation import (
    LiveTunnels,
    Rotation,
    RotationOptions,
    RotationOutcome,
    Validated,
    ValidationOutcome,
    rotate,
)
from magicwan.rotation.options import OptionKwargs

__all__ = ["IPsecPSK", "IPsecPSKWithReply"]

#: ``validate_only`` not given: the options' (False unless they say otherwise).
_NOT_GIVEN: Any = object()


ReadBack = Callable[[str, str], Awaitable[Reply[IPsecTunnel]]]


def _generate_converter(tunnel_id: str, validate_only: bool) -> Callable[[Any], PSKGenerateResult]:
    def convert(result: Any) -> PSKGenerateResult:
        if validate_only and result is None:
            return PSKGenerateResult(ipsec_tunnel_id=tunnel_id)
        if isinstance(result, dict) and "ipsec_tunnel_id" not in result:
            result = {**result, "ipsec_tunnel_id": tunnel_id}  # the id is ours to fill in
        model = structure(result, PSKGenerateResult)
        # Cloudflare ids are hex: a differently cased echo is the same tunnel.
        if model.ipsec_tunnel_id.lower() != tunnel_id.lower():
            raise UnexpectedResponseError(
                f"result is for {shown_id(model.ipsec_tunnel_id, 'tunnel', quoted=True)}, "
                f"not {shown_id(tunnel_id, quoted=True)}"
            )
        if not validate_only and not model.psk:
            raise UnexpectedResponseError("a successful psk_generate answer has no psk")
        return model

    return convert


def _check_psks(psks: object) -> dict[str, str]:
    if not isinstance(psks, Mapping):
        raise InvalidInputError("psks must be a mapping of tunnel id to PSK")
    if not psks:
        raise InvalidInputError("psks must not be empty")
    checked: dict[str, str] = {}
    seen: set[str] = set()
    for tunnel_id, psk in psks.items():
        check_id(tunnel_id, "tunnel_id")
        if tunnel_id.lower() in seen:  # hex ids: two spellings are one tunnel
            raise InvalidInputError(f"{shown_id(tunnel_id, 'tunnel', quoted=True)} is given twice")
        seen.add(tunnel_id.lower())
        checked[tunnel_id] = check_psk(psk, f"the PSK for {shown_id(tunnel_id, 'tunnel')}")
    return checked


def _scrub(text: str, secrets: Collection[str]) -> str:
    """``text`` without any of ``secrets`` (in any case: a server may fold a key's case),
    printable: for an error message quoting what the server sent back."""
    return printable(redact(text, secrets))


def _set_converter(psks: dict[str, str], validate_only: bool) -> Callable[[Any], PSKSetResult]:
    sent = {tunnel_id.lower(): tunnel_id for tunnel_id in psks}
    secrets = tuple(psks.values())

    def convert(result: Any) -> PSKSetResult:
        # An answer may key its maps by anything, a PSK sent included: every message that
        # quotes the answer (a key, a cattrs path) is scrubbed of the PSKs sent.
        try:
            model = structure(result, PSKSetResult)
        except UnexpectedResponseError as exc:
            problem = _scrub(exc.message, secrets)
        else:
            return _checked(model)
        raise UnexpectedResponseError(problem)

    def _checked(model: PSKSetResult) -> PSKSetResult:
        applied = {}
        for key, item in model.applied.items():
            ours = sent.get(key.lower())
            if ours is None or item.ipsec_tunnel_id.lower() != key.lower():
                raise UnexpectedResponseError(
                    f"answer applies a PSK to tunnel {_scrub(key, secrets)!r}, not sent"
                )
            # A PSK other than the one sent is kept as it came, never raised away: the
            # server says the tunnel holds it now (rotation fails such a tunnel, with it).
            applied[ours] = item
        unapplied = {}
        for key, reason in model.unapplied.items():
            ours = sent.get(key.lower())
            if ours is None:
                raise UnexpectedResponseError(
                    f"answer refuses tunnel {_scrub(key, secrets)!r}, not sent"
                )
            if ours in applied:
                raise UnexpectedResponseError(f"answer both applies and refuses tunnel {ours}")
            # Cloudflare's words, but never a PSK we sent (a reason may quote its input),
            # no control character, and short.
            unapplied[ours] = printable(redact(reason, secrets))[:EXCERPT_CHARS]
        missing = tuple(ours for ours in psks if ours not in applied and ours not in unapplied)
        return PSKSetResult(applied=applied, unapplied=unapplied, missing=missing)

    return convert


class IPsecPSKWithReply:
    """The PSK calls, each returning a :class:`~magicwan.Reply` (attempts, whether the
    outcome was uncertain, the ``cf-ray`` id)."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def generate(
        self, account_id: str, tunnel_id: str, validate_only: bool = False
    ) -> Reply[PSKGenerateResult]:
        check_bool(validate_only, "validate_only")
        route = IPSEC_PSK_VALIDATE if validate_only else IPSEC_PSK_GENERATE
        compiled = route.compile(account_id=account_id, tunnel_id=tunnel_id)
        return await self._transport.request(
            compiled, _generate_converter(tunnel_id, validate_only), json={}
        )

    async def set(
        self, account_id: str, psks: Mapping[str, str], validate_only: bool = False
    ) -> Reply[PSKSetResult]:
        check_bool(validate_only, "validate_only")
        checked = _check_psks(psks)
        if validate_only:
            compiled = IPSEC_PSK_SET_VALIDATE.compile(account_id=account_id)
        else:
            compiled = IPSEC_PSK_SET.compile(account_id=account_id, locks=checked)
        body = {"psks": [{"id": tunnel_id, "psk": psk} for tunnel_id, psk in checked.items()]}
        return await self._transport.request(
            compiled,
            _set_converter(checked, validate_only),
            json=body,
            secrets=tuple(checked.values()),
        )


class IPsecPSK:
    """Pre-shared keys of IPsec tunnels."""

    def __init__(self, transport: Transport, *, read_back: ReadBack) -> None:
        self.with_reply = IPsecPSKWithReply(transport)
        self._transport = transport
        self._read_back = read_back
        self._live_tunnels = LiveTunnels()  # this client's live rotations: one per tunnel

    async def generate(
        self, account_id: str, tunnel_id: str, validate_only: bool = False
    ) -> PSKGenerateResult:
        """Generate a new PSK for a tunnel and return it.

        Cloudflare stores the PSK at once and never shows it again: keep it safe
        before doing anything else. With ``validate_only=True`` nothing changes and
        the result has no ``psk``.
        """
        return (await self.with_reply.generate(account_id, tunnel_id, validate_only)).value

    async def set(
        self, account_id: str, psks: Mapping[str, str], validate_only: bool = False
    ) -> PSKSetResult:
        """Set the PSKs of many tunnels in one request: ``{tunnel_id: psk, ...}``.

        Make PSKs with :func:`magicwan.new_psk` and record them *before* calling this.
        The call is idempotent (the same PSKs resent leave the same PSKs), so it is
        retried like any idempotent call. ``result.applied`` maps tunnel id to what was
        applied (``psk`` is what Cloudflare says the tunnel now holds: compare it with what
        you sent), ``result.unapplied`` to Cloudflare's reason for the rest.
        """
        return (await self.with_reply.set(account_id, psks, validate_only)).value

    @overload
    def rotate(
        self,
        account_id: str,
        tunnels: Iterable[str | IPsecTunnel],
        options: RotationOptions | None = ...,
        *,
        psks: Mapping[str, str] | None = ...,
        validate_only: Literal[False] = ...,
        **kwargs: Unpack[OptionKwargs],
    ) -> Rotation[RotationOutcome]: ...

    @overload
    def rotate(
        self,
        account_id: str,
        tunnels: Iterable[str | IPsecTunnel],
        options: RotationOptions | None = ...,
        *,
        psks: Mapping[str, str] | None = ...,
        validate_only: Literal[True],
        **kwargs: Unpack[OptionKwargs],
    ) -> Rotation[ValidationOutcome]: ...

    @overload
    def rotate(
        self,
        account_id: str,
        tunnels: Iterable[str | IPsecTunnel],
        options: RotationOptions | None = ...,
        *,
        psks: Mapping[str, str] | None = ...,
        validate_only: bool = ...,
        **kwargs: Unpack[OptionKwargs],
    ) -> Rotation[RotationOutcome | Validated]: ...

    def rotate(
        self,
        account_id: str,
        tunnels: Iterable[str | IPsecTunnel],
        options: RotationOptions | None = None,
        *,
        psks: Mapping[str, str] | None = None,
        validate_only: Any = _NOT_GIVEN,
        **kwargs: Unpack[OptionKwargs],
    ) -> Rotation[Any]:
        """Rotate many tunnels' PSKs: ``async with ... as rotation: async for outcome in
        rotation:``, one outcome per tunnel in completion order.

        ``tunnels``: ids or :class:`~magicwan.IPsecTunnel` objects (from ``list()``),
        mixed; duplicates are rotated once. How it runs is a
        :class:`~magicwan.RotationOptions` (``options``) or the same names as keyword
        arguments (these win): ``method="generate"`` (Cloudflare makes each PSK, one
        request per tunnel) or ``"set"`` (the client makes them, journals them *before*
        sending, ``batch_size`` per request; needs ``journal``); ``journal``, where every
        PSK is fsynced before its outcome is handed over; ``resume=True`` to finish the
        run a journal records; ``deliver``, an async callable given each durable PSK;
        ``halt_after`` (5 with a deliverer); ``settle_window`` and ``drain_timeout``
        (default: the client's timeout). ``psks``: with ``set``, the PSKs to send for
        some tunnels. Arguments are checked here, before anything is sent. See
        :mod:`magicwan.rotation`.
        """
        transport = self._transport
        return rotate(
            account_id,
            tunnels,
            generate=self.with_reply.generate,
            set_psks=self.with_reply.set,
            read_back=self._read_back,
            clock=transport.clock,
            sleep=transport.sleep,
            options=options,
            psks=psks,
            client_timeout=transport.timeout,
            live_tunnels=self._live_tunnels,
            **kwargs,
            **({} if validate_only is _NOT_GIVEN else {"validate_only": validate_only}),
        )
