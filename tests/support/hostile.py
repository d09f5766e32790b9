"""A hostile server for tests/hostile/: every way an HTTP server can misbehave, on 127.0.0.1.

The server's first path segment picks a misbehaviour (``{root}/{scenario}/client/v4/...``); a
second server, the *witness*, records every request it gets (a redirect target that must never be
contacted); a raw TCP server answers with bytes that are not valid HTTP at all. Every answer that
can carries the secrets of :mod:`tests.support.secrets`, so a client that echoes one is caught.

``async with hostile_server() as server:`` runs all three; ``server.scenarios`` lists the
misbehaviours and ``RAW_SCENARIOS`` the raw ones, so tests can check that each one is covered.

Some scenarios answer *well* apart from one detail, and answer for the tunnel in the path with
its own PSK (:func:`hostile_psk`), so a whole rotation can run against them:
``UNREADABLE_RATELIMIT`` (rate-limit headers that cannot be parsed), ``ODD_STAMPS`` (a
``last_generated_on`` in an odd form), ``RETRY_AFTER_ONCE`` (a far-future 429 first, then
valid answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
from aiohttp import web

from magicwan._http import MAX_RESPONSE_BYTES  # private: answers sized against the body cap
from tests.support.constants import TUNNEL
from tests.support.secrets import HOSTILE_PSK, SECRET_KEY, SECRET_TOKEN

__all__ = [
    "ENORMOUS_RETRY_AFTER",
    "FAR_RETRY_AFTER",
    "FAR_RETRY_AFTER_DATE",
    "ODD_STAMPS",
    "RAW_SCENARIOS",
    "RETRY_AFTER_ONCE",
    "UNREADABLE_RATELIMIT",
    "HostileServer",
    "Seen",
    "hostile_psk",
    "hostile_server",
]

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: A ``Retry-After`` beyond any sane cap (the ``retry_after_enormous`` scenario sends it).
ENORMOUS_RETRY_AFTER = "99999999999999999999999"
#: Far-future ``Retry-After`` values a broken server sends: 31 years in
#: seconds, and the last date HTTP can write.
FAR_RETRY_AFTER = "999999999"
FAR_RETRY_AFTER_DATE = "Fri, 31 Dec 9999 23:59:59 GMT"

_HUGE = "9" * 400  # a number no float holds: float() makes it inf, int(inf) raises

#: Scenarios answering a valid PSK (the tunnel's own, see :func:`hostile_psk`) with
#: rate-limit headers that cannot be read: scenario -> the headers.
UNREADABLE_RATELIMIT: dict[str, dict[str, str]] = {
    "ratelimit_policy_zero_window": {
        "Ratelimit": '"default";r=50;t=30',
        "Ratelimit-Policy": '"default";q=1200;w=0',
    },
    "ratelimit_huge_numbers": {
        "Ratelimit": f'"default";r={_HUGE};t={_HUGE}',
        "Ratelimit-Policy": f'"default";q={_HUGE};w={_HUGE}',
    },
    "ratelimit_huge_policy": {
        "Ratelimit": '"default";r=50;t=30',
        "Ratelimit-Policy": f'"default";q={_HUGE};w=300',
    },
    "ratelimit_junk": {
        "Ratelimit": 'r=;t=soon,, "default";r=-1;t=x; r = ; ;;',
        "Ratelimit-Policy": 'q=w=;"default";q=1e3;w=.',
    },
}

#: Scenarios answering a valid PSK whose ``last_generated_on`` is in an odd form: scenario ->
#: the stamp as sent. Only the first is RFC 3339 (lowercase ``t``/``z``).
ODD_STAMPS: dict[str, object] = {
    "stamp_lowercase": "2024-01-01t00:00:00.123456z",
    "stamp_go_string": "2024-01-01 00:00:00.123456789 +0000 UTC",
    "stamp_epoch_number": 1704067200,
    "stamp_epoch_string": "1704067200",
}

#: Scenarios answering their first request with a 429 and this ``Retry-After``, and every
#: later one with a valid PSK: scenario -> Retry-After.
RETRY_AFTER_ONCE: dict[str, str] = {
    "rate_limited_once_seconds": FAR_RETRY_AFTER,
    "rate_limited_once_date": FAR_RETRY_AFTER_DATE,
}


def hostile_psk(tunnel_id: str) -> str:
    """The PSK the per-tunnel scenarios give ``tunnel_id``: ``HOSTILE_PSK`` plus the id's head,
    so each tunnel's differs and every leak check for ``HOSTILE_PSK`` still catches it."""
    return HOSTILE_PSK + tunnel_id[:8]


def _tunnel_of(request: web.Request) -> str:
    # /{scenario}/client/v4/accounts/{account}/magic/ipsec_tunnels/{tunnel}/psk_generate
    parts = request.path.split("/")
    return parts[8] if len(parts) > 8 else TUNNEL


@attrs.define
class Seen:
    method: str
    path: str
    headers: dict[str, str]


def _envelope(
    result: Any = None,
    *,
    success: Any = True,
    errors: Any = (),
    extra: dict[str, Any] | None = None,
) -> bytes:
    data: dict[str, Any] = {"result": result, "success": success, "errors": list(errors)}
    data["messages"] = []
    data.update(extra or {})
    return json.dumps(data).encode()


def _psk_result(**over: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "ipsec_tunnel_id": TUNNEL,
        "psk": HOSTILE_PSK,
        "psk_metadata": {"last_generated_on": "2024-01-01T00:00:00Z"},
    }
    result.update(over)
    return result


def _json(body: bytes, status: int = 200, **headers: str) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


# A failure envelope whose message echoes every secret the server could know.
_ECHO = (
    f'echo: Authorization: Bearer {SECRET_TOKEN} X-Auth-Key: {SECRET_KEY} {{"psk":"{HOSTILE_PSK}"}}'
)


def _error(status: int, code: int = 1000, **headers: str) -> web.Response:
    return _json(
        _envelope(None, success=False, errors=[{"code": code, "message": _ECHO}]), status, **headers
    )


async def _huge_chunked(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    await resp.write(b'{"result":{"psk":"' + HOSTILE_PSK.encode() + b'","pad":"')
    chunk = b"x" * 65536
    with contextlib.suppress(ConnectionError):
        for _ in range(MAX_RESPONSE_BYTES // len(chunk) + 4):
            await resp.write(chunk)
        await resp.write_eof()
    return resp


async def _slowloris(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    with contextlib.suppress(ConnectionError):
        await resp.write(b'{"result":{"psk":"' + HOSTILE_PSK.encode())
        while True:
            await asyncio.sleep(0.2)
            await resp.write(b" ")
    return resp


async def _never_starts(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(3600)
    raise AssertionError("unreachable")


def _scenarios(
    witness_url: str,
) -> dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    def fixed(response: Callable[[], web.StreamResponse]) -> _Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            await request.read()
            return response()

        return handler

    pad = b" " * (MAX_RESPONSE_BYTES + 1)
    huge = _envelope(_psk_result())[:-1] + b', "pad": "' + pad + b'"}'
    table: dict[str, _Handler] = {
        "ok": fixed(lambda: _json(_envelope(_psk_result()))),
        "huge_length": fixed(lambda: _json(huge)),
        "huge_chunked": _huge_chunked,
        "nested_open": fixed(lambda: _json(b"[" * 100_000)),
        "nested_balanced": fixed(lambda: _json(b"[" * 100_000 + b"]" * 100_000)),
        "nested_objects": fixed(lambda: _json(b'{"a":' * 100_000 + b"1" + b"}" * 100_000)),
        "nested_result": fixed(
            lambda: _json(b'{"success":true,"errors":[],"messages":[],"result":' + b"[" * 50_000)
        ),
        "type_list": fixed(lambda: _json(json.dumps([_psk_result()]).encode())),
        "type_string": fixed(lambda: _json(json.dumps(f'{{"psk":"{HOSTILE_PSK}"}}').encode())),
        "type_number": fixed(lambda: _json(b"1e999")),
        "type_null": fixed(lambda: _json(b"null")),
        "success_missing": fixed(
            lambda: _json(
                json.dumps({"result": _psk_result(), "errors": [], "messages": []}).encode()
            )
        ),
        "success_string": fixed(lambda: _json(_envelope(_psk_result(), success="true"))),
        "success_false_2xx": fixed(
            lambda: _json(
                _envelope(_psk_result(), success=False, errors=[{"code": 7, "message": _ECHO}])
            )
        ),
        "errors_not_list": fixed(
            lambda: _json(_envelope(_psk_result(), errors=(), extra={"errors": _ECHO}))
        ),
        "result_list": fixed(lambda: _json(_envelope([_psk_result()]))),
        "result_null": fixed(lambda: _json(_envelope(None))),
        "result_string": fixed(lambda: _json(_envelope(HOSTILE_PSK))),
        "psk_int": fixed(lambda: _json(_envelope(_psk_result(psk=12345678901234567890)))),
        "psk_empty": fixed(lambda: _json(_envelope(_psk_result(psk="")))),
        "psk_metadata_string": fixed(
            lambda: _json(_envelope(_psk_result(psk_metadata="yesterday")))
        ),
        "psk_metadata_bad_date": fixed(
            lambda: _json(_envelope(_psk_result(psk_metadata={"last_generated_on": HOSTILE_PSK})))
        ),
        "tunnel_id_int": fixed(lambda: _json(_envelope(_psk_result(ipsec_tunnel_id=7)))),
        "other_tunnel": fixed(lambda: _json(_envelope(_psk_result(ipsec_tunnel_id="f" * 32)))),
        "html_echo": fixed(
            lambda: web.Response(
                body=f'<html><pre>{{"psk": "{HOSTILE_PSK}"}} Bearer {SECRET_TOKEN}</pre></html>',
                status=502,
                content_type="text/html",
            )
        ),
        "truncated_psk": fixed(lambda: _json(_envelope(_psk_result())[:60])),
        "retry_after_negative": fixed(lambda: _error(429, 971, **{"Retry-After": "-5"})),
        "retry_after_enormous": fixed(
            lambda: _error(429, 971, **{"Retry-After": ENORMOUS_RETRY_AFTER})
        ),
        "retry_after_infinite": fixed(lambda: _error(429, 971, **{"Retry-After": "1e999"})),
        "retry_after_nan": fixed(lambda: _error(429, 971, **{"Retry-After": "nan"})),
        "retry_after_garbage": fixed(
            lambda: _error(429, 971, **{"Retry-After": "soon, maybe; Thu, 99 Foo 20x"})
        ),
        "retry_after_past_date": fixed(
            lambda: _error(429, 971, **{"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
        ),
        "rate_limited_html": fixed(
            lambda: web.Response(
                body=f"<p>{SECRET_TOKEN}</p>", status=429, content_type="text/html"
            )
        ),
        "slowloris": _slowloris,
        "never_starts": _never_starts,
    }

    def per_tunnel(headers: dict[str, str], **over: Any) -> _Handler:
        # A valid answer for the tunnel in the path, so a rotation over many tunnels works.
        async def handler(request: web.Request) -> web.StreamResponse:
            await request.read()
            tunnel = _tunnel_of(request)
            result = _psk_result(ipsec_tunnel_id=tunnel, psk=hostile_psk(tunnel), **over)
            return web.Response(
                body=_envelope(result), content_type="application/json", headers=headers
            )

        return handler

    def once_429(retry_after: str) -> _Handler:
        answer_ok = per_tunnel({})
        hits = 0

        async def handler(request: web.Request) -> web.StreamResponse:
            nonlocal hits
            hits += 1
            if hits > 1:
                return await answer_ok(request)
            await request.read()
            return _error(429, 971, **{"Retry-After": retry_after})

        return handler

    for name, headers in UNREADABLE_RATELIMIT.items():
        table[name] = per_tunnel(headers)
    for name, stamp in ODD_STAMPS.items():
        table[name] = per_tunnel({}, psk_metadata={"last_generated_on": stamp})
    for name, retry_after in RETRY_AFTER_ONCE.items():
        table[name] = once_429(retry_after)
    # A 429 that is always worth a retry (Retry-After: 1): how often is it retried?
    table["rate_limited_briefly"] = fixed(lambda: _error(429, 971, **{"Retry-After": "1"}))
    for status in (400, 401, 403, 404, 405, 409, 422, 429, 500, 502, 503, 520):
        table[f"error_{status}"] = fixed(lambda status=status: _error(status))  # type: ignore[misc]
    for status in (301, 302, 303, 307, 308):
        table[f"redirect_{status}"] = fixed(
            lambda status=status: web.Response(  # type: ignore[misc]
                status=status, headers={"Location": witness_url + "/stolen?via=redirect"}
            )
        )
    return table


@attrs.define
class HostileServer:
    root: str
    raw_root: str
    witness_root: str
    seen: list[Seen]
    witness_seen: list[Seen]
    scenarios: list[str]

    def url(self, scenario: str) -> str:
        """The base URL (``.../client/v4``) whose answers misbehave as ``scenario`` says."""
        assert scenario in self.scenarios, scenario
        return f"{self.root}/{scenario}/client/v4"

    def raw_url(self, scenario: str) -> str:
        return f"{self.raw_root}/{scenario}/client/v4"

    def hits(self, scenario: str) -> int:
        return sum(1 for s in self.seen if s.path.startswith(f"/{scenario}/"))


# Raw answers that are not valid HTTP, keyed by the first path segment.
_RAW: dict[str, bytes] = {
    "bad_status_line": b"HELLO " + SECRET_TOKEN.encode() + b"\r\n\r\n",
    "short_body": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    + b"Content-Length: 1000\r\n\r\n"
    + b'{"result":{"psk":"'
    + HOSTILE_PSK.encode(),
    "huge_header": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
    "bad_chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    + HOSTILE_PSK.encode()
    + b"\r\n",
    "close_at_once": b"",
    "header_trickle": b"",  # handled below: a header byte every 0.2 s, forever
}
#: The raw TCP server's scenarios (``HostileServer.raw_url``).
RAW_SCENARIOS = sorted(_RAW)


async def _raw_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ", 2)[1].decode()
        scenario = path.split("/")[1]
        if scenario == "header_trickle":
            writer.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while True:
                await writer.drain()
                await asyncio.sleep(0.2)
                writer.write(b"a")
        writer.write(_RAW[scenario])
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


@contextlib.asynccontextmanager
async def hostile_server() -> AsyncIterator[HostileServer]:
    """The hostile server, its witness and the raw TCP server, on free loopback ports."""
    witness_seen: list[Seen] = []
    seen: list[Seen] = []

    async def witness(request: web.Request) -> web.StreamResponse:
        witness_seen.append(Seen(request.method, request.path_qs, dict(request.headers)))
        return _json(_envelope(_psk_result()))

    witness_app = web.Application()
    witness_app.router.add_route("*", "/{tail:.*}", witness)
    witness_runner, witness_root = await _serve(witness_app)

    table = _scenarios(witness_root)

    async def dispatch(request: web.Request) -> web.StreamResponse:
        seen.append(Seen(request.method, request.path_qs, dict(request.headers)))
        return await table[request.match_info["scenario"]](request)

    app = web.Application()
    app.router.add_route("*", "/{scenario}/{tail:.*}", dispatch)
    runner, root = await _serve(app)

    raw_tasks: set[asyncio.Task[None]] = set()

    def raw_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(_raw_handler(reader, writer))
        raw_tasks.add(task)
        task.add_done_callback(raw_tasks.discard)

    raw = await asyncio.start_server(raw_connection, "127.0.0.1", 0)
    raw_port = raw.sockets[0].getsockname()[1]
    try:
        yield HostileServer(
            root=root,
            raw_root=f"http://127.0.0.1:{raw_port}",
            witness_root=witness_root,
            seen=seen,
            witness_seen=witness_seen,
            scenarios=sorted(table),
        )
    finally:
        raw.close()
        for task in list(raw_tasks):
            task.cancel()
        await asyncio.gather(*raw_tasks, return_exceptions=True)
        await raw.wait_closed()
        await runner.cleanup()
        await witness_runner.cleanup()
