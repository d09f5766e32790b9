"""The emulated Cloudflare endpoints over real sockets, seen by a plain aiohttp client."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
import attrs
import pytest
from aiohttp import web

from magicwan.emulator import Emulator, EmulatorState, create_app, run
from magicwan.emulator.app import API_PREFIX, Pipeline
from magicwan.emulator.endpoints import ROUTES
from tests.support.emulator import (
    ENVELOPE,
    PSK_RE,
    RAY_RE,
    SUCCESS,
    TIMESTAMP_RE,
    assert_failure,
    call,
    generate,
    key_headers,
    psk_url,
    token_headers,
    tunnels_url,
)

pytestmark = pytest.mark.asyncio

UNKNOWN = "0" * 32


async def test_run_yields_a_base_url_and_credentials() -> None:
    async with run(tunnels=4, account_id="023e105f4ecef8ad9ca31a8372d0c353") as emu:
        assert emu.base_url.startswith("http://127.0.0.1:")
        assert emu.base_url.endswith("/client/v4")
        assert emu.account_id == "023e105f4ecef8ad9ca31a8372d0c353"
        assert len(emu.tunnel_ids) == 4
        assert (emu.api_token, emu.api_email, emu.api_key) == (
            "emulator-token",
            "emulator@example.com",
            "emulator-key",
        )
        assert emu.env() == {
            "CLOUDFLARE_BASE_URL": emu.base_url,
            "CLOUDFLARE_API_TOKEN": "emulator-token",
            "CLOUDFLARE_ACCOUNT_ID": "023e105f4ecef8ad9ca31a8372d0c353",
        }
        port = int(emu.base_url.split(":")[2].split("/")[0])
        assert port > 0
    # The port is released: nothing listens any more.
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"http://127.0.0.1:{port}/")


async def test_run_serves_a_given_state_with_extra_middlewares_and_routes(
    session: aiohttp.ClientSession,
) -> None:
    state = EmulatorState(tunnels=2, seed=4, rate_limit=None)
    seen: list[str] = []

    @web.middleware
    async def tracker(
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        seen.append(request.path)
        return await handler(request)

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"hello": len(seen)})

    async with run(
        state=state, middlewares=[tracker], routes=[web.get("/__emulator__/hello", hello)]
    ) as emu:
        assert emu.state is state
        assert emu.tunnel_ids == state.tunnel_ids
        assert emu.gre_tunnel_ids == []  # EmulatorState's own default: no GRE tunnels
        status, _, _ = await generate(session, emu)
        assert status == 200
        status, headers, body = await call(session, "GET", f"{emu.admin_url}/hello")
        assert status == 200
        assert body == {"hello": 2}
        assert RAY_RE.fullmatch(headers["cf-ray"])  # an admin route, through the pipeline
    assert seen == [psk_url(emu).removeprefix(emu.root_url), "/__emulator__/hello"]
    assert state.total_generations() == 1
    assert state.requests.total == 1  # the extra admin route is not counted


async def test_run_takes_a_state_or_its_options_not_both() -> None:
    with pytest.raises(TypeError, match="not both"):
        async with run(state=EmulatorState(), tunnels=3):
            pass  # pragma: no cover
    async with run() as emu:
        assert (len(emu.tunnel_ids), len(emu.gre_tunnel_ids)) == (10, 3)
        assert emu.state.rate_limit == (1200, 300.0)


async def test_generate_returns_a_fresh_psk_in_the_spec_envelope(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    tunnel_id = emu.tunnel_ids[0]
    status, headers, body = await generate(session, emu)
    assert status == 200
    SUCCESS.validate(body)
    assert body["success"] is True
    assert body["errors"] == []
    assert body["messages"] == []
    result = body["result"]
    assert set(result) == {"ipsec_tunnel_id", "psk", "psk_metadata", "ipsec_id"}
    assert result["ipsec_tunnel_id"] == tunnel_id
    assert result["ipsec_id"] == f"{tunnel_id}.{emu.account_id}.ipsec.cloudflare.com"
    assert PSK_RE.fullmatch(result["psk"])
    assert TIMESTAMP_RE.fullmatch(result["psk_metadata"]["last_generated_on"])
    assert headers["Content-Type"] == "application/json"
    assert RAY_RE.fullmatch(headers["cf-ray"])
    tunnel = emu.state.tunnel(emu.account_id, tunnel_id)
    assert tunnel.generation == 1
    assert emu.state.current_psk(emu.account_id, tunnel_id) == result["psk"]

    _, _, again = await generate(session, emu, headers=key_headers(emu))
    assert again["result"]["psk"] != result["psk"]
    assert (
        again["result"]["psk_metadata"]["last_generated_on"]
        > result["psk_metadata"]["last_generated_on"]
    )
    assert tunnel.generation == 2
    assert [r.psk for r in emu.state.history(emu.account_id, tunnel_id)] == [
        result["psk"],
        again["result"]["psk"],
    ]
    # Other tunnels are untouched.
    assert emu.state.tunnel(emu.account_id, emu.tunnel_ids[1]).generation == 0


async def test_validate_only_changes_nothing(emu: Emulator, session: aiohttp.ClientSession) -> None:
    tunnel = emu.state.tunnel(emu.account_id, emu.tunnel_ids[0])
    status, _, body = await generate(session, emu, params={"validate_only": "true"})
    assert status == 200
    SUCCESS.validate(body)
    # Never generated: no metadata.
    assert body["result"] == {"ipsec_tunnel_id": tunnel.id, "ipsec_id": tunnel.ipsec_id}
    assert tunnel.generation == 0
    assert tunnel.psk is None

    _, _, first = await generate(session, emu)
    status, _, body = await generate(session, emu, params={"validate_only": "true"})
    SUCCESS.validate(body)
    assert body["result"] == {
        "ipsec_tunnel_id": tunnel.id,
        "psk_metadata": first["result"]["psk_metadata"],
        "ipsec_id": tunnel.ipsec_id,
    }
    assert tunnel.generation == 1
    assert tunnel.psk == first["result"]["psk"]

    _, _, body = await generate(session, emu, params={"validate_only": "false"})
    assert "psk" in body["result"]
    assert tunnel.generation == 2


@pytest.mark.parametrize("value", ["yes", "1", "TRUE", ""])
async def test_validate_only_must_be_true_or_false(
    emu: Emulator, session: aiohttp.ClientSession, value: str
) -> None:
    status, headers, body = await generate(session, emu, params={"validate_only": value})
    assert status == 400
    assert_failure(body, 1003)
    assert RAY_RE.fullmatch(headers["cf-ray"])
    assert emu.state.total_generations() == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"data": b"{}"}, "Content-Type must be application/json"),
        ({"data": b"{}", "headers": {"Content-Type": "text/plain"}}, None),
        ({"data": b" ", "headers": {"Content-Type": "application/json"}}, None),
        ({"data": b"", "headers": {"Content-Type": "text/plain"}}, None),
        ({"data": b""}, "Content-Type must be application/json"),
        ({"data": b"{oops", "headers": {"Content-Type": "application/json"}}, None),
        ({"json": []}, "Request body must be a JSON object"),
        ({"json": "psk"}, None),
        ({"json": None}, None),
    ],
)
async def test_body_must_be_a_json_object(
    emu: Emulator, session: aiohttp.ClientSession, kwargs: dict[str, object], message: str | None
) -> None:
    headers = {**token_headers(emu), **kwargs.pop("headers", {})}  # type: ignore[dict-item]
    async with session.post(psk_url(emu), headers=headers, **kwargs) as resp:  # type: ignore[arg-type]
        body = await resp.json()
        assert resp.status == 400
    assert_failure(body, 1001, message)
    assert emu.state.total_generations() == 0


@pytest.mark.parametrize("validate_only", [False, True])
async def test_a_zero_byte_json_body_reads_as_an_empty_object(
    emu: Emulator, session: aiohttp.ClientSession, validate_only: bool
) -> None:
    """What the official SDK (>= 5.7.0) sends: ``Content-Type: application/json``, no body."""
    headers = {**token_headers(emu), "Content-Type": "application/json"}
    params = {"validate_only": "true"} if validate_only else {}
    status, _, body = await call(
        session, "POST", psk_url(emu), data=b"", headers=headers, params=params
    )
    assert status == 200
    SUCCESS.validate(body)
    tunnel_id = emu.tunnel_ids[0]
    assert body["result"]["ipsec_tunnel_id"] == tunnel_id
    if validate_only:
        assert "psk" not in body["result"]
        assert emu.state.total_generations() == 0
    else:
        assert body["result"]["psk"] == emu.state.current_psk(emu.account_id, tunnel_id)


async def test_json_with_charset_is_accepted(emu: Emulator, session: aiohttp.ClientSession) -> None:
    headers = {**token_headers(emu), "Content-Type": "application/json; charset=utf-8"}
    status, _, body = await call(session, "POST", psk_url(emu), data=b"{}", headers=headers)
    assert status == 200
    assert body["success"] is True


async def test_list_and_get_tunnels_never_expose_the_psk(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    _, _, generated = await generate(session, emu)
    psk = generated["result"]["psk"]

    status, headers, body = await call(session, "GET", tunnels_url(emu), headers=token_headers(emu))
    assert status == 200
    ENVELOPE.validate(body)
    tunnels = body["result"]["ipsec_tunnels"]
    assert [t["id"] for t in tunnels] == emu.tunnel_ids
    assert RAY_RE.fullmatch(headers["cf-ray"])

    status, _, one = await call(
        session, "GET", f"{tunnels_url(emu)}/{emu.tunnel_ids[0]}", headers=key_headers(emu)
    )
    assert status == 200
    ENVELOPE.validate(one)
    tunnel = one["result"]["ipsec_tunnel"]
    assert tunnel == tunnels[0]
    assert set(tunnel) == {
        "id",
        "name",
        "description",
        "cloudflare_endpoint",
        "customer_endpoint",
        "interface_address",
        "created_on",
        "modified_on",
        "allow_null_cipher",
        "replay_protection",
        "health_check",
        "psk_metadata",
        "interface_address6",
        "automatic_return_routing",
        "ipsec_id",
    }
    assert tunnel["psk_metadata"] == generated["result"]["psk_metadata"]
    assert tunnel["interface_address"].endswith("/31")
    assert tunnel["interface_address6"].endswith("/127")
    assert tunnel["automatic_return_routing"] is False
    assert tunnel["ipsec_id"] == generated["result"]["ipsec_id"]
    assert tunnel["allow_null_cipher"] is False
    assert tunnel["replay_protection"] is False
    assert tunnel["health_check"] == {
        "enabled": True,
        "target": tunnel["customer_endpoint"],
        "type": "reply",
        "rate": "mid",
        "direction": "unidirectional",
    }
    assert "psk_metadata" not in tunnels[1]  # never generated
    for text in (str(body), str(one)):
        assert psk not in text
        assert "'psk'" not in text


@pytest.mark.parametrize(
    ("headers", "status", "code", "message"),
    [
        ({}, 400, 9106, "Missing X-Auth-Key, X-Auth-Email or Authorization headers"),
        ({"X-Auth-Key": "emulator-key"}, 400, 9106, "Missing X-Auth-Email header"),
        ({"X-Auth-Email": "emulator@example.com"}, 400, 9106, "Missing X-Auth-Key header"),
        ({"Authorization": "Basic Zm9vOmJhcg=="}, 400, 6111, None),
        ({"Authorization": "Bearer "}, 400, 6111, None),
        ({"Authorization": "Bearer wrong"}, 403, 10000, "Authentication error"),
        (
            {"X-Auth-Email": "emulator@example.com", "X-Auth-Key": "wrong"},
            403,
            9103,
            "Unknown X-Auth-Key or X-Auth-Email",
        ),
        (
            {"X-Auth-Email": "other@example.com", "X-Auth-Key": "emulator-key"},
            403,
            9103,
            None,
        ),
    ],
)
async def test_auth_failures(
    emu: Emulator,
    session: aiohttp.ClientSession,
    headers: dict[str, str],
    status: int,
    code: int,
    message: str | None,
) -> None:
    for method, url in (("POST", psk_url(emu)), ("GET", tunnels_url(emu))):
        got, response_headers, body = await call(session, method, url, json={}, headers=headers)
        assert got == status
        assert_failure(body, code, message)
        assert RAY_RE.fullmatch(response_headers["cf-ray"])
        assert "Ratelimit" not in response_headers
    assert emu.state.total_generations() == 0
    assert emu.state.requests.by_status[status] == 2


async def test_email_is_case_insensitive(emu: Emulator, session: aiohttp.ClientSession) -> None:
    headers = {"X-Auth-Email": emu.api_email.upper(), "X-Auth-Key": emu.api_key}
    status, _, _ = await generate(session, emu, headers=headers)
    assert status == 200


async def test_unknown_account_tunnel_route_and_method(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    auth = token_headers(emu)
    status, _, body = await call(
        session, "POST", psk_url(emu, account_id=UNKNOWN), json={}, headers=auth
    )
    assert status == 404
    assert_failure(
        body,
        7003,
        f"Could not route to /accounts/{UNKNOWN}/magic/ipsec_tunnels/{emu.tunnel_ids[0]}"
        "/psk_generate, perhaps your object identifier is invalid?",
    )
    status, _, body = await call(session, "GET", tunnels_url(emu, UNKNOWN), headers=auth)
    assert status == 404
    assert_failure(body, 7003)

    for method, url in (
        ("POST", psk_url(emu, tunnel_id=UNKNOWN)),
        ("GET", f"{tunnels_url(emu)}/{UNKNOWN}"),
        ("POST", psk_url(emu, tunnel_id="not-an-id")),
    ):
        status, _, body = await call(session, method, url, json={}, headers=auth)
        assert status == 404
        assert_failure(body, 1002, "ipsec_tunnel not found")

    for method, url in (
        ("GET", f"{emu.base_url}/nowhere"),
        ("GET", emu.base_url.removesuffix("/client/v4") + "/"),
        ("POST", psk_url(emu) + "/"),
        ("GET", f"{emu.base_url}/accounts/{emu.account_id}/magic/cf_interconnects"),
    ):
        status, headers, body = await call(session, method, url, headers=auth)
        assert status == 404, url
        assert_failure(body, 7000, "No route for that URI")
        assert RAY_RE.fullmatch(headers["cf-ray"])

    for method, url in (
        ("GET", psk_url(emu)),
        ("DELETE", psk_url(emu)),
        ("PATCH", tunnels_url(emu)),
        ("HEAD", tunnels_url(emu)),
    ):
        async with session.request(method, url, headers=auth) as resp:
            assert resp.status == 405, (method, url)
            assert RAY_RE.fullmatch(resp.headers["cf-ray"])
            if method != "HEAD":
                assert_failure(await resp.json(), 7001, "Method not allowed")
    assert emu.state.total_generations() == 0
    assert emu.state.requests.by_route["unmatched"] == 8


async def test_other_accounts_are_invisible(emu: Emulator, session: aiohttp.ClientSession) -> None:
    other = emu.state.add_account()
    emu.state.add_tunnels(other.id, 1)
    status, _, body = await call(
        session, "GET", tunnels_url(emu, other.id), headers=key_headers(emu)
    )
    assert status == 404
    assert_failure(body, 7003)


async def test_ray_ids_are_unique(emu: Emulator, session: aiohttp.ClientSession) -> None:
    rays = set()
    for _ in range(50):
        _, headers, _ = await call(session, "GET", tunnels_url(emu), headers=token_headers(emu))
        rays.add(headers["cf-ray"])
    assert len(rays) == 50


async def test_request_counters(emu: Emulator, session: aiohttp.ClientSession) -> None:
    assert emu.state.requests.total == 0  # how a test asserts "the emulator saw no request"
    await generate(session, emu)
    await call(session, "GET", tunnels_url(emu), headers=token_headers(emu))
    await call(session, "GET", tunnels_url(emu))
    await call(session, "GET", f"{emu.admin_url}/state")  # admin: not counted
    counters = emu.state.requests
    assert counters.total == 3
    assert counters.by_route == {"psk_generate": 1, "list_ipsec_tunnels": 2}
    assert counters.by_status == {200: 2, 400: 1}


async def test_the_app_serves_each_route_of_the_table_under_its_name() -> None:
    app = create_app(EmulatorState())
    served = {
        (route.method, resource.canonical, resource.name)
        for resource in app.router.resources()
        if resource.name is not None
        for route in resource
    }
    assert served == {(r.method, API_PREFIX + r.path, r.name) for r in ROUTES}


async def test_a_pipeline_refuses_two_routes_of_one_name() -> None:
    twice = (ROUTES[0], attrs.evolve(ROUTES[1], name=ROUTES[0].name))
    with pytest.raises(ValueError, match="unique"):
        Pipeline(EmulatorState(), twice)
