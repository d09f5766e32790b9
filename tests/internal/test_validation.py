"""Input checks: refused before any request is sent, never echoing a secret."""

from __future__ import annotations

import argparse
import importlib.util
import math
import re
from datetime import timedelta

import pytest
from aioresponses import aioresponses

from magicwan import InvalidInputError, MagicWAN, MagicWANError
from magicwan.cli.parser import duration
from magicwan.internal.validation import (
    check_bool,
    check_credential,
    check_duration,
    check_id,
    check_non_negative_int,
    check_positive_int,
    check_seconds,
    normalize_base_url,
)
from tests.support.constants import ACCOUNT, BASE, TOKEN, TUNNEL

BAD_IDS: list[object] = [
    "",
    "a" * 33,
    "abc/def",
    "..",
    "../../user",
    "abc?x=1",
    "abc%2F",
    "abc#frag",
    "abc def",
    " abc",
    "abc\n",
    "abc\t",
    "\u00e9t\u00e9",
    "\u0661\u0662\u0663",  # Arabic-Indic digits: isdigit() but not ASCII
    "abc\x00",
    "a-b",
    "a_b",
    None,
    123,
    b"abc",
    ["abc"],
]


@pytest.mark.parametrize("value", BAD_IDS, ids=repr)
def test_check_id_refuses(value: object) -> None:
    with pytest.raises(InvalidInputError) as info:
        check_id(value, "tunnel_id")
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, MagicWANError)
    assert "tunnel_id" in str(info.value)


@pytest.mark.parametrize("value", ["a", "A1", "0" * 32, ACCOUNT, TUNNEL.upper()])
def test_check_id_accepts(value: str) -> None:
    assert check_id(value, "tunnel_id") == value


@pytest.mark.asyncio
@pytest.mark.parametrize("value", BAD_IDS, ids=repr)
@pytest.mark.parametrize("which", ["account", "tunnel"])
async def test_bad_ids_send_no_request(mock_api: aioresponses, value: object, which: str) -> None:
    mock_api.post(re.compile(r"^https://api\.cloudflare\.com/.*"), status=200, repeat=True)
    account, tunnel = (value, TUNNEL) if which == "account" else (ACCOUNT, value)
    async with MagicWAN(api_token=TOKEN) as client:
        with pytest.raises(InvalidInputError) as info:
            await client.tunnels.ipsec.psk.generate(account, tunnel)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=f"{which}_id"):
            await client.tunnels.ipsec.psk.generate(
                account,  # type: ignore[arg-type]
                tunnel,  # type: ignore[arg-type]
                validate_only=True,
            )
    assert f"{which}_id" in str(info.value)
    assert mock_api.requests == {}


@pytest.mark.asyncio
@pytest.mark.parametrize("value", [1, 0, "true", None, "yes", 1.0])
async def test_validate_only_must_be_a_bool(mock_api: aioresponses, value: object) -> None:
    async with MagicWAN(api_token=TOKEN) as client:
        with pytest.raises(TypeError, match="validate_only"):
            await client.tunnels.ipsec.psk.generate(
                ACCOUNT,
                TUNNEL,
                validate_only=value,  # type: ignore[arg-type]
            )
    assert mock_api.requests == {}


def test_check_bool() -> None:
    assert check_bool(True, "x") is True
    assert check_bool(False, "x") is False
    with pytest.raises(TypeError, match="x must be a bool"):
        check_bool(1, "x")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "tok en",
        "tok\nen",
        "tok\ren",
        "tok\x00en",
        "tok\x7fen",
        "t\u00f6ken",
        "tok\u2028en",
        "x" * 4097,
    ],
    ids=repr,
)
def test_check_credential_refuses_without_echoing(value: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        check_credential(value, "api_token")
    assert "api_token" in str(info.value)
    if value:
        assert value not in str(info.value)
        assert repr(value) not in str(info.value)


@pytest.mark.parametrize("value", [None, 42, b"token"])
def test_check_credential_refuses_non_strings(value: object) -> None:
    with pytest.raises(InvalidInputError, match="must be a string"):
        check_credential(value, "api_key")


def test_check_credential_accepts_printable_ascii() -> None:
    token = "".join(chr(c) for c in range(0x21, 0x7F))
    assert check_credential(token, "api_token") == token


@pytest.mark.parametrize("value", [0, -1, math.inf, math.nan, -math.inf, "5", True, None])
def test_check_seconds_refuses(value: object) -> None:
    with pytest.raises(InvalidInputError, match="timeout"):
        check_seconds(value, "timeout")


def test_check_seconds_accepts() -> None:
    assert check_seconds(5, "t") == 5.0
    assert check_seconds(0.001, "t") == 0.001


def test_check_ints() -> None:
    assert check_non_negative_int(0, "n") == 0
    assert check_positive_int(1, "n") == 1
    for bad in (-1, 1.0, True, "1", None):
        with pytest.raises(InvalidInputError):
            check_non_negative_int(bad, "n")
    for bad in (0, -1, 2.0, False, "1", None):
        with pytest.raises(InvalidInputError):
            check_positive_int(bad, "n")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (BASE, BASE),
        (BASE + "/", BASE),
        ("https://api.cloudflare.com", "https://api.cloudflare.com"),
        ("https://proxy.example:8443/cf/v4", "https://proxy.example:8443/cf/v4"),
        ("http://127.0.0.1:8787/client/v4", "http://127.0.0.1:8787/client/v4"),
        ("http://127.0.0.2:8787", "http://127.0.0.2:8787"),
        ("http://[::1]:8787/client/v4", "http://[::1]:8787/client/v4"),
        ("http://localhost:8787", "http://localhost:8787"),
        ("http://LOCALHOST:8787", "http://LOCALHOST:8787"),
    ],
)
def test_base_url_accepted(value: str, expected: str) -> None:
    assert normalize_base_url(value) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("http://api.cloudflare.com/client/v4", "https"),
        ("http://10.0.0.1:8787", "https"),
        ("http://0.0.0.0:8787", "https"),
        ("http://localhost.evil.example", "https"),
        ("http://emu.localhost:8787", "https"),
        ("ftp://api.cloudflare.com", "https"),
        ("api.cloudflare.com/client/v4", "https"),
        ("https://", "https"),
        ("https://user:pw@api.cloudflare.com", "credentials"),
        ("https://user@api.cloudflare.com", "credentials"),
        ("https://api.cloudflare.com/client/v4?x=1", "query"),
        ("https://api.cloudflare.com/client/v4?", "query"),
        ("https://api.cloudflare.com/client/v4#frag", "fragment"),
        ("https://api.cloudflare.com:99999", "valid URL"),
        ("https://api.cloudflare.com:0", "port"),
        ("https://api.cloud flare.com", "whitespace"),
        ("https://api.cloudflare.com/\n", "whitespace"),
        ("https://\u00e4pi.cloudflare.com", "non-ASCII"),
    ],
)
def test_base_url_refused(value: str, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        normalize_base_url(value)


def test_base_url_must_be_a_string() -> None:
    with pytest.raises(InvalidInputError):
        normalize_base_url(b"https://api.cloudflare.com")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90d", 90 * 86400), ("12h", 43200), ("30m", 1800), ("45s", 45), (" 1d ", 86400)],
)
def test_check_duration_reads_a_number_and_one_unit(text: str, seconds: int) -> None:
    assert check_duration(text, "AGE") == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "a whole number and a unit"),
        ("90", "a whole number and a unit"),
        ("1y", "a whole number and a unit"),
        ("1.5d", "a whole number and a unit"),
        ("-5d", "a whole number and a unit"),
        ("1d12h", "a whole number and a unit"),
        ("90D", "a whole number and a unit"),
        ("0s", "longer than 0"),
        ("36501d", "at most 36500d"),
        ("9999999999d", "a whole number and a unit"),
        (90, "must be a string"),
    ],
)
def test_check_duration_refuses(value: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        check_duration(value, "AGE")


def test_the_argparse_duration_names_the_metavar() -> None:
    assert duration("45s") == timedelta(seconds=45)
    with pytest.raises(argparse.ArgumentTypeError, match=r"^DURATION must be .*'1y'"):
        duration("1y")


@pytest.mark.parametrize("bad", [True, math.inf, math.nan, 0, -1.0, "5"])
def test_the_deliverers_and_the_limiter_take_seconds_by_the_one_rule(bad: object) -> None:
    from magicwan.delivery import Command, StrongSwan
    from magicwan.ratelimit import RateLimiter

    with pytest.raises(InvalidInputError, match="timeout must be"):
        Command(["prog"], timeout=bad)  # type: ignore[arg-type]
    if importlib.util.find_spec("vici") is not None:
        with pytest.raises(InvalidInputError, match="timeout must be"):
            StrongSwan("/run/charon.vici", timeout=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="rate limit period must be"):
        RateLimiter(10, bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [True, 0, -1, 1.5, "2"])
def test_the_deliverers_and_the_limiter_take_counts_by_the_one_rule(bad: object) -> None:
    from magicwan.delivery import limit_deliveries
    from magicwan.ratelimit import RateLimiter

    async def deliver(_: object) -> None:
        return None

    with pytest.raises(InvalidInputError, match="concurrency must be a whole number >= 1"):
        limit_deliveries(deliver, concurrency=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="rate limit must be a whole number >= 1"):
        RateLimiter(bad, 60.0)  # type: ignore[arg-type]
