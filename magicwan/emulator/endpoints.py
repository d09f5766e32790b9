"""Cloudflare's routes as the emulator serves them: one function per endpoint, and
:data:`ROUTES`, the one table that gives each its method, path and name.

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
* ``POST .../ipsec_tunnels`` (``create_ipsec_tunnel``), ``PUT .../ipsec_tunnels/{tunnel_id}``
  (``update_ipsec_tunnel``), ``DELETE .../ipsec_tunnels/{tunnel_id}`` (``delete_ipsec_tunnel``)
  and the same three for ``gre_tunnels``: body one tunnel's fields, checked as
  :mod:`magicwan.emulator.rules` says (a required field missing: 400, code 1006; a field
  refused: 400, code 1007; a name another tunnel has: 400, code 1008); result the tunnel
  (create), ``{"modified": true, "modified_ipsec_tunnel": {...}}`` (update; the fields given
  replace the tunnel's, the others stay), ``{"deleted": true, "deleted_ipsec_tunnel": {...}}``
  (delete). A ``psk`` given to an IPsec create or update is set like a bulk set's.
  ``?validate_only=true`` checks and answers without changing anything (``modified`` /
  ``deleted`` false, a create's tunnel not kept).
* ``PUT .../ipsec_tunnels`` (``bulk_update_ipsec_tunnels``) and ``PUT .../gre_tunnels``: body a
  list of tunnels, each with its ``id`` and the fields of an update (or ``{"ipsec_tunnels":
  [...]}``); all are checked before any changes (an unknown id: 404, code 1002); result
  ``{"modified": true, "modified_ipsec_tunnels": [...]}``.

Every tunnel answer gives ``health_check.target`` as a string (the target in effect), or as
``{"effective": ..., "saved": ...}`` when the request carries ``x-magic-new-hc-target: true``.
``psk_generate`` reads a zero-byte ``application/json`` body as ``{}`` (the official SDK sends
one since 5.7.0; Cloudflare's spec marks the body required, but an empty body asks for nothing
else than ``{}`` does); malformed JSON, a JSON value other than an object and another content
type are still 400, code 1001.
"""

from __future__ import annotations

import collections
import copy
import json
from collections.abc import Awaitable, Callable
from typing import Any, Final

import attrs
from aiohttp import web

from magicwan.emulator._wire import APIError, dumps, success
from magicwan.emulator.models import Account, GreTunnel, Tunnel, format_timestamp
from magicwan.emulator.rules import MissingField, TunnelProblem, check_gre, check_ipsec
from magicwan.emulator.state import EmulatorState, TunnelKind

__all__ = ["ROUTES", "Apply", "Endpoint", "Route"]

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


def _new_hc_target(request: web.Request) -> bool:
    return request.headers.get("x-magic-new-hc-target", "").strip().lower() == "true"


async def _json_object(request: web.Request, *, empty: bool = False) -> dict[str, Any] | None:
    """The body as a JSON object; None if it is not one (a zero-byte body is ``{}`` when
    ``empty``). APIError for a wrong content type."""
    if request.content_type != _JSON:
        raise APIError.of("bad_content_type")
    raw = await request.read()
    if empty and not raw:
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return body if isinstance(body, dict) else None


async def psk_generate(request: web.Request, state: EmulatorState, account: Account) -> Apply:
    tunnel = _ipsec_tunnel(request, account)
    validate_only = _validate_only(request)
    if await _json_object(request, empty=True) is None:
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
    new = _new_hc_target(request)

    def apply() -> web.Response:
        items = ",".join(t.api_json(new_hc_target=new) for t in account.tunnels.values())
        return success('{"ipsec_tunnels":[' + items + "]}")

    return apply


async def get_ipsec_tunnel(request: web.Request, state: EmulatorState, account: Account) -> Apply:
    tunnel = _ipsec_tunnel(request, account)
    new = _new_hc_target(request)
    return lambda: success('{"ipsec_tunnel":' + tunnel.api_json(new_hc_target=new) + "}")


async def list_gre_tunnels(request: web.Request, state: EmulatorState, account: Account) -> Apply:
    new = _new_hc_target(request)

    def apply() -> web.Response:
        items = ",".join(t.api_json(new_hc_target=new) for t in account.gre_tunnels.values())
        return success('{"gre_tunnels":[' + items + "]}")

    return apply


async def get_gre_tunnel(request: web.Request, state: EmulatorState, account: Account) -> Apply:
    tunnel = _gre_tunnel(request, account)
    new = _new_hc_target(request)
    return lambda: success('{"gre_tunnel":' + tunnel.api_json(new_hc_target=new) + "}")


# -- create, update, delete ------------------------------------------------------------------


def _check(
    body: dict[str, Any],
    request: web.Request,
    state: EmulatorState,
    account: Account,
    kind: TunnelKind,
) -> dict[str, Any]:
    new = _new_hc_target(request)
    try:
        if kind == "ipsec":
            return check_ipsec(
                body,
                account_id=account.id,
                rules=state.tunnel_rules,
                new_hc_target=new,
                psk_problem=state.psk_problem,
            )
        return check_gre(body, rules=state.tunnel_rules, new_hc_target=new)
    except MissingField as exc:
        raise APIError.of("missing_field", field=exc.field) from None
    except TunnelProblem as exc:
        raise APIError.of("invalid_field", field=exc.field, reason=exc.reason) from None


async def _checked(
    request: web.Request, state: EmulatorState, account: Account, kind: TunnelKind
) -> dict[str, Any]:
    body = await _json_object(request)
    if body is None:
        raise APIError.of("bad_body")
    return _check(body, request, state, account, kind)


def _name_problem(
    state: EmulatorState,
    account: Account,
    fields: dict[str, Any],
    kind: TunnelKind,
    except_id: str | None = None,
) -> APIError | None:
    name = fields.get("name")
    if name is not None and state.name_taken(account, name, kind, except_id):
        return APIError.of("duplicate_name", tunnel_name=name)
    return None


def _tunnel_of(account: Account, kind: TunnelKind, tunnel_id: str) -> Tunnel | GreTunnel | None:
    return (account.tunnels if kind == "ipsec" else account.gre_tunnels).get(tunnel_id)


def _lookup(request: web.Request, account: Account, kind: TunnelKind) -> Tunnel | GreTunnel:
    return _ipsec_tunnel(request, account) if kind == "ipsec" else _gre_tunnel(request, account)


def _gone(kind: TunnelKind) -> web.Response:
    return APIError.of("unknown_tunnel" if kind == "ipsec" else "unknown_gre_tunnel").response()


def _create(kind: TunnelKind) -> Endpoint:
    async def create(request: web.Request, state: EmulatorState, account: Account) -> Apply:
        validate_only = _validate_only(request)
        fields = await _checked(request, state, account, kind)
        problem = _name_problem(state, account, fields, kind)
        if problem is not None:
            raise problem
        new = _new_hc_target(request)

        def apply() -> web.Response:
            late = _name_problem(state, account, fields, kind)  # another create came first
            if late is not None:
                return late.response()
            store = not validate_only
            if kind == "ipsec":
                tunnel: Tunnel | GreTunnel = state.create_tunnel(account, fields, store=store)
            else:
                tunnel = state.create_gre_tunnel(account, fields, store=store)
            return success(tunnel.api_json(new_hc_target=new))

        return apply

    return create


def _update(kind: TunnelKind) -> Endpoint:
    async def update(request: web.Request, state: EmulatorState, account: Account) -> Apply:
        tunnel_id = _lookup(request, account, kind).id
        validate_only = _validate_only(request)
        fields = await _checked(request, state, account, kind)
        problem = _name_problem(state, account, fields, kind, tunnel_id)
        if problem is not None:
            raise problem
        new = _new_hc_target(request)

        def apply() -> web.Response:
            tunnel = _tunnel_of(account, kind, tunnel_id)
            if tunnel is None:  # deleted in the meantime
                return _gone(kind)
            late = _name_problem(state, account, fields, kind, tunnel_id)
            if late is not None:
                return late.response()
            if validate_only:
                tunnel = copy.deepcopy(tunnel)
                state.update_tunnel(tunnel, {k: v for k, v in fields.items() if k != "psk"})
            else:
                state.update_tunnel(tunnel, fields)
            return success(
                f'{{"modified":{_flag(not validate_only)},"modified_{kind}_tunnel":'
                + tunnel.api_json(new_hc_target=new)
                + "}"
            )

        return apply

    return update


def _delete(kind: TunnelKind) -> Endpoint:
    async def delete(request: web.Request, state: EmulatorState, account: Account) -> Apply:
        tunnel_id = _lookup(request, account, kind).id
        validate_only = _validate_only(request)
        new = _new_hc_target(request)

        def apply() -> web.Response:
            tunnel = _tunnel_of(account, kind, tunnel_id)
            if tunnel is None:  # deleted in the meantime
                return _gone(kind)
            if not validate_only:
                state.delete_tunnel(account, tunnel)
            return success(
                f'{{"deleted":{_flag(not validate_only)},"deleted_{kind}_tunnel":'
                + tunnel.api_json(new_hc_target=new)
                + "}"
            )

        return apply

    return delete


def _bulk_entries(body: Any, kind: TunnelKind) -> list[Any]:
    entries = body.get(f"{kind}_tunnels") if isinstance(body, dict) else body
    if not isinstance(entries, list) or not entries:
        raise APIError.of(
            "invalid_field",
            field="body",
            reason=f'must be a non-empty list of tunnels (or {{"{kind}_tunnels": [...]}})',
        )
    return entries


def _bulk_update(kind: TunnelKind) -> Endpoint:
    async def bulk_update(request: web.Request, state: EmulatorState, account: Account) -> Apply:
        validate_only = _validate_only(request)
        if request.content_type != _JSON:
            raise APIError.of("bad_content_type")
        try:
            body = json.loads(await request.read())
        except (ValueError, RecursionError):
            raise APIError.of("bad_body") from None
        plan: list[tuple[str, dict[str, Any]]] = []
        names: dict[str, str] = {}
        for index, entry in enumerate(_bulk_entries(body, kind)):
            tunnel_id = entry.get("id") if isinstance(entry, dict) else None
            if not isinstance(tunnel_id, str):
                raise APIError.of("missing_field", field=f"[{index}].id")
            if _tunnel_of(account, kind, tunnel_id) is None:
                raise _lookup_error(kind)
            if any(tunnel_id == done for done, _ in plan):
                raise APIError.of("invalid_field", field=f"[{index}].id", reason="is given twice")
            fields = _check(entry, request, state, account, kind)
            name = fields["name"]
            problem = _name_problem(state, account, fields, kind, tunnel_id)
            if problem is None and names.get(name, tunnel_id) != tunnel_id:
                problem = APIError.of("duplicate_name", tunnel_name=name)
            if problem is not None:
                raise problem
            names[name] = tunnel_id
            plan.append((tunnel_id, fields))
        new = _new_hc_target(request)

        def apply() -> web.Response:
            items = []
            for tunnel_id, fields in plan:
                tunnel = _tunnel_of(account, kind, tunnel_id)
                if tunnel is None:  # deleted in the meantime
                    return _gone(kind)
                if validate_only:
                    tunnel = copy.deepcopy(tunnel)
                    fields = {k: v for k, v in fields.items() if k != "psk"}
                state.update_tunnel(tunnel, fields)
                items.append(tunnel.api_json(new_hc_target=new))
            return success(
                f'{{"modified":{_flag(not validate_only)},"modified_{kind}_tunnels":['
                + ",".join(items)
                + "]}"
            )

        return apply

    return bulk_update


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _lookup_error(kind: TunnelKind) -> APIError:
    return APIError.of("unknown_tunnel" if kind == "ipsec" else "unknown_gre_tunnel")


_IPSEC: Final = "/accounts/{account_id}/magic/ipsec_tunnels"
_GRE: Final = "/accounts/{account_id}/magic/gre_tunnels"


@attrs.frozen
class Route:
    """One of Cloudflare's endpoints as the emulator serves it, declared once."""

    method: str
    #: The path template under the API prefix (``{account_id}``, ``{tunnel_id}``).
    path: str
    #: The route's name: requests and faults are counted by it (``RequestCounters.by_route``).
    name: str
    endpoint: Endpoint


#: Every endpoint, in the order the router tries them.
ROUTES: Final[tuple[Route, ...]] = (
    Route("POST", _IPSEC + "/psk", "psk_set", psk_set),
    Route("POST", _IPSEC + "/{tunnel_id}/psk_generate", "psk_generate", psk_generate),
    Route("GET", _IPSEC, "list_ipsec_tunnels", list_ipsec_tunnels),
    Route("GET", _IPSEC + "/{tunnel_id}", "get_ipsec_tunnel", get_ipsec_tunnel),
    Route("GET", _GRE, "list_gre_tunnels", list_gre_tunnels),
    Route("GET", _GRE + "/{tunnel_id}", "get_gre_tunnel", get_gre_tunnel),
    Route("POST", _IPSEC, "create_ipsec_tunnel", _create("ipsec")),
    Route("PUT", _IPSEC, "bulk_update_ipsec_tunnels", _bulk_update("ipsec")),
    Route("PUT", _IPSEC + "/{tunnel_id}", "update_ipsec_tunnel", _update("ipsec")),
    Route("DELETE", _IPSEC + "/{tunnel_id}", "delete_ipsec_tunnel", _delete("ipsec")),
    Route("POST", _GRE, "create_gre_tunnel", _create("gre")),
    Route("PUT", _GRE, "bulk_update_gre_tunnels", _bulk_update("gre")),
    Route("PUT", _GRE + "/{tunnel_id}", "update_gre_tunnel", _update("gre")),
    Route("DELETE", _GRE + "/{tunnel_id}", "delete_gre_tunnel", _delete("gre")),
)
