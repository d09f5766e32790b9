"""The admin routes under ``/__emulator__/``: no auth, no rate limit, no faults, not counted.

* ``GET  /__emulator__`` (or ``/__emulator__/``): an index of these routes, ``{"routes":
  [{"method", "path", "does"}, ...]}``;
* ``GET  /__emulator__/state``: :meth:`EmulatorState.snapshot` (PSKs and credentials included);
* ``POST /__emulator__/reset``: :meth:`EmulatorState.reset`;
* ``POST /__emulator__/tunnels``: add tunnels, ``{"count": n}`` or ``{"ids": [...]}``
  (optionally ``"account_id"``, and ``"kind": "gre"`` for GRE tunnels; IPsec by default);
  answers 201 with ``account_id``, ``kind`` and the new ``tunnel_ids``;
* ``POST /__emulator__/checkpoint``: remember every account's tunnels as they are;
* ``POST /__emulator__/restore``: the tunnels as at the last checkpoint (or at start): those
  created since are gone, deleted ones are back, PSKs as they were (counters untouched);
* ``GET|POST /__emulator__/faults``: read or replace the faults (``Faults`` fields, and
  ``"seed"`` to restart the fault sequence);
* ``GET|POST /__emulator__/rate_limit``: read or set ``{"limit": n, "window": seconds}``
  (``{"limit": null}`` turns it off).

Errors are ``{"error": reason}`` with a plain HTTP status (these are not Cloudflare's routes).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from magicwan.emulator._wire import ADMIN_PREFIX, dumps, json_response
from magicwan.emulator.faults import Faults
from magicwan.emulator.state import EmulatorState

__all__ = ["STATE_KEY", "add_admin_routes", "handle_admin"]

#: Where the application keeps its :class:`EmulatorState`.
STATE_KEY: Final = web.AppKey("magicwan_emulator_state", EmulatorState)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _answer(data: Any, status: int = 200) -> web.Response:
    return json_response(status, dumps(data).encode())


async def handle_admin(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Run an admin handler; an HTTP error becomes ``{"error": reason}``."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        return _answer({"error": exc.reason}, exc.status)


async def _body(request: web.Request) -> dict[str, Any]:
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


async def _state(request: web.Request) -> web.Response:
    return _answer(request.app[STATE_KEY].snapshot())


async def _reset(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset()
    return _answer({"ok": True})


async def _add_tunnels(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    body = await _body(request)
    account_id = body.get("account_id", state.account_id)
    count = body.get("count", 1)
    ids = body.get("ids")
    kind = body.get("kind", "ipsec")
    if account_id not in state.accounts:
        raise web.HTTPNotFound(reason="unknown account")
    add_one = state.add_tunnel if kind == "ipsec" else state.add_gre_tunnel
    add_many = state.add_tunnels if kind == "ipsec" else state.add_gre_tunnels
    try:
        if kind not in ("ipsec", "gre"):
            raise ValueError('kind must be "ipsec" or "gre"')
        if ids is not None:
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise ValueError("ids must be a list of strings")
            tunnels: list[Any] = [add_one(account_id, i) for i in ids]
        else:
            if not isinstance(count, int) or isinstance(count, bool):
                raise ValueError("count must be an integer")
            tunnels = list(add_many(account_id, count))
    except ValueError as exc:
        raise web.HTTPBadRequest(reason=str(exc)) from None
    answer = {"account_id": account_id, "kind": kind, "tunnel_ids": [t.id for t in tunnels]}
    return _answer(answer, 201)


async def _checkpoint(request: web.Request) -> web.Response:
    request.app[STATE_KEY].checkpoint()
    return _answer({"ok": True})


async def _restore(request: web.Request) -> web.Response:
    request.app[STATE_KEY].restore()
    return _answer({"ok": True})


async def _faults(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    if request.method == "POST":
        body = await _body(request)
        seed = body.pop("seed", None)
        try:
            if seed is not None and not isinstance(seed, int):
                raise ValueError("seed must be an integer")
            faults = Faults(**body)
        except (TypeError, ValueError) as exc:
            raise web.HTTPBadRequest(reason=str(exc)) from None
        state.set_faults(faults, seed=seed)
    return _answer({"faults": state.faults.to_dict(), "seed": state.fault_injector.seed})


async def _rate_limit(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    if request.method == "POST":
        body = await _body(request)
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
    return _answer({"limit": current[0], "window": current[1]} if current else {"limit": None})


#: Every admin route: method ("GET|POST": either), path under the prefix, handler, what it does.
_ROUTES: Final[tuple[tuple[str, str, _Handler, str], ...]] = (
    ("GET", "/state", _state, "the whole state: tunnels, PSKs, credentials, request counters"),
    ("POST", "/reset", _reset, "back to the state at start"),
    ("POST", "/tunnels", _add_tunnels, 'add tunnels: {"count": n} or {"ids": [...]}'),
    ("POST", "/checkpoint", _checkpoint, "remember every account's tunnels as they are"),
    ("POST", "/restore", _restore, "the tunnels as at the last checkpoint (or at start)"),
    ("GET|POST", "/faults", _faults, "read or replace the injected faults"),
    ("GET|POST", "/rate_limit", _rate_limit, 'read or set {"limit": n, "window": seconds}'),
)


async def _index(request: web.Request) -> web.Response:
    routes = [
        {"method": method, "path": ADMIN_PREFIX + path, "does": does}
        for method, path, _, does in _ROUTES
    ]
    return _answer({"routes": routes})


def add_admin_routes(router: web.UrlDispatcher) -> None:
    """Register the admin routes (the application must hold its state under STATE_KEY),
    and an index of them at the prefix itself (with or without its trailing slash)."""
    router.add_get(ADMIN_PREFIX, _index)
    router.add_get(ADMIN_PREFIX + "/", _index)
    for method, path, handler, _ in _ROUTES:
        router.add_route("*" if "|" in method else method, ADMIN_PREFIX + path, handler)
