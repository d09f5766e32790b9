"""decode_envelope and its helpers: pure functions, tested on captured samples."""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime, timedelta

import pytest

from magicwan._envelope import RateLimitInfo, decode_envelope, parse_ratelimit, parse_retry_after
from magicwan.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    UnexpectedResponseError,
    UnprocessableEntityError,
)
from magicwan.internal.redaction import EXCERPT_CHARS, excerpt, redact
from tests.support.constants import PSK, TOKEN, TUNNEL
from tests.support.samples import load_sample, sample_names

# sample -> (error class, Cloudflare codes, message fragment, retry_after)
API_ERRORS: dict[str, tuple[type[APIError], tuple[int, ...], str, float | None]] = {
    "missing_auth_400": (BadRequestError, (9106,), "Missing X-Auth-Key", None),
    "unauthenticated_401": (AuthenticationError, (10001,), "Unable to authenticate", None),
    "bad_key_403": (PermissionDeniedError, (9103,), "Unknown X-Auth-Key", None),
    "bad_token_403": (PermissionDeniedError, (10000,), "Authentication error", None),
    "not_found_404": (NotFoundError, (7003, 7000), "Could not route", None),
    "method_not_allowed_405": (APIError, (7001,), "Method GET not available", None),
    "conflict_409": (ConflictError, (1007,), "another request", None),
    "unprocessable_422": (UnprocessableEntityError, (1002,), "not an IPsec tunnel", None),
    "rate_limited_429": (RateLimitError, (971,), "throttling", 30.0),
    "internal_500": (InternalServerError, (10002,), "unknown error", None),
    "bad_gateway_502": (InternalServerError, (10013,), "upstream", None),
    "unavailable_503": (InternalServerError, (10043,), "temporarily unavailable", None),
    "success_false_200": (APIError, (1000,), "tunnel is locked", None),
}

# sample -> fragment of the error's message
UNEXPECTED: dict[str, str] = {
    "html_bad_gateway_502": "not valid JSON",
    "html_echo_with_psk_200": "not valid JSON",
    "truncated_json_200": "not valid JSON",
    "empty_body_200": "body is empty",
    "success_missing_200": "not a Cloudflare envelope",
    "success_string_200": "not a Cloudflare envelope",
    "redirect_301": "redirect",
}

SUCCESSES = {
    "psk_generate_200",
    "validate_only_200",
    "unknown_fields_200",
    "nanosecond_timestamp_200",
    "result_list_200",
    "result_wrong_types_200",
}


def test_every_sample_has_an_expectation() -> None:
    assert set(sample_names()) == set(API_ERRORS) | set(UNEXPECTED) | SUCCESSES


@pytest.mark.parametrize("name", sorted(API_ERRORS))
def test_error_envelopes_raise_the_typed_error(name: str) -> None:
    cls, codes, fragment, retry_after = API_ERRORS[name]
    status, headers, body = load_sample(name)
    with pytest.raises(APIError) as info:
        decode_envelope(status, headers, body)
    error = info.value
    assert type(error) is cls
    assert error.status == status
    assert error.codes == codes
    assert [e.code for e in error.errors] == list(codes)
    assert fragment in error.errors[0].message
    assert error.ray_id == headers["cf-ray"]
    text = str(error)
    assert text.startswith(f"HTTP {status}")
    assert headers["cf-ray"] in text
    for code in codes:
        assert str(code) in text
    assert fragment in text
    if cls is RateLimitError:
        assert isinstance(error, RateLimitError)
        assert error.retry_after == retry_after
        assert "retry after 30s" in text


def test_messages_are_kept_and_shown() -> None:
    with pytest.raises(UnprocessableEntityError) as info:
        decode_envelope(*load_sample("unprocessable_422"))
    assert [(m.code, m.message) for m in info.value.messages] == [
        (1003, "see the Magic WAN documentation")
    ]
    assert "[messages: 1003: see the Magic WAN documentation]" in str(info.value)


def test_rate_limit_code_below_1000_is_kept() -> None:
    # The spec says codes are >= 1000; real 429 answers carry 971.
    with pytest.raises(RateLimitError) as info:
        decode_envelope(*load_sample("rate_limited_429"))
    assert info.value.codes == (971,)


@pytest.mark.parametrize("name", sorted(UNEXPECTED))
def test_non_envelopes_are_unexpected_responses(name: str) -> None:
    status, headers, body = load_sample(name)
    with pytest.raises(UnexpectedResponseError) as info:
        decode_envelope(status, headers, body)
    error = info.value
    assert not isinstance(error, APIError)
    assert error.status == status
    assert error.ray_id == headers["cf-ray"]
    assert UNEXPECTED[name] in str(error)
    assert f"HTTP {status}" in str(error)
    assert headers["cf-ray"] in str(error)
    assert PSK not in str(error)
    assert PSK not in repr(error)


def test_html_page_is_cut_short() -> None:
    status, headers, body = load_sample("html_bad_gateway_502")
    assert len(body) > EXCERPT_CHARS
    with pytest.raises(UnexpectedResponseError) as info:
        decode_envelope(status, headers, body)
    assert info.value.body_excerpt.startswith("<!DOCTYPE html>")
    assert info.value.body_excerpt.endswith("...")
    assert len(info.value.body_excerpt) == EXCERPT_CHARS + 3


@pytest.mark.parametrize("name", ["html_echo_with_psk_200", "truncated_json_200"])
def test_psk_in_a_broken_body_is_redacted(name: str) -> None:
    status, headers, body = load_sample(name)
    assert PSK[:12].encode() in body  # the sample really holds (part of) a PSK
    with pytest.raises(UnexpectedResponseError) as info:
        decode_envelope(status, headers, body)
    assert PSK[:6] not in str(info.value)
    assert "[REDACTED]" in info.value.body_excerpt


def test_success_false_on_200_keeps_the_errors_structured() -> None:
    with pytest.raises(APIError) as info:
        decode_envelope(*load_sample("success_false_200"))
    assert type(info.value) is APIError
    assert info.value.status == 200
    assert info.value.codes == (1000,)
    assert "1000: tunnel is locked" in str(info.value)
    assert info.value.outcome_unknown  # it said "failed" with a 2xx: it may have acted


def test_redirect_location_is_not_followed_or_decoded() -> None:
    with pytest.raises(UnexpectedResponseError) as info:
        decode_envelope(*load_sample("redirect_301"))
    assert info.value.status == 301
    assert "not followed" in str(info.value)


def test_success_returns_the_result() -> None:
    result = decode_envelope(*load_sample("psk_generate_200"))
    assert result == {
        "ipsec_tunnel_id": TUNNEL,
        "psk": PSK,
        "psk_metadata": {"last_generated_on": "2017-06-14T05:20:00Z"},
    }


def test_validate_only_result_has_no_psk() -> None:
    result = decode_envelope(*load_sample("validate_only_200"))
    assert result["ipsec_tunnel_id"] == TUNNEL
    assert "psk" not in result


def test_unknown_envelope_fields_are_ignored() -> None:
    result = decode_envelope(*load_sample("unknown_fields_200"))
    assert result["psk_version"] == 7


@pytest.mark.parametrize("name", ["result_list_200", "result_wrong_types_200"])
def test_decoder_leaves_result_shape_to_the_converter(name: str) -> None:
    result = decode_envelope(*load_sample(name))
    assert result is not None


def test_decoder_is_pure_and_repeatable() -> None:
    status, headers, body = load_sample("psk_generate_200")
    before = dict(headers)
    assert decode_envelope(status, headers, body) == decode_envelope(status, headers, body)
    assert headers == before


def test_headers_are_matched_case_insensitively() -> None:
    status, _, body = load_sample("not_found_404")
    with pytest.raises(NotFoundError) as info:
        decode_envelope(status, {"CF-Ray": "abc-SJC"}, body)
    assert info.value.ray_id == "abc-SJC"


def test_429_without_an_envelope_is_still_a_rate_limit_error() -> None:
    with pytest.raises(RateLimitError) as info:
        decode_envelope(429, {"Retry-After": "7"}, b"<html>slow down</html>")
    assert info.value.retry_after == 7.0
    assert info.value.errors == ()


def test_429_retry_after_as_http_date_uses_now() -> None:
    now = datetime(2025, 1, 14, 10, 0, 0, tzinfo=UTC)
    with pytest.raises(RateLimitError) as info:
        decode_envelope(429, {"retry-after": "Tue, 14 Jan 2025 10:00:45 GMT"}, b"", now=now)
    assert info.value.retry_after == 45.0


def test_error_without_codes_or_ray() -> None:
    body = json.dumps({"success": False, "errors": [], "messages": [], "result": None})
    with pytest.raises(InternalServerError) as info:
        decode_envelope(500, {}, body.encode())
    assert str(info.value) == "HTTP 500"
    assert info.value.ray_id is None


def test_odd_error_items_are_tolerated() -> None:
    body = json.dumps(
        {
            "success": False,
            "errors": [{"code": "971", "message": "slow"}, {"message": 5}, "plain text"],
            "messages": [],
            "result": None,
        }
    )
    with pytest.raises(BadRequestError) as info:
        decode_envelope(400, {}, body.encode())
    assert [(e.code, e.message) for e in info.value.errors] == [
        (971, "slow"),
        (None, "5"),
        (None, "plain text"),
    ]


def test_secrets_are_scrubbed_from_error_messages() -> None:
    body = json.dumps(
        {
            "success": False,
            "errors": [{"code": 9103, "message": f"bad key {TOKEN} given"}],
            "messages": [],
            "result": None,
        }
    )
    with pytest.raises(PermissionDeniedError) as info:
        decode_envelope(403, {}, body.encode(), secrets=(TOKEN,))
    assert TOKEN not in str(info.value)
    assert "bad key [REDACTED] given" in str(info.value)


def test_secret_cut_by_the_message_limit_is_not_half_shown() -> None:
    message = "x" * (EXCERPT_CHARS - 10) + TOKEN
    body = json.dumps(
        {"success": False, "errors": [{"code": 1, "message": message}], "messages": []}
    )
    with pytest.raises(BadRequestError) as info:
        decode_envelope(400, {}, body.encode(), secrets=(TOKEN,))
    assert TOKEN[:10] not in str(info.value)


def test_secrets_are_scrubbed_from_body_excerpts() -> None:
    body = f"<html>echo: Authorization: Bearer {TOKEN}</html>".encode()
    with pytest.raises(UnexpectedResponseError) as info:
        decode_envelope(502, {}, body, secrets=(TOKEN,))
    assert TOKEN not in str(info.value)
    assert "Bearer [REDACTED]" in str(info.value)


# --- parse_retry_after ---------------------------------------------------------

NOW = datetime(2025, 1, 14, 10, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30", 30.0),
        (" 30 ", 30.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("Tue, 14 Jan 2025 10:01:00 GMT", 60.0),
        ("Tue, 14 Jan 2025 09:59:00 GMT", 0.0),  # a date in the past: go now
        (None, None),
        ("", None),
        ("-5", None),
        ("soon", None),
        ("inf", None),
        ("nan", None),
        ("-inf", None),
        ("1e400", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


@pytest.mark.parametrize("value", ["1e12", "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_parse_retry_after_caps_huge_values(value: str) -> None:
    seconds = parse_retry_after(value, now=NOW)
    assert seconds is not None
    assert math.isfinite(seconds)
    assert 86_400 * 365 <= seconds <= 86_400 * 366


def test_parse_retry_after_defaults_to_the_real_clock() -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    value = when.strftime("%a, %d %b %Y %H:%M:%S GMT")
    seconds = parse_retry_after(value)
    assert seconds is not None
    assert 110 < seconds <= 120


# --- parse_ratelimit -----------------------------------------------------------


def test_parse_ratelimit_cloudflare_form() -> None:
    info = parse_ratelimit({"ratelimit": '"default";r=50;t=30'})
    assert info == RateLimitInfo(remaining=50, reset=30.0)


def test_parse_ratelimit_with_policy_takes_the_tightest() -> None:
    info = parse_ratelimit(
        {
            "Ratelimit": '"burst";r=90;t=10, "default";r=1000;t=200',
            "Ratelimit-Policy": '"burst";q=100;w=60,"default";q=1200;w=300',
        }
    )
    assert info == RateLimitInfo(remaining=90, reset=10.0, quota=100, window=60.0)


def test_parse_ratelimit_from_the_captured_sample() -> None:
    _, headers, _ = load_sample("psk_generate_200")
    assert parse_ratelimit(headers) == RateLimitInfo(
        remaining=1199, reset=300.0, quota=1200, window=300.0
    )


@pytest.mark.parametrize("value", [None, "", "garbage", '"default";q=1200;w=300'])
def test_parse_ratelimit_ignores_what_it_cannot_read(value: str | None) -> None:
    headers = {} if value is None else {"ratelimit": value}
    assert parse_ratelimit(headers) is None


HUGE = "9" * 400  # float() makes it inf, and int(inf) raises OverflowError


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        # A window of 0: the policy is dropped (it divided by zero), the count is kept.
        (
            {"Ratelimit": '"default";r=50;t=30', "Ratelimit-Policy": '"default";q=1200;w=0'},
            RateLimitInfo(remaining=50, reset=30.0),
        ),
        ({"Ratelimit": f'"default";r={HUGE};t={HUGE}'}, None),
        (
            {"Ratelimit": '"default";r=50;t=30', "Ratelimit-Policy": f'"default";q={HUGE};w=300'},
            RateLimitInfo(remaining=50, reset=30.0),
        ),
        (
            {"Ratelimit": '"default";r=50;t=30', "Ratelimit-Policy": f'"default";q=1200;w={HUGE}'},
            RateLimitInfo(remaining=50, reset=30.0),
        ),
        (
            {"Ratelimit": '"default";r=50;t=30', "Ratelimit-Policy": '"default";q=0;w=300'},
            RateLimitInfo(remaining=50, reset=30.0),
        ),
        ({"Ratelimit": '"default";r=-1;t=30'}, None),
        ({"Ratelimit": "r=;t=soon,, ;;"}, None),
        ({"Ratelimit": '"default";r=1.5.5;t=30'}, None),
        ({"Ratelimit": '"default";r=1e999;t=30'}, None),  # not "r=1"
    ],
)
def test_parse_ratelimit_ignores_a_malformed_header_and_says_so(
    headers: dict[str, str], expected: RateLimitInfo | None, caplog: pytest.LogCaptureFixture
) -> None:
    # Headers that would raise ZeroDivisionError / OverflowError are ignored, with a DEBUG
    # line: the PSK in the answer carrying them is never lost.
    caplog.set_level(logging.DEBUG, logger="magicwan")
    assert parse_ratelimit(headers) == expected
    assert "cannot be parsed" in caplog.text


def test_an_ignored_header_is_logged_by_its_length_only(caplog: pytest.LogCaptureFixture) -> None:
    # A proxy may echo anything into a header: the log never repeats it.
    caplog.set_level(logging.DEBUG, logger="magicwan")
    secret = "Bearer tok-SECRET-0123456789abcdef"
    assert parse_ratelimit({"Ratelimit": secret}) is None
    assert "cannot be parsed (34 characters)" in caplog.text
    assert "SECRET" not in caplog.text


# --- excerpt and redact --------------------------------------------------------


def test_redact_hides_psk_members_in_any_spacing() -> None:
    text = '{"psk": "abc", "x": {"psk" : "d\\"ef"}}'
    assert redact(text) == '{"psk": "[REDACTED]", "x": {"psk" : "[REDACTED]"}}'


@pytest.mark.parametrize(
    "text",
    [
        '{"result":{"psk":"' + PSK[:20],
        '{"result":{"psk":"' + PSK[:20] + "\\",
        '{"result":{"psk": "' + PSK[:3],
    ],
)
def test_redact_hides_a_psk_cut_mid_value(text: str) -> None:
    assert PSK[:3] not in redact(text)
    assert redact(text).endswith("[REDACTED]")


def test_redact_scrubs_given_secrets_and_skips_empty_ones() -> None:
    assert redact(f"a {TOKEN} b {TOKEN}", (TOKEN, "")) == "a [REDACTED] b [REDACTED]"


def test_excerpt_redacts_before_cutting() -> None:
    body = ("x" * (EXCERPT_CHARS - 5) + TOKEN).encode()
    text = excerpt(body, (TOKEN,))
    assert TOKEN[:5] not in text
    assert len(text) <= EXCERPT_CHARS + 3


def test_excerpt_of_a_huge_body_with_a_late_psk() -> None:
    body = ("x" * 5000 + '"psk":"' + PSK + '"').encode()
    text = excerpt(body)
    assert PSK not in text
    assert text.endswith("...")


def test_excerpt_of_invalid_utf8_does_not_raise() -> None:
    assert excerpt(b"\xff\xfe ok") == "\ufffd\ufffd ok"
