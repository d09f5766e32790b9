"""Everything the emulator knows, as plain Python (no aiohttp here): :class:`EmulatorState`.

Accounts, users and their credentials, IPsec tunnels with their current PSK, a generation counter
and a history per tunnel, GRE tunnels, the per-user token bucket, the fault injector, and
counters of the requests seen. Tests seed and audit it directly::

    state = EmulatorState(tunnels=3, seed=0)
    account_id, tunnel_id = state.account_id, state.tunnel_ids[0]
    stored = state.generate_psk(state.tunnel(account_id, tunnel_id))  # what a request does
    assert state.tunnel(account_id, tunnel_id).generation == 1
    assert state.current_psk(account_id, tunnel_id) == stored.psk
    assert state.requests.total == 0  # no request: the state was changed directly

The made-up values of the tunnels (ids, addresses, BGP) are documented in
:mod:`magicwan.emulator.seeding`.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypedDict

import attrs

from magicwan.emulator import seeding
from magicwan.emulator.bucket import TokenBucket
from magicwan.emulator.faults import FaultInjector, Faults
from magicwan.emulator.models import (
    Account,
    Bgp,
    GreTunnel,
    PSKRecord,
    PSKSource,
    RequestCounters,
    Tunnel,
    User,
    is_identifier,
    new_psk,
)
from magicwan.emulator.rules import TunnelRules
from magicwan.internal.budget import CLOUDFLARE_BUDGET

__all__ = [
    "DEFAULT_API_EMAIL",
    "DEFAULT_API_KEY",
    "DEFAULT_API_TOKEN",
    "DEFAULT_MAX_PSK_BATCH",
    "DEFAULT_PSK_MAX_LENGTH",
    "DEFAULT_PSK_MIN_LENGTH",
    "EmulatorState",
    "PSKListener",
    "StateOptions",
    "TunnelKind",
]

DEFAULT_API_TOKEN = "emulator-token"  # noqa: S105 - a fake, documented credential
DEFAULT_API_EMAIL = "emulator@example.com"
DEFAULT_API_KEY = "emulator-key"
#: Assumed bounds of a PSK a client sets (bulk PSK set): 16..128 printable ASCII characters.
DEFAULT_PSK_MIN_LENGTH = 16
DEFAULT_PSK_MAX_LENGTH = 128
#: Assumed maximum of entries in one bulk PSK set request (more: 400, code 1005).
DEFAULT_MAX_PSK_BATCH = 1000

#: The two tunnel families.
TunnelKind = Literal["ipsec", "gre"]

#: Called with the tunnel and its new record every time a tunnel's current PSK changes.
PSKListener = Callable[[Tunnel, PSKRecord], None]

_log = logging.getLogger("magicwan.emulator")

_ONE_MICROSECOND = timedelta(microseconds=1)


class StateOptions(TypedDict, total=False):
    """The keyword arguments of :class:`EmulatorState` (``run(**options)`` passes them on)."""

    tunnels: int
    gre_tunnels: int
    seed: int
    account_id: str | None
    api_token: str
    api_email: str
    api_key: str
    rate_limit: tuple[int, float] | None
    faults: Faults | None
    clock: Callable[[], float] | None
    utcnow: Callable[[], datetime] | None
    max_psk_batch: int
    psk_min_length: int
    psk_max_length: int
    ipsec_ids: Sequence[str]
    gre_ids: Sequence[str]
    tunnel_rules: TunnelRules


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _check_count(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return value


class EmulatorState:
    """Everything the emulator knows, seeded reproducibly from ``seed``.

    The constructor creates one user (with ``api_token``, ``api_email`` and ``api_key``), one
    account (``account_id``, or an id derived from the seed), ``tunnels`` IPsec tunnels and
    ``gre_tunnels`` GRE tunnels in it. PSKs come from ``secrets``. ``rate_limit`` is
    ``(limit, window_seconds)`` (Cloudflare's budget by default) or None for no limit.
    ``clock`` drives the token bucket (default ``time.monotonic``); ``utcnow`` gives timestamps
    (default: now, UTC). A PSK a client sets must be ``psk_min_length`` to ``psk_max_length``
    printable ASCII characters without spaces; a bulk set takes at most ``max_psk_batch``
    entries. ``ipsec_ids`` and ``gre_ids`` add tunnels with those chosen ids after the counted
    ones. ``tunnel_rules`` are the emulator's choices for tunnels clients create or update
    (:class:`~magicwan.emulator.rules.TunnelRules`). The tunnels as constructed are the first
    checkpoint (see :meth:`restore`).
    """

    def __init__(
        self,
        *,
        tunnels: int = 0,
        gre_tunnels: int = 0,
        seed: int = 0,
        account_id: str | None = None,
        api_token: str = DEFAULT_API_TOKEN,
        api_email: str = DEFAULT_API_EMAIL,
        api_key: str = DEFAULT_API_KEY,
        rate_limit: tuple[int, float] | None = CLOUDFLARE_BUDGET,
        faults: Faults | None = None,
        clock: Callable[[], float] | None = None,
        utcnow: Callable[[], datetime] | None = None,
        max_psk_batch: int = DEFAULT_MAX_PSK_BATCH,
        psk_min_length: int = DEFAULT_PSK_MIN_LENGTH,
        psk_max_length: int = DEFAULT_PSK_MAX_LENGTH,
        ipsec_ids: Sequence[str] = (),
        gre_ids: Sequence[str] = (),
        tunnel_rules: TunnelRules | None = None,
    ) -> None:
        self.seed = seed
        self.clock: Callable[[], float] = clock if clock is not None else time.monotonic
        self.utcnow: Callable[[], datetime] = utcnow if utcnow is not None else _utcnow
        self.max_psk_batch = _check_count("max_psk_batch", max_psk_batch, 1)
        self.psk_min_length = _check_count("psk_min_length", psk_min_length, 1)
        self.psk_max_length = _check_count("psk_max_length", psk_max_length, psk_min_length)
        self.tunnel_rules = tunnel_rules if tunnel_rules is not None else TunnelRules()
        # Separate streams so tunnel ids do not depend on whether an account id was given.
        self._account_ids = random.Random(f"magicwan-emulator/{seed}/accounts")  # noqa: S311 - ids
        self._tunnel_ids = random.Random(f"magicwan-emulator/{seed}/tunnels")  # noqa: S311 - ids
        self._gre_ids = random.Random(f"magicwan-emulator/{seed}/gre_tunnels")  # noqa: S311 - ids
        self._user_ids = random.Random(f"magicwan-emulator/{seed}/users")  # noqa: S311 - ids
        self.users: dict[str, User] = {}
        self.accounts: dict[str, Account] = {}
        self._by_token: dict[str, User] = {}
        self._by_key: dict[tuple[str, str], User] = {}
        self._tunnel_count = 0
        self._gre_count = 0
        self._psk_listeners: list[PSKListener] = []
        self.requests = RequestCounters()
        self.limiter: TokenBucket | None = None
        self.set_rate_limit(rate_limit)
        self.fault_injector = FaultInjector(faults, seed=seed)

        self.user = self.add_user(email=api_email, api_key=api_key, api_tokens=[api_token])
        self.account_id = self.add_account(account_id, members=[self.user.id]).id
        self.add_tunnels(self.account_id, tunnels)
        self.add_gre_tunnels(self.account_id, gre_tunnels)
        for tunnel_id in ipsec_ids:
            self.add_tunnel(self.account_id, tunnel_id)
        for tunnel_id in gre_ids:
            self.add_gre_tunnel(self.account_id, tunnel_id)
        self._checkpoint: dict[str, tuple[dict[str, Tunnel], dict[str, GreTunnel]]] = {}
        self.checkpoint()

    # -- seeding -----------------------------------------------------------------------------

    def _new_id(self, rng: random.Random) -> str:
        return f"{rng.getrandbits(128):032x}"

    def add_user(
        self,
        *,
        email: str,
        api_key: str,
        api_tokens: Iterable[str] = (),
        user_id: str | None = None,
    ) -> User:
        """Add a user with an email + global API key and any API tokens."""
        user = User(
            id=user_id or self._new_id(self._user_ids),
            email=email,
            api_key=api_key,
            api_tokens=list(api_tokens),
        )
        if user.id in self.users:
            raise ValueError(f"user {user.id} already exists")
        if (email.lower(), api_key) in self._by_key:
            raise ValueError(f"a user with email {email!r} and that key already exists")
        for token in user.api_tokens:
            if token in self._by_token:
                raise ValueError("that API token belongs to another user already")
        self.users[user.id] = user
        self._by_key[(email.lower(), api_key)] = user
        for token in user.api_tokens:
            self._by_token[token] = user
        return user

    def add_token(self, user_id: str, token: str) -> None:
        """Give an existing user one more API token (sharing the user's rate budget)."""
        if token in self._by_token:
            raise ValueError("that API token belongs to a user already")
        user = self.users[user_id]
        user.api_tokens.append(token)
        self._by_token[token] = user

    def add_account(
        self, account_id: str | None = None, *, name: str | None = None, members: Iterable[str] = ()
    ) -> Account:
        """Add an account (id derived from the seed unless given) with the given member users."""
        if account_id is None:
            account_id = self._new_id(self._account_ids)
        if not is_identifier(account_id):
            raise ValueError(f"account id must be 32 lowercase hex characters: {account_id!r}")
        if account_id in self.accounts:
            raise ValueError(f"account {account_id} already exists")
        account = Account(id=account_id, name=name or f"Emulated account {len(self.accounts) + 1}")
        for member in members:
            if member not in self.users:
                raise KeyError(f"unknown user {member}")
            account.members.add(member)
        self.accounts[account_id] = account
        return account

    def _free_id(self, wanted: str | None, rng: random.Random, taken: dict[str, Any]) -> str:
        if wanted is None:
            wanted = self._new_id(rng)
            while wanted in taken:  # pragma: no cover - 2**-128
                wanted = self._new_id(rng)
        if not is_identifier(wanted):
            raise ValueError(f"tunnel id must be 32 lowercase hex characters: {wanted!r}")
        if wanted in taken:
            raise ValueError(f"tunnel {wanted} already exists")
        return wanted

    def add_tunnel(
        self,
        account_id: str | None = None,
        tunnel_id: str | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> Tunnel:
        """Add one IPsec tunnel to an account (the default account unless given)."""
        account = self.accounts[account_id or self.account_id]
        tunnel_id = self._free_id(tunnel_id, self._tunnel_ids, account.tunnels)
        index = self._tunnel_count
        self._tunnel_count += 1
        tunnel = seeding.ipsec_tunnel(
            index, tunnel_id, account.id, self.utcnow(), name=name, description=description
        )
        account.tunnels[tunnel_id] = tunnel
        return tunnel

    def add_tunnels(self, account_id: str | None = None, count: int = 1) -> list[Tunnel]:
        """Add ``count`` IPsec tunnels with seed-derived ids to an account (default account
        unless given)."""
        if count < 0:
            raise ValueError("count must be >= 0")
        return [self.add_tunnel(account_id) for _ in range(count)]

    def add_gre_tunnel(
        self,
        account_id: str | None = None,
        tunnel_id: str | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> GreTunnel:
        """Add one GRE tunnel to an account (the default account unless given)."""
        account = self.accounts[account_id or self.account_id]
        tunnel_id = self._free_id(tunnel_id, self._gre_ids, account.gre_tunnels)
        index = self._gre_count
        self._gre_count += 1
        tunnel = seeding.gre_tunnel(
            index, tunnel_id, account.id, self.utcnow(), name=name, description=description
        )
        account.gre_tunnels[tunnel_id] = tunnel
        return tunnel

    def add_gre_tunnels(self, account_id: str | None = None, count: int = 1) -> list[GreTunnel]:
        """Add ``count`` GRE tunnels with seed-derived ids to an account (default account unless
        given)."""
        if count < 0:
            raise ValueError("count must be >= 0")
        return [self.add_gre_tunnel(account_id) for _ in range(count)]

    # -- configuration -----------------------------------------------------------------------

    def set_rate_limit(self, rate_limit: tuple[int, float] | None) -> None:
        """``(limit, window_seconds)``, or None to turn rate limiting off. Buckets start full."""
        if rate_limit is None:
            self.limiter = None
        else:
            limit, window = rate_limit
            self.limiter = TokenBucket(int(limit), float(window), clock=self.clock)

    @property
    def rate_limit(self) -> tuple[int, float] | None:
        """The current ``(limit, window_seconds)``, or None when off."""
        if self.limiter is None:
            return None
        return (self.limiter.limit, self.limiter.window)

    def set_faults(self, faults: Faults, *, seed: int | None = None) -> None:
        """Change the injected faults; with ``seed``, restart the fault sequence from it."""
        self.fault_injector.configure(faults, seed=seed)

    @property
    def faults(self) -> Faults:
        """The faults in force."""
        return self.fault_injector.faults

    def add_psk_listener(self, listener: PSKListener) -> None:
        """Call ``listener(tunnel, record)`` every time a tunnel's current PSK changes
        (generated, set, or stored late), synchronously, right after the change. A listener
        that raises is logged and does not break the request."""
        self._psk_listeners.append(listener)

    def remove_psk_listener(self, listener: PSKListener) -> None:
        """Stop calling ``listener`` (ValueError if it was not added)."""
        self._psk_listeners.remove(listener)

    # -- lookups used by the handlers --------------------------------------------------------

    @property
    def tunnel_ids(self) -> list[str]:
        """Ids of the default account's IPsec tunnels, in creation order."""
        return list(self.accounts[self.account_id].tunnels)

    @property
    def gre_tunnel_ids(self) -> list[str]:
        """Ids of the default account's GRE tunnels, in creation order."""
        return list(self.accounts[self.account_id].gre_tunnels)

    def user_for_token(self, token: str) -> User | None:
        """The user owning an API token, or None."""
        return self._by_token.get(token)

    def user_for_key(self, email: str, api_key: str) -> User | None:
        """The user with this email (case-insensitive) and global API key, or None."""
        return self._by_key.get((email.lower(), api_key))

    def account_for(self, user: User, account_id: str) -> Account | None:
        """The account if it exists and ``user`` is a member, else None (Cloudflare does not
        tell the two apart)."""
        account = self.accounts.get(account_id)
        if account is None or user.id not in account.members:
            return None
        return account

    def psk_problem(self, psk: object) -> str | None:
        """Why ``psk`` cannot be set (a sentence that never quotes it), or None if it can."""
        low, high = self.psk_min_length, self.psk_max_length
        if (
            not isinstance(psk, str)
            or not low <= len(psk) <= high
            or not all("!" <= c <= "~" for c in psk)
        ):
            return (
                f"a PSK must be {low} to {high} printable ASCII characters without spaces "
                "(0x21-0x7e)"
            )
        return None

    # -- audit -------------------------------------------------------------------------------

    def tunnel(self, account_id: str, tunnel_id: str) -> Tunnel:
        """The IPsec tunnel (raises KeyError if unknown)."""
        return self.accounts[account_id].tunnels[tunnel_id]

    def gre_tunnel(self, account_id: str, tunnel_id: str) -> GreTunnel:
        """The GRE tunnel (raises KeyError if unknown)."""
        return self.accounts[account_id].gre_tunnels[tunnel_id]

    def current_psk(self, account_id: str, tunnel_id: str) -> str | None:
        """The tunnel's current PSK, or None if it never had one."""
        return self.tunnel(account_id, tunnel_id).psk

    def history(self, account_id: str, tunnel_id: str) -> list[PSKRecord]:
        """Every PSK the tunnel held (generated or set), oldest first."""
        return list(self.tunnel(account_id, tunnel_id).history)

    def total_generations(self) -> int:
        """PSKs stored (generated or set) across all tunnels since the start or ``reset()``."""
        return sum(t.generation for a in self.accounts.values() for t in a.tunnels.values())

    # -- mutation ----------------------------------------------------------------------------

    def next_generated_on(self, tunnel: Tunnel) -> datetime:
        """The timestamp a PSK stored now would get: now, or 1 µs after the tunnel's last one
        (timestamps strictly increase per tunnel)."""
        now = self.utcnow()
        previous = tunnel.last_generated_on
        if previous is not None and now <= previous:
            now = previous + _ONE_MICROSECOND
        return now

    def generate_psk(self, tunnel: Tunnel) -> PSKRecord:
        """Store a fresh PSK for ``tunnel``; timestamps strictly increase per tunnel."""
        return self._store(tunnel, new_psk(), "generated")

    def set_psk(self, tunnel: Tunnel, psk: str) -> PSKRecord:
        """Store the client's ``psk`` for ``tunnel`` (ValueError if it breaks the bounds)."""
        problem = self.psk_problem(psk)
        if problem is not None:
            raise ValueError(problem)
        return self._store(tunnel, psk, "set")

    def _store(self, tunnel: Tunnel, psk: str, source: PSKSource) -> PSKRecord:
        record = PSKRecord(
            psk=psk,
            generated_on=self.next_generated_on(tunnel),
            generation=tunnel.generation + 1,
            source=source,
        )
        tunnel.store(record)
        for listener in tuple(self._psk_listeners):
            try:
                listener(tunnel, record)
            except Exception:
                _log.exception("emulator: a PSK listener failed for tunnel %s", tunnel.id)
        return record

    def name_taken(
        self, account: Account, name: str, kind: TunnelKind, except_id: str | None = None
    ) -> bool:
        """Whether another tunnel of the account already has ``name`` (among tunnels of
        ``kind`` only, or all of them: ``tunnel_rules.name_scope``)."""
        families: list[Mapping[str, Tunnel | GreTunnel]] = []
        if kind == "ipsec" or self.tunnel_rules.name_scope == "account":
            families.append(account.tunnels)
        if kind == "gre" or self.tunnel_rules.name_scope == "account":
            families.append(account.gre_tunnels)
        return any(
            t.name == name and t.id != except_id for family in families for t in family.values()
        )

    def create_tunnel(
        self, account: Account, fields: Mapping[str, Any], *, store: bool = True
    ) -> Tunnel:
        """A new IPsec tunnel from checked ``fields`` (see
        :func:`~magicwan.emulator.rules.check_ipsec`); a ``psk`` among them is its first PSK.
        Without ``store``, the tunnel as it would be (not added, no PSK set)."""
        now = self.utcnow()
        tunnel = Tunnel(
            id=self._free_id(None, self._tunnel_ids, account.tunnels),
            account_id=account.id,
            name=fields["name"],
            cloudflare_endpoint=fields["cloudflare_endpoint"],
            interface_address=fields["interface_address"],
            created_on=now,
            modified_on=now,
        )
        if not store:
            self.update_tunnel(tunnel, {k: v for k, v in fields.items() if k != "psk"}, False)
            return tunnel
        self._tunnel_count += 1
        self.update_tunnel(tunnel, fields, modified=False)
        account.tunnels[tunnel.id] = tunnel
        return tunnel

    def create_gre_tunnel(
        self, account: Account, fields: Mapping[str, Any], *, store: bool = True
    ) -> GreTunnel:
        """A new GRE tunnel from checked ``fields`` (:func:`~magicwan.emulator.rules.check_gre`);
        without ``store``, the tunnel as it would be (not added)."""
        now = self.utcnow()
        tunnel = GreTunnel(
            id=self._free_id(None, self._gre_ids, account.gre_tunnels),
            account_id=account.id,
            name=fields["name"],
            cloudflare_gre_endpoint=fields["cloudflare_gre_endpoint"],
            customer_gre_endpoint=fields["customer_gre_endpoint"],
            interface_address=fields["interface_address"],
            created_on=now,
            modified_on=now,
        )
        self.update_tunnel(tunnel, fields, modified=False)
        if store:
            self._gre_count += 1
            account.gre_tunnels[tunnel.id] = tunnel
        return tunnel

    def update_tunnel(
        self, tunnel: Tunnel | GreTunnel, fields: Mapping[str, Any], modified: bool = True
    ) -> None:
        """Apply checked ``fields`` to a tunnel: the fields given replace the tunnel's, the
        others stay; ``health_check`` and ``bgp`` are merged field by field. A ``psk`` is
        set (a PSK change, as by a bulk set)."""
        for name, value in fields.items():
            if name == "psk":
                continue
            if name == "health_check":
                tunnel.health_check = attrs.evolve(tunnel.health_check, **value)
            elif name == "bgp":
                tunnel.bgp = Bgp(**value)
            else:
                setattr(tunnel, name, value)
        if modified:
            tunnel.modified_on = max(self.utcnow(), tunnel.modified_on)
        tunnel.changed()
        if fields.get("psk") is not None and isinstance(tunnel, Tunnel):
            self.set_psk(tunnel, fields["psk"])

    def delete_tunnel(self, account: Account, tunnel: Tunnel | GreTunnel) -> None:
        """Remove a tunnel from its account (its PSK history goes with it)."""
        family: dict[str, Any] = (
            account.tunnels if isinstance(tunnel, Tunnel) else account.gre_tunnels
        )
        del family[tunnel.id]

    def checkpoint(self) -> None:
        """Remember every account's tunnels as they are now, for :meth:`restore`."""
        self._checkpoint = {
            a.id: (copy.deepcopy(a.tunnels), copy.deepcopy(a.gre_tunnels))
            for a in self.accounts.values()
        }

    def restore(self) -> None:
        """Every account's tunnels (IPsec and GRE, PSKs and histories included) as they were
        at the last :meth:`checkpoint` (or construction): tunnels created since are gone,
        deleted ones are back. Request counters, buckets and faults are left alone."""
        for account_id, (tunnels, gre_tunnels) in self._checkpoint.items():
            account = self.accounts[account_id]
            account.tunnels = copy.deepcopy(tunnels)
            account.gre_tunnels = copy.deepcopy(gre_tunnels)

    def record_request(self, route: str, status: int | None, fault: str | None = None) -> None:
        """Count one API request; ``status`` None means its client got no answer."""
        self.requests.record(route, status, fault)

    def reset(self) -> None:
        """Forget everything that happened: PSKs, generations, histories, request counters,
        rate-limit buckets, and restart the fault sequence. Users, accounts, tunnels and PSK
        listeners stay."""
        for account in self.accounts.values():
            for tunnel in account.tunnels.values():
                tunnel.forget()
        self.requests.clear()
        if self.limiter is not None:
            self.limiter.reset()
        self.fault_injector.reseed()

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able audit of everything, PSKs and credentials included (test tool only)."""
        return {
            "seed": self.seed,
            "account_id": self.account_id,
            "rate_limit": list(self.rate_limit) if self.rate_limit else None,
            "faults": self.faults.to_dict(),
            "psk_bounds": [self.psk_min_length, self.psk_max_length],
            "max_psk_batch": self.max_psk_batch,
            "requests": self.requests.to_dict(),
            "users": [
                {
                    "id": u.id,
                    "email": u.email,
                    "api_key": u.api_key,
                    "api_tokens": list(u.api_tokens),
                }
                for u in self.users.values()
            ],
            "accounts": {
                a.id: {
                    "name": a.name,
                    "members": sorted(a.members),
                    "tunnels": {
                        t.id: {
                            "name": t.name,
                            "ipsec_id": t.ipsec_id,
                            "generation": t.generation,
                            "psk": t.psk,
                            "psk_metadata": t.psk_metadata(),
                            "history": [r.to_dict() for r in t.history],
                        }
                        for t in a.tunnels.values()
                    },
                    "gre_tunnels": {g.id: {"name": g.name} for g in a.gre_tunnels.values()},
                }
                for a in self.accounts.values()
            },
        }
