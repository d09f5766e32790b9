"""``MagicWAN``: the client. It owns the transport and hangs the resource namespaces off it."""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

import aiohttp

from magicwan._http import HTTPAdapter
from magicwan._retry import RetryPolicy, default_jitter
from magicwan._transport import Transport
from magicwan.errors import InvalidInputError
from magicwan.internal.clock import Clock, Sleep
from magicwan.internal.env import ENV_API_KEY, ENV_API_TOKEN, ENV_BASE_URL, ENV_EMAIL
from magicwan.internal.validation import (
    check_bool,
    check_credential,
    check_non_negative_int,
    check_positive_int,
    check_rate_limit,
    check_seconds,
    normalize_base_url,
)
from magicwan.ratelimit import CLOUDFLARE_BUDGET, MAX_COOLDOWN, RateLimiter
from magicwan.resources.tunnels import Tunnels

__all__ = ["DEFAULT_BASE_URL", "MagicWAN"]

DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"
"""Cloudflare's API, ``https://api.cloudflare.com/client/v4``: the base URL when neither
``base_url`` nor ``CLOUDFLARE_BASE_URL`` gives one."""


def _resolve_auth(
    api_token: str | None,
    api_email: str | None,
    api_key: str | None,
    environ: Mapping[str, str],
) -> tuple[str, dict[str, str], tuple[str, ...]]:
    """Pick one auth scheme: (scheme name, headers, secrets to scrub).

    Arguments win over the environment as a whole: when any credential argument is
    given, no credential is read from the environment. Within one source, a token
    together with an e-mail or key is ambiguous and refused.
    """
    given = {"api_token": api_token, "api_email": api_email, "api_key": api_key}
    if any(v is not None for v in given.values()):
        source = "arguments"
        names = {"api_token": "api_token", "api_email": "api_email", "api_key": "api_key"}
    else:
        source = "environment"
        names = {"api_token": ENV_API_TOKEN, "api_email": ENV_EMAIL, "api_key": ENV_API_KEY}
        given = {k: environ.get(v) or None for k, v in names.items()}
    token, email, key = given["api_token"], given["api_email"], given["api_key"]
    if token is not None and (email is not None or key is not None):
        set_names = ", ".join(names[k] for k, v in given.items() if v is not None)
        raise InvalidInputError(
            f"ambiguous credentials in the {source} ({set_names}): give either an API token "
            "or an e-mail and API key, not both"
        )
    if token is not None:
        token = check_credential(token, names["api_token"])
        return "token", {"Authorization": f"Bearer {token}"}, (token,)
    if email is not None and key is not None:
        email = check_credential(email, names["api_email"])
        key = check_credential(key, names["api_key"])
        return "key", {"X-Auth-Email": email, "X-Auth-Key": key}, (key,)
    if email is not None or key is not None:
        missing = names["api_key"] if key is None else names["api_email"]
        raise InvalidInputError(f"incomplete credentials in the {source}: {missing} is missing")
    raise InvalidInputError(
        f"no credentials: pass api_token=... (or api_email=... and api_key=...), or set "
        f"{ENV_API_TOKEN} (or {ENV_EMAIL} and {ENV_API_KEY})"
    )


class MagicWAN:
    """An async client for Cloudflare Magic WAN.

    Use it as ``async with MagicWAN(api_token=...) as client:`` or keep it for the
    life of a service and ``await client.aclose()`` at the end. A ``session`` you
    pass is used as is and never closed by the client; otherwise the client creates
    its own inside the running event loop and closes it in ``aclose()``.

    Credentials: the arguments if any is given, else ``CLOUDFLARE_API_TOKEN`` or
    ``CLOUDFLARE_EMAIL`` + ``CLOUDFLARE_API_KEY``. A token together with a key is
    refused as ambiguous. ``base_url`` falls back to ``CLOUDFLARE_BASE_URL``.

    Args:
        api_token: An API token, sent as ``Authorization: Bearer ...``.
        api_email: The account e-mail of a global API key (with ``api_key``).
        api_key: A global API key (with ``api_email``), sent as ``X-Auth-Key``.
        base_url: The API's base URL; else ``CLOUDFLARE_BASE_URL``, else
            :data:`DEFAULT_BASE_URL`. It must be https (http only for loopback hosts).
        timeout: Seconds one attempt may take, from connect to last byte.
        connect_timeout: Seconds to establish a connection.
        max_retries: Retries after the first try of a failed request (429s included).
        retry_unknown_outcome: Whether to retry a request that may have been acted on
            although no answer says so (a 5xx, a reset or timeout after sending): a PSK
            generation retried supersedes a PSK nobody received.
        max_retry_after: The longest ``Retry-After`` (seconds) the client waits out; a
            longer one raises :class:`~magicwan.errors.RateLimitError` at once.
        rate_limit: The client's budget, ``(requests, seconds)``: Cloudflare's 1,200 per
            300 s by default; ``None`` turns pacing off (a 429's cooldown still holds).
        connection_limit: The connection pool's size (and so the requests in flight).
        session: An ``aiohttp.ClientSession`` to send with, never closed by the client;
            by default the client makes its own.
        verify: TLS verification: ``True``, ``False`` (none), a CA bundle's path or an
            ``ssl.SSLContext``.
        trace_configs: ``aiohttp.TraceConfig`` objects for the client's own session
            (with ``session=``, give them to your session instead).
        clock: Monotonic seconds, for the rate limiter and retries (default:
            ``time.monotonic``); tests pass a fake.
        sleep: The async sleep every wait goes through (default: ``asyncio.sleep``).
        environ: The environment the ``CLOUDFLARE_*`` variables are read from (default:
            ``os.environ``; ``{}`` reads none).

    Raises:
        InvalidInputError: Missing, incomplete or ambiguous credentials, or an argument
            out of range. Nothing is sent.
    """

    def __init__(
        self,
        *,
        api_token: str | None = None,
        api_email: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        max_retries: int = 2,
        retry_unknown_outcome: bool = True,
        max_retry_after: float = 60.0,
        rate_limit: tuple[int, float] | None = CLOUDFLARE_BUDGET,
        connection_limit: int = 100,
        session: aiohttp.ClientSession | None = None,
        verify: bool | str | ssl.SSLContext = True,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
        clock: Clock | None = None,
        sleep: Sleep | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self._auth_scheme, auth_headers, secrets = _resolve_auth(api_token, api_email, api_key, env)
        if base_url is None:
            base_url = env.get(ENV_BASE_URL) or DEFAULT_BASE_URL
        self.base_url: str = normalize_base_url(base_url)
        """The API's base URL that every request starts with."""
        timeout_s = check_seconds(timeout, "timeout")
        connect_s = check_seconds(connect_timeout, "connect_timeout")
        max_retry_after_s = check_seconds(max_retry_after, "max_retry_after")
        if session is not None and not isinstance(session, aiohttp.ClientSession):
            raise InvalidInputError("session must be an aiohttp.ClientSession")
        if not isinstance(verify, bool | str | ssl.SSLContext):
            raise InvalidInputError("verify must be a bool, a CA bundle path or an SSLContext")
        if isinstance(verify, str) and not os.path.isfile(verify):
            raise InvalidInputError(f"verify: no CA bundle file at {verify!r}")
        traces = list(trace_configs)
        if not all(isinstance(t, aiohttp.TraceConfig) for t in traces):
            raise InvalidInputError("trace_configs must be aiohttp.TraceConfig objects")
        if traces and session is not None:
            raise InvalidInputError(
                "trace_configs apply to the client's own session: with session=..., "
                "give them to your ClientSession instead"
            )
        limits = check_rate_limit(rate_limit, "rate_limit")
        self.policy: RetryPolicy = RetryPolicy(
            max_retries=check_non_negative_int(max_retries, "max_retries"),
            retry_unknown_outcome=check_bool(retry_unknown_outcome, "retry_unknown_outcome"),
            max_retry_after=max_retry_after_s,
            jitter=default_jitter,
        )
        """How failed requests are retried: ``max_retries``, ``retry_unknown_outcome`` and
        ``max_retry_after`` as given."""
        sleep_fn = sleep or asyncio.sleep
        clock_fn = clock or time.monotonic
        self.rate_limiter: RateLimiter = RateLimiter(
            limits[0] if limits else None,
            limits[1] if limits else 300.0,
            clock=clock_fn,
            sleep=sleep_fn,
            # A Retry-After the client agrees to wait out is never cut short.
            max_cooldown=max(MAX_COOLDOWN, max_retry_after_s),
        )
        """Paces every request of the client to ``rate_limit`` and holds them all through
        a 429's cooldown."""
        http = HTTPAdapter(
            host=urlsplit(self.base_url).hostname or "?",
            timeout=timeout_s,
            connect_timeout=connect_s,
            connection_limit=check_positive_int(connection_limit, "connection_limit"),
            session=session,
            verify=verify,
            trace_configs=traces,
        )
        self.timeout: float = timeout_s
        """Seconds one attempt may take, from connect to last byte."""
        self.connect_timeout: float = connect_s
        """Seconds to establish a connection."""
        self.connection_limit: int = connection_limit
        """The connection pool's size (and so the requests in flight)."""
        self._transport = Transport(
            http=http,
            base_url=self.base_url,
            auth_headers=auth_headers,
            secrets=secrets,
            policy=self.policy,
            limiter=self.rate_limiter,
            timeout=timeout_s,
            clock=clock_fn,
            sleep=sleep_fn,
        )
        self.tunnels: Tunnels = Tunnels(self._transport)
        """The tunnels' namespaces: ``tunnels.ipsec`` (with ``.psk``) and ``tunnels.gre``."""

    @property
    def auth_scheme(self) -> str:
        """``"token"`` (bearer) or ``"key"`` (e-mail and global API key)."""
        return self._auth_scheme

    @property
    def closed(self) -> bool:
        """True once ``aclose()`` was called."""
        return self._transport.closed

    def __repr__(self) -> str:
        return f"MagicWAN(base_url={self.base_url!r}, auth={self._auth_scheme!r})"

    async def __aenter__(self) -> Self:
        self._transport.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client's own HTTP session (a session you passed stays open)."""
        await self._transport.aclose()
