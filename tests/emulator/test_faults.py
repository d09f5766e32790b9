"""Each injected fault as a client sees it, and the state it leaves behind."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiohttp import web

from magicwan.emulator import Emulator, EmulatorState, Faults, PSKRecord, create_app, run
from tests.support.emulator import (
    FAILURE,
    RAY_RE,
    SUCCESS,
    a_psk,
    call,
    generate,
    psk_url,
    set_psks,
    token_headers,
    tunnels_url,
)

pytestmark = pytest.mark.asyncio

DISCONNECTED = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


async def test_reset_before_store_drops_the_connection_and_changes_nothing(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    emu.set_faults(Faults(reset_before_store=1.0))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await generate(session, emu)
    tunnel = emu.state.tunnel(emu.account_id, emu.tunnel_ids[0])
    assert tunnel.generation == 0
    assert tunnel.psk is None
    assert emu.state.requests.dropped == 1
    assert emu.state.requests.faults == {"reset_before_store": 1}
    # The session recovers on a new connection.
    emu.set_faults(Faults.none())
    assert (await generate(session, emu))[0] == 200


async def test_reset_after_store_changes_the_psk_but_the_client_never_sees_it(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    tunnel_id = emu.tunnel_ids[0]
    emu.set_faults(Faults(reset_after_store=1.0))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await generate(session, emu)
    tunnel = emu.state.tunnel(emu.account_id, tunnel_id)
    assert tunnel.generation == 1
    stored = emu.state.current_psk(emu.account_id, tunnel_id)
    assert stored is not None
    # validate_only shows the stored metadata: how a client can notice what happened.
    emu.set_faults(Faults.none())
    _, _, body = await generate(session, emu, params={"validate_only": "true"})
    assert body["result"]["psk_metadata"]["last_generated_on"].startswith("20")
    assert tunnel.psk == stored


async def test_reset_is_charged_to_the_rate_budget(session: aiohttp.ClientSession) -> None:
    async with run(tunnels=1, rate_limit=(2, 60), faults=Faults(reset_after_store=1.0)) as emu:
        for _ in range(2):
            with pytest.raises(DISCONNECTED):
                await generate(session, emu)
        emu.set_faults(Faults.none())
        status, _, _ = await generate(session, emu)
        assert status == 429
        assert emu.state.tunnel(emu.account_id, emu.tunnel_ids[0]).generation == 2


async def test_html_502_is_a_proxy_page_not_an_envelope(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    emu.set_faults(Faults(html_502=1.0))
    async with session.post(psk_url(emu), json={}, headers=token_headers(emu)) as resp:
        assert resp.status == 502
        assert resp.content_type == "text/html"
        assert RAY_RE.fullmatch(resp.headers["cf-ray"])
        assert "Ratelimit" not in resp.headers
        text = await resp.text()
    assert "<title>502 Bad Gateway</title>" in text
    assert "cloudflare" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    assert emu.state.total_generations() == 0


async def test_truncated_json_stores_the_psk_and_cuts_the_body(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    emu.set_faults(Faults(truncated_json=1.0))
    async with session.post(psk_url(emu), json={}, headers=token_headers(emu)) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        raw = await resp.read()
        assert int(resp.headers["Content-Length"]) == len(raw)
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)
    assert raw.startswith(b'{"result":{"ipsec_tunnel_id":')
    assert emu.state.tunnel(emu.account_id, emu.tunnel_ids[0]).generation == 1


async def test_server_error_is_a_5xx_envelope(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    emu.set_faults(Faults(server_error=1.0), seed=3)
    statuses = set()
    for _ in range(30):
        status, headers, body = await generate(session, emu)
        statuses.add(status)
        FAILURE.validate(body)
        assert body["errors"][0]["code"] == 10001
        assert RAY_RE.fullmatch(headers["cf-ray"])
    assert statuses == {500, 502, 503}
    assert emu.state.total_generations() == 0


async def test_rate_limited_fault(emu: Emulator, session: aiohttp.ClientSession) -> None:
    emu.set_faults(Faults(rate_limited=1.0))
    status, headers, body = await generate(session, emu)
    assert status == 429
    assert headers["Retry-After"] == "1"
    FAILURE.validate(body)
    assert body["errors"][0]["code"] == 971
    assert emu.state.total_generations() == 0


async def test_latency(emu: Emulator, session: aiohttp.ClientSession) -> None:
    emu.set_faults(Faults(latency=0.15, latency_probability=1.0))
    start = time.perf_counter()
    status, _, body = await generate(session, emu)
    assert time.perf_counter() - start >= 0.14  # the loop may fire a timer a tick early
    assert status == 200
    SUCCESS.validate(body)


async def test_faults_apply_to_get_routes_but_never_to_admin(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    emu.set_faults(Faults(html_502=1.0))
    async with session.get(tunnels_url(emu), headers=token_headers(emu)) as resp:
        assert resp.status == 502
    status, _, body = await call(session, "GET", f"{emu.admin_url}/state")
    assert status == 200
    assert body["faults"]["html_502"] == 1.0


async def test_auth_failures_are_not_faulted(emu: Emulator, session: aiohttp.ClientSession) -> None:
    emu.set_faults(Faults(html_502=1.0))
    status, _, body = await call(session, "POST", psk_url(emu), json={})
    assert status == 400
    FAILURE.validate(body)


async def _outcomes(seed: int, session: aiohttp.ClientSession) -> list[str]:
    faults = Faults(
        server_error=0.15,
        rate_limited=0.1,
        reset_before_store=0.1,
        reset_after_store=0.1,
        html_502=0.1,
        truncated_json=0.1,
    )
    outcomes = []
    async with run(tunnels=2, rate_limit=None, seed=seed, faults=faults) as emu:
        for i in range(40):
            try:
                async with session.post(
                    psk_url(emu, emu.tunnel_ids[i % 2]), json={}, headers=token_headers(emu)
                ) as resp:
                    raw = await resp.read()
                    outcomes.append(f"{resp.status}:{len(raw) if resp.status == 200 else ''}")
            except DISCONNECTED:
                outcomes.append("reset")
        outcomes.append(f"generations={emu.state.total_generations()}")
        assert emu.state.requests.total == 40
    return outcomes


async def test_seeded_faults_are_reproducible(session: aiohttp.ClientSession) -> None:
    first = await _outcomes(11, session)
    assert first == await _outcomes(11, session)
    assert first != await _outcomes(12, session)
    # 314 bytes: the envelope around ipsec_tunnel_id, psk, psk_metadata and ipsec_id.
    assert {"reset", "429:", "502:", "200:314"} <= set(first)


async def test_shutdown_does_not_wait_for_latency(session: aiohttp.ClientSession) -> None:
    start = time.perf_counter()
    async with run(tunnels=1, faults=Faults(latency=30, latency_probability=1)) as emu:
        request = asyncio.ensure_future(
            call(session, "GET", tunnels_url(emu), headers=token_headers(emu))
        )
        await asyncio.sleep(0.2)  # the request is in its 30 s latency now
    status, _, _ = await request
    assert status == 200
    assert time.perf_counter() - start < 5


async def test_a_client_vanishing_mid_body_is_a_drop_not_a_crash(
    emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    host, port = emu.base_url.split("//")[1].split("/")[0].split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    path = psk_url(emu, emu.tunnel_ids[0]).split(emu.base_url.split("/client/v4")[0])[1]
    writer.write(
        (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {emu.api_token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    for _ in range(100):
        if emu.state.requests.total:
            break
        await asyncio.sleep(0.01)
    assert emu.state.requests.dropped == 1
    assert 500 not in emu.state.requests.by_status
    assert emu.state.tunnel(emu.account_id, emu.tunnel_ids[0]).generation == 0
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


# -- late_store: the server stalls past the client's timeout, then stores anyway ---------------

SHORT = aiohttp.ClientTimeout(total=0.2)


async def _until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll ``condition`` (bounded): the emulator works on while the client has given up."""
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never came true")


async def test_late_store_generates_after_the_client_timed_out(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    tunnel = emu.state.tunnel(emu.account_id, emu.tunnel_ids[0])
    _, _, first = await generate(session, emu)
    seen = {first["result"]["psk"]}
    heard: list[PSKRecord] = []
    emu.state.add_psk_listener(lambda _tunnel, record: heard.append(record))
    emu.set_faults(Faults(late_store=1.0, late_store_delay=0.6))

    asked = datetime.now(UTC)
    with pytest.raises(TimeoutError):
        await generate(session, emu, timeout=SHORT)
    assert tunnel.generation == 1  # the client gave up before anything was stored

    await _until(lambda: tunnel.generation == 2)
    await _until(lambda: emu.state.requests.total == 2)
    [record] = heard
    assert record.generated_on - asked >= timedelta(seconds=0.55)  # ~late_store_delay later
    assert tunnel.psk == record.psk
    assert tunnel.psk not in seen  # nobody ever saw the PSK now in force
    assert emu.state.requests.faults == {"late_store": 1}
    assert emu.state.requests.dropped == 1  # its answer had nobody to go to
    assert emu.state.requests.by_status == {200: 1}


async def test_late_store_applies_a_psk_set_after_the_client_timed_out(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    tunnel_id = emu.tunnel_ids[1]
    emu.set_faults(Faults(late_store=1.0, late_store_delay=0.5))
    psk = a_psk()
    with pytest.raises(TimeoutError):
        await set_psks(session, emu, [{"id": tunnel_id, "psk": psk}], timeout=SHORT)
    assert emu.state.current_psk(emu.account_id, tunnel_id) is None
    await _until(lambda: emu.state.current_psk(emu.account_id, tunnel_id) == psk)
    await _until(lambda: emu.state.requests.dropped == 1)
    assert emu.state.requests.faults == {"late_store": 1}


async def test_late_store_answers_a_patient_client(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    emu.set_faults(Faults(late_store=1.0, late_store_delay=0.1))
    status, _, body = await generate(session, emu)
    assert status == 200
    SUCCESS.validate(body)
    assert body["result"]["psk"] == emu.state.current_psk(emu.account_id, emu.tunnel_ids[0])
    assert emu.state.requests.faults == {"late_store": 1}
    assert emu.state.requests.by_status == {200: 1}
    assert emu.state.requests.dropped == 0


async def test_latency_never_stores_for_a_client_that_left(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    emu.set_faults(Faults(latency=0.5, latency_probability=1.0))
    with pytest.raises(TimeoutError):
        await generate(session, emu, timeout=SHORT)
    await _until(lambda: emu.state.requests.total == 1)
    assert emu.state.requests.dropped == 1
    assert emu.state.total_generations() == 0


async def test_a_cancelled_handler_cannot_cancel_a_late_store(
    session: aiohttp.ClientSession,
) -> None:
    # With handler cancellation on, aiohttp cancels the handler when its client leaves.
    state = EmulatorState(tunnels=1, rate_limit=None)
    state.set_faults(Faults(late_store=1.0, late_store_delay=0.5))
    runner = web.AppRunner(create_app(state), handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        emu = Emulator(state, root_url=f"http://{host}:{port}")
        with pytest.raises(TimeoutError):
            await generate(session, emu, timeout=SHORT)
        await _until(lambda: state.total_generations() == 1)
        await _until(lambda: state.requests.dropped == 1)
    finally:
        await runner.cleanup()
    assert state.requests.faults == {"late_store": 1}


async def test_shutdown_finishes_pending_late_stores_at_once(
    session: aiohttp.ClientSession,
) -> None:
    start = time.perf_counter()
    faults = Faults(late_store=1.0, late_store_delay=30)
    async with run(tunnels=1, rate_limit=None, faults=faults) as emu:
        request = asyncio.ensure_future(generate(session, emu))
        await asyncio.sleep(0.2)  # the request is in its 30 s stall now
        assert emu.state.total_generations() == 0
    # Stopping the server stored the PSK at once instead of waiting or dropping it.
    assert emu.state.total_generations() == 1
    status, _, body = await request
    assert status == 200
    assert body["result"]["psk"] == emu.state.current_psk(emu.account_id, emu.tunnel_ids[0])
    assert time.perf_counter() - start < 5
