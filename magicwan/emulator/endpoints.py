"""Cloudflare's routes as the emulator serves them, one function per endpoint.

An endpoint runs in two steps, so the pipeline can put a fault between them: the coroutine
reads and checks the request (raising :class:`APIError` for a bad one) and returns an
:data:`Apply`, a plain function that makes the change (if any) and builds the answer. Nothing
changes before ``Apply`` runs.

* ``POST /accounts/{account_id}/magic/ipsec_tunnels/{tunnel_id}/psk_generate``
  (``psk_generate``): a fresh PSK; result ``ipsec_tunnel_id``, ``psk``, ``psk_metadata``,
  ``ipsec_id``. ``?validate_only=true`` changes nothing and leaves ``psk`` out.
* ``POST /accounts/{account_id}/magic/ipsec_tunnels/psk`` (``psk_set``): body
  ``{"psks": [{"id": tunnel_id, "psk": psk}, ...]}``; result ``successfully_applied_psks``
  (tunnel id -> ``ipsec_tunnel_id``, ``ipsec_id``, ``psk``, ``psk_metadata``) and
  ``unapplied_psks`` (tunnel id -> reason). A tunnel the account does not have, and an id given
  more than once (none of its PSKs is applied), are unapplied; a malformed body or a PSK outside
  the bounds is a 400 (code 1004) for the whole request; more entries than
  ``state.max_psk_batch`` a 400 (code 1005). ``?validate_only=true`` applies nothing and
  answers what would be applied.
* ``GET .../ipsec_tunnels`` (``list_ipsec_tunnels``) and ``GET .../ipsec_tunnels/{tunnel_id}``
  (``get_ipsec_tunnel``): result ``{"ipsec_tunnels": [...]}`` / ``{"ipsec_tunnel": {...}}``,
  never a PSK; unknown tunnel: 404, code 1002.
* ``GET .../gre_tunnels`` (``list_gre_tunnels``) and ``GET .../gre_tunnels/{tunnel_id}``
  (``get_gre_tunnel``): result ``{"gre_tunnels": [...]}`` / ``{"gre_tunnel": {...}}``; unknown
  tunnel: 404, code 1002 ("gre_tunnel not found").
"""

from __future__ import annotations

import collections
import json
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from magicwan.emulator._wire import APIError, dumps, success
from magicwan.emulator.models import Account, GreTunnel, Tunnel, format_timestamp
from magicwan.emulator.state import EmulatorState

__all__ = ["ENDPOINTS", "ROUTES", "Apply", "Endpoint"]

#: Makes the change (if any) and builds the answer; called by the pipeline, maybe later.
Apply = Callable[[], web.Response]
#: Reads and checks a request for an account the caller may use; returns its Apply.
Endpoint = Callable[[web.Request, EmulatorState, Account], Awaitable[Apply]]

_JSON: Final = "application/json"
_DUPLICATE: Final = "duplicate tunnel id in this request: none of its PSKs was applied"
_NOT_FOUND: Final = "ipsec_tunnel not found"


def _ipsec_tunnel(request: web.Request, account: Account) -> Tunnel:
    tunnel = account.tunnels.get(request.match_info["tunnel_id"])
    if tunnel is None:
        raise APIError.of("unknown_tunnel")
    return tunnel


def _gre_tunnel(request: web.Request, account: Account) -> GreTunnel:
    tunnel = account.gre_tunnels.get(request.match_info["tunnel_id"])
    if tunnel is None:
        raise APIError.of("unknown_gre_tunnel")
    return tunnel


def _validate_only(request: web.Request) -> bool:
    values = request.query.getall("validate_only", [])
    if not values:
        return False
    if len(values) == 1 and values[0] in ("true", "false"):
        return values[0] == "true"
    raise APIError.of("bad_validate_only")


async def _json_object(request: web.Request) -> dict[str, Any] | None:
    """The body as a JSON object; None if it is not one. APIError for a wrong content type."""
    if request.content_type != _JSON:
        raise APIError.of("bad_content_type")
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return body if isinstance(body, dict) else None


async def psk_generate(request: web.Request, state: EmulatorState, account: Account) -> Apply:
    tunnel = _ipsec_tunnel(request, account)
    validate_only = _validate_only(request)
    if await _json_object(request) is None:
        raise APIError.of("bad_body")

    def apply() -> web.Response:
        result: dict[str, Any] = {"ipsec_tunnel_id": tunnel.id}
        if validate_only:
            metadata = tunnel.psk_metadata()
            if metadata is not None:
                result["psk_metadata"] = metadata
        else:
            record = state.generate_psk(tunnel)
            result["psk"] = record.psk
            result["psk_metadata"] = tunnel.psk_metadata()
        result["ipsec_id"] = tunnel.ipsec_id
        return success(dumps(result))

    return apply


def _bad(reason: str) -> APIError:
    return APIError.of("bad_psk_set", reason=reason)


async def psk_set(request: web.Request, state: EmulatorState, account: Account) -> Apply:
    validate_only = _validate_only(request)
    try:
        body = await _json_object(request)
    except APIError as exc:
        raise _bad(exc.message) from None
    psks = body.get("psks") if body is not None else None
    if not isinstance(psks, list):
        raise _bad('the body must be {"psks": [{"id": tunnel_id, "psk": psk}, ...]}')
    if not psks:
        raise _bad("psks must hold at least one entry")
    if len(psks) > state.max_psk_batch:
        raise APIError.of("too_many_psks", max=state.max_psk_batch)
    entries: list[tuple[str, str]] = []
    for index, entry in enumerate(psks):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise _bad(f'psks[{index}] must be an object with a string "id" and "psk"')
        problem = state.psk_problem(entry.get("psk"))
        if problem is not None:
            raise _bad(f"psks[{index}].psk: {problem}")
        entries.append((entry["id"], entry["psk"]))

    seen = collections.Counter(tunnel_id for tunnel_id, _ in entries)
    plan: list[tuple[Tunnel, str]] = []
    unapplied: dict[str, str] = {}
    for tunnel_id, psk in entries:
        tunnel = account.tunnels.get(tunnel_id)
        if seen[tunnel_id] > 1:
            unapplied[tunnel_id] = _DUPLICATE
        elif tunnel is None:
            unapplied[tunnel_id] = _NOT_FOUND
        else:
            plan.append((tunnel, psk))

    def apply() -> web.Response:
        applied: dict[str, Any] = {}
        for tunnel, psk in plan:
            if validate_only:
                when = state.next_generated_on(tunnel)
            else:
                when = state.set_psk(tunnel, psk).generated_on
            applied[tunnel.id] = {
                "ipsec_tunnel_id": tunnel.id,
                "ipsec_id": tunnel.ipsec_id,
                "psk": psk,
                "psk_metadata": {"last_generated_on": format_timestamp(when)},
            }
        return success(dumps({"successfully_applied_psks": applied, "unapplied_psks": unapplied}))

    return apply


async def list_ipsec_tunnels(request: web.Request, state: EmulatorState, account: Account) -> Apply:
    def apply() -> web.Response:
        items = ",".join(t.api_json() for t in account.tunnels.values())
        return success('{"ipsec_tunnels":[' + items + "]}")

    return apply


async def get_ipsec_tunnel(request: web.Request, state: EmulatorState, account: Account) -> Apply:
    tunnel = _ipsec_tunnel(request, account)
    return lambda: success('{"ipsec_tunnel":' + tunnel.api_json() + "}")


async def list_gre_tunnels(request: web.Request, state: EmulatorState, account: Account) -> Apply:
    def apply() -> web.Response:
        items = ",".join(t.api_json() for t in account.gre_tunnels.values())
        return success('{"gre_tunnels":[' + items + "]}")

    return apply


async def get_gre_tunnel(request: web.Request, state: EmulatorState, account: Account) -> Apply:
    tunnel = _gre_tunnel(request, account)
    return lambda: success('{"gre_tunnel":' + tunnel.api_json() + "}")


_ACCOUNT: Final = "/accounts/{account_id}/magic"

#: (method, path under the API prefix, route name), in the order the router tries them.
ROUTES: Final[tuple[tuple[str, str, str], ...]] = (
    ("POST", _ACCOUNT + "/ipsec_tunnels/psk", "psk_set"),
    ("POST", _ACCOUNT + "/ipsec_tunnels/{tunnel_id}/psk_generate", "psk_generate"),
    ("GET", _ACCOUNT + "/ipsec_tunnels", "list_ipsec_tunnels"),
    ("GET", _ACCOUNT + "/ipsec_tunnels/{tunnel_id}", "get_ipsec_tunnel"),
    ("GET", _ACCOUNT + "/gre_tunnels", "list_gre_tunnels"),
    ("GET", _ACCOUNT + "/gre_tunnels/{tunnel_id}", "get_gre_tunnel"),
)

#: Route name -> endpoint.
ENDPOINTS: Final[dict[str, Endpoint]] = {
    "psk_set": psk_set,
    "psk_generate": psk_generate,
    "list_ipsec_tunnels": list_ipsec_tunnels,
    "get_ipsec_tunnel": get_ipsec_tunnel,
    "list_gre_tunnels": list_gre_tunnels,
    "get_gre_tunnel": get_gre_tunnel,
}
