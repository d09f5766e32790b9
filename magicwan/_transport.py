"""The only module that uses aiohttp's client: session, auth headers, URLs, retries.

Resources hand it a method, a path and a function that converts the envelope's
``result``; it returns the converted value or raises a :mod:`magicwan.errors` error.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import aiohttp
import attrs
from yarl import URL

from magicwan._envelope import decode_envelope, header, parse_ratelimit
from magicwan._retry import RetryPolicy, outcome_unknown, should_retry
from magicwan._version import __version__
from magicwan.errors import (
    APIConnectionError,
    APITimeoutError,
    ErrorDetail,
    MagicWANError,
    RateLimitError,
    UnexpectedResponseError,
)
from magicwan.ratelimit import CooldownTooLong, RateLimiter, Sleep

if TYPE_CHECKING:
    from tenacity import RetryCallState

__all__ = ["Reply", "Transport", "user_agent"]

logger = logging.getLogger("magicwan")

T = TypeVar("T")

#: Largest response body read before giving up (a hostile or broken server).
MAX_RESPONSE_BYTES = 4 * 1024 * 1024


def user_agent() -> str:
    """``magicwan/<version> Python/<x.y.z> aiohttp/<version>``."""
    py = ".".join(str(part) for part in sys.version_info[:3])
    return f"magicwan/{__version__} Python/{py} aiohttp/{aiohttp.__version__}"


@attrs.frozen
class Reply(Generic[T]):
    """A converted result and how it was obtained.

    ``uncertain`` is true when an earlier attempt of this call failed with an unknown
    outcome, so the server may have acted on a request whose answer we never saw.
    """

    value: T
    attempts: int
    uncertain: bool


class _KeyedLocks:
    """One asyncio.Lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    def hold(self, key: str) -> _Hold:
        """``async with locks.hold(key):`` runs the body while holding ``key``'s lock."""
        return _Hold(self._locks, key)

    def __len__(self) -> int:
        return len(self._locks)


class _Hold:
    """The async context manager of :meth:`_KeyedLocks.hold` (a plain class: cheaper
    per call than ``contextlib.asynccontextmanager``)."""

    __slots__ = ("_key", "_lock", "_locks", "_users")

    def __init__(self, locks: dict[str, tuple[asyncio.Lock, list[int]]], key: str) -> None:
        self._locks = locks
        self._key = key

    async def __aenter__(self) -> None:
        entry = self._locks.get(self._key)
        if entry is None:
            entry = self._locks[self._key] = (asyncio.Lock(), [0])
        self._lock, self._users = entry
        self._users[0] += 1
        try:
            await self._lock.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._lock.release()
        self._leave()

    def _leave(self) -> None:
        users = self._users
        users[0] -= 1
        if not users[0]:
            del self._locks[self._key]


@attrs.define
class _CallState:
    uncertain: bool = False
    attempts: int = 0


def _ssl_setting(verify: bool | str | ssl.SSLContext) -> bool | ssl.SSLContext:
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return verify


class Transport:
    """Sends requests for one client: auth, limiter, retries, envelope decoding."""

    def __init__(
        self,
        *,
        base_url: str,
        auth_headers: dict[str, str],
        secrets: tuple[str, ...],
        policy: RetryPolicy,
        limiter: RateLimiter,
        timeout: float,
        connect_timeout: float,
        connection_limit: int,
        session: aiohttp.ClientSession | None = None,
        verify: bool | str | ssl.SSLContext = True,
        sleep: Sleep = asyncio.sleep,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.base_url = base_url
        self.policy = policy
        self.limiter = limiter
        self._secrets = secrets
        common = {"User-Agent": user_agent(), "Accept": "application/json", **auth_headers}
        self._get_headers = common
        self._post_headers = {**common, "Content-Type": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)
        self._timeout_s = timeout
        self._connection_limit = connection_limit
        self._slots = asyncio.Semaphore(connection_limit)
        self._ssl = _ssl_setting(verify)
        self._sleep = sleep
        self._max_response_bytes = max_response_bytes
        self._session = session
        self._owns_session = session is None
        self._closed = False
        self._locks = _KeyedLocks()
        self._host = URL(base_url).host or "?"

    @property
    def closed(self) -> bool:
        return self._closed

    def open(self) -> aiohttp.ClientSession:
        """The session in use; our own is created here, inside the running loop."""
        if self._closed:
            raise MagicWANError("the client is closed")
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._connection_limit, limit_per_host=0, ttl_dns_cache=300, ssl=self._ssl
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                cookie_jar=aiohttp.DummyCookieJar(),
                raise_for_status=False,
            )
        elif self._session.closed:
            raise MagicWANError("the aiohttp session given to the client is closed")
        return self._session

    async def aclose(self) -> None:
        """Close our own session (never one we were given). Safe to call twice."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._owns_session and not session.closed:
            await session.close()

    async def request(
        self,
        method: str,
        path: str,
        convert: Callable[[Any], T],
        *,
        query: str = "",
        body: bytes | None = None,
        idempotent: bool,
        exclusive_key: str | None = None,
    ) -> Reply[T]:
        """Send ``method path`` with retries and return ``convert(result)``.

        ``path`` must already be safe (validated ids). With ``exclusive_key``, calls
        sharing the key run one at a time, retries included. ``convert`` runs inside
        the retry loop, so a malformed result is retried like any unknown outcome.
        """
        url = URL(self.base_url + path + (f"?{query}" if query else ""), encoded=True)
        state = _CallState()
        value: T
        if exclusive_key is None:
            value = await self._call(method, url, path, body, convert, state, idempotent)
        else:
            async with self._locks.hold(exclusive_key):
                value = await self._call(method, url, path, body, convert, state, idempotent)
        return Reply(value, state.attempts, state.uncertain)

    async def _call(
        self,
        method: str,
        url: URL,
        path: str,
        body: bytes | None,
        convert: Callable[[Any], T],
        state: _CallState,
        idempotent: bool,
    ) -> T:
        # Fast path: the first attempt runs outside tenacity, whose per-call setup costs
        # more CPU than the request itself. Only a failure worth retrying enters the
        # retry loop, which replays that failure as its attempt 1 and runs the rest.
        try:
            return await self._attempt(method, url, path, body, convert, state)
        except MagicWANError as exc:
            policy = self.policy
            if policy.max_retries < 1 or not should_retry(exc, policy, idempotent=idempotent):
                raise
            first: MagicWANError | None = exc

        # Imported here: a process whose calls never need a retry never loads tenacity.
        from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

        async def attempt() -> T:
            nonlocal first
            if first is not None:
                failed, first = first, None
                raise failed
            return await self._attempt(method, url, path, body, convert, state)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(lambda exc: should_retry(exc, policy, idempotent=idempotent)),
            sleep=self._sleep,
            reraise=True,
            before_sleep=lambda rs: self._log_retry(method, path, rs),
        )
        return await retrying(attempt)

    def _wait(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        if outcome is not None and isinstance(outcome.exception(), RateLimitError):
            return 0.0  # the limiter holds every call until Retry-After has passed
        return self.policy.backoff(retry_state.attempt_number)

    def _log_retry(self, method: str, path: str, retry_state: RetryCallState) -> None:
        if not logger.isEnabledFor(logging.DEBUG):
            return
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        wait = retry_state.next_action.sleep if retry_state.next_action else 0.0
        logger.debug(
            "%s %s: retrying after %s (attempt %d, wait %.3fs, outcome unknown: %s)",
            method,
            path,
            type(exc).__name__,
            retry_state.attempt_number,
            wait,
            outcome_unknown(exc) if exc is not None else False,
        )

    async def _attempt(
        self,
        method: str,
        url: URL,
        path: str,
        body: bytes | None,
        convert: Callable[[Any], T],
        state: _CallState,
    ) -> T:
        state.attempts += 1
        try:
            return convert(await self._send(method, url, path, body, state.attempts))
        except MagicWANError as exc:
            if outcome_unknown(exc):
                state.uncertain = True
            raise

    async def _send(
        self, method: str, url: URL, path: str, body: bytes | None, attempt: int
    ) -> Any:
        try:
            waited = await self.limiter.acquire(self.policy.max_retry_after)
        except CooldownTooLong as exc:
            raise RateLimitError(
                429,
                [ErrorDetail(None, "client-side cooldown after a 429: request not sent")],
                retry_after=exc.remaining,
            ) from None
        if waited and logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s %s: rate limiter waited %.3fs", method, path, waited)
        session = self.open()
        error: MagicWANError | None = None
        status = 0
        async with self._slots:
            try:
                async with session.request(
                    method,
                    url,
                    data=body,
                    headers=self._post_headers if body is not None else self._get_headers,
                    allow_redirects=False,
                    raise_for_status=False,
                    timeout=self._timeout,
                    ssl=self._ssl,
                ) as resp:
                    status = resp.status
                    headers = resp.headers
                    raw = await self._read(resp)
            except aiohttp.ConnectionTimeoutError as exc:
                error = APITimeoutError(f"timed out connecting to {self._host}", request_sent=False)
                error.__cause__ = exc
            except aiohttp.ClientConnectorCertificateError as exc:
                # Retrying cannot make a certificate verify.
                error = APIConnectionError(
                    f"TLS certificate of {self._host} failed verification: {exc.certificate_error}",
                    request_sent=False,
                    retryable=False,
                )
                error.__cause__ = exc
            except aiohttp.ClientConnectorError as exc:
                error = APIConnectionError(
                    f"cannot connect to {self._host}: {exc.os_error or type(exc).__name__}",
                    request_sent=False,
                )
                error.__cause__ = exc
            except TimeoutError as exc:
                error = APITimeoutError(
                    f"no complete answer from {self._host} within {self._timeout_s:g}s",
                    request_sent=True,
                )
                error.__cause__ = exc
            except aiohttp.ClientResponseError as exc:
                # Not chained: aiohttp keeps the request's headers (credentials) on it.
                error = APIConnectionError(
                    f"invalid HTTP answer from {self._host}: {type(exc).__name__}",
                    request_sent=True,
                )
            except (aiohttp.ClientError, OSError) as exc:
                error = APIConnectionError(
                    f"connection to {self._host} failed after sending: {type(exc).__name__}",
                    request_sent=True,
                )
                error.__cause__ = exc
            except UnexpectedResponseError as exc:
                error = exc
        if error is not None:
            logger.debug("%s %s -> %s (attempt %d)", method, path, type(error).__name__, attempt)
            raise error
        ray_id = header(headers, "cf-ray")
        logger.debug("%s %s -> %d (attempt %d, cf-ray %s)", method, path, status, attempt, ray_id)
        info = parse_ratelimit(headers)
        if info is not None:
            self.limiter.observe(info)
        try:
            return decode_envelope(status, headers, raw, secrets=self._secrets)
        except RateLimitError as exc:
            pause = exc.retry_after
            self.limiter.pause(pause if pause is not None else self.policy.backoff(attempt))
            raise

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes:
        limit = self._max_response_bytes
        length = resp.content_length
        if length is not None and length <= limit:
            return await resp.read()
        chunks: list[bytes] = []
        size = 0
        if length is None:
            async for chunk in resp.content.iter_any():
                size += len(chunk)
                if size > limit:
                    break
                chunks.append(chunk)
        if size > limit or (length is not None and length > limit):
            raise UnexpectedResponseError(
                f"response body larger than {limit} bytes",
                status=resp.status,
                ray_id=header(resp.headers, "cf-ray"),
            )
        return b"".join(chunks)
