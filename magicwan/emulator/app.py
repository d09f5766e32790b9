"""The emulator's aiohttp.web application: Cloudflare's routes, envelopes, auth, limits, faults.

One middleware runs every API request through the same pipeline, in this order:

1. routing: unknown path -> 404 (code 7000), wrong method -> 405 (code 7001);
2. authentication: missing -> 400 (9106, or 6111 for a malformed ``Authorization``), wrong ->
   403 (9103 for email + key, 10000 for a token); neither is charged to the rate budget;
3. fault draw (latency is slept here); a spurious ``rate_limited`` fault answers 429 uncharged;
4. rate limit: one token from the user's bucket, or 429 (code 971) with ``Retry-After``;
5. ``server_error`` / ``html_502`` / ``reset_before_store`` faults (nothing changed);
6. the endpoint: unknown account -> 404 (7003), unknown tunnel -> 404 (1002), bad
   ``validate_only`` -> 400 (1003), body not a JSON object or not ``application/json`` -> 400
   (1001); otherwise the PSK is generated and stored;
7. ``reset_after_store`` (drop the connection) / ``truncated_json`` faults.

Every answer carries ``cf-ray``; while limiting is on, every answer to an identified user
(all but auth failures and the ``html_502`` proxy page) carries ``Ratelimit`` and
``Ratelimit-Policy``. Requests refused at steps 1-2 and every 429 take no token; everything else
does, faults included. The admin routes under ``/__emulator__/`` skip all
of this: no auth, no limit, no faults, not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

import attrs
from aiohttp import web
from multidict import CIMultiDictProxy

from magicwan.emulator.faults import FaultKind, Faults
from magicwan.emulator.state import Account, EmulatorState, RateDecision, Tunnel, User

__all__ = [
    "ADMIN_PREFIX",
    "API_PREFIX",
    "ERROR_CODES",
    "HTML_502_PAGE",
    "create_app",
]

API_PREFIX: Final = "/client/v4"
ADMIN_PREFIX: Final = "/__emulator__"

#: Every error the emulator answers with: name -> (HTTP status, Cloudflare code, message).
ERROR_CODES: Final[dict[str, tuple[int, int, str]]] = {
    "missing_auth": (400, 9106, "Missing X-Auth-Key, X-Auth-Email or Authorization headers"),
    "missing_email": (400, 9106, "Missing X-Auth-Email header"),
    "missing_key": (400, 9106, "Missing X-Auth-Key header"),
    "bad_authorization": (400, 6111, "Invalid format for Authorization header"),
    "unknown_key": (403, 9103, "Unknown X-Auth-Key or X-Auth-Email"),
    "bad_token": (403, 10000, "Authentication error"),
    "no_route": (404, 7000, "No route for that URI"),
    "method_not_allowed": (405, 7001, "Method not allowed"),
    "unknown_account": (
        404,
        7003,
        "Could not route to {path}, perhaps your object identifier is invalid?",
    ),
    "unknown_tunnel": (404, 1002, "ipsec_tunnel not found"),
    "bad_content_type": (400, 1001, "Content-Type must be application/json"),
    "bad_body": (400, 1001, "Request body must be a JSON object"),
    "bad_validate_only": (400, 1003, "validate_only must be true or false"),
    "rate_limited": (429, 971, "Please wait and consider throttling your request speed"),
    "server_error": (500, 10001, "Internal server error"),
}
_SERVER_ERROR_MESSAGES: Final = {
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service temporarily unavailable",
}

#: The page a Cloudflare proxy answers with when the origin fails (the ``html_502`` fault).
HTML_502_PAGE: Final = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
    b"</body>\r\n</html>\r\n"
)

_JSON: Final = "application/json"
_SUCCESS_TAIL: Final = ',"success":true,"errors":[],"messages":[]}'
_log = logging.getLogger("magicwan.emulator")


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def _failure_body(code: int, message: str) -> bytes:
    return _dumps(
        {
            "success": False,
            "errors": [{"code": code, "message": message}],
            "messages": [],
            "result": None,
        }
    ).encode()


@attrs.frozen
class _APIError(Exception):
    """Raised by the pipeline and the endpoints; becomes a failure envelope."""

    status: int
    code: int
    message: str

    @classmethod
    def of(cls, name: str, **fmt: str) -> _APIError:
        status, code, message = ERROR_CODES[name]
        return cls(status, code, message.format(**fmt) if fmt else message)

    def response(self) -> web.Response:
        return _envelope(self.status, _failure_body(self.code, self.message))


def _envelope(status: int, body: bytes) -> web.Response:
    return web.Response(body=body, status=status, content_type=_JSON)


# -- the endpoints ----------------------------------------------------------------------------

_Endpoint = Callable[[web.Request, EmulatorState, Account], Awaitable[web.Response]]


async def _pipeline_only(request: web.Request) -> web.StreamResponse:
    """Registered for API routes; the middleware calls the endpoint itself, never this."""
    raise web.HTTPInternalServerError  # pragma: no cover - create_app always adds the middleware


def _tunnel(request: web.Request, account: Account) -> Tunnel:
    tunnel = account.tunnels.get(request.match_info["tunnel_id"])
    if tunnel is None:
        raise _APIError.of("unknown_tunnel")
    return tunnel


def _validate_only(request: web.Request) -> bool:
    values = request.query.getall("validate_only", [])
    if not values:
        return False
    if len(values) == 1 and values[0] in ("true", "false"):
        return values[0] == "true"
    raise _APIError.of("bad_validate_only")


async def _require_json_object(request: web.Request) -> None:
    if request.content_type != _JSON:
        raise _APIError.of("bad_content_type")
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise _APIError.of("bad_body") from None
    if not isinstance(body, dict):
        raise _APIError.of("bad_body")


async def _psk_generate(
    request: web.Request, state: EmulatorState, account: Account
) -> web.Response:
    tunnel = _tunnel(request, account)
    validate_only = _validate_only(request)
    await _require_json_object(request)
    result: dict[str, Any] = {"ipsec_tunnel_id": tunnel.id}
    if validate_only:
        metadata = tunnel.psk_metadata()
        if metadata is not None:
            result["psk_metadata"] = metadata
    else:
        record = state.generate_psk(tunnel)
        result["psk"] = record.psk
        result["psk_metadata"] = tunnel.psk_metadata()
    body = '{"result":' + _dumps(result) + _SUCCESS_TAIL
    return _envelope(200, body.encode())


async def _list_tunnels(
    request: web.Request, state: EmulatorState, account: Account
) -> web.Response:
    items = ",".join(t.api_json() for t in account.tunnels.values())
    body = '{"result":{"ipsec_tunnels":[' + items + "]}" + _SUCCESS_TAIL
    return _envelope(200, body.encode())


async def _get_tunnel(request: web.Request, state: EmulatorState, account: Account) -> web.Response:
    tunnel = _tunnel(request, account)
    body = '{"result":{"ipsec_tunnel":' + tunnel.api_json() + "}" + _SUCCESS_TAIL
    return _envelope(200, body.encode())


# -- authentication ---------------------------------------------------------------------------


def _authenticate(state: EmulatorState, headers: CIMultiDictProxy[str]) -> User:
    authorization = headers.get("Authorization")
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _APIError.of("bad_authorization")
        user = state.user_for_token(token)
        if user is None:
            raise _APIError.of("bad_token")
        return user
    email = headers.get("X-Auth-Email")
    key = headers.get("X-Auth-Key")
    if email is None or key is None:
        if email is None and key is None:
            raise _APIError.of("missing_auth")
        raise _APIError.of("missing_email" if email is None else "missing_key")
    user = state.user_for_key(email.strip(), key.strip())
    if user is None:
        raise _APIError.of("unknown_key")
    return user


def _identify(state: EmulatorState, headers: CIMultiDictProxy[str]) -> User | None:
    try:
        return _authenticate(state, headers)
    except _APIError:
        return None


# -- admin routes -----------------------------------------------------------------------------

_STATE_KEY: Final = web.AppKey("magicwan_emulator_state", EmulatorState)


def _admin_json(data: Any, status: int = 200) -> web.Response:
    return _envelope(status, _dumps(data).encode())


async def _admin_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise web.HTTPBadRequest(reason="body is not JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(reason="body must be a JSON object")
    return body


async def _admin_state(request: web.Request) -> web.Response:
    return _admin_json(request.app[_STATE_KEY].snapshot())


async def _admin_reset(request: web.Request) -> web.Response:
    request.app[_STATE_KEY].reset()
    return _admin_json({"ok": True})


async def _admin_add_tunnels(request: web.Request) -> web.Response:
    state = request.app[_STATE_KEY]
    body = await _admin_body(request)
    account_id = body.get("account_id", state.account_id)
    count = body.get("count", 1)
    ids = body.get("ids")
    if account_id not in state.accounts:
        raise web.HTTPNotFound(reason="unknown account")
    try:
        if ids is not None:
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise ValueError("ids must be a list of strings")
            tunnels = [state.add_tunnel(account_id, i) for i in ids]
        else:
            if not isinstance(count, int) or isinstance(count, bool):
                raise ValueError("count must be an integer")
            tunnels = state.add_tunnels(account_id, count)
    except ValueError as exc:
        raise web.HTTPBadRequest(reason=str(exc)) from None
    return _admin_json({"account_id": account_id, "tunnel_ids": [t.id for t in tunnels]}, 201)


async def _admin_faults(request: web.Request) -> web.Response:
    state = request.app[_STATE_KEY]
    if request.method == "POST":
        body = await _admin_body(request)
        seed = body.pop("seed", None)
        try:
            if seed is not None and not isinstance(seed, int):
                raise ValueError("seed must be an integer")
            faults = Faults(**body)
        except (TypeError, ValueError) as exc:
            raise web.HTTPBadRequest(reason=str(exc)) from None
        state.set_faults(faults, seed=seed)
    return _admin_json({"faults": state.faults.to_dict(), "seed": state.fault_injector.seed})


async def _admin_rate_limit(request: web.Request) -> web.Response:
    state = request.app[_STATE_KEY]
    if request.method == "POST":
        body = await _admin_body(request)
        limit, window = body.get("limit"), body.get("window")
        try:
            if limit is None:
                state.set_rate_limit(None)
            elif isinstance(limit, int) and isinstance(window, int | float):
                state.set_rate_limit((limit, float(window)))
            else:
                raise ValueError("limit must be an integer and window a number")
        except (TypeError, ValueError) as exc:
            raise web.HTTPBadRequest(reason=str(exc)) from None
    current = state.rate_limit
    return _admin_json({"limit": current[0], "window": current[1]} if current else {"limit": None})


# -- the application --------------------------------------------------------------------------


def _ray_ids(seed: int) -> Iterator[str]:
    """Unique ray ids: a 64-bit counter walked with an odd stride (a bijection mod 2**64)."""
    rng = random.Random(f"magicwan-emulator/{seed}/rays")  # noqa: S311 - ids, not secrets
    start, stride = rng.getrandbits(64), rng.getrandbits(64) | 1
    mask = (1 << 64) - 1
    for n in itertools.count():
        yield f"{(start + n * stride) & mask:016x}-EMU"


def create_app(state: EmulatorState, *, client_max_size: int = 1024**2) -> web.Application:
    """Build the aiohttp.web application serving ``state`` (see the module docstring)."""
    endpoints: dict[str, _Endpoint] = {
        "psk_generate": _psk_generate,
        "list_ipsec_tunnels": _list_tunnels,
        "get_ipsec_tunnel": _get_tunnel,
    }
    rays = _ray_ids(state.seed)
    next_ray = rays.__next__
    closing = asyncio.Event()

    async def on_shutdown(app: web.Application) -> None:
        closing.set()

    def finish(
        resp: web.Response,
        route: str,
        decision: RateDecision | None,
        fault: FaultKind | None = None,
    ) -> web.Response:
        headers = resp.headers
        headers["cf-ray"] = next_ray()
        limiter = state.limiter
        if decision is not None and limiter is not None:
            headers["Ratelimit"] = f'"default";r={decision.remaining};t={decision.reset}'
            headers["Ratelimit-Policy"] = limiter.policy_header()
        state.record_request(route, resp.status, fault.value if fault else None)
        return resp

    def drop(request: web.Request, route: str, fault: FaultKind) -> web.Response:
        transport = request.transport
        if transport is not None:
            transport.close()
        state.record_request(route, None, fault.value)
        # Never reaches the client: aiohttp fails to write it to the closed transport and
        # treats that as a premature client disconnection (logged at debug level only).
        return web.Response(status=500)

    async def api(request: web.Request) -> web.Response:
        match_info = request.match_info
        name = match_info.route.name if match_info.http_exception is None else None
        endpoint = endpoints.get(name) if name is not None else None
        limiter = state.limiter
        if name is None or endpoint is None:
            exc = match_info.http_exception
            not_allowed = exc is not None and exc.status == 405
            resp = _APIError.of("method_not_allowed" if not_allowed else "no_route").response()
            if not_allowed and exc is not None and "Allow" in exc.headers:
                resp.headers["Allow"] = exc.headers["Allow"]
            user = _identify(state, request.headers)
            decision = limiter.peek(user.id) if user is not None and limiter else None
            return finish(resp, "unmatched", decision)

        try:
            user = _authenticate(state, request.headers)
        except _APIError as err:
            return finish(err.response(), name, None)

        draw = state.fault_injector.draw()
        if draw.delay and not closing.is_set():
            # Sleep, but wake at once when the server shuts down so it never waits for us.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closing.wait(), draw.delay)
        kind = draw.kind
        if kind is FaultKind.RATE_LIMITED:
            decision = limiter.peek(user.id) if limiter is not None else None
            resp = _APIError.of("rate_limited").response()
            resp.headers["Retry-After"] = "1"
            return finish(resp, name, decision, kind)
        decision = limiter.acquire(user.id) if limiter is not None else None
        if decision is not None and not decision.allowed:
            resp = _APIError.of("rate_limited").response()
            resp.headers["Retry-After"] = str(decision.retry_after)
            return finish(resp, name, decision)
        if kind is FaultKind.SERVER_ERROR:
            body = _failure_body(10001, _SERVER_ERROR_MESSAGES[draw.status])
            return finish(_envelope(draw.status, body), name, decision, kind)
        if kind is FaultKind.HTML_502:
            # A proxy's page: cf-ray, but no envelope and no Ratelimit headers.
            page = web.Response(body=HTML_502_PAGE, status=502, content_type="text/html")
            return finish(page, name, None, kind)
        if kind is FaultKind.RESET_BEFORE_STORE:
            return drop(request, name, kind)

        try:
            account = state.account_for(user, match_info["account_id"])
            if account is None:
                raise _APIError.of("unknown_account", path=request.path.removeprefix(API_PREFIX))
            resp = await endpoint(request, state, account)
        except _APIError as err:
            resp = err.response()
        except web.HTTPException as exc:  # e.g. 413 from request.read()
            resp = _envelope(exc.status, _failure_body(1001, exc.reason))
        except ConnectionError:
            # The client went away mid-request: nothing to answer, nothing crashed.
            state.record_request(name, None, None)
            return web.Response(status=499)  # never written: the transport is gone
        except Exception:
            _log.exception("emulator endpoint %s failed", name)
            resp = _APIError.of("server_error").response()

        if kind is FaultKind.RESET_AFTER_STORE:
            return drop(request, name, kind)
        if kind is FaultKind.TRUNCATED_JSON:
            body_bytes = resp.body
            assert isinstance(body_bytes, bytes)
            resp.body = body_bytes[: len(body_bytes) // 2]
        return finish(resp, name, decision, kind)

    async def admin(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            resp = _admin_json({"error": exc.reason}, exc.status)
        resp.headers["cf-ray"] = next_ray()
        return resp

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith(ADMIN_PREFIX + "/"):
            return await admin(request, handler)
        return await api(request)

    app = web.Application(middlewares=[middleware], client_max_size=client_max_size)
    app[_STATE_KEY] = state
    app.on_shutdown.append(on_shutdown)
    accounts = API_PREFIX + "/accounts/{account_id}/magic/ipsec_tunnels"
    router = app.router
    tunnel = accounts + "/{tunnel_id}"
    router.add_post(tunnel + "/psk_generate", _pipeline_only, name="psk_generate")
    router.add_get(accounts, _pipeline_only, name="list_ipsec_tunnels", allow_head=False)
    router.add_get(tunnel, _pipeline_only, name="get_ipsec_tunnel", allow_head=False)
    router.add_get(ADMIN_PREFIX + "/state", _admin_state)
    router.add_post(ADMIN_PREFIX + "/reset", _admin_reset)
    router.add_post(ADMIN_PREFIX + "/tunnels", _admin_add_tunnels)
    router.add_route("*", ADMIN_PREFIX + "/faults", _admin_faults)
    router.add_route("*", ADMIN_PREFIX + "/rate_limit", _admin_rate_limit)
    return app
