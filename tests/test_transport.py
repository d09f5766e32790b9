"""The transport end to end through the client, with aioresponses and virtual time."""

from __future__ import annotations

import asyncio
import json
import logging
import platform
import random
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey
from aioresponses import CallbackResult, aioresponses
from yarl import URL

import magicwan
from magicwan import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    MagicWAN,
    MagicWANError,
    NotFoundError,
    PermissionDeniedError,
    PSKGenerateResult,
    RateLimitError,
    UnexpectedResponseError,
    UnprocessableEntityError,
)
from magicwan.ratelimit import CLOUDFLARE_BUDGET, MAX_COOLDOWN, RateLimiter
from tests.support.clock import FakeClock, ManualClock
from tests.support.constants import ACCOUNT, BASE, EMAIL, KEY, PSK, PSK_URL, TOKEN, TUNNEL
from tests.support.probes import live_locks
from tests.support.samples import envelope, load_sample

OTHER = "0123456789abcdef0123456789abcdef"
OTHER_URL = f"{BASE}/accounts/{ACCOUNT}/magic/ipsec_tunnels/{OTHER}/psk_generate"
VALIDATE_URL = PSK_URL + "?validate_only=true"
RAY = "8f3a1b2c3d4e5f60-SJC"


def ok(tunnel: str = TUNNEL, psk: str | None = PSK) -> dict[str, Any]:
    result: dict[str, Any] = {
        "ipsec_tunnel_id": tunnel,
        "psk_metadata": {"last_generated_on": "2017-06-14T05:20:00Z"},
    }
    if psk is not None:
        result["psk"] = psk
    return envelope(result)


def fail(code: int, message: str) -> dict[str, Any]:
    return envelope(None, success=False, errors=[{"code": code, "message": message}])


def sample(mock_api: aioresponses, url: str, name: str, **kwargs: Any) -> None:
    status, headers, body = load_sample(name)
    headers = dict(headers)
    content_type = headers.pop("content-type", "application/json")
    mock_api.post(
        url, status=status, headers=headers, body=body, content_type=content_type, **kwargs
    )


def calls(mock_api: aioresponses, url: str = PSK_URL) -> list[Any]:
    return mock_api.requests.get(("POST", URL(url)), [])


@pytest.fixture
def fake() -> FakeClock:
    return FakeClock()


@pytest.fixture(autouse=True)
def _half_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    # The backoff is then exactly 0.75 * its exponential step: 0.375, 0.75, 1.5, ...
    # MagicWAN takes no jitter argument (its RetryPolicy gets magicwan._retry.default_jitter
    # when it is built), so the random source that function reads is pinned instead.
    monkeypatch.setattr(random, "random", lambda: 0.5)


def client_for(fake: FakeClock, **kwargs: Any) -> MagicWAN:
    kwargs.setdefault("api_token", TOKEN)
    return MagicWAN(clock=fake.clock, sleep=fake.sleep, **kwargs)


def backoff_sleeps(fake: FakeClock) -> list[float]:
    return [s for s in fake.sleeps if s > 0]


# --- the request -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_request_shape_with_a_token(mock_api: aioresponses, fake: FakeClock) -> None:
    mock_api.post(PSK_URL, payload=ok(), headers={"cf-ray": RAY})
    async with client_for(fake) as client:
        result = await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    assert isinstance(result, PSKGenerateResult)
    assert result.ipsec_tunnel_id == TUNNEL
    assert result.psk == PSK
    assert result.psk_metadata is not None
    assert result.psk_metadata.last_generated_on == datetime(2017, 6, 14, 5, 20, tzinfo=UTC)
    [call] = calls(mock_api)
    assert list(mock_api.requests) == [("POST", URL(PSK_URL))]
    assert call.kwargs["data"] == b"{}"
    assert json.loads(call.kwargs["data"]) == {}
    assert call.kwargs["allow_redirects"] is False
    headers = call.kwargs["headers"]
    assert headers["Content-Type"] == "application/json"
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert "X-Auth-Key" not in headers
    assert "X-Auth-Email" not in headers
    assert headers["User-Agent"] == (
        f"magicwan/{magicwan.__version__} Python/{platform.python_version()} "
        f"aiohttp/{aiohttp.__version__}"
    )
    assert re.fullmatch(r"magicwan/\S+ Python/\d+\.\d+\.\d+ aiohttp/\S+", headers["User-Agent"])


@pytest.mark.asyncio
async def test_request_shape_with_email_and_key(mock_api: aioresponses, fake: FakeClock) -> None:
    mock_api.post(PSK_URL, payload=ok())
    async with client_for(fake, api_token=None, api_email=EMAIL, api_key=KEY) as client:
        await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    headers = calls(mock_api)[0].kwargs["headers"]
    assert headers["X-Auth-Email"] == EMAIL
    assert headers["X-Auth-Key"] == KEY
    assert "Authorization" not in headers


@pytest.mark.asyncio
async def test_validate_only_adds_the_query(mock_api: aioresponses, fake: FakeClock) -> None:
    sample(mock_api, VALIDATE_URL, "validate_only_200")
    async with client_for(fake) as client:
        result = await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL, validate_only=True)
    assert result.psk is None
    assert result.ipsec_tunnel_id == TUNNEL
    assert list(mock_api.requests) == [("POST", URL(VALIDATE_URL))]
    assert calls(mock_api, VALIDATE_URL)[0].kwargs["data"] == b"{}"


@pytest.mark.asyncio
async def test_no_query_unless_validate_only(mock_api: aioresponses, fake: FakeClock) -> None:
    mock_api.post(PSK_URL, payload=ok())
    async with client_for(fake) as client:
        await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL, validate_only=False)
    [(_, url)] = list(mock_api.requests)
    assert url.query_string == ""
    assert str(url) == PSK_URL


@pytest.mark.asyncio
async def test_base_url_path_is_kept(mock_api: aioresponses, fake: FakeClock) -> None:
    base = "https://proxy.example:8443/cf/v4"
    url = f"{base}/accounts/{ACCOUNT}/magic/ipsec_tunnels/{TUNNEL}/psk_generate"
    mock_api.post(url, payload=ok())
    async with client_for(fake, base_url=base + "/") as client:
        await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    assert list(mock_api.requests) == [("POST", URL(url))]


# --- errors by status family -------------------------------------------------------

FAMILIES: list[tuple[str, type[APIError], tuple[int, ...]]] = [
    ("missing_auth_400", BadRequestError, (9106,)),
    ("unauthenticated_401", AuthenticationError, (10001,)),
    ("bad_key_403", PermissionDeniedError, (9103,)),
    ("bad_token_403", PermissionDeniedError, (10000,)),
    ("not_found_404", NotFoundError, (7003, 7000)),
    ("method_not_allowed_405", APIError, (7001,)),
    ("conflict_409", ConflictError, (1007,)),
    ("unprocessable_422", UnprocessableEntityError, (1002,)),
    ("rate_limited_429", RateLimitError, (971,)),
    ("internal_500", InternalServerError, (10002,)),
    ("bad_gateway_502", InternalServerError, (10013,)),
    ("unavailable_503", InternalServerError, (10043,)),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("name", "cls", "codes"), FAMILIES, ids=[f[0] for f in FAMILIES])
async def test_status_families(
    mock_api: aioresponses,
    fake: FakeClock,
    name: str,
    cls: type[APIError],
    codes: tuple[int, ...],
) -> None:
    sample(mock_api, PSK_URL, name)
    status, headers, _ = load_sample(name)
    async with client_for(fake, max_retries=0) as client:
        with pytest.raises(APIError) as info:
            await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    error = info.value
    assert type(error) is cls
    assert error.status == status
    assert error.codes == codes
    assert error.ray_id == headers["cf-ray"]
    text = str(error)
    assert f"HTTP {status}" in text
    assert headers["cf-ray"] in text
    assert all(str(code) in text for code in codes)
    assert error.errors[0].message in text
    assert TOKEN not in text
    assert len(calls(mock_api)) == 1


# --- retries -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_5xx_then_success(mock_api: aioresponses, fake: FakeClock) -> None:
    sample(mock_api, PSK_URL, "internal_500")
    sample(mock_api, PSK_URL, "bad_gateway_502")
    mock_api.post(PSK_URL, payload=ok())
    async with client_for(fake) as client:
        result = await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    assert result.psk == PSK
    assert len(calls(mock_api)) == 3
    assert backoff_sleeps(fake) == [0.375, 0.75]
    assert fake.elapsed == pytest.approx(1.125)


@pytest.mark.asyncio
@pytest.mark.parametrize("max_retries", [0, 1, 4])
async def test_max_retries_is_respected(
    mock_api: aioresponses, fake: FakeClock, max_retries: int
) -> None:
    sample(mock_api, PSK_URL, "unavailable_503", repeat=True)
    async with client_for(fake, max_retries=max_retries) as client:
        with pytest.raises(InternalServerError) as info:
            await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    assert info.value.status == 503
    assert len(calls(mock_api)) == max_retries + 1
    assert backoff_sleeps(fake) == [0.375, 0.75, 1.5, 3.0][:max_retries]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "name",
    [
        "missing_auth_400",
        "unauthenticated_401",
        "bad_key_403",
        "not_found_404",
        "method_not_allowed_405",
        "unprocessable_422",
    ],
)
async def test_other_4xx_are_never_retried(
    mock_api: aioresponses, fake: FakeClock, name: str
) -> None:
    sample(mock_api, PSK_URL, name, repeat=True)
    async with client_for(fake, max_retries=5) as client:
        with pytest.raises(APIError):
            await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    assert len(calls(mock_api)) == 1
    assert fake.sleeps == []


@pytest.mark.asyncio
async def test_4xx_html_page_is_not_retried(mock_api: aioresponses, fake: FakeClock) -> None:
    mock_api.post(
        PSK_URL, status=403, body="<html>Attention Required!</html>", content_type="text/html"
    )
    async with client_for(fake) as client:
        with pytest.raises(UnexpectedResponseError) as info:
            await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    assert info.value.status == 403
    assert len(calls(mock_api)) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("name", ["conflict_409"])
async def test_409_is_an_unknown_outcome_and_retried(
    mock_api: aioresponses, fake: FakeClock, name: str
) -> None:
    sample(mock_api, PSK_URL, name)
    mock_api.post(PSK_URL, payload=ok())
    async with client_for(fake) as client:
        assert (await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)).psk == PSK
    assert len(calls(mock_api)) == 2


@pytest.mark.asyncio
async def test_408_is_retried(mock_api: aioresponses, fake: FakeClock) -> None:
    mock_api.post(PSK_URL, status=408, payload=fail(1000, "request timeout"))
    mock_api.post(PSK_URL, payload=ok())
    async with client_for(fake) as client:
        assert (await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)).psk == PSK
    assert len(calls(mock_api)) == 2


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "failure",
    [
        {"status": 500, "payload": fail(10002, "boom")},
        {"exception": TimeoutError()},
        {"exception": aiohttp.ServerDisconnectedError()},
        {"status": 200, "body": '{"result": {"psk": "abc', "content_type": "application/json"},
    ],
    ids=["500", "timeout", "disconnected", "truncated"],
)
async def test_retry_unknown_outcome_false_stops_unknown_outcomes(
    mock_api: aioresponses, fake: FakeClock, failure: dict[str, Any]
) -> None:
    mock_api.post(PSK_URL, repeat=True, **failure)
    async with client_for(fake, retry_unknown_outcome=False, max_retries=3) as client:
        with pytest.raises(MagicWANError):
            await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    assert len(calls(mock_api)) == 1


@pytest.mark.asyncio
async def test_retry_unknown_outcome_false_still_retries_validate_only(
    mock_api: aioresponses, fake: FakeClock
) -> None:
    mock_api.post(VALIDATE_URL, status=500, payload=fail(10002, "boom"))
    sample(mock_api, VALIDATE_URL, "validate_only_200")
    async with client_for(fake, retry_unknown_outcome=False) as client:
        result = await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL, validate_only=True)
    assert result.psk is None
    assert len(calls(mock_api, VALIDATE_URL)) == 2


# --- 429 and the shared cooldown ---------------------------------------------------


@pytest.mark.asyncio
async def test_429_retry_after_seconds(mock_api: aioresponses, fake: FakeClock) -> None:
    times: list[float] = []

    def stamp(url: URL, **kwargs: Any) -> None:
        times.append(fake.elapsed)

    sample(mock_api, PSK_URL, "rate_limited_429", callback=stamp)
    mock_api.post(PSK_URL, payload=ok(), callback=stamp)
    async with client_for(fake) as client:
        result = await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    assert result.psk == PSK
    assert times == [0.0, 30.0]
    assert 30.0 in fake.sleeps


@pytest.mark.asyncio
async def test_429_retry_after_http_date(mock_api: aioresponses, fake: FakeClock) -> None:
    times: list[float] = []

    def stamp(url: URL, **kwargs: Any) -> None:
        times.append(fake.elapsed)

    when = datetime.now(UTC) + timedelta(seconds=30)
    mock_api.post(
        PSK_URL,
        status=429,
        payload=fail(971, "Please wait"),
        headers={"Retry-After": when.strftime("%a, %d %b %Y %H:%M:%S GMT")},
        callback=stamp,
    )
    mock_api.post(PSK_URL, payload=ok(), callback=stamp)
    async with client_for(fake) as client:
        await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    assert times[0] == 0.0
    assert 25.0 < times[1] <= 30.0


@pytest.mark.asyncio
async def test_429_without_retry_after_backs_off(mock_api: aioresponses, fake: FakeClock) -> None:
    mock_api.post(PSK_URL, status=429, payload=fail(971, "Please wait"))
    mock_api.post(PSK_URL, payload=ok())
    async with client_for(fake) as client:
        await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    assert len(calls(mock_api)) == 2
    assert fake.elapsed == pytest.approx(0.375)


@pytest.mark.asyncio
async def test_429_beyond_the_cap_raises_at_once(mock_api: aioresponses, fake: FakeClock) -> None:
    mock_api.post(
        PSK_URL,
        status=429,
        payload=fail(971, "Please wait and consider throttling your request speed"),
        headers={"Retry-After": "3600", "cf-ray": RAY},
        repeat=True,
    )
    async with client_for(fake, max_retry_after=60) as client:
        with pytest.raises(RateLimitError) as info:
            await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
        assert info.value.retry_after == 3600.0
        assert info.value.codes == (971,)
        assert info.value.ray_id == RAY
        assert "retry after 3600s" in str(info.value)
        assert len(calls(mock_api)) == 1
        assert backoff_sleeps(fake) == []
        # The client now knows the budget is spent: the next call is refused unsent, for
        # at most MAX_COOLDOWN (Cloudflare's 300 s window), whatever Retry-After said.
        with pytest.raises(RateLimitError) as again:
            await client.tunnels.ipsec.psk.generate(ACCOUNT, OTHER)
        assert again.value.retry_after == pytest.approx(MAX_COOLDOWN)
    assert calls(mock_api, OTHER_URL) == []
    assert len(calls(mock_api)) == 1
    assert backoff_sleeps(fake) == []


@pytest.mark.asyncio
async def test_429_cooldown_is_shared_by_the_clients_calls(
    mock_api: aioresponses, fake: FakeClock
) -> None:
    log: list[tuple[str, float]] = []

    def stamp(url: URL, **kwargs: Any) -> None:
        log.append((url.path.split("/")[-2], fake.elapsed))

    tunnels = [f"{i:032x}" for i in range(1, 4)]
    urls = [f"{BASE}/accounts/{ACCOUNT}/magic/ipsec_tunnels/{t}/psk_generate" for t in tunnels]
    mock_api.post(
        urls[0],
        status=429,
        payload=fail(971, "Please wait"),
        headers={"Retry-After": "30"},
        callback=stamp,
    )
    for tunnel, url in zip(tunnels, urls, strict=True):
        mock_api.post(url, payload=ok(tunnel), callback=stamp)

    async with client_for(fake) as client:
        psk = client.tunnels.ipsec.psk
        first = asyncio.create_task(psk.generate(ACCOUNT, tunnels[0]))
        while client.rate_limiter.paused_until <= fake.now:
            await asyncio.sleep(0)  # until the 429 has been seen
        others = [asyncio.create_task(psk.generate(ACCOUNT, t)) for t in tunnels[1:]]
        results = await asyncio.gather(first, *others)
    assert [r.ipsec_tunnel_id for r in results] == tunnels
    assert log[0] == (tunnels[0], 0.0)
    # Nobody, the first call's retry included, went before the cooldown was over.
    assert sorted(t for _, t in log[1:]) == pytest.approx([30.0, 30.25, 30.5])
    assert {name for name, _ in log[1:]} == set(tunnels)


# --- connection failures ---------------------------------------------------------------


def connector_error() -> aiohttp.ClientConnectorError:
    key = ConnectionKey("api.cloudflare.com", 443, True, True, None, None, None, None)
    return aiohttp.ClientConnectorError(key, OSError(111, "Connection refused"))


@pytest.mark.asyncio
async def test_connect_failure_is_retried_even_when_cautious(
    mock_api: aioresponses, fake: FakeClock
) -> None:
    mock_api.post(PSK_URL, exception=connector_error())
    mock_api.post(PSK_URL, payload=ok())
    async with client_for(fake, retry_unknown_outcome=False) as client:
        assert (await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)).psk == PSK
    assert len(calls(mock_api)) == 2


@pytest.mark.asyncio
async def test_connect_failure_exhausted(mock_api: aioresponses, fake: FakeClock) -> None:
    mock_api.post(PSK_URL, exception=connector_error(), repeat=True)
    async with client_for(fake) as client:
        with pytest.raises(APIConnectionError) as info:
            await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    assert info.value.request_sent is False
    assert not isinstance(info.value, APITimeoutError)
    assert "api.cloudflare.com" in str(info.value)
    assert len(calls(mock_api)) == 3


@pytest.mark.asyncio
async def test_connect_timeout_is_not_sent(mock_api: aioresponses, fake: FakeClock) -> None:
    mock_api.post(PSK_URL, exception=aiohttp.ConnectionTimeoutError(), repeat=True)
    async with client_for(fake, retry_unknown_outcome=False) as client:
        with pytest.raises(APITimeoutError) as info:
            await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    assert info.value.request_sent is False
    assert len(calls(mock_api)) == 3


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (aiohttp.ServerDisconnectedError(), APIConnectionError),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), APIConnectionError),
        (aiohttp.ClientPayloadError("Response payload is not completed"), APIConnectionError),
        (TimeoutError(), APITimeoutError),
        (aiohttp.ServerTimeoutError("read timeout"), APITimeoutError),
    ],
    ids=["disconnected", "reset", "payload", "timeout", "read-timeout"],
)
async def test_failures_after_sending(
    mock_api: aioresponses, fake: FakeClock, exc: Exception, cls: type[APIConnectionError]
) -> None:
    mock_api.post(PSK_URL, exception=exc, repeat=True)
    async with client_for(fake) as client:
        with pytest.raises(APIConnectionError) as info:
            await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    assert type(info.value) is cls
    assert info.value.request_sent is True
    assert len(calls(mock_api)) == 3  # retried by default
    assert TOKEN not in str(info.value)


@pytest.mark.asyncio
async def test_failure_after_sending_then_success(mock_api: aioresponses, fake: FakeClock) -> None:
    mock_api.post(PSK_URL, exception=aiohttp.ServerDisconnectedError())
    mock_api.post(PSK_URL, payload=ok())
    async with client_for(fake) as client:
        assert (await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)).psk == PSK


# --- bodies that are not an envelope ---------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("name", ["truncated_json_200", "html_bad_gateway_502", "empty_body_200"])
async def test_undecodable_bodies_are_retried_then_raised(
    mock_api: aioresponses, fake: FakeClock, name: str
) -> None:
    sample(mock_api, PSK_URL, name, repeat=True)
    async with client_for(fake) as client:
        with pytest.raises(UnexpectedResponseError) as info:
            await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    assert len(calls(mock_api)) == 3
    status, headers, _ = load_sample(name)
    assert info.value.status == status
    assert info.value.ray_id == headers["cf-ray"]
    assert PSK[:8] not in str(info.value)


@pytest.mark.asyncio
async def test_html_then_success(mock_api: aioresponses, fake: FakeClock) -> None:
    sample(mock_api, PSK_URL, "html_bad_gateway_502")
    mock_api.post(PSK_URL, payload=ok())
    async with client_for(fake) as client:
        assert (await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)).psk == PSK


@pytest.mark.asyncio
async def test_redirect_is_not_followed(mock_api: aioresponses, fake: FakeClock) -> None:
    sample(mock_api, PSK_URL, "redirect_301", repeat=True)
    mock_api.get("https://evil.example/steal", payload=ok(), repeat=True)
    mock_api.post("https://evil.example/steal", payload=ok(), repeat=True)
    async with client_for(fake) as client:
        with pytest.raises(UnexpectedResponseError) as info:
            await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    assert info.value.status == 301
    assert list(mock_api.requests) == [("POST", URL(PSK_URL))]
    assert len(calls(mock_api)) == 1  # and not retried


@pytest.mark.asyncio
async def test_success_without_psk_is_unexpected(mock_api: aioresponses, fake: FakeClock) -> None:
    mock_api.post(PSK_URL, payload=ok(psk=None), repeat=True)
    async with client_for(fake, max_retries=0) as client:
        with pytest.raises(UnexpectedResponseError, match="no psk"):
            await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)


@pytest.mark.asyncio
async def test_result_for_another_tunnel_is_unexpected(
    mock_api: aioresponses, fake: FakeClock
) -> None:
    mock_api.post(PSK_URL, payload=ok(tunnel=OTHER), repeat=True)
    async with client_for(fake, max_retries=0) as client:
        with pytest.raises(UnexpectedResponseError, match="not") as info:
            await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    assert PSK not in str(info.value)


@pytest.mark.asyncio
async def test_result_id_differing_only_in_case_is_the_same_tunnel(
    mock_api: aioresponses, fake: FakeClock
) -> None:
    upper = TUNNEL.upper()
    mock_api.post(PSK_URL.replace(TUNNEL, upper), payload=ok(tunnel=TUNNEL))
    async with client_for(fake, max_retries=0) as client:
        result = await client.tunnels.ipsec.psk.generate(ACCOUNT, upper)
    assert result.psk == PSK
    assert result.ipsec_tunnel_id == TUNNEL


@pytest.mark.asyncio
async def test_validate_only_with_a_null_result(mock_api: aioresponses, fake: FakeClock) -> None:
    mock_api.post(VALIDATE_URL, payload=envelope(None))
    async with client_for(fake, max_retries=0) as client:
        result = await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL, validate_only=True)
    assert result == PSKGenerateResult(ipsec_tunnel_id=TUNNEL, psk=None, psk_metadata=None)


@pytest.mark.asyncio
async def test_same_tunnel_in_two_spellings_is_serialized(
    mock_api: aioresponses, fake: FakeClock
) -> None:
    in_flight = 0
    overlapped = False

    async def handler(url: URL, **kwargs: Any) -> CallbackResult:
        nonlocal in_flight, overlapped
        in_flight += 1
        overlapped = overlapped or in_flight > 1
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        in_flight -= 1
        return CallbackResult(payload=ok())

    mock_api.post(PSK_URL, callback=handler)
    mock_api.post(PSK_URL.replace(TUNNEL, TUNNEL.upper()), callback=handler)
    async with client_for(fake, max_retries=0) as client:
        await asyncio.gather(
            client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL),
            client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL.upper()),
        )
    assert not overlapped


@pytest.mark.asyncio
async def test_success_false_on_200_is_an_api_error_with_codes(
    mock_api: aioresponses, fake: FakeClock
) -> None:
    sample(mock_api, PSK_URL, "success_false_200", repeat=True)
    async with client_for(fake, max_retries=0) as client:
        with pytest.raises(APIError) as info:
            await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    assert info.value.status == 200
    assert info.value.codes == (1000,)
    assert info.value.outcome_unknown


@pytest.mark.asyncio
async def test_wrong_result_types_are_unexpected(mock_api: aioresponses, fake: FakeClock) -> None:
    sample(mock_api, PSK_URL, "result_wrong_types_200", repeat=True)
    async with client_for(fake, max_retries=0) as client:
        with pytest.raises(UnexpectedResponseError, match=r"result\.psk"):
            await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)


@pytest.mark.asyncio
async def test_ratelimit_header_tightens_the_limiter(
    mock_api: aioresponses, fake: FakeClock
) -> None:
    mock_api.post(
        PSK_URL,
        payload=ok(),
        headers={"Ratelimit": '"default";r=0;t=300', "Ratelimit-Policy": '"default";q=1200;w=300'},
    )
    async with client_for(fake) as client:
        await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
        assert client.rate_limiter.available() == pytest.approx(0.0)


# --- concurrency ---------------------------------------------------------------------


class InFlight:
    """Counts concurrent requests. ``handle`` is the aioresponses callback: a bound
    method, because aioresponses tests ``inspect.iscoroutinefunction`` and would not
    await an object with an async ``__call__``."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.order: list[str] = []

    async def handle(self, url: URL, **kwargs: Any) -> CallbackResult:
        self.now += 1
        self.peak = max(self.peak, self.now)
        tunnel = url.path.split("/")[-2]
        self.order.append(tunnel)
        for _ in range(5):
            await asyncio.sleep(0)
        self.now -= 1
        return CallbackResult(payload=ok(tunnel))


@pytest.mark.asyncio
async def test_same_tunnel_generates_are_serialized(
    mock_api: aioresponses, fake: FakeClock
) -> None:
    tracker = InFlight()
    mock_api.post(PSK_URL, callback=tracker.handle, repeat=True)
    async with client_for(fake) as client:
        results = await asyncio.gather(
            *(client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL) for _ in range(5))
        )
    assert len(results) == 5
    assert len(calls(mock_api)) == 5
    assert tracker.peak == 1


@pytest.mark.asyncio
async def test_different_tunnels_run_concurrently(mock_api: aioresponses, fake: FakeClock) -> None:
    tracker = InFlight()
    pattern = re.compile(
        rf"^{re.escape(BASE)}/accounts/{ACCOUNT}/magic/ipsec_tunnels/\w+/psk_generate$"
    )
    mock_api.post(pattern, callback=tracker.handle, repeat=True)
    tunnels = [f"{i:032x}" for i in range(1, 6)]
    async with client_for(fake) as client:
        results = await asyncio.gather(
            *(client.tunnels.ipsec.psk.generate(ACCOUNT, t) for t in tunnels)
        )
    assert [r.ipsec_tunnel_id for r in results] == tunnels
    assert tracker.peak == 5


@pytest.mark.asyncio
async def test_retry_never_races_another_generate_for_the_tunnel(
    mock_api: aioresponses, fake: FakeClock
) -> None:
    times: list[float] = []
    locks: list[int] = []

    def stamp(url: URL, **kwargs: Any) -> None:
        times.append(fake.elapsed)
        locks.append(live_locks())

    mock_api.post(PSK_URL, status=500, payload=fail(10002, "boom"), callback=stamp)
    mock_api.post(PSK_URL, payload=ok(), callback=stamp, repeat=True)
    async with client_for(fake) as client:
        psk = client.tunnels.ipsec.psk
        idle = live_locks()
        await asyncio.gather(psk.generate(ACCOUNT, TUNNEL), psk.generate(ACCOUNT, TUNNEL))
        after = live_locks()
    # The second caller waited for the first one's backoff and retry.
    assert times == [0.0, 0.375, 0.375]
    # The tunnel's lock lives while a call holds or awaits it, and is dropped when idle.
    assert all(n > idle for n in locks)
    assert after == idle


@pytest.mark.asyncio
async def test_validate_only_is_not_serialized(mock_api: aioresponses, fake: FakeClock) -> None:
    tracker = InFlight()
    mock_api.post(VALIDATE_URL, callback=tracker.handle, repeat=True)
    async with client_for(fake) as client:
        await asyncio.gather(
            *(
                client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL, validate_only=True)
                for _ in range(3)
            )
        )
    assert tracker.peak == 3


# --- cancelled calls and the limiter -------------------------------------------------------

ANY_PSK_URL = re.compile(
    rf"^{re.escape(BASE)}/accounts/{ACCOUNT}/magic/ipsec_tunnels/[0-9a-f]+/psk_generate$"
)


async def _until(condition: Any, what: str) -> None:
    """Give the loop turns (never real time) until ``condition()`` holds."""
    for _ in range(100_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


class Arrivals:
    """The aioresponses callback: answers each tunnel with its own PSK, stamps arrivals."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.times: list[float] = []

    def handle(self, url: URL, **kwargs: Any) -> CallbackResult:
        self.times.append(self.clock.elapsed)
        return CallbackResult(payload=ok(url.path.split("/")[-2]))


@pytest.mark.asyncio
async def test_cancelled_generates_give_their_limiter_slots_back(mock_api: aioresponses) -> None:
    # The numbers through the client: budget 10/10 s, 10 requests sent, 31 calls
    # cancelled while they waited; the next call waited 31.5 s. At most one interval now.
    clock = ManualClock()
    arrivals = Arrivals(clock)
    mock_api.post(ANY_PSK_URL, callback=arrivals.handle, repeat=True)
    tunnels = [f"{i:032x}" for i in range(1, 43)]
    async with MagicWAN(
        api_token=TOKEN, rate_limit=(10, 10.0), clock=clock, sleep=clock.sleep
    ) as client:
        psk = client.tunnels.ipsec.psk
        first = [asyncio.create_task(psk.generate(ACCOUNT, t)) for t in tunnels[:10]]
        await _until(lambda: len(arrivals.times) == 9 and clock.sleeping == 1, "the burst")
        clock.advance(1.0)
        await asyncio.gather(*first)
        assert len(arrivals.times) == 10

        waiting = [asyncio.create_task(psk.generate(ACCOUNT, t)) for t in tunnels[10:41]]
        await _until(lambda: clock.sleeping == 31, "31 calls waiting for the limiter")
        clock.advance(0.5)
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        assert len(arrivals.times) == 10  # no cancelled call sent anything

        started = clock.elapsed
        after = asyncio.create_task(psk.generate(ACCOUNT, tunnels[41]))
        await _until(lambda: clock.sleeping == 1 or after.done(), "the next call")
        wait = clock.sleeps[-1] if clock.sleeping else 0.0
        assert wait <= 1.0, f"the next call waits {wait:g}s after 31 cancelled calls"
        clock.advance(1.0)
        result = await after
    assert result.ipsec_tunnel_id == tunnels[41]
    assert len(arrivals.times) == 11
    assert arrivals.times[-1] - started <= 1.0


@pytest.mark.asyncio
async def test_a_cancelled_gather_leaves_the_default_budget_usable(
    mock_api: aioresponses,
) -> None:
    # The numbers through the client: 2,000 gathered generates cancelled after 0.1 s
    # at the default budget left the next request waiting 200 s. At most one interval now.
    clock = ManualClock()
    arrivals = Arrivals(clock)
    mock_api.post(ANY_PSK_URL, callback=arrivals.handle, repeat=True)
    interval = CLOUDFLARE_BUDGET[1] / CLOUDFLARE_BUDGET[0]
    burst = CLOUDFLARE_BUDGET[0] - round(RateLimiter(*CLOUDFLARE_BUDGET).headroom)
    async with MagicWAN(api_token=TOKEN, clock=clock, sleep=clock.sleep) as client:
        psk = client.tunnels.ipsec.psk
        batch = asyncio.gather(*(psk.generate(ACCOUNT, f"{i:032x}") for i in range(1, 2001)))
        await _until(
            lambda: len(arrivals.times) == burst and clock.sleeping == 2000 - burst,
            "the burst sent and the rest waiting",
        )
        clock.advance(0.1)
        batch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await batch
        assert len(arrivals.times) == burst

        after = asyncio.create_task(psk.generate(ACCOUNT, f"{2001:032x}"))
        await _until(lambda: clock.sleeping == 1 or after.done(), "the next call")
        wait = clock.sleeps[-1] if clock.sleeping else 0.0
        assert wait <= interval, f"the next call waits {wait:g}s after a cancelled gather"
        clock.advance(interval)
        await after
    assert len(arrivals.times) == burst + 1


# --- session ownership -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_passed_session_is_never_closed(mock_api: aioresponses, fake: FakeClock) -> None:
    # That the passed session is the one used is shown against the emulator
    # (tests/integration/test_generate.py): aioresponses bypasses trace hooks.
    mock_api.post(PSK_URL, payload=ok())
    async with aiohttp.ClientSession() as session:
        async with client_for(fake, session=session) as client:
            await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
        assert client.closed
        assert not session.closed
        await client.aclose()
        assert not session.closed


@pytest.mark.asyncio
async def test_aclose_without_use(fake: FakeClock) -> None:
    client = client_for(fake)
    await client.aclose()
    assert client.closed


@pytest.mark.asyncio
async def test_a_closed_client_refuses_to_work(mock_api: aioresponses, fake: FakeClock) -> None:
    mock_api.post(PSK_URL, payload=ok(), repeat=True)
    client = client_for(fake)
    await client.aclose()
    with pytest.raises(MagicWANError, match="closed"):
        await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    with pytest.raises(MagicWANError, match="closed"):
        async with client:
            pass
    assert mock_api.requests == {}


@pytest.mark.asyncio
async def test_a_closed_passed_session_is_refused(mock_api: aioresponses, fake: FakeClock) -> None:
    session = aiohttp.ClientSession()
    await session.close()
    client = client_for(fake, session=session)
    with pytest.raises(MagicWANError, match="closed"):
        await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    await client.aclose()
    assert mock_api.requests == {}


# --- logging -------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("auth", ["token", "key"])
async def test_logging_has_the_facts_and_no_secret(
    mock_api: aioresponses, fake: FakeClock, caplog: pytest.LogCaptureFixture, auth: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="magicwan")
    creds = {"api_token": TOKEN} if auth == "token" else {"api_email": EMAIL, "api_key": KEY}
    mock_api.post(
        PSK_URL,
        status=500,
        payload=fail(10002, f"boom {PSK}"),
        headers={"cf-ray": "ray500-SJC"},
    )
    mock_api.post(PSK_URL, exception=aiohttp.ServerDisconnectedError())
    mock_api.post(PSK_URL, payload=ok(), headers={"cf-ray": RAY})
    async with client_for(fake, **{"api_token": None, **creds}) as client:
        await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    records = [r for r in caplog.records if r.name == "magicwan"]
    assert records
    # Retries are worth an operator's attention (INFO); the rest is DEBUG.
    retries = [r for r in records if "retrying" in r.getMessage()]
    assert len(retries) == 2
    assert all(r.levelno == logging.INFO for r in retries)
    assert all(r.levelno == logging.DEBUG for r in records if r not in retries)
    text = "\n".join(r.getMessage() for r in records)
    path = f"/accounts/{ACCOUNT}/magic/ipsec_tunnels/{TUNNEL}/psk_generate"
    # -vv: each request's line says how long its answer took (here on the fake clock).
    took = r"in \d+\.\d{3}s"
    assert re.search(rf"POST {path} -> 500 {took} \(attempt 1, cf-ray ray500-SJC\)", text)
    assert re.search(rf"POST {path} -> APIConnectionError {took} \(attempt 2\)", text)
    assert re.search(rf"POST {path} -> 200 {took} \(attempt 3, cf-ray {RAY}\)", text)
    # Structured fields for --log-format json: the event and the ids the route names.
    requests = [r for r in records if getattr(r, "event", None) == "request"]
    assert len(requests) == 3
    assert {(getattr(r, "account_id", None), getattr(r, "tunnel_id", None)) for r in records} == {
        (ACCOUNT, TUNNEL)
    }
    assert {getattr(r, "event", None) for r in retries} == {"retry"}
    assert "retrying after InternalServerError (attempt 1, wait 0.375s" in text
    assert "wait 0.750s" in text
    for secret in (TOKEN, KEY, PSK):
        assert secret not in caplog.text
        assert secret not in text


# --- response size ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_declared_content_length_is_read(mock_api: aioresponses, fake: FakeClock) -> None:
    body = json.dumps(ok()).encode()
    mock_api.post(PSK_URL, body=body, headers={"Content-Length": str(len(body))})
    async with client_for(fake) as client:
        assert (await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)).psk == PSK


def test_request_headers_and_raw_answers_never_show_secrets_in_repr() -> None:
    from magicwan._http import RawResponse  # private: the transport's adapter answer
    from magicwan._transport import _Headers

    headers = _Headers({"Authorization": "Bearer tok-secret-123456", "Accept": "x"})
    assert "tok-secret" not in repr(headers)
    assert "Accept" in repr(headers)
    assert headers["Authorization"] == "Bearer tok-secret-123456"  # sent as it is
    raw = RawResponse(200, {}, b'{"psk": "psk-secret-0123456789"}')
    assert "psk-secret" not in repr(raw)
