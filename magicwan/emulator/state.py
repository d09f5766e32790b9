"""The emulator's state as plain Python data: no aiohttp here.

Accounts, users and their credentials, IPsec tunnels with their current PSK, a generation counter
and a history per tunnel, the per-user rate limiter, the fault injector, and counters of the
requests seen. Tests seed and audit it directly::

    state = EmulatorState(tunnels=3, seed=0)
    tunnel_id = state.tunnel_ids[0]
    ...
    assert state.tunnel(state.account_id, tunnel_id).generation == 1
    assert state.current_psk(state.account_id, tunnel_id) == psk_the_client_saw
    assert state.requests.total == 0  # "the emulator saw no request"
"""

from __future__ import annotations

import collections
import ipaddress
import json
import math
import random
import re
import secrets
import string
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from magicwan.emulator.faults import FaultInjector, Faults

__all__ = [
    "DEFAULT_API_EMAIL",
    "DEFAULT_API_KEY",
    "DEFAULT_API_TOKEN",
    "DEFAULT_RATE_LIMIT",
    "PSK_ALPHABET",
    "PSK_LENGTH",
    "Account",
    "EmulatorState",
    "PSKRecord",
    "RateDecision",
    "RateLimiter",
    "RequestCounters",
    "Tunnel",
    "User",
    "format_timestamp",
    "is_identifier",
]

DEFAULT_API_TOKEN = "emulator-token"  # noqa: S105 - a fake, documented credential
DEFAULT_API_EMAIL = "emulator@example.com"
DEFAULT_API_KEY = "emulator-key"
#: Cloudflare's global API budget: 1200 requests per 300 seconds per user.
DEFAULT_RATE_LIMIT: tuple[int, float] = (1200, 300.0)

PSK_ALPHABET = string.ascii_letters + string.digits
PSK_LENGTH = 32

_ID_RE = re.compile(r"[0-9a-f]{32}")
_ONE_MICROSECOND = timedelta(microseconds=1)
_CLOUDFLARE_ENDPOINT = "203.0.113.1"  # TEST-NET-3: clearly not a real Cloudflare address
_CUSTOMER_BASE = int(ipaddress.IPv4Address("198.18.0.0"))  # benchmarking range (RFC 2544)
_INTERFACE_BASE = int(ipaddress.IPv4Address("10.0.0.0"))


def is_identifier(value: str) -> bool:
    """Whether ``value`` looks like a Cloudflare identifier: 32 lowercase hex characters."""
    return _ID_RE.fullmatch(value) is not None


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a ``Z``: ``2026-11-26T15:50:46.123456Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _new_psk() -> str:
    return "".join(secrets.choice(PSK_ALPHABET) for _ in range(PSK_LENGTH))


@attrs.frozen(kw_only=True)
class PSKRecord:
    """One generated PSK: its value, when, and which generation of the tunnel it is (1-based)."""

    psk: str = attrs.field(repr=False)
    generated_on: datetime
    generation: int

    def to_dict(self) -> dict[str, Any]:
        """JSON form (includes the PSK: admin/audit use only)."""
        return {
            "psk": self.psk,
            "generated_on": format_timestamp(self.generated_on),
            "generation": self.generation,
        }


@attrs.define(kw_only=True, eq=False)
class Tunnel:
    """An IPsec tunnel. ``psk`` is the current PSK (None until one is generated)."""

    id: str
    account_id: str
    name: str
    description: str
    cloudflare_endpoint: str
    customer_endpoint: str
    interface_address: str
    created_on: datetime
    modified_on: datetime
    health_check_target: str
    psk: str | None = attrs.field(default=None, repr=False)
    last_generated_on: datetime | None = None
    generation: int = 0
    history: list[PSKRecord] = attrs.field(factory=list, repr=False)
    _api_json: str | None = attrs.field(default=None, init=False, repr=False)

    def psk_metadata(self) -> dict[str, str] | None:
        """Cloudflare's ``psk_metadata`` object, or None if no PSK was ever generated."""
        if self.last_generated_on is None:
            return None
        return {"last_generated_on": format_timestamp(self.last_generated_on)}

    def to_api(self) -> dict[str, Any]:
        """The tunnel as Cloudflare returns it. Never includes the PSK."""
        data: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "cloudflare_endpoint": self.cloudflare_endpoint,
            "customer_endpoint": self.customer_endpoint,
            "interface_address": self.interface_address,
            "created_on": format_timestamp(self.created_on),
            "modified_on": format_timestamp(self.modified_on),
            "allow_null_cipher": False,
            "replay_protection": False,
            "health_check": {
                "enabled": True,
                "target": self.health_check_target,
                "type": "reply",
                "rate": "mid",
                "direction": "unidirectional",
            },
        }
        metadata = self.psk_metadata()
        if metadata is not None:
            data["psk_metadata"] = metadata
        return data

    def api_json(self) -> str:
        """``to_api()`` serialized, cached until the tunnel changes."""
        if self._api_json is None:
            self._api_json = json.dumps(self.to_api(), separators=(",", ":"))
        return self._api_json

    def _forget(self) -> None:
        self.psk = None
        self.last_generated_on = None
        self.generation = 0
        self.history.clear()
        self._api_json = None


@attrs.define(kw_only=True, eq=False)
class User:
    """A user and its credentials: one email + global API key, any number of API tokens."""

    id: str
    email: str
    api_key: str = attrs.field(repr=False)
    api_tokens: list[str] = attrs.field(factory=list, repr=False)


@attrs.define(kw_only=True, eq=False)
class Account:
    """An account: its members (user ids) and its tunnels by id (insertion-ordered)."""

    id: str
    name: str
    members: set[str] = attrs.field(factory=set)
    tunnels: dict[str, Tunnel] = attrs.field(factory=dict, repr=False)


@attrs.frozen
class RateDecision:
    """The limiter's answer: allowed or not, whole tokens left, seconds until full, retry wait."""

    allowed: bool
    remaining: int
    reset: int
    retry_after: int = 0


class RateLimiter:
    """Per-key token bucket: capacity ``limit``, refilled continuously at ``limit/window`` per
    second, starting full (the GCRA Cloudflare's budget behaves like).

    With a fresh bucket, N requests paced at the limit take ``(N - limit) * window / limit``
    seconds. ``clock`` returns seconds (default ``time.monotonic``); inject one to test without
    sleeping.
    """

    __slots__ = ("_buckets", "_rate", "clock", "limit", "window")

    _EPSILON = 1e-9

    def __init__(
        self, limit: int, window: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 1 or not window > 0:
            raise ValueError(f"rate limit needs limit >= 1 and window > 0, got {limit}/{window}")
        self.limit = int(limit)
        self.window = float(window)
        self.clock = clock
        self._rate = self.limit / self.window
        self._buckets: dict[str, list[float]] = {}

    def _tokens(self, key: str, now: float) -> list[float]:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [float(self.limit), now]
            return bucket
        tokens, updated = bucket
        if now > updated:
            bucket[0] = min(float(self.limit), tokens + (now - updated) * self._rate)
            bucket[1] = now
        return bucket

    def _decision(self, tokens: float, allowed: bool) -> RateDecision:
        missing = self.limit - tokens
        reset = math.ceil(missing / self._rate - self._EPSILON) if missing > self._EPSILON else 0
        retry_after = 0
        if not allowed:
            retry_after = max(1, math.ceil((1.0 - tokens) / self._rate - self._EPSILON))
        remaining = max(0, math.floor(tokens + self._EPSILON))
        return RateDecision(allowed, remaining, max(reset, 0), retry_after)

    def acquire(self, key: str) -> RateDecision:
        """Take one token for ``key`` if there is one; a refused request takes nothing."""
        bucket = self._tokens(key, self.clock())
        if bucket[0] >= 1.0 - self._EPSILON:
            bucket[0] = max(0.0, bucket[0] - 1.0)
            return self._decision(bucket[0], True)
        return self._decision(bucket[0], False)

    def peek(self, key: str) -> RateDecision:
        """The state of ``key``'s bucket without taking a token."""
        bucket = self._tokens(key, self.clock())
        return self._decision(bucket[0], bucket[0] >= 1.0 - self._EPSILON)

    def policy_header(self) -> str:
        """The ``Ratelimit-Policy`` header value: ``"default";q=<limit>;w=<window>``."""
        window = int(self.window) if self.window.is_integer() else self.window
        return f'"default";q={self.limit};w={window}'

    def reset(self) -> None:
        """Refill every bucket."""
        self._buckets.clear()


@attrs.define
class RequestCounters:
    """Requests the API routes saw (admin routes are not counted).

    ``by_route`` keys: ``psk_generate``, ``list_ipsec_tunnels``, ``get_ipsec_tunnel``,
    ``unmatched``. ``by_status`` counts answered requests by HTTP status; ``dropped`` counts
    connections dropped by a reset fault; ``faults`` counts injected faults by name.
    """

    total: int = 0
    by_route: collections.Counter[str] = attrs.field(factory=collections.Counter)
    by_status: collections.Counter[int] = attrs.field(factory=collections.Counter)
    dropped: int = 0
    faults: collections.Counter[str] = attrs.field(factory=collections.Counter)

    def clear(self) -> None:
        """Back to zero."""
        self.total = 0
        self.by_route.clear()
        self.by_status.clear()
        self.dropped = 0
        self.faults.clear()

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "total": self.total,
            "by_route": dict(self.by_route),
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "dropped": self.dropped,
            "faults": dict(self.faults),
        }


class EmulatorState:
    """Everything the emulator knows, seeded reproducibly from ``seed``.

    The constructor creates one user (with ``api_token``, ``api_email`` and ``api_key``), one
    account (``account_id``, or an id derived from the seed) and ``tunnels`` tunnels in it. Ids
    are 32 lowercase hex characters derived from the seed; PSKs come from ``secrets``.
    ``rate_limit`` is ``(limit, window_seconds)`` or None for no limit. ``clock`` drives the
    rate limiter (default ``time.monotonic``); ``utcnow`` gives timestamps (default: now, UTC).
    """

    def __init__(
        self,
        *,
        tunnels: int = 0,
        seed: int = 0,
        account_id: str | None = None,
        api_token: str = DEFAULT_API_TOKEN,
        api_email: str = DEFAULT_API_EMAIL,
        api_key: str = DEFAULT_API_KEY,
        rate_limit: tuple[int, float] | None = DEFAULT_RATE_LIMIT,
        faults: Faults | None = None,
        clock: Callable[[], float] | None = None,
        utcnow: Callable[[], datetime] | None = None,
    ) -> None:
        self.seed = seed
        self.clock: Callable[[], float] = clock if clock is not None else time.monotonic
        self.utcnow: Callable[[], datetime] = utcnow if utcnow is not None else _utcnow
        # Separate streams so tunnel ids do not depend on whether an account id was given.
        self._account_ids = random.Random(f"magicwan-emulator/{seed}/accounts")  # noqa: S311 - ids
        self._tunnel_ids = random.Random(f"magicwan-emulator/{seed}/tunnels")  # noqa: S311 - ids
        self._user_ids = random.Random(f"magicwan-emulator/{seed}/users")  # noqa: S311 - ids
        self.users: dict[str, User] = {}
        self.accounts: dict[str, Account] = {}
        self._by_token: dict[str, User] = {}
        self._by_key: dict[tuple[str, str], User] = {}
        self._tunnel_count = 0
        self.requests = RequestCounters()
        self.limiter: RateLimiter | None = None
        self.set_rate_limit(rate_limit)
        self.fault_injector = FaultInjector(faults, seed=seed)

        self.user = self.add_user(email=api_email, api_key=api_key, api_tokens=[api_token])
        self.account_id = self.add_account(account_id, members=[self.user.id]).id
        self.add_tunnels(self.account_id, tunnels)

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

    def add_tunnel(
        self,
        account_id: str | None = None,
        tunnel_id: str | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> Tunnel:
        """Add one tunnel to an account (the default account unless given)."""
        account = self.accounts[account_id or self.account_id]
        if tunnel_id is None:
            tunnel_id = self._new_id(self._tunnel_ids)
            while tunnel_id in account.tunnels:  # pragma: no cover - 2**-128
                tunnel_id = self._new_id(self._tunnel_ids)
        if not is_identifier(tunnel_id):
            raise ValueError(f"tunnel id must be 32 lowercase hex characters: {tunnel_id!r}")
        if tunnel_id in account.tunnels:
            raise ValueError(f"tunnel {tunnel_id} already exists in account {account.id}")
        index = self._tunnel_count
        self._tunnel_count += 1
        customer = str(ipaddress.IPv4Address(_CUSTOMER_BASE + 1 + index % 131_070))
        interface = ipaddress.IPv4Address(_INTERFACE_BASE + (2 * index) % (1 << 24))
        now = self.utcnow()
        tunnel = Tunnel(
            id=tunnel_id,
            account_id=account.id,
            name=name or f"emu_tunnel_{index + 1:05d}",
            description=description if description is not None else "Emulated IPsec tunnel",
            cloudflare_endpoint=_CLOUDFLARE_ENDPOINT,
            customer_endpoint=customer,
            interface_address=f"{interface}/31",
            created_on=now,
            modified_on=now,
            health_check_target=customer,
        )
        account.tunnels[tunnel_id] = tunnel
        return tunnel

    def add_tunnels(self, account_id: str | None = None, count: int = 1) -> list[Tunnel]:
        """Add ``count`` tunnels with seed-derived ids to an account (default account unless
        given)."""
        if count < 0:
            raise ValueError("count must be >= 0")
        return [self.add_tunnel(account_id) for _ in range(count)]

    # -- configuration -----------------------------------------------------------------------

    def set_rate_limit(self, rate_limit: tuple[int, float] | None) -> None:
        """``(limit, window_seconds)``, or None to turn rate limiting off. Buckets start full."""
        if rate_limit is None:
            self.limiter = None
        else:
            limit, window = rate_limit
            self.limiter = RateLimiter(int(limit), float(window), clock=self.clock)

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

    # -- lookups used by the handlers --------------------------------------------------------

    @property
    def tunnel_ids(self) -> list[str]:
        """Ids of the default account's tunnels, in creation order."""
        return list(self.accounts[self.account_id].tunnels)

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

    # -- audit -------------------------------------------------------------------------------

    def tunnel(self, account_id: str, tunnel_id: str) -> Tunnel:
        """The tunnel (raises KeyError if unknown)."""
        return self.accounts[account_id].tunnels[tunnel_id]

    def current_psk(self, account_id: str, tunnel_id: str) -> str | None:
        """The tunnel's current PSK, or None if none was generated."""
        return self.tunnel(account_id, tunnel_id).psk

    def history(self, account_id: str, tunnel_id: str) -> list[PSKRecord]:
        """Every PSK generated for the tunnel, oldest first."""
        return list(self.tunnel(account_id, tunnel_id).history)

    def total_generations(self) -> int:
        """PSKs generated across all tunnels since the start or the last ``reset()``."""
        return sum(t.generation for a in self.accounts.values() for t in a.tunnels.values())

    # -- mutation ----------------------------------------------------------------------------

    def generate_psk(self, tunnel: Tunnel) -> PSKRecord:
        """Store a fresh PSK for ``tunnel``; timestamps strictly increase per tunnel."""
        now = self.utcnow()
        previous = tunnel.last_generated_on
        if previous is not None and now <= previous:
            now = previous + _ONE_MICROSECOND
        record = PSKRecord(psk=_new_psk(), generated_on=now, generation=tunnel.generation + 1)
        tunnel.psk = record.psk
        tunnel.last_generated_on = now
        tunnel.generation = record.generation
        tunnel.history.append(record)
        tunnel._api_json = None
        return record

    def record_request(self, route: str, status: int | None, fault: str | None = None) -> None:
        """Count one API request; ``status`` None means its connection was dropped."""
        counters = self.requests
        counters.total += 1
        counters.by_route[route] += 1
        if status is None:
            counters.dropped += 1
        else:
            counters.by_status[status] += 1
        if fault is not None:
            counters.faults[fault] += 1

    def reset(self) -> None:
        """Forget everything that happened: PSKs, generations, histories, request counters,
        rate-limit buckets, and restart the fault sequence. Users, accounts and tunnels stay."""
        for account in self.accounts.values():
            for tunnel in account.tunnels.values():
                tunnel._forget()
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
                            "generation": t.generation,
                            "psk": t.psk,
                            "psk_metadata": t.psk_metadata(),
                            "history": [r.to_dict() for r in t.history],
                        }
                        for t in a.tunnels.values()
                    },
                }
                for a in self.accounts.values()
            },
        }
