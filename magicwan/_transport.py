"""Sends the requests of one client: auth headers, the limiter, per-tunnel locks,
retries, envelope decoding. It never imports aiohttp: :mod:`magicwan._http` sends.

Resources hand it a compiled route, the values to encode and a function that converts
the envelope's ``result``; it returns a :class:`Reply` or raises a
:mod:`magicwan.errors` error.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import urlencode

from magicwan._envelope import decode_envelope, parse_ratelimit
from magicwan._envelope import ray_id as ray_id_of
from magicwan._http import HTTPAdapter, user_agent
from magicwan._retry import RetryPolicy, should_retry
from magicwan._routes import CompiledRoute
from magicwan.errors import (
    ErrorDetail,
    MagicWANError,
    RateLimitError,
    mark_outcome_unknown,
)
from magicwan.internal.clock import Clock, Sleep
from magicwan.ratelimit import CooldownTooLong, RateLimiter
from magicwan.reply import Reply

if TYPE_CHECKING:
    from tenacity import RetryCallState

__all__ = ["Transport"]

logger = logging.getLogger("magicwan")

T = TypeVar("T")

_NO_BODY: Any = object()
_EMPTY_OBJECT = b"{}"
_ENCODER = jsonlib.JSONEncoder(separators=(",", ":"))
QueryValue = str | int | bool


class _KeyedLocks:
    """asyncio locks by key, each dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    def hold(self, keys: tuple[str, ...]) -> _Hold:
        """``async with locks.hold(keys):`` runs the body holding every key's lock.

        Keys must be sorted (compiled routes sort them), so two holders of overlapping
        sets always take them in the same order and never deadlock.
        """
        return _Hold(self._locks, keys)

    def __len__(self) -> int:
        return len(self._locks)


class _Hold:
    """The async context manager of :meth:`_KeyedLocks.hold` (a plain class: cheaper
    per call than ``contextlib.asynccontextmanager``)."""

    __slots__ = ("_held", "_keys", "_locks")

    def __init__(self, locks: dict[str, tuple[asyncio.Lock, list[int]]], keys: tuple[str, ...]):
        self._locks = locks
        self._keys = keys
        self._held: list[str] = []

    async def __aenter__(self) -> None:
        try:
            for key in self._keys:
                entry = self._locks.get(key)
                if entry is None:
                    entry = self._locks[key] = (asyncio.Lock(), [0])
                entry[1][0] += 1
                try:
                    await entry[0].acquire()
                except BaseException:
                    self._leave(key)
                    raise
                self._held.append(key)
        except BaseException:
            await self.__aexit__()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        held, self._held = self._held, []
        for key in reversed(held):
            self._locks[key][0].release()
            self._leave(key)

    def _leave(self, key: str) -> None:
        users = self._locks[key][1]
        users[0] -= 1
        if not users[0]:
            del self._locks[key]


class _Headers(dict[str, str]):
    """Request headers whose ``repr`` names the credentials' headers but never shows their
    values: an error tracker that records a traceback's locals must not record a token."""

    def __repr__(self) -> str:
        shown = {
            k: "[REDACTED]" if k.lower() in _CREDENTIAL_HEADERS else v for k, v in self.items()
        }
        return repr(shown)


_CREDENTIAL_HEADERS = frozenset({"authorization", "x-auth-key", "x-auth-email"})


class _Call(Generic[T]):
    """One call: what to send, how to convert the answer, and what happened so far."""

    __slots__ = (
        "attempts",
        "body",
        "convert",
        "headers",
        "ray_id",
        "route",
        "secrets",
        "uncertain",
        "url",
    )

    def __init__(
        self,
        route: CompiledRoute,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        convert: Callable[[Any], T],
        secrets: tuple[str, ...],
    ) -> None:
        self.route = route
        self.secrets = secrets
        self.url = url
        self.headers = headers
        self.body = body
        self.convert = convert
        self.attempts = 0
        self.uncertain = False
        self.ray_id: str | None = None


class Transport:
    """Sends requests for one client: auth, limiter, locks, retries, envelope decoding."""

    def __init__(
        self,
        *,
        http: HTTPAdapter,
        base_url: str,
        auth_headers: Mapping[str, str],
        secrets: tuple[str, ...],
        policy: RetryPolicy,
        limiter: RateLimiter,
        timeout: float = 60.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.http = http
        #: The per-attempt timeout, the clock and the sleep every waiting part shares.
        self.timeout = timeout
        self.clock = clock
        self.sleep = sleep
        self.base_url = base_url
        self.policy = policy
        self.limiter = limiter
        self._secrets = secrets
        common = {
            "User-Agent": user_agent(),
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",  # what the adapter decodes, within its limit
            **auth_headers,
        }
        self._get_headers = _Headers(common)
        self._post_headers = _Headers({**common, "Content-Type": "application/json"})
        self._locks = _KeyedLocks()

    @property
    def closed(self) -> bool:
        return self.http.closed

    def open(self) -> None:
        self.http.open()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(
        self,
        route: CompiledRoute,
        convert: Callable[[Any], T],
        *,
        params: Mapping[str, QueryValue] | None = None,
        json: Any = _NO_BODY,
        secrets: tuple[str, ...] = (),
    ) -> Reply[T]:
        """Send ``route`` with retries and return ``convert(result)`` in a :class:`Reply`.

        ``params`` are encoded into the query string after the route's own; ``json`` is
        the request body; ``secrets`` (PSKs it carries) are scrubbed from any error made
        of the answer, like the credentials. ``convert`` runs inside the retry loop, so a
        malformed result is retried like any other unknown outcome. An exclusive route
        holds its tunnels' locks for the whole call, retries included.
        """
        query = list(route.query)
        if params:
            query += [(k, _query_value(v)) for k, v in params.items()]
        url = self.base_url + route.path + ("?" + urlencode(query) if query else "")
        if json is _NO_BODY:
            body, headers = None, self._get_headers
        else:
            # An empty object (psk_generate's body) is the common case: no encoder for it.
            body = _EMPTY_OBJECT if json == {} else _ENCODER.encode(json).encode()
            headers = self._post_headers
        call = _Call(route, url, headers, body, convert, self._secrets + secrets + route.secrets)
        try:
            if route.lock_keys:
                async with self._locks.hold(route.lock_keys):
                    value = await self._run(call)
            else:
                value = await self._run(call)
        except MagicWANError as exc:
            if call.uncertain:
                mark_outcome_unknown(exc)
            raise
        return Reply(value, call.attempts, call.uncertain, call.ray_id)

    def _retryable(self, exc: BaseException, idempotent: bool) -> bool:
        return not self.closed and should_retry(exc, self.policy, idempotent=idempotent)

    async def _run(self, call: _Call[T]) -> T:
        # Fast path: the first attempt runs outside tenacity, whose per-call setup costs
        # more CPU than the request itself. Only a failure worth retrying enters the
        # retry loop, which replays that failure as its attempt 1 and runs the rest.
        idempotent = call.route.idempotent
        try:
            return await self._attempt(call)
        except MagicWANError as exc:
            if self.policy.max_retries < 1 or not self._retryable(exc, idempotent):
                raise
            first: MagicWANError | None = exc

        # Imported here: a process whose calls never need a retry never loads tenacity.
        from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

        async def attempt() -> T:
            nonlocal first
            if first is not None:
                failed, first = first, None
                raise failed
            return await self._attempt(call)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.policy.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(lambda exc: self._retryable(exc, idempotent)),
            sleep=self.sleep,
            reraise=True,
            before_sleep=lambda rs: self._log_retry(call, rs),
        )
        return await retrying(attempt)

    def _wait(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        if outcome is not None and isinstance(outcome.exception(), RateLimitError):
            return 0.0  # the limiter holds every call until Retry-After has passed
        return self.policy.backoff(retry_state.attempt_number)

    def _log_retry(self, call: _Call[Any], retry_state: RetryCallState) -> None:
        if not logger.isEnabledFor(logging.INFO):
            return
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        wait = retry_state.next_action.sleep if retry_state.next_action else 0.0
        unknown = isinstance(exc, MagicWANError) and exc.outcome_unknown
        logger.info(
            "%s: retrying after %s (attempt %d, wait %.3fs, outcome unknown: %s)",
            call.route,
            type(exc).__name__,
            retry_state.attempt_number,
            wait,
            unknown,
            extra=_log_extra(call.route, "retry"),
        )

    async def _attempt(self, call: _Call[T]) -> T:
        call.attempts += 1
        try:
            return call.convert(await self._send(call))
        except MagicWANError as exc:
            if exc.outcome_unknown:
                call.uncertain = True
            raise

    async def _send(self, call: _Call[Any]) -> Any:
        route = call.route
        try:
            waited = await self.limiter.acquire(self.policy.max_retry_after)
        except CooldownTooLong as exc:
            raise RateLimitError(
                429,
                [ErrorDetail(None, "client-side cooldown after a 429: request not sent")],
                retry_after=exc.remaining,
            ) from None
        if waited and logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s: rate limiter waited %.3fs", route, waited, extra=_log_extra(route, "wait")
            )
        started = self.clock()
        try:
            raw = await self.http.send(
                route.method,
                call.url,
                call.headers,
                call.body,
                max_response_bytes=route.max_response_bytes,
            )
        except MagicWANError as exc:
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "%s -> %s in %.3fs (attempt %d)",
                    route,
                    type(exc).__name__,
                    self.clock() - started,
                    call.attempts,
                    extra=_log_extra(route, "request"),
                )
            raise
        ray_id = call.ray_id = ray_id_of(raw.headers)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s -> %d in %.3fs (attempt %d, cf-ray %s)",
                route,
                raw.status,
                self.clock() - started,
                call.attempts,
                ray_id,
                extra=_log_extra(route, "request"),
            )
        self.limiter.answered()
        info = parse_ratelimit(raw.headers)
        if info is not None:
            self.limiter.observe(info)
        try:
            return decode_envelope(raw.status, raw.headers, raw.body, secrets=call.secrets)
        except RateLimitError as exc:
            pause = exc.retry_after
            pause = self.limiter.pause(
                pause if pause is not None else self.policy.backoff(call.attempts)
            )
            logger.info(
                "%s: rate limited by the server; every call waits %.1fs",
                route,
                pause,
                extra=_log_extra(route, "rate_limited"),
            )
            raise


def _log_extra(route: CompiledRoute, event: str) -> dict[str, Any]:
    """What a structured log line says beside its message: the event and the route's ids."""
    return {
        "event": event,
        "account_id": route.shown(route.account_id),
        "tunnel_id": route.shown(route.tunnel_id),
    }


def _query_value(value: QueryValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
