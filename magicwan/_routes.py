"""Every endpoint the SDK calls, declared once (in the spirit of hikari's ``Route``).

A :class:`Route` is a method, a path template and the endpoint's properties. Compiling
it with ids validates and quotes every id, so a resource cannot build an unchecked path:
``../`` or ``?`` in an id is refused before anything is sent. A new endpoint is one entry
here; the transport never changes for it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote

import attrs

from magicwan.internal.redaction import REDACTED, may_be_secret
from magicwan.internal.validation import check_id

__all__ = [
    "CREATE_GRE_TUNNEL",
    "CREATE_IPSEC_TUNNEL",
    "DELETE_GRE_TUNNEL",
    "DELETE_IPSEC_TUNNEL",
    "GET_GRE_TUNNEL",
    "GET_IPSEC_TUNNEL",
    "IPSEC_PSK_GENERATE",
    "IPSEC_PSK_SET",
    "IPSEC_PSK_SET_VALIDATE",
    "IPSEC_PSK_VALIDATE",
    "LIST_GRE_TUNNELS",
    "LIST_IPSEC_TUNNELS",
    "MAX_LIST_RESPONSE_BYTES",
    "UPDATE_GRE_TUNNEL",
    "UPDATE_IPSEC_TUNNEL",
    "CompiledRoute",
    "Route",
]

_PARAM = re.compile(r"\{([a-z_]+)\}")

#: The cap on a tunnel list's answer (decompressed). Cloudflare's list routes are not
#: paginated (no ``page``/``per_page``: the whole account comes in one answer), and a
#: tunnel weighs about 0.8 KB (1.5 KB with health checks, BGP and remote identities):
#: 64 MiB holds about 40,000 tunnels, four times the largest account we know of
#: (10,000), and still bounds what a broken or hostile server can make us hold.
MAX_LIST_RESPONSE_BYTES = 64 * 1024 * 1024


@attrs.frozen(repr=False)
class CompiledRoute:
    """A route with its ids filled in: what the transport sends."""

    route: Route
    path: str
    #: Keys of the per-tunnel locks the call must hold (sorted, so two calls that need
    #: several locks always take them in the same order).
    lock_keys: tuple[str, ...] = ()
    #: The ids the path names (for log lines), or None.
    account_id: str | None = None
    tunnel_id: str | None = None
    #: Ids of the path that may be secrets (:func:`~magicwan.internal.redaction.may_be_secret`):
    #: scrubbed from errors, never in a log line.
    secrets: tuple[str, ...] = ()

    @property
    def method(self) -> str:
        return self.route.method

    @property
    def idempotent(self) -> bool:
        return self.route.idempotent

    @property
    def query(self) -> tuple[tuple[str, str], ...]:
        return self.route.query

    @property
    def max_response_bytes(self) -> int | None:
        return self.route.max_response_bytes

    def shown(self, value: str | None) -> str | None:
        """``value`` (an id of this path) as a log line may show it."""
        return REDACTED if value is not None and value in self.secrets else value

    def __str__(self) -> str:
        path = self.path
        for secret in self.secrets:
            path = path.replace(secret, REDACTED)
        return f"{self.route.method} {path}"

    def __repr__(self) -> str:  # a log record's args may be shown with repr: the same care
        return f"CompiledRoute({self})"


@attrs.frozen
class Route:
    """One endpoint.

    ``idempotent``: sending it twice has the effect of sending it once, so an unknown
    outcome is always worth a retry. ``exclusive``: calls hold a per-tunnel lock (the
    path's ``tunnel_id``, or the ids given to :meth:`compile` as ``locks``), so two calls
    of one client never race on the same tunnel's PSK. ``query`` is fixed query
    parameters (``validate_only=true`` for the validating variants).
    ``max_response_bytes`` caps its answer's body (None: the transport's default, 4 MiB).
    """

    method: str
    template: str
    idempotent: bool
    exclusive: bool = False
    query: tuple[tuple[str, str], ...] = ()
    max_response_bytes: int | None = None
    params: tuple[str, ...] = attrs.field(init=False)
    _names: frozenset[str] = attrs.field(init=False, repr=False, eq=False)

    @params.default
    def _params(self) -> tuple[str, ...]:
        return tuple(_PARAM.findall(self.template))

    @_names.default
    def _name_set(self) -> frozenset[str]:
        return frozenset(self.params)

    def compile(self, *, locks: Iterable[str] = (), **ids: str) -> CompiledRoute:
        """Fill in the template: each id is validated and quoted, none may be missing
        or extra. ``locks`` are tunnel ids whose locks an exclusive call holds when the
        path names none (a bulk call)."""
        if ids.keys() != self._names:
            missing = sorted(self._names - ids.keys())
            extra = sorted(ids.keys() - self._names)
            raise TypeError(f"route {self.template}: missing {missing}, unexpected {extra}")
        safe = {}
        for name, value in ids.items():
            check_id(value, name)
            # Validated ids are ASCII letters and digits, which quoting leaves as they are;
            # quote anything else (a laxer check one day) rather than trust it.
            safe[name] = value if value.isalnum() and value.isascii() else quote(value, safe="")
        path = self.template.format_map(safe)
        lock_keys: tuple[str, ...] = ()
        if self.exclusive:
            account = safe.get("account_id", "").lower()
            tunnels = [safe["tunnel_id"]] if "tunnel_id" in safe else list(locks)
            lock_keys = tuple(sorted({f"{account}/{t.lower()}" for t in tunnels}))
        return CompiledRoute(
            self,
            path,
            lock_keys,
            account_id=ids.get("account_id"),
            tunnel_id=ids.get("tunnel_id"),
            secrets=tuple(value for value in ids.values() if may_be_secret(value)),
        )


_IPSEC = "/accounts/{account_id}/magic/ipsec_tunnels"
_GRE = "/accounts/{account_id}/magic/gre_tunnels"

LIST_IPSEC_TUNNELS = Route(
    "GET", _IPSEC, idempotent=True, max_response_bytes=MAX_LIST_RESPONSE_BYTES
)
GET_IPSEC_TUNNEL = Route("GET", _IPSEC + "/{tunnel_id}", idempotent=True)
#: Each call makes a new PSK: sending it twice is not sending it once.
IPSEC_PSK_GENERATE = Route(
    "POST", _IPSEC + "/{tunnel_id}/psk_generate", idempotent=False, exclusive=True
)
IPSEC_PSK_VALIDATE = Route(
    "POST",
    _IPSEC + "/{tunnel_id}/psk_generate",
    idempotent=True,
    query=(("validate_only", "true"),),
)
#: The same PSKs sent twice leave the same PSKs: a retry is always safe.
IPSEC_PSK_SET = Route("POST", _IPSEC + "/psk", idempotent=True, exclusive=True)
IPSEC_PSK_SET_VALIDATE = Route(
    "POST", _IPSEC + "/psk", idempotent=True, query=(("validate_only", "true"),)
)
LIST_GRE_TUNNELS = Route("GET", _GRE, idempotent=True, max_response_bytes=MAX_LIST_RESPONSE_BYTES)
GET_GRE_TUNNEL = Route("GET", _GRE + "/{tunnel_id}", idempotent=True)
#: Not idempotent: a create sent twice is refused the second time (names are unique), so
#: an unknown outcome is retried only under the client's retry_unknown_outcome.
CREATE_IPSEC_TUNNEL = Route("POST", _IPSEC, idempotent=False)
#: Exclusive: an update may carry a PSK, and a delete ends the tunnel; neither races a
#: PSK call of the same client on that tunnel.
UPDATE_IPSEC_TUNNEL = Route("PUT", _IPSEC + "/{tunnel_id}", idempotent=True, exclusive=True)
DELETE_IPSEC_TUNNEL = Route("DELETE", _IPSEC + "/{tunnel_id}", idempotent=True, exclusive=True)
CREATE_GRE_TUNNEL = Route("POST", _GRE, idempotent=False)
UPDATE_GRE_TUNNEL = Route("PUT", _GRE + "/{tunnel_id}", idempotent=True)
DELETE_GRE_TUNNEL = Route("DELETE", _GRE + "/{tunnel_id}", idempotent=True)
