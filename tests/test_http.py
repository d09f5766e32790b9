"""The aiohttp adapter on its own: one request in, ``(status, headers, body)`` out."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import Callable

import aiohttp
import pytest
from aioresponses import aioresponses

from magicwan._http import HTTPAdapter
from magicwan.errors import APIConnectionError, UnexpectedResponseError
from tests.support.constants import PSK_URL


def adapter(**kwargs: object) -> HTTPAdapter:
    settings: dict[str, object] = {
        "host": "api.cloudflare.com",
        "timeout": 5.0,
        "connect_timeout": 5.0,
        "connection_limit": 4,
    }
    settings.update(kwargs)
    return HTTPAdapter(**settings)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_send_returns_status_headers_and_body(mock_api: aioresponses) -> None:
    mock_api.post(PSK_URL, status=201, body=b'{"x":1}', headers={"cf-ray": "abc-SJC"})
    http = adapter()
    try:
        raw = await http.send("POST", PSK_URL, {"Content-Type": "application/json"}, b"{}")
    finally:
        await http.aclose()
    assert raw.status == 201
    assert raw.body == b'{"x":1}'
    assert raw.headers["CF-Ray"] == "abc-SJC"  # case-insensitive, as aiohttp gives them


@pytest.mark.asyncio
@pytest.mark.parametrize("declared", [False, True], ids=["streamed", "content-length"])
async def test_oversized_body_is_refused(mock_api: aioresponses, declared: bool) -> None:
    # aioresponses cannot feed a body above aiohttp's stream high-water mark (64 KiB):
    # its fake protocol asserts in pause_reading(). So the limit is lowered instead.
    body = b" " * 2001
    headers = {"Content-Length": str(len(body))} if declared else {}
    mock_api.post(PSK_URL, body=body, headers=headers)
    http = adapter(max_response_bytes=2000)
    try:
        with pytest.raises(UnexpectedResponseError, match="larger than 2000 bytes"):
            await http.send("POST", PSK_URL, {}, b"{}")
    finally:
        await http.aclose()


@pytest.mark.asyncio
@pytest.mark.parametrize("declared", [False, True], ids=["streamed", "content-length"])
async def test_a_call_may_carry_its_own_cap(mock_api: aioresponses, declared: bool) -> None:
    # A route's cap (the tunnel lists') replaces the adapter's, both ways.
    body = b" " * 3001
    headers = {"Content-Length": str(len(body))} if declared else {}
    mock_api.get(PSK_URL, body=body, headers=headers, repeat=True)
    http = adapter(max_response_bytes=2000)
    try:
        raw = await http.send("GET", PSK_URL, {}, None, max_response_bytes=4000)
        with pytest.raises(UnexpectedResponseError, match="larger than 3000 bytes"):
            await http.send("GET", PSK_URL, {}, None, max_response_bytes=3000)
    finally:
        await http.aclose()
    assert raw.body == body


@pytest.mark.asyncio
async def test_a_closed_adapter_sends_nothing(mock_api: aioresponses) -> None:
    http = adapter()
    await http.aclose()
    with pytest.raises(Exception, match="closed") as info:
        await http.send("GET", PSK_URL, {}, None)
    assert not mock_api.requests
    assert getattr(info.value, "request_sent", None) is False


def _zlib(body: bytes) -> bytes:
    return zlib.compress(body)  # with the zlib header (RFC 1950), as "deflate" should be


def _raw_deflate(body: bytes) -> bytes:
    squeezer = zlib.compressobj(wbits=-zlib.MAX_WBITS)  # no header: what many servers send
    return squeezer.compress(body) + squeezer.flush()


# Content-Encoding and how to make a body of it: aiohttp accepts all three.
_ENCODED: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "gzip": ("gzip", gzip.compress),
    "deflate_zlib": ("deflate", _zlib),
    "deflate_raw": ("deflate", _raw_deflate),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", list(_ENCODED))
async def test_a_compressed_body_is_decoded(mock_api: aioresponses, kind: str) -> None:
    encoding, squeeze = _ENCODED[kind]
    body = b'{"result": {"psk": "x"}, "success": true}' * 20
    mock_api.post(PSK_URL, body=squeeze(body), headers={"Content-Encoding": encoding})
    http = adapter()
    try:
        raw = await http.send("POST", PSK_URL, {}, b"{}")
    finally:
        await http.aclose()
    assert raw.body == body


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", list(_ENCODED))
async def test_a_compressed_body_over_the_limit_once_decoded_is_refused(
    mock_api: aioresponses, kind: str
) -> None:
    encoding, squeeze = _ENCODED[kind]
    squeezed = squeeze(b" " * 20_000)
    assert len(squeezed) < 2000
    mock_api.post(PSK_URL, body=squeezed, headers={"Content-Encoding": encoding})
    http = adapter(max_response_bytes=2000)
    try:
        with pytest.raises(UnexpectedResponseError, match="larger than 2000 bytes"):
            await http.send("POST", PSK_URL, {}, b"{}")
    finally:
        await http.aclose()


@pytest.mark.asyncio
@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_that_does_not_decompress_is_refused(
    mock_api: aioresponses, encoding: str
) -> None:
    # 0x78 is a zlib header's first byte: what follows must then be zlib, and is not.
    mock_api.post(PSK_URL, body=b"\x78not compressed", headers={"Content-Encoding": encoding})
    http = adapter()
    try:
        with pytest.raises(UnexpectedResponseError, match="does not decompress") as info:
            await http.send("POST", PSK_URL, {}, b"{}")
    finally:
        await http.aclose()
    assert info.value.__cause__ is None


def test_a_session_of_another_event_loop_sends_nothing() -> None:
    # The caller's session, made in another loop (a first asyncio.run(), another thread):
    # aiohttp would raise a bare RuntimeError. Nothing can be sent on it from this loop.
    async def make() -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    async def send(session: aiohttp.ClientSession) -> None:
        http = adapter(session=session)
        try:
            await http.send("POST", "http://127.0.0.1:9/psk_generate", {}, b"{}")
        finally:
            await http.aclose()

    first = asyncio.new_event_loop()
    try:
        session = first.run_until_complete(make())
        try:
            with pytest.raises(APIConnectionError, match="another event loop") as info:
                asyncio.run(send(session))
            assert not session.closed  # the caller's: never closed by the client
        finally:
            first.run_until_complete(session.close())
    finally:
        first.close()
    assert info.value.request_sent is False
    assert info.value.retryable is False


@pytest.mark.asyncio
async def test_a_runtime_error_from_aiohttp_is_a_connection_error(
    mock_api: aioresponses,
) -> None:
    # aiohttp raises RuntimeError for misuse and for a connection closed mid-read: the
    # caller gets an SDK error that says the request may have been sent.
    mock_api.post(PSK_URL, exception=RuntimeError("Connection closed."))
    http = adapter()
    try:
        with pytest.raises(APIConnectionError, match="RuntimeError") as info:
            await http.send("POST", PSK_URL, {}, b"{}")
    finally:
        await http.aclose()
    assert info.value.request_sent is True
    assert info.value.outcome_unknown
    assert info.value.retryable is False
