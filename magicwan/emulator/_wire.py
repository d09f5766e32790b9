"""What the emulator puts on the wire: its errors, Cloudflare's envelope, the proxy's 502 page."""

from __future__ import annotations

import json
from typing import Any, Final

import attrs
from aiohttp import web

__all__ = [
    "ADMIN_PREFIX",
    "API_PREFIX",
    "ERROR_CODES",
    "HTML_502_PAGE",
    "APIError",
    "dumps",
    "failure_body",
    "json_response",
    "success",
]

API_PREFIX: Final = "/client/v4"
ADMIN_PREFIX: Final = "/__emulator__"

#: Every error the emulator answers with: name -> (HTTP status, Cloudflare code, message).
#: A message may hold ``{fields}`` that :meth:`APIError.of` fills in (never with a secret).
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
    "unknown_gre_tunnel": (404, 1002, "gre_tunnel not found"),
    "bad_content_type": (400, 1001, "Content-Type must be application/json"),
    "bad_body": (400, 1001, "Request body must be a JSON object"),
    "bad_validate_only": (400, 1003, "validate_only must be true or false"),
    "bad_psk_set": (400, 1004, "{reason}"),
    "too_many_psks": (400, 1005, "too many psks in one request (max {max})"),
    "missing_field": (400, 1006, "{field} is required"),
    "invalid_field": (400, 1007, "{field} {reason}"),
    "duplicate_name": (400, 1008, "a tunnel named {tunnel_name!r} already exists in this account"),
    "rate_limited": (429, 971, "Please wait and consider throttling your request speed"),
    "server_error": (500, 10001, "Internal server error"),
}

#: The page a Cloudflare proxy answers with when the origin fails (the ``html_502`` fault).
HTML_502_PAGE: Final = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
    b"</body>\r\n</html>\r\n"
)

_JSON: Final = "application/json"
_SUCCESS_TAIL: Final = ',"success":true,"errors":[],"messages":[]}'


def dumps(data: Any) -> str:
    """Compact JSON."""
    return json.dumps(data, separators=(",", ":"))


def json_response(status: int, body: bytes) -> web.Response:
    """A response with an ``application/json`` body."""
    return web.Response(body=body, status=status, content_type=_JSON)


def success(result_json: str) -> web.Response:
    """A 200 success envelope around an already serialized ``result``."""
    return json_response(200, ('{"result":' + result_json + _SUCCESS_TAIL).encode())


def failure_body(code: int, message: str) -> bytes:
    """A failure envelope with one error."""
    return dumps(
        {
            "success": False,
            "errors": [{"code": code, "message": message}],
            "messages": [],
            "result": None,
        }
    ).encode()


@attrs.frozen
class APIError(Exception):
    """Raised by the pipeline and the endpoints; becomes a failure envelope."""

    status: int
    code: int
    message: str

    @classmethod
    def of(cls, name: str, **fields: object) -> APIError:
        """The error ``name`` of :data:`ERROR_CODES`, its message filled with ``fields``."""
        status, code, message = ERROR_CODES[name]
        return cls(status, code, message.format(**fields) if fields else message)

    def response(self) -> web.Response:
        """The failure envelope."""
        return json_response(self.status, failure_body(self.code, self.message))
