"""The emulator's aiohttp.web application: Cloudflare's routes behind one request pipeline.

:class:`Pipeline` runs every API request through the same steps, in this order:

1. routing: unknown path -> 404 (code 7000), wrong method -> 405 (code 7001);
2. authentication: missing -> 400 (9106, or 6111 for a malformed ``Authorization``), wrong ->
   403 (9103 for email + key, 10000 for a token); neither is charged to the rate budget;
3. fault draw (latency is slept here, before the body is read); a spurious ``rate_limited``
   fault answers 429 uncharged;
4. rate limit: one token from the user's bucket, or 429 (code 971) with ``Retry-After``;
5. ``server_error`` / ``html_502`` / ``reset_before_store`` faults (nothing changed);
6. the endpoint reads and checks the request (see :mod:`magicwan.emulator.endpoints`): unknown
   account -> 404 (7003), and the endpoint's own errors;
7. the change is applied and answered, unless a fault says otherwise: ``reset_after_store``
   applies it and drops the connection, ``truncated_json`` applies it and cuts the body in
   half, ``late_store`` stalls ``Faults.late_store_delay`` seconds first, then applies it even
   if the client has gone (it runs in a task of its own that a client leaving cannot cancel),
   and answers if the client is still there.

Every answer carries ``cf-ray``; while limiting is on, every answer to an identified user
(all but auth failures and the ``html_502`` proxy page) carries ``Ratelimit`` and
``Ratelimit-Policy``. Requests refused at steps 1-2 and every 429 take no token; everything else
does, faults included: one request is one token, however many PSKs it sets. The admin routes
under ``/__emulator__/`` (:mod:`magicwan.emulator.admin`) skip all of this.

Shutdown never waits for a fault: sleeping latency wakes at once, and a pending late store
skips the rest of its delay and stores at once (finished, not cancelled), so the state audited
after the server stopped holds every change a client's request caused.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Middleware
from multidict import CIMultiDictProxy

from magicwan.emulator._wire import (
    ADMIN_PREFIX,
    API_PREFIX,
    ERROR_CODES,
    HTML_502_PAGE,
    APIError,
    failure_body,
    json_response,
)
from magicwan.emulator.admin import STATE_KEY, add_admin_routes, handle_admin
from magicwan.emulator.bucket import RateDecision
from magicwan.emulator.endpoints import ROUTES, Apply, Endpoint, Route
from magicwan.emulator.faults import FaultKind
from magicwan.emulator.models import User
from magicwan.emulator.state import EmulatorState

__all__ = [
    "ADMIN_PREFIX",
    "API_PREFIX",
    "ERROR_CODES",
    "HTML_502_PAGE",
    "STATE_KEY",
    "Pipeline",
    "create_app",
]

_SERVER_ERROR_MESSAGES: Final = {
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service temporarily unavailable",
}
#: How long shutdown waits for late stores to finish once their delay is cut short.
_LATE_STORE_GRACE: Final = 1.0
_log = logging.getLogger("magicwan.emulator")

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def authenticate(state: EmulatorState, headers: CIMultiDictProxy[str]) -> User:
    """The user the request's credentials name, or APIError (Cloudflare's codes)."""
    authorization = headers.get("Authorization")
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise APIError.of("bad_authorization")
        user = state.user_for_token(token)
        if user is None:
            raise APIError.of("bad_token")
        return user
    email = headers.get("X-Auth-Email")
    key = headers.get("X-Auth-Key")
    if email is None or key is None:
        if email is None and key is None:
            raise APIError.of("missing_auth")
        raise APIError.of("missing_email" if email is None else "missing_key")
    user = state.user_for_key(email.strip(), key.strip())
    if user is None:
        raise APIError.of("unknown_key")
    return user


def _ray_ids(seed: int) -> Iterator[str]:
    """Unique ray ids: a 64-bit counter walked with an odd stride (a bijection mod 2**64)."""
    rng = random.Random(f"magicwan-emulator/{seed}/rays")  # noqa: S311 - ids, not secrets
    start, stride = rng.getrandbits(64), rng.getrandbits(64) | 1
    mask = (1 << 64) - 1
    for n in itertools.count():
        yield f"{(start + n * stride) & mask:016x}-EMU"


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


class Pipeline:
    """Serves one :class:`EmulatorState`: the request pipeline of the module docstring.

    ``routes`` are the endpoints it serves (:data:`~magicwan.emulator.endpoints.ROUTES`);
    :meth:`add_routes` registers them with a router. ``middleware`` is the application's
    middleware; ``on_shutdown`` and ``on_cleanup`` are its signal handlers (``create_app``
    wires all four).
    """

    def __init__(self, state: EmulatorState, routes: Iterable[Route] = ROUTES) -> None:
        self.state = state
        self._routes = tuple(routes)
        self._endpoints: Mapping[str, Endpoint] = {
            route.name: route.endpoint for route in self._routes
        }
        if len(self._endpoints) != len(self._routes):
            raise ValueError("route names must be unique")
        self._next_ray = _ray_ids(state.seed).__next__
        self._closing = asyncio.Event()
        self._late_stores: set[asyncio.Task[web.Response]] = set()

    # -- aiohttp hooks ---------------------------------------------------------------------

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Register every route under the API prefix, by its name (the pipeline serves them)."""
        for route in self._routes:
            router.add_route(route.method, API_PREFIX + route.path, _pipeline_only, name=route.name)

    @web.middleware
    async def middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        """Admin routes go to their handler; everything else through the pipeline."""
        if request.path == ADMIN_PREFIX or request.path.startswith(ADMIN_PREFIX + "/"):
            resp = await handle_admin(request, handler)
            resp.headers["cf-ray"] = self._next_ray()
            return resp
        return await self.handle(request)

    async def on_shutdown(self, app: web.Application) -> None:
        """Wake sleeping faults; let pending late stores store now."""
        self._closing.set()
        if self._late_stores:
            await asyncio.wait(set(self._late_stores), timeout=_LATE_STORE_GRACE)

    async def on_cleanup(self, app: web.Application) -> None:
        """Cancel a late store that is somehow still pending (never leave a task behind)."""
        pending = set(self._late_stores)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    # -- the pipeline ----------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """One API request, start to end."""
        state = self.state
        match_info = request.match_info
        name = match_info.route.name if match_info.http_exception is None else None
        endpoint = self._endpoints.get(name) if name is not None else None
        if name is None or endpoint is None:
            return self._unmatched(request)

        try:
            user = authenticate(state, request.headers)
        except APIError as err:
            return self._finish(err.response(), name, None)

        draw = state.fault_injector.draw()
        late_store_delay = state.faults.late_store_delay
        kind = draw.kind
        if draw.delay:
            await self._sleep(draw.delay)
            if _gone(request):  # the client gave up while we slept: nothing happens for it
                state.record_request(name, None, kind.value if kind is not None else None)
                return web.Response(status=499)  # never written: the client left
        limiter = state.limiter
        if kind is FaultKind.RATE_LIMITED:
            decision = limiter.peek(user.id) if limiter is not None else None
            resp = APIError.of("rate_limited").response()
            resp.headers["Retry-After"] = "1"
            return self._finish(resp, name, decision, kind)
        decision = limiter.acquire(user.id) if limiter is not None else None
        if decision is not None and not decision.allowed:
            resp = APIError.of("rate_limited").response()
            resp.headers["Retry-After"] = str(decision.retry_after)
            return self._finish(resp, name, decision)
        if kind is FaultKind.SERVER_ERROR:
            body = failure_body(10001, _SERVER_ERROR_MESSAGES[draw.status])
            return self._finish(json_response(draw.status, body), name, decision, kind)
        if kind is FaultKind.HTML_502:
            # A proxy's page: cf-ray, but no envelope and no Ratelimit headers.
            page = web.Response(body=HTML_502_PAGE, status=502, content_type="text/html")
            return self._finish(page, name, None, kind)
        if kind is FaultKind.RESET_BEFORE_STORE:
            return self._drop(request, name, kind)

        try:
            account = state.account_for(user, match_info["account_id"])
            if account is None:
                raise APIError.of("unknown_account", path=request.path.removeprefix(API_PREFIX))
            apply = await endpoint(request, state, account)
        except APIError as err:
            apply = err.response
        except web.HTTPException as exc:  # e.g. 413 from request.read()
            apply = _constant(json_response(exc.status, failure_body(1001, exc.reason)))
        except ConnectionError:
            # The client went away mid-request: nothing to answer, nothing crashed.
            state.record_request(name, None, None)
            return web.Response(status=499)  # never written: the transport is gone
        except Exception:
            _log.exception("emulator endpoint %s failed", name)
            apply = APIError.of("server_error").response

        if kind is FaultKind.LATE_STORE:
            return await self._late_store(request, name, decision, apply, late_store_delay)
        resp = self._apply(name, apply)
        if kind is FaultKind.RESET_AFTER_STORE:
            return self._drop(request, name, kind)
        if kind is FaultKind.TRUNCATED_JSON:
            body_bytes = resp.body
            assert isinstance(body_bytes, bytes)
            resp.body = body_bytes[: len(body_bytes) // 2]
        return self._finish(resp, name, decision, kind)

    def _unmatched(self, request: web.Request) -> web.Response:
        exc = request.match_info.http_exception
        not_allowed = exc is not None and exc.status == 405
        resp = APIError.of("method_not_allowed" if not_allowed else "no_route").response()
        if not_allowed and exc is not None and "Allow" in exc.headers:
            resp.headers["Allow"] = exc.headers["Allow"]
        try:
            user: User | None = authenticate(self.state, request.headers)
        except APIError:
            user = None
        limiter = self.state.limiter
        decision = limiter.peek(user.id) if user is not None and limiter is not None else None
        return self._finish(resp, "unmatched", decision)

    async def _sleep(self, delay: float) -> None:
        """Sleep, but wake at once when the server shuts down so it never waits for us."""
        if delay > 0 and not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay)

    def _apply(self, route: str, apply: Apply) -> web.Response:
        try:
            return apply()
        except Exception:
            _log.exception("emulator endpoint %s failed", route)
            return APIError.of("server_error").response()

    async def _late_store(
        self,
        request: web.Request,
        route: str,
        decision: RateDecision | None,
        apply: Apply,
        delay: float,
    ) -> web.StreamResponse:
        kind = FaultKind.LATE_STORE

        async def later() -> web.Response:
            await self._sleep(delay)
            return self._apply(route, apply)

        # A task of its own, shielded: a client leaving (or a cancelled handler) cannot stop
        # the change; shutdown lets it finish at once (see on_shutdown).
        task = asyncio.ensure_future(later())
        self._late_stores.add(task)
        task.add_done_callback(self._late_stores.discard)
        try:
            resp = await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(lambda _: self.state.record_request(route, None, kind.value))
            raise
        if _gone(request):
            self.state.record_request(route, None, kind.value)
            return web.Response(status=499)  # never written: the client left
        return self._finish(resp, route, decision, kind)

    def _finish(
        self,
        resp: web.Response,
        route: str,
        decision: RateDecision | None,
        fault: FaultKind | None = None,
    ) -> web.Response:
        headers = resp.headers
        headers["cf-ray"] = self._next_ray()
        limiter = self.state.limiter
        if decision is not None and limiter is not None:
            headers["Ratelimit"] = f'"default";r={decision.remaining};t={decision.reset}'
            headers["Ratelimit-Policy"] = limiter.policy_header()
        self.state.record_request(route, resp.status, fault.value if fault else None)
        return resp

    def _drop(self, request: web.Request, route: str, fault: FaultKind) -> web.Response:
        transport = request.transport
        if transport is not None:
            transport.close()
        self.state.record_request(route, None, fault.value)
        # Never reaches the client: aiohttp fails to write it to the closed transport and
        # treats that as a premature client disconnection (logged at debug level only).
        return web.Response(status=500)


def _constant(resp: web.Response) -> Apply:
    return lambda: resp


async def _pipeline_only(request: web.Request) -> web.StreamResponse:
    """Registered for API routes; the pipeline calls the endpoint itself, never this."""
    raise web.HTTPInternalServerError  # pragma: no cover - create_app always adds the pipeline


def create_app(
    state: EmulatorState,
    *,
    client_max_size: int = 1024**2,
    middlewares: Iterable[Middleware] = (),
) -> web.Application:
    """Build the aiohttp.web application serving ``state`` (see the module docstring).

    ``middlewares`` run outside the emulator's pipeline, in the order given, and see every
    request, admin routes included (e.g. a test's request tracker).
    """
    pipeline = Pipeline(state)
    app = web.Application(
        middlewares=[*middlewares, pipeline.middleware], client_max_size=client_max_size
    )
    app[STATE_KEY] = state
    app.on_shutdown.append(pipeline.on_shutdown)
    app.on_cleanup.append(pipeline.on_cleanup)
    pipeline.add_routes(app.router)
    add_admin_routes(app.router)
    return app
