"""``client.tunnels.ipsec.psk``: bulk set and the reply details (aioresponses, virtual time)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aioresponses import CallbackResult, aioresponses
from yarl import URL

from magicwan import (
    APIError,
    InvalidInputError,
    MagicWAN,
    PSKSetResult,
    UnexpectedResponseError,
)
from magicwan.internal.validation import MAX_PSK_LENGTH, MIN_PSK_LENGTH
from tests.support.clock import FakeClock
from tests.support.constants import ACCOUNT, BASE, PSK_URL, TOKEN, TUNNEL
from tests.support.samples import envelope

SET_URL = f"{BASE}/accounts/{ACCOUNT}/magic/ipsec_tunnels/psk"
T2 = "0123456789abcdef0123456789abcdef"
PSK_A = "A" * 20 + "secretA1"
PSK_B = "B" * 20 + "secretB2"
STAMP = "2026-11-27T10:00:00.123456Z"


def applied(psks: dict[str, str]) -> dict[str, Any]:
    return {
        tunnel: {
            "ipsec_tunnel_id": tunnel,
            "ipsec_id": f"{tunnel}.{ACCOUNT}.ipsec.cloudflare.com",
            "psk": psk,
            "psk_metadata": {"last_generated_on": STAMP},
        }
        for tunnel, psk in psks.items()
    }


def answer(psks: dict[str, str], unapplied: dict[str, str] | None = None) -> dict[str, Any]:
    return envelope({"successfully_applied_psks": applied(psks), "unapplied_psks": unapplied or {}})


def client_for(fake: FakeClock, **kwargs: Any) -> MagicWAN:
    return MagicWAN(api_token=TOKEN, clock=fake.clock, sleep=fake.sleep, **kwargs)


def sent(mock_api: aioresponses, url: str = SET_URL) -> list[Any]:
    return [json.loads(c.kwargs["data"]) for c in mock_api.requests.get(("POST", URL(url)), [])]


@pytest.fixture
def fake() -> FakeClock:
    return FakeClock()


@pytest.mark.asyncio
async def test_set_sends_the_documented_body_and_returns_applied_and_unapplied(
    mock_api: aioresponses, fake: FakeClock
) -> None:
    mock_api.post(SET_URL, payload=answer({TUNNEL: PSK_A}, {T2: "tunnel not found"}))
    async with client_for(fake) as client:
        result = await client.tunnels.ipsec.psk.set(ACCOUNT, {TUNNEL: PSK_A, T2: PSK_B})
    assert sent(mock_api) == [{"psks": [{"id": TUNNEL, "psk": PSK_A}, {"id": T2, "psk": PSK_B}]}]
    assert isinstance(result, PSKSetResult)
    assert set(result.applied) == {TUNNEL}
    item = result.applied[TUNNEL]
    assert item.psk == PSK_A
    assert item.ipsec_id == f"{TUNNEL}.{ACCOUNT}.ipsec.cloudflare.com"
    assert item.psk_metadata is not None
    assert item.psk_metadata.last_generated_on is not None
    assert result.unapplied == {T2: "tunnel not found"}
    for secret in (PSK_A, PSK_B):
        assert secret not in repr(result)


@pytest.mark.asyncio
async def test_validate_only_goes_to_the_validating_url(
    mock_api: aioresponses, fake: FakeClock
) -> None:
    mock_api.post(SET_URL + "?validate_only=true", payload=answer({TUNNEL: PSK_A}))
    async with client_for(fake) as client:
        result = await client.tunnels.ipsec.psk.set(ACCOUNT, {TUNNEL: PSK_A}, validate_only=True)
    assert set(result.applied) == {TUNNEL}


@pytest.mark.parametrize(
    ("psks", "match"),
    [
        ({}, "must not be empty"),
        ([(TUNNEL, PSK_A)], "mapping"),
        ({"../x": PSK_A}, "tunnel_id"),
        ({TUNNEL: PSK_A, TUNNEL.upper(): PSK_B}, "twice"),
        ({TUNNEL: "short"}, f"{MIN_PSK_LENGTH} to {MAX_PSK_LENGTH}"),
        ({TUNNEL: "x" * (MAX_PSK_LENGTH + 1)}, "characters long"),
        ({TUNNEL: "has a space in it 0123"}, "printable ASCII"),
        ({TUNNEL: "tab\there0123456789abc"}, "printable ASCII"),
        ({TUNNEL: "ünïcödé-0123456789abc"}, "printable ASCII"),
        ({TUNNEL: 12345678901234567890}, "must be a string"),
    ],
)
@pytest.mark.asyncio
async def test_bad_input_is_refused_before_sending(
    mock_api: aioresponses, fake: FakeClock, psks: Any, match: str
) -> None:
    async with client_for(fake) as client:
        with pytest.raises(InvalidInputError, match=match) as info:
            await client.tunnels.ipsec.psk.set(ACCOUNT, psks)
    assert not mock_api.requests
    if isinstance(psks, dict):
        for value in psks.values():
            if isinstance(value, str) and len(value) > 4:
                assert value not in str(info.value)


@pytest.mark.asyncio
async def test_an_unknown_outcome_is_retried_with_the_same_psks(
    mock_api: aioresponses, fake: FakeClock
) -> None:
    mock_api.post(SET_URL, status=502, payload=envelope(None, success=False))
    mock_api.post(SET_URL, payload=answer({TUNNEL: PSK_A}))
    async with client_for(fake, retry_unknown_outcome=False) as client:
        # Idempotent: retried even when unknown outcomes of generate are not.
        reply = await client.tunnels.ipsec.psk.with_reply.set(ACCOUNT, {TUNNEL: PSK_A})
    bodies = sent(mock_api)
    assert len(bodies) == 2
    assert bodies[0] == bodies[1]
    assert reply.attempts == 2
    assert reply.uncertain
    assert reply.value.applied[TUNNEL].psk == PSK_A


@pytest.mark.parametrize(
    "result",
    [
        {"successfully_applied_psks": applied({T2: PSK_A}), "unapplied_psks": {}},
        {"successfully_applied_psks": applied({TUNNEL: PSK_A}), "unapplied_psks": {TUNNEL: "x"}},
        {"successfully_applied_psks": {}, "unapplied_psks": {T2: "x"}},
        {"successfully_applied_psks": [], "unapplied_psks": {}},
        # Keyed by the PSK sent (in any case), not the tunnel id: the key is never quoted.
        {"successfully_applied_psks": {}, "unapplied_psks": {PSK_A: "invalid psk"}},
        {"successfully_applied_psks": {}, "unapplied_psks": {PSK_A.lower(): "invalid"}},
        {"successfully_applied_psks": applied({PSK_A: PSK_A}), "unapplied_psks": {}},
        {"successfully_applied_psks": {PSK_A: "not an object"}, "unapplied_psks": {}},
    ],
    ids=[
        "foreign-applied",
        "both",
        "foreign-refused",
        "wrong-type",
        "refused-by-psk",
        "refused-by-psk-folded",
        "applied-by-psk",
        "shape-by-psk",
    ],
)
@pytest.mark.asyncio
async def test_an_answer_that_does_not_match_the_request_is_unexpected(
    mock_api: aioresponses, fake: FakeClock, result: dict[str, Any]
) -> None:
    mock_api.post(SET_URL, payload=envelope(result), repeat=True)
    async with client_for(fake, max_retries=0) as client:
        with pytest.raises(UnexpectedResponseError) as info:
            await client.tunnels.ipsec.psk.set(ACCOUNT, {TUNNEL: PSK_A})
    for secret in (PSK_A, PSK_B):
        assert secret.lower() not in str(info.value).lower()


@pytest.mark.asyncio
async def test_a_psk_applied_other_than_the_one_sent_is_kept_as_it_came(
    mock_api: aioresponses, fake: FakeClock
) -> None:
    # Raising would throw away the PSK the server says the tunnel now holds.
    result = {"successfully_applied_psks": applied({TUNNEL: PSK_B}), "unapplied_psks": {}}
    mock_api.post(SET_URL, payload=envelope(result))
    async with client_for(fake) as client:
        answer = await client.tunnels.ipsec.psk.set(ACCOUNT, {TUNNEL: PSK_A})
    assert answer.applied[TUNNEL].psk == PSK_B


@pytest.mark.asyncio
async def test_a_tunnel_missing_from_the_answer_is_neither_applied_nor_refused(
    mock_api: aioresponses, fake: FakeClock
) -> None:
    # A cut or partial answer: the tunnel may hold the PSK sent, so it is not "unapplied".
    mock_api.post(SET_URL, payload=envelope({"successfully_applied_psks": None}))
    async with client_for(fake) as client:
        result = await client.tunnels.ipsec.psk.set(ACCOUNT, {TUNNEL: PSK_A})
    assert result.applied == {}
    assert result.unapplied == {}
    assert result.missing == (TUNNEL,)


@pytest.mark.asyncio
async def test_an_error_echoing_the_psks_shows_neither(
    mock_api: aioresponses, fake: FakeClock
) -> None:
    body = envelope(None, success=False, errors=[{"code": 1004, "message": f"bad {PSK_B} {PSK_A}"}])
    mock_api.post(SET_URL, status=400, payload=body)
    async with client_for(fake) as client:
        with pytest.raises(APIError) as info:
            await client.tunnels.ipsec.psk.set(ACCOUNT, {TUNNEL: PSK_A, T2: PSK_B})
    assert info.value.codes == (1004,)
    assert PSK_A not in str(info.value)
    assert PSK_B not in str(info.value)
    assert "[REDACTED]" in str(info.value)


@pytest.mark.asyncio
async def test_a_set_and_a_generate_of_one_tunnel_never_overlap(
    mock_api: aioresponses, fake: FakeClock
) -> None:
    active: list[str] = []
    peak = 0

    async def handle(url: URL, **kwargs: Any) -> CallbackResult:
        nonlocal peak
        active.append(url.path)
        peak = max(peak, len(active))
        for _ in range(5):
            await asyncio.sleep(0)
        active.remove(url.path)
        if url.path.endswith("/psk"):
            return CallbackResult(payload=answer({TUNNEL: PSK_A}))
        result = {"ipsec_tunnel_id": TUNNEL, "psk": PSK_B}
        return CallbackResult(payload=envelope(result))

    mock_api.post(SET_URL, callback=handle, repeat=True)
    mock_api.post(PSK_URL.replace(TUNNEL, TUNNEL.upper()), callback=handle, repeat=True)
    async with client_for(fake) as client:
        psk = client.tunnels.ipsec.psk
        await asyncio.gather(
            psk.set(ACCOUNT, {TUNNEL: PSK_A}),
            psk.generate(ACCOUNT, TUNNEL.upper()),
            psk.set(ACCOUNT, {TUNNEL.upper(): PSK_A}),
        )
    assert peak == 1


@pytest.mark.asyncio
async def test_with_reply_tells_attempts_uncertainty_and_ray(
    mock_api: aioresponses, fake: FakeClock
) -> None:
    result = {"ipsec_tunnel_id": TUNNEL, "psk": PSK_A, "ipsec_id": "x.ipsec.cloudflare.com"}
    mock_api.post(PSK_URL, status=500, payload=envelope(None, success=False))
    mock_api.post(PSK_URL, payload=envelope(result), headers={"cf-ray": "abc-SJC"})
    async with client_for(fake) as client:
        reply = await client.tunnels.ipsec.psk.with_reply.generate(ACCOUNT, TUNNEL)
    assert reply.value.psk == PSK_A
    assert reply.value.ipsec_id == "x.ipsec.cloudflare.com"
    assert reply.attempts == 2
    assert reply.uncertain
    assert reply.ray_id == "abc-SJC"
    assert PSK_A not in repr(reply)
