"""Hostile or broken servers: each misbehaviour ends in a typed error, in time, with no secret."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

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
    RateLimitError,
    UnexpectedResponseError,
    UnprocessableEntityError,
    cli,
)
from magicwan._envelope import parse_retry_after  # private: the header parser, fed hostile values
from magicwan._http import MAX_RESPONSE_BYTES  # private: the body cap a hostile answer meets
from magicwan.emulator import run
from tests.support.clock import FakeClock
from tests.support.constants import ACCOUNT, TUNNEL
from tests.support.hostile import (
    ENORMOUS_RETRY_AFTER,
    ODD_STAMPS,
    RAW_SCENARIOS,
    RETRY_AFTER_ONCE,
    UNREADABLE_RATELIMIT,
    HostileServer,
)
from tests.support.secrets import (
    HOSTILE_PSK,
    SECRET_EMAIL,
    SECRET_KEY,
    SECRET_TOKEN,
    assert_no_secret,
    exception_texts,
)
from tests.support.tiny_server import (
    client_of,
    envelope,
    tiny_server,
)

pytestmark = pytest.mark.asyncio

SECRETS = (SECRET_TOKEN, SECRET_KEY, HOSTILE_PSK)
TIMEOUT = 1.0

# scenario -> the exact error class it must end in
UNEXPECTED = [
    "huge_length",
    "huge_chunked",
    "nested_open",
    "nested_balanced",
    "nested_objects",
    "nested_result",
    "type_list",
    "type_string",
    "type_number",
    "type_null",
    "success_missing",
    "success_string",
    "errors_not_list",
    "result_list",
    "result_null",
    "result_string",
    "psk_int",
    "psk_empty",
    "tunnel_id_int",
    "other_tunnel",
    "html_echo",
    "truncated_psk",
    *(f"redirect_{s}" for s in (301, 302, 303, 307, 308)),
]
API_ERRORS: dict[str, type[APIError]] = {
    "error_400": BadRequestError,
    "error_401": AuthenticationError,
    "error_403": PermissionDeniedError,
    "error_404": NotFoundError,
    "error_405": APIError,
    "error_409": ConflictError,
    "error_422": UnprocessableEntityError,
    "error_429": RateLimitError,
    "error_500": InternalServerError,
    "error_502": InternalServerError,
    "error_503": InternalServerError,
    "error_520": InternalServerError,
}
RETRY_AFTER: dict[str, float | None] = {
    "retry_after_negative": None,
    "retry_after_enormous": parse_retry_after(ENORMOUS_RETRY_AFTER),  # the cap
    "retry_after_infinite": None,
    "retry_after_nan": None,
    "retry_after_garbage": None,
    "retry_after_past_date": 0.0,
    "rate_limited_html": None,
}
RAW: dict[str, type[MagicWANError]] = {
    "bad_status_line": APIConnectionError,
    "short_body": APIConnectionError,
    "huge_header": APIConnectionError,
    "bad_chunked": APIConnectionError,
    "close_at_once": APIConnectionError,
    "header_trickle": APITimeoutError,
}

NEVER_ENDS = ["slowloris", "never_starts"]
#: Scenarios with a test of their own.
SINGLES = ["ok", "success_false_2xx", "psk_metadata_bad_date", "psk_metadata_string"]
#: Scenarios tested in test_server_rate_limit_headers.py and test_server_odd_stamps.py, which
#: iterate over these same lists from tests.support.hostile.
ELSEWHERE = [*UNREADABLE_RATELIMIT, *ODD_STAMPS, *RETRY_AFTER_ONCE, "rate_limited_briefly"]


def _client(base_url: str, auth: str = "token", **kwargs: object) -> MagicWAN:
    creds: dict[str, str] = (
        {"api_token": SECRET_TOKEN}
        if auth == "token"
        else {"api_email": SECRET_EMAIL, "api_key": SECRET_KEY}
    )
    options: dict[str, object] = {"max_retries": 0, "timeout": TIMEOUT, "rate_limit": None}
    options.update(kwargs)
    return MagicWAN(base_url=base_url, **creds, **options)  # type: ignore[arg-type]


async def _fail(client: MagicWAN, validate_only: bool = False) -> MagicWANError:
    """Generate once; the call must raise a MagicWANError within the timeout (plus slack)."""
    started = time.monotonic()
    async with client, asyncio.timeout(TIMEOUT + 3):
        with pytest.raises(MagicWANError) as info:
            await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL, validate_only=validate_only)
    assert time.monotonic() - started < TIMEOUT + 1.5
    exc = info.value
    # The client can only scrub what it knows: its own credential and any PSK.
    held = (SECRET_TOKEN if client.auth_scheme == "token" else SECRET_KEY, HOSTILE_PSK)
    assert_no_secret(exception_texts(exc), held, where=type(exc).__name__)
    assert_no_secret([repr(client)], SECRETS, where="client repr")
    return exc


async def test_sanity_the_hostile_server_can_answer_well(hostile: HostileServer) -> None:
    async with _client(hostile.url("ok")) as client:
        result = await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    assert result.psk == HOSTILE_PSK
    assert HOSTILE_PSK not in repr(result)


@pytest.mark.parametrize("auth", ["token", "key"])
@pytest.mark.parametrize("scenario", UNEXPECTED)
async def test_broken_bodies_are_unexpected_response_errors(
    hostile: HostileServer, scenario: str, auth: str
) -> None:
    exc = await _fail(_client(hostile.url(scenario), auth))
    assert type(exc) is UnexpectedResponseError, repr(exc)
    assert hostile.hits(scenario) == 1
    if scenario.startswith("huge"):
        assert "larger than" in str(exc)
    if scenario.startswith("redirect"):
        assert exc.status == int(scenario.rsplit("_", 1)[1])
        assert "redirect" in str(exc)


@pytest.mark.parametrize("auth", ["token", "key"])
async def test_success_false_on_a_2xx_is_an_api_error_without_secrets(
    hostile: HostileServer, auth: str
) -> None:
    exc = await _fail(_client(hostile.url("success_false_2xx"), auth))
    assert type(exc) is APIError
    assert exc.status == 200
    assert exc.codes == (7,)
    assert exc.outcome_unknown
    assert "[REDACTED]" in str(exc)
    assert hostile.hits("success_false_2xx") == 1


async def test_a_stamp_that_is_not_a_date_never_costs_the_psk(
    hostile: HostileServer, caplog: pytest.LogCaptureFixture
) -> None:
    # The hostile server puts the PSK itself where the stamp belongs: the answer carries
    # a PSK, so it is kept (stamp unset), and the warning does not repeat the value.
    caplog.set_level(logging.DEBUG, logger="magicwan")
    async with _client(hostile.url("psk_metadata_bad_date")) as client:
        result = await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    assert result.psk == HOSTILE_PSK
    assert result.psk_metadata is not None
    assert result.psk_metadata.last_generated_on is None
    assert hostile.hits("psk_metadata_bad_date") == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("not RFC 3339" in r.getMessage() for r in warnings)
    assert HOSTILE_PSK not in caplog.text


async def test_metadata_that_is_not_an_object_never_costs_the_psk(
    hostile: HostileServer, caplog: pytest.LogCaptureFixture
) -> None:
    # psk_metadata flattened to a string: metadata, so it is left unset and the PSK kept.
    caplog.set_level(logging.DEBUG, logger="magicwan")
    async with _client(hostile.url("psk_metadata_string")) as client:
        result = await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    assert result.psk == HOSTILE_PSK
    assert result.psk_metadata is None
    assert hostile.hits("psk_metadata_string") == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("ignoring psk_metadata" in r.getMessage() for r in warnings)
    assert "yesterday" not in caplog.text
    assert HOSTILE_PSK not in caplog.text


@pytest.mark.parametrize("auth", ["token", "key"])
@pytest.mark.parametrize("scenario", sorted(API_ERRORS))
async def test_error_envelopes_echoing_secrets(
    hostile: HostileServer, scenario: str, auth: str
) -> None:
    exc = await _fail(_client(hostile.url(scenario), auth))
    assert type(exc) is API_ERRORS[scenario]
    assert isinstance(exc, APIError)
    assert exc.status == int(scenario.rsplit("_", 1)[1])
    assert exc.codes == (1000,)
    assert "[REDACTED]" in str(exc)


@pytest.mark.parametrize("scenario", sorted(RETRY_AFTER))
async def test_hostile_retry_after(hostile: HostileServer, scenario: str) -> None:
    exc = await _fail(_client(hostile.url(scenario)))
    assert type(exc) is RateLimitError
    assert exc.retry_after == RETRY_AFTER[scenario]


@pytest.mark.parametrize("scenario", sorted(RETRY_AFTER))
async def test_hostile_retry_after_never_sleeps_long(hostile: HostileServer, scenario: str) -> None:
    """Retried with an injected clock: every wait is bounded by the client's caps."""
    fake = FakeClock()
    client = _client(
        hostile.url(scenario),
        max_retries=3,
        max_retry_after=5.0,
        clock=fake.clock,
        sleep=fake.sleep,
    )
    async with client:
        with pytest.raises(RateLimitError):
            await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
        assert all(0 <= s <= 8.0 for s in fake.sleeps), fake.sleeps
        if scenario == "retry_after_enormous":
            # Beyond the cap: raised at once, and the client's cooldown refuses the next call
            # without sending anything.
            assert hostile.hits(scenario) == 1
            with pytest.raises(RateLimitError) as second:
                await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
            assert "not sent" in str(second.value)
            assert hostile.hits(scenario) == 1
        else:
            assert hostile.hits(scenario) == 4


@pytest.mark.parametrize("scenario", NEVER_ENDS)
async def test_a_response_that_never_ends_is_cut_by_the_timeout(
    hostile: HostileServer, scenario: str
) -> None:
    exc = await _fail(_client(hostile.url(scenario)))
    assert type(exc) is APITimeoutError
    assert exc.request_sent is True
    assert f"{TIMEOUT:g}s" in str(exc)


@pytest.mark.parametrize("scenario", sorted(RAW))
async def test_answers_that_are_not_http(hostile: HostileServer, scenario: str) -> None:
    exc = await _fail(_client(hostile.raw_url(scenario)))
    assert type(exc) is RAW[scenario], repr(exc)
    assert isinstance(exc, APIConnectionError)
    assert exc.request_sent is True


@pytest.mark.parametrize(
    ("scenario", "retried"),
    [
        ("nested_open", True),
        ("psk_int", True),
        ("error_503", True),
        ("html_echo", True),
        ("error_400", False),
        ("error_404", False),
        ("redirect_307", False),
    ],
)
async def test_retries_against_hostile_answers(
    hostile: HostileServer, scenario: str, retried: bool
) -> None:
    fake = FakeClock()
    client = _client(hostile.url(scenario), max_retries=2, clock=fake.clock, sleep=fake.sleep)
    exc = await _fail(client)
    assert hostile.hits(scenario) == (3 if retried else 1)
    assert isinstance(exc, APIError | UnexpectedResponseError)
    off = _client(hostile.url(scenario), max_retries=2, retry_unknown_outcome=False)
    await _fail(off)
    assert hostile.hits(scenario) == (4 if retried else 2)


@pytest.mark.parametrize("auth", ["token", "key"])
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("own_session", [False, True])
async def test_credentials_never_follow_a_redirect(
    hostile: HostileServer, status: int, auth: str, own_session: bool
) -> None:
    """Not followed with the SDK's session, nor with a session the caller passes in."""
    for validate_only in (False, True):
        if own_session:
            async with aiohttp.ClientSession() as session:
                await _fail(
                    _client(
                        hostile.url(f"redirect_{status}"), auth, max_retries=3, session=session
                    ),
                    validate_only,
                )
        else:
            await _fail(
                _client(hostile.url(f"redirect_{status}"), auth, max_retries=3), validate_only
            )
    assert hostile.witness_seen == []
    assert hostile.hits(f"redirect_{status}") == 2
    sent = hostile.seen[0].headers
    assert (sent.get("Authorization") == f"Bearer {SECRET_TOKEN}") == (auth == "token")
    assert (sent.get("X-Auth-Key") == SECRET_KEY) == (auth == "key")


async def test_tunnel_reads_against_hostile_bodies(hostile: HostileServer) -> None:
    """``get`` and ``list`` see the same hostile bodies and fail the same typed way."""
    calls: list[Callable[[MagicWAN], object]] = [
        lambda c: c.tunnels.ipsec.get(ACCOUNT, TUNNEL),
        lambda c: c.tunnels.ipsec.list(ACCOUNT),
    ]
    for scenario in ("nested_open", "type_list", "result_list", "huge_chunked", "redirect_302"):
        for call in calls:
            async with _client(hostile.url(scenario)) as client:
                with pytest.raises(UnexpectedResponseError) as info:
                    await call(client)  # type: ignore[misc]
            assert_no_secret(exception_texts(info.value), (SECRET_TOKEN, HOSTILE_PSK))
    assert hostile.witness_seen == []


async def test_the_witness_would_see_a_followed_redirect(hostile: HostileServer) -> None:
    """The redirect tests are not vacuous: a client that follows redirects is caught."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            hostile.url("redirect_307") + "/x",
            headers={"X-Auth-Email": SECRET_EMAIL, "X-Auth-Key": SECRET_KEY},
        ) as resp,
    ):
        await resp.read()
    # aiohttp drops Authorization on a cross-origin redirect, but carries X-Auth-Key along.
    assert len(hostile.witness_seen) == 1
    assert hostile.witness_seen[0].headers.get("X-Auth-Key") == SECRET_KEY


async def test_every_hostile_scenario_is_exercised(hostile: HostileServer) -> None:
    """The tables above come from the server's own lists: a new misbehaviour needs a test."""
    tables = [UNEXPECTED, list(API_ERRORS), list(RETRY_AFTER), NEVER_ENDS, SINGLES, ELSEWHERE]
    covered = [scenario for table in tables for scenario in table]
    assert sorted(covered) == hostile.scenarios  # each exactly once
    assert sorted(RAW) == RAW_SCENARIOS


async def test_a_gzip_bomb_is_refused_like_any_body_over_the_limit() -> None:
    # SECURITY.md: "A response body larger than 4 MiB is refused." That holds for the body
    # once decompressed: here 40 KiB of gzip on the wire would inflate to 40 MiB in memory
    # (and 4 MiB on the wire to 4 GiB).
    pad = "x" * (10 * MAX_RESPONSE_BYTES)
    body = envelope({"ipsec_tunnel_id": TUNNEL, "psk": "A" * 32, "pad": pad})
    squeezed = gzip.compress(body, compresslevel=9)
    assert len(squeezed) < MAX_RESPONSE_BYTES // 50

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.Response(
            body=squeezed,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    async with tiny_server(handler) as base, client_of(base, max_retries=0) as client:
        with pytest.raises(UnexpectedResponseError):
            await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)


@web.middleware
async def _lists_a_malformed_id(request: web.Request, handler: Any) -> web.StreamResponse:
    """The tunnel list answered with one more tunnel whose id is not an id."""
    response: web.StreamResponse = await handler(request)
    if request.method != "GET" or not request.path.endswith("/ipsec_tunnels"):
        return response
    assert isinstance(response, web.Response)
    assert isinstance(response.body, bytes)
    body = json.loads(response.body)
    tunnels = body["result"]["ipsec_tunnels"]
    tunnels.append({**tunnels[0], "id": "../../accounts/x", "name": "odd"})
    return web.json_response(body)


async def test_a_malformed_id_in_the_tunnel_list_is_reported_as_the_servers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The list is the server's answer; an id in it that is not an id is a bad answer
    # (exit 3, "the tunnel list could not be read", an UnexpectedResponseError naming the
    # list), not a usage error: exit 2 says "a bad option or id" and the message reads as
    # though the operator had typed '../../accounts/x'.
    async with run(tunnels=2, rate_limit=None, middlewares=[_lists_a_malformed_id]) as emu:
        for name, value in emu.env().items():
            monkeypatch.setenv(name, value)
        argv = ["psk", "rotate", "--all", "--journal", str(tmp_path / "j.jsonl")]
        err = io.StringIO()
        code = await cli.amain(argv, stdout=io.StringIO(), stderr=err)
    assert code == 3, err.getvalue()
    assert "UnexpectedResponseError" in err.getvalue()
    assert "result.ipsec_tunnels[2].id" in err.getvalue()  # what came back, and where
    assert "../../accounts/x" not in err.getvalue()
