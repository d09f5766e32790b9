"""PSK generation, tunnel discovery and every error path, through the SDK against the emulator."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from magicwan import (
    APIConnectionError,
    APITimeoutError,
    InternalServerError,
    InvalidInputError,
    IPsecTunnel,
    MagicWAN,
    NotFoundError,
    PermissionDeniedError,
    PSKGenerateResult,
    RateLimitError,
    UnexpectedResponseError,
)
from magicwan.emulator import Emulator, EmulatorState, Faults
from magicwan.emulator.faults import FaultKind
from tests.support.loopback import Tracker, make_client, serve
from tests.support.probes import ray_recorder, session_spy

pytestmark = pytest.mark.asyncio

UNKNOWN = "0" * 32
FAST = 50.0  # client time runs 50x faster: backoff and Retry-After cost little real time


async def test_generate_returns_the_stored_psk(emu: Emulator) -> None:
    tunnel_id = emu.tunnel_ids[0]
    async with make_client(emu) as client:
        result = await client.tunnels.ipsec.psk.generate(emu.account_id, tunnel_id)
    assert result.ipsec_tunnel_id == tunnel_id
    assert result.psk is not None
    assert len(result.psk) == 32
    assert result.psk == emu.state.current_psk(emu.account_id, tunnel_id)
    assert result.psk not in repr(result)
    assert result.psk_metadata is not None
    stamp = result.psk_metadata.last_generated_on
    assert stamp is not None
    assert stamp.utcoffset() == timedelta(0)
    assert stamp == emu.state.tunnel(emu.account_id, tunnel_id).last_generated_on


async def test_validate_only_changes_nothing(emu: Emulator) -> None:
    tunnel_id = emu.tunnel_ids[0]
    async with make_client(emu) as client:
        first = await client.tunnels.ipsec.psk.generate(emu.account_id, tunnel_id)
        checked = await client.tunnels.ipsec.psk.generate(
            emu.account_id, tunnel_id, validate_only=True
        )
        fresh = await client.tunnels.ipsec.psk.generate(
            emu.account_id, emu.tunnel_ids[1], validate_only=True
        )
    assert checked.psk is None
    assert checked.ipsec_tunnel_id == tunnel_id
    assert emu.state.tunnel(emu.account_id, tunnel_id).generation == 1
    assert emu.state.current_psk(emu.account_id, tunnel_id) == first.psk
    assert fresh.psk is None
    assert emu.state.tunnel(emu.account_id, emu.tunnel_ids[1]).generation == 0
    assert emu.state.requests.by_route["psk_generate"] == 3


@pytest.mark.parametrize("auth", ["token", "key"])
async def test_both_auth_schemes_work(emu: Emulator, auth: str) -> None:
    async with make_client(emu, auth=auth) as client:
        assert client.auth_scheme == auth
        result = await client.tunnels.ipsec.psk.generate(emu.account_id, emu.tunnel_ids[2])
    assert result.psk == emu.state.current_psk(emu.account_id, emu.tunnel_ids[2])


async def test_wrong_token_is_permission_denied_with_the_ray_id(emu: Emulator) -> None:
    trace, rays = ray_recorder()
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        client = MagicWAN(api_token="not-the-token", base_url=emu.base_url, session=session)
        async with client:
            with pytest.raises(PermissionDeniedError) as caught:
                await client.tunnels.ipsec.psk.generate(emu.account_id, emu.tunnel_ids[0])
    err = caught.value
    assert err.status == 403
    assert err.codes == (10000,)
    assert len(rays) == 1  # not retried
    assert err.ray_id is not None
    assert err.ray_id == rays[0]
    assert err.ray_id in str(err)
    assert "not-the-token" not in str(err)
    assert emu.state.total_generations() == 0


async def test_wrong_key_is_9103(emu: Emulator) -> None:
    client = MagicWAN(api_email=emu.api_email, api_key="wrong-key", base_url=emu.base_url)
    async with client:
        with pytest.raises(PermissionDeniedError) as caught:
            await client.tunnels.ipsec.psk.generate(emu.account_id, emu.tunnel_ids[0])
    assert caught.value.codes == (9103,)
    assert "wrong-key" not in str(caught.value)


async def test_unknown_tunnel_and_account_are_not_found(emu: Emulator) -> None:
    async with make_client(emu) as client:
        with pytest.raises(NotFoundError) as tunnel:
            await client.tunnels.ipsec.psk.generate(emu.account_id, UNKNOWN)
        with pytest.raises(NotFoundError) as account:
            await client.tunnels.ipsec.psk.generate(UNKNOWN, emu.tunnel_ids[0])
        with pytest.raises(NotFoundError) as get:
            await client.tunnels.ipsec.get(emu.account_id, UNKNOWN)
        with pytest.raises(NotFoundError) as listing:
            await client.tunnels.ipsec.list(UNKNOWN)
    assert tunnel.value.status == 404
    assert account.value.codes == (7003,)
    assert listing.value.codes == (7003,)
    assert get.value.status == 404
    assert emu.state.requests.total == 4  # a 404 is final: never retried
    assert emu.state.total_generations() == 0


async def test_list_and_get_return_models_without_a_psk(emu: Emulator) -> None:
    tunnel_id = emu.tunnel_ids[3]
    async with make_client(emu) as client:
        result = await client.tunnels.ipsec.psk.generate(emu.account_id, tunnel_id)
        tunnels = await client.tunnels.ipsec.list(emu.account_id)
        tunnel = await client.tunnels.ipsec.get(emu.account_id, tunnel_id)
    assert [t.id for t in tunnels] == emu.tunnel_ids
    assert all(isinstance(t, IPsecTunnel) for t in tunnels)
    assert isinstance(tunnel, IPsecTunnel)
    assert tunnel.id == tunnel_id
    assert tunnel.name
    assert tunnel.interface_address
    assert tunnel.created_on is not None
    assert tunnel.created_on.tzinfo is not None
    assert not hasattr(tunnel, "psk")
    assert result.psk is not None
    assert result.psk not in repr(tunnels)
    assert result.psk not in repr(tunnel)
    assert result.psk_metadata is not None
    assert tunnel.psk_metadata is not None
    assert tunnel.psk_metadata.last_generated_on == result.psk_metadata.last_generated_on
    listed = {t.id: t for t in tunnels}
    assert listed[tunnel_id].psk_metadata == tunnel.psk_metadata
    untouched = listed[emu.tunnel_ids[0]].psk_metadata
    assert untouched is None or untouched.last_generated_on is None


# -- faults -----------------------------------------------------------------------------------

#: Every outcome fault the emulator can inject, from its own enum.
FAULT_MODES = [kind.value for kind in FaultKind]


@pytest.mark.parametrize("mode", [*FAULT_MODES, "latency"])
async def test_each_fault_mode_is_survived_with_retries(mode: str) -> None:
    if mode == "latency":
        faults = Faults(latency=0.05, latency_probability=0.3)
    else:
        faults = Faults(**{mode: 0.3})
    state = EmulatorState(tunnels=30, seed=3, rate_limit=None, faults=faults)
    async with serve(state) as emu:
        async with make_client(emu, fast=FAST, max_retries=30) as client:
            results = await asyncio.gather(
                *(client.tunnels.ipsec.psk.generate(emu.account_id, t) for t in emu.tunnel_ids)
            )
        counted = emu.state.requests
    if mode != "latency":  # latency is not counted as a fault; it only slows answers down
        assert counted.faults[mode] >= 3  # the fault really happened, repeatedly
    for tunnel_id, result in zip(emu.tunnel_ids, results, strict=True):
        assert result.psk is not None
        assert result.psk == emu.state.current_psk(emu.account_id, tunnel_id)


async def _one_generate_with(faults: Faults, **client_kwargs: Any) -> tuple[Emulator, Exception]:
    state = EmulatorState(tunnels=1, seed=4, rate_limit=None, faults=faults)
    async with serve(state) as emu, make_client(emu, max_retries=0, **client_kwargs) as client:
        with pytest.raises(Exception) as caught:  # noqa: PT011 - checked by the caller
            await client.tunnels.ipsec.psk.generate(emu.account_id, emu.tunnel_ids[0])
    assert emu.state.requests.total == 1
    assert isinstance(caught.value, Exception)
    return emu, caught.value


def _server_error(emu: Emulator, err: Exception) -> None:
    assert emu.state.total_generations() == 0
    assert isinstance(err, InternalServerError)
    assert err.status in (500, 502, 503)
    assert err.codes == (10001,)
    assert err.ray_id


def _rate_limited(emu: Emulator, err: Exception) -> None:
    assert isinstance(err, RateLimitError)
    assert err.retry_after == 1.0
    assert err.codes == (971,)
    assert emu.state.total_generations() == 0


def _reset_before_store(emu: Emulator, err: Exception) -> None:
    assert type(err) is APIConnectionError
    assert err.request_sent is True
    assert emu.state.total_generations() == 0


def _reset_after_store(emu: Emulator, err: Exception) -> None:
    assert type(err) is APIConnectionError
    assert err.request_sent is True
    assert emu.state.total_generations() == 1  # the edge holds a PSK nobody saw


def _html_502(emu: Emulator, err: Exception) -> None:
    assert emu.state.total_generations() == 0
    assert isinstance(err, UnexpectedResponseError)
    assert err.status == 502
    assert "502 Bad Gateway" in err.body_excerpt
    assert err.ray_id


def _truncated_json(emu: Emulator, err: Exception) -> None:
    assert isinstance(err, UnexpectedResponseError)
    assert err.status == 200
    assert emu.state.total_generations() == 1
    stored = emu.state.current_psk(emu.account_id, emu.tunnel_ids[0])
    assert stored is not None
    assert stored not in str(err)  # a PSK cut short in the body is redacted, not echoed


def _late_store(emu: Emulator, err: Exception) -> None:
    assert isinstance(err, APITimeoutError)
    assert err.request_sent is True
    assert err.outcome_unknown
    # Stored after the client gave up: the edge holds a PSK nobody saw.
    assert emu.state.total_generations() == 1


#: What one request under each fault (and no retry) leaves: the error and the emulator's state.
WITHOUT_RETRIES: dict[FaultKind, Callable[[Emulator, Exception], None]] = {
    FaultKind.SERVER_ERROR: _server_error,
    FaultKind.RATE_LIMITED: _rate_limited,
    FaultKind.RESET_BEFORE_STORE: _reset_before_store,
    FaultKind.RESET_AFTER_STORE: _reset_after_store,
    FaultKind.HTML_502: _html_502,
    FaultKind.TRUNCATED_JSON: _truncated_json,
    FaultKind.LATE_STORE: _late_store,
}
#: Faults that need the client to give up first (the store comes after its timeout).
_SLOW_KINDS = {FaultKind.LATE_STORE: ({"late_store_delay": 0.4}, {"timeout": 0.1})}


@pytest.mark.parametrize("kind", list(FaultKind), ids=lambda kind: kind.value)
async def test_each_fault_without_retries(kind: FaultKind) -> None:
    check = WITHOUT_RETRIES.get(kind)
    assert check is not None, f"no expectation for {kind}: add one to WITHOUT_RETRIES"
    fault_extra, client_extra = _SLOW_KINDS.get(kind, ({}, {}))
    emu, err = await _one_generate_with(Faults(**{kind.value: 1.0}, **fault_extra), **client_extra)
    check(emu, err)


async def test_latency_beyond_the_timeout_without_retries() -> None:
    _, err = await _one_generate_with(Faults(latency=0.5, latency_probability=1.0), timeout=0.1)
    assert isinstance(err, APITimeoutError)
    assert err.request_sent is True


async def test_unknown_outcome_not_retried_when_told_so() -> None:
    """``retry_unknown_outcome=False``: the documented danger, a PSK stored that nobody saw."""
    state = EmulatorState(tunnels=1, seed=5, rate_limit=None, faults=Faults(reset_after_store=1.0))
    async with serve(state) as emu:
        client = make_client(emu, max_retries=5, retry_unknown_outcome=False)
        async with client:
            with pytest.raises(APIConnectionError) as caught:
                await client.tunnels.ipsec.psk.generate(emu.account_id, emu.tunnel_ids[0])
    assert caught.value.request_sent is True
    assert emu.state.requests.total == 1
    assert emu.state.tunnel(emu.account_id, emu.tunnel_ids[0]).generation == 1
    assert emu.state.current_psk(emu.account_id, emu.tunnel_ids[0]) is not None


# -- concurrency ------------------------------------------------------------------------------


async def test_a_thousand_concurrent_generates_on_one_client() -> None:
    state = EmulatorState(tunnels=1000, seed=6, rate_limit=None)
    async with serve(state) as emu, make_client(emu) as client:
        results = await asyncio.gather(
            *(client.tunnels.ipsec.psk.generate(emu.account_id, t) for t in emu.tunnel_ids)
        )
    assert emu.state.requests.total == 1000
    assert emu.state.total_generations() == 1000
    for tunnel_id, result in zip(emu.tunnel_ids, results, strict=True):
        assert result.ipsec_tunnel_id == tunnel_id
        assert result.psk == emu.state.current_psk(emu.account_id, tunnel_id)


async def test_same_tunnel_generates_never_overlap() -> None:
    tracker = Tracker()
    faults = Faults(latency=0.005, latency_probability=1.0)  # hold each request open a moment
    state = EmulatorState(tunnels=40, seed=7, rate_limit=None, faults=faults)
    async with serve(state, tracker=tracker) as emu, make_client(emu) as client:
        tunnels = emu.tunnel_ids
        calls = [(t, n) for n in range(5) for t in tunnels]  # 200 calls, 5 per tunnel
        results = await asyncio.gather(
            *(client.tunnels.ipsec.psk.generate(emu.account_id, t) for t, _ in calls)
        )
    assert tracker.max_in_flight > 5  # different tunnels did run side by side
    assert max(tracker.max_per_tunnel.values()) == 1  # one tunnel: one request at a time
    for tunnel_id in tunnels:
        mine = [r for (t, _), r in zip(calls, results, strict=True) if t == tunnel_id]
        history = emu.state.history(emu.account_id, tunnel_id)
        assert len(history) == 5
        assert sorted(r.psk for r in mine if r.psk) == sorted(h.psk for h in history)
        stamps = [_stamp(r) for r in mine]
        latest = max(mine, key=_stamp)
        assert latest.psk == emu.state.current_psk(emu.account_id, tunnel_id)
        assert len(set(stamps)) == 5
        assert all(s is not None and s.tzinfo == UTC for s in stamps)


def _stamp(result: PSKGenerateResult) -> datetime:
    assert result.psk_metadata is not None
    assert result.psk_metadata.last_generated_on is not None
    return result.psk_metadata.last_generated_on


# -- input checks and session ownership -------------------------------------------------------


@pytest.mark.parametrize(
    ("account", "tunnel"),
    [
        ("../../x", "0" * 32),
        ("0" * 32, "a/../../b"),
        ("0" * 32, "x?validate_only=true"),
        ("0" * 33, "0" * 32),
        ("", "0" * 32),
        ("0" * 32, 123),
    ],
)
async def test_invalid_ids_send_nothing(emu: Emulator, account: str, tunnel: str) -> None:
    async with make_client(emu) as client:
        with pytest.raises(InvalidInputError):
            await client.tunnels.ipsec.psk.generate(account, tunnel)
        with pytest.raises(InvalidInputError):
            await client.tunnels.ipsec.get(account, tunnel)
        with pytest.raises(InvalidInputError):
            client.tunnels.ipsec.psk.rotate(account, [tunnel, emu.tunnel_ids[0]])
    assert emu.state.requests.total == 0


async def test_a_non_bool_validate_only_sends_nothing(emu: Emulator) -> None:
    # Pinned as is: check_bool raises a bare TypeError, unlike every other argument check
    # (InvalidInputError, a MagicWANError); reported as an inconsistency.
    async with make_client(emu) as client:
        with pytest.raises(TypeError):
            await client.tunnels.ipsec.psk.generate(
                emu.account_id,
                emu.tunnel_ids[0],
                "yes",  # type: ignore[arg-type]
            )
    assert emu.state.requests.total == 0


async def test_invalid_rotation_ids_send_nothing(emu: Emulator) -> None:
    async with make_client(emu) as client:
        with pytest.raises(InvalidInputError):
            client.tunnels.ipsec.psk.rotate(emu.account_id, [emu.tunnel_ids[0], "../x"])
        with pytest.raises(InvalidInputError):
            client.tunnels.ipsec.psk.rotate(emu.account_id, emu.tunnel_ids, concurrency=0)
    assert emu.state.requests.total == 0


async def test_a_passed_in_session_is_used_and_stays_open(emu: Emulator) -> None:
    trace, seen = session_spy()
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        client = MagicWAN(api_token=emu.api_token, base_url=emu.base_url, session=session)
        async with client:
            result = await client.tunnels.ipsec.psk.generate(emu.account_id, emu.tunnel_ids[0])
        assert seen == [session]
        assert client.closed
        assert not session.closed
        async with session.get(emu.admin_url + "/state") as resp:  # still usable
            assert resp.status == 200
        assert result.psk == emu.state.current_psk(emu.account_id, emu.tunnel_ids[0])


async def test_an_owned_session_is_made_on_first_use_and_closed(emu: Emulator) -> None:
    trace, seen = session_spy()
    # Made in the synchronous __init__, outside any loop, a session would warn (and
    # filterwarnings=error would fail this test): it is made on first use instead.
    client = make_client(emu, trace_configs=[trace])
    await client.tunnels.ipsec.psk.generate(emu.account_id, emu.tunnel_ids[0])
    await client.tunnels.ipsec.psk.generate(emu.account_id, emu.tunnel_ids[1])
    assert len(seen) == 2
    assert seen[0] is seen[1]  # one session for the client's life
    assert not seen[0].closed
    await client.aclose()
    assert seen[0].closed
    assert client.closed
    await client.aclose()  # twice is fine


async def test_async_with_closes_the_owned_session(emu: Emulator) -> None:
    trace, seen = session_spy()
    async with make_client(emu, trace_configs=[trace]) as client:
        await client.tunnels.ipsec.psk.generate(emu.account_id, emu.tunnel_ids[0])
    (session,) = seen
    assert session.closed
