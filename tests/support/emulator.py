"""Helpers for tests that talk to the emulator: a fake clock, the spec's schemas (as we read
them) and small HTTP helpers.

How we read the spec's failure schema (``responses["4XX"]``): as written it is
``allOf: [<the whole 200 schema>, <failure half>]``, which no document can satisfy (the 200 half
demands ``success: true``, the failure half ``success: false``). We validate failures against the
failure half only, translated from OpenAPI 3.0 to JSON Schema the way it evidently means:

* ``nullable: true`` allows null (``result`` is ``{"type": "object", "nullable": true,
  "enum": [null]}``: it must be null);
* ``minLength: 1`` on the ``errors`` array means ``minItems: 1`` (at least one error);
* ``minimum: 1000`` on error codes is dropped: Cloudflare's own rate-limit code is 971.

So a failure is ``{"success": false, "errors": [{"code": int, "message": str}, ...] (non-empty),
"messages": [...], "result": null}``. Successes are validated against the 200 schema as is
(``nullable``/``example`` are ignored by JSON Schema; its ``anyOf`` allows an object result).
"""

from __future__ import annotations

import copy
import json
import re
import secrets
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
from aiohttp import web

from magicwan.emulator import Emulator

SAMPLES = Path(__file__).parents[1] / "samples"
SPEC_COPY = SAMPLES / "emulator_psk_generate.openapi.json"
#: Where CI's clean clone finds the shared spec (beside the repo); the copy above is canonical.
SHARED_SPEC = Path(__file__).resolve().parents[2].parent / "shared" / "spec"

PSK_PATH = "/accounts/{account_identifier}/magic/ipsec_tunnels/{tunnel_identifier}/psk_generate"
PSK_RE = re.compile(r"[A-Za-z0-9]{32}")
TIMESTAMP_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
RAY_RE = re.compile(r"[0-9a-f]{16}-EMU")


def load_spec() -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(SPEC_COPY.read_text())
    return spec


def _responses(spec: dict[str, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = spec["paths"][PSK_PATH]["post"]["responses"]
    return responses


def success_schema(spec: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = _responses(spec)["200"]["content"]["application/json"]["schema"]
    return schema


def envelope_schema(spec: dict[str, Any]) -> dict[str, Any]:
    """The 200 schema's generic envelope part (for the GET endpoints' successes)."""
    return success_schema(spec)["allOf"][0]  # type: ignore[no-any-return]


def _translate(node: Any) -> Any:
    if isinstance(node, list):
        return [_translate(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _translate(value) for key, value in node.items()}
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if "minLength" in out and "string" not in str(out.get("type", "")):
        out["minItems"] = out.pop("minLength")
    return out


def failure_schema(spec: dict[str, Any]) -> dict[str, Any]:
    """The failure half of the 4XX schema, read as the module docstring explains."""
    whole = _responses(spec)["4XX"]["content"]["application/json"]["schema"]
    half = copy.deepcopy(whole["allOf"][1])
    for field in ("errors", "messages"):
        for part in half["properties"][field]["allOf"]:
            part["items"]["properties"]["code"].pop("minimum", None)
    return _translate(half)  # type: ignore[no-any-return]


SPEC = load_spec()
#: The bulk PSK set result as ARCH.md fixes it (and the official SDK's
#: ``IPSECTunnelPSKSetResponse`` reads it): two maps keyed by tunnel id.
PSK_SET_RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["successfully_applied_psks", "unapplied_psks"],
    "additionalProperties": False,
    "properties": {
        "successfully_applied_psks": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["ipsec_tunnel_id", "ipsec_id", "psk", "psk_metadata"],
                "additionalProperties": False,
                "properties": {
                    "ipsec_tunnel_id": {"type": "string", "maxLength": 32},
                    "ipsec_id": {"type": "string", "pattern": r"\.ipsec\.cloudflare\.com$"},
                    "psk": {"type": "string"},
                    "psk_metadata": {
                        "type": "object",
                        "required": ["last_generated_on"],
                        "additionalProperties": False,
                        "properties": {
                            "last_generated_on": {"type": "string", "pattern": TIMESTAMP_RE.pattern}
                        },
                    },
                },
            },
        },
        "unapplied_psks": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}

SUCCESS = jsonschema.Draft202012Validator(success_schema(SPEC))
ENVELOPE = jsonschema.Draft202012Validator(envelope_schema(SPEC))
FAILURE = jsonschema.Draft202012Validator(failure_schema(SPEC))
#: A bulk PSK set success: the spec's envelope around :data:`PSK_SET_RESULT_SCHEMA`.
PSK_SET = jsonschema.Draft202012Validator(
    {"allOf": [envelope_schema(SPEC), {"properties": {"result": PSK_SET_RESULT_SCHEMA}}]}
)


def psk_url(emu: Emulator, tunnel_id: str | None = None, account_id: str | None = None) -> str:
    tunnel = tunnel_id or emu.tunnel_ids[0]
    account = account_id or emu.account_id
    return f"{emu.base_url}/accounts/{account}/magic/ipsec_tunnels/{tunnel}/psk_generate"


def tunnels_url(emu: Emulator, account_id: str | None = None) -> str:
    return f"{emu.base_url}/accounts/{account_id or emu.account_id}/magic/ipsec_tunnels"


def psk_set_url(emu: Emulator, account_id: str | None = None) -> str:
    return f"{tunnels_url(emu, account_id)}/psk"


def gre_url(emu: Emulator, tunnel_id: str | None = None, account_id: str | None = None) -> str:
    url = f"{emu.base_url}/accounts/{account_id or emu.account_id}/magic/gre_tunnels"
    return url if tunnel_id is None else f"{url}/{tunnel_id}"


def token_headers(emu: Emulator) -> dict[str, str]:
    return {"Authorization": f"Bearer {emu.api_token}"}


def key_headers(emu: Emulator) -> dict[str, str]:
    return {"X-Auth-Email": emu.api_email, "X-Auth-Key": emu.api_key}


async def call(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any, Any]:
    """One request: (status, headers, parsed JSON body)."""
    async with session.request(method, url, **kwargs) as resp:
        return resp.status, resp.headers, await resp.json(content_type=None)


async def generate(
    session: aiohttp.ClientSession, emu: Emulator, tunnel_id: str | None = None, **kwargs: Any
) -> tuple[int, Any, Any]:
    kwargs.setdefault("headers", token_headers(emu))
    kwargs.setdefault("json", {})
    return await call(session, "POST", psk_url(emu, tunnel_id), **kwargs)


def assert_failure(body: Any, code: int, message: str | None = None) -> None:
    FAILURE.validate(body)
    assert body["errors"][0]["code"] == code, body
    if message is not None:
        assert body["errors"][0]["message"] == message, body


async def set_psks(
    session: aiohttp.ClientSession, emu: Emulator, psks: Any, **kwargs: Any
) -> tuple[int, Any, Any]:
    """``POST .../ipsec_tunnels/psk`` with ``{"psks": psks}`` (unless ``json``/``data`` given)."""
    kwargs.setdefault("headers", token_headers(emu))
    if "data" not in kwargs:
        kwargs.setdefault("json", {"psks": psks})
    return await call(session, "POST", psk_set_url(emu), **kwargs)


def a_psk(label: str = "") -> str:
    """A fresh, valid PSK to set (32 URL-safe characters, with ``label`` in front)."""
    return (label + secrets.token_urlsafe(24))[:32]


@web.middleware
async def drops_the_query(request: web.Request, handler: Any) -> web.StreamResponse:
    """A gateway that normalises URLs by dropping their query string (or a server version that
    ignores an unknown parameter): ?validate_only=true never reaches the emulator, which then
    applies the request."""
    response: web.StreamResponse = await handler(
        request.clone(rel_url=request.rel_url.with_query(None))
    )
    return response
