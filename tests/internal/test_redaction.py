"""Text meant for people: how it names an id the SDK did not get from Cloudflare
(``shown_id``), and how an error's texts are scrubbed of the secrets a caller holds."""

from __future__ import annotations

import pytest

from magicwan import new_psk
from magicwan.errors import BadRequestError, ErrorDetail, UnexpectedResponseError
from magicwan.internal.redaction import (
    is_cloudflare_id,
    may_be_secret,
    redact,
    scrub_error,
    shown_id,
)
from tests.support.constants import ACCOUNT, TUNNEL


def test_a_cloudflare_shaped_id_is_shown_as_it_was() -> None:
    assert shown_id(TUNNEL) == TUNNEL
    assert shown_id(TUNNEL, "tunnel") == f"tunnel {TUNNEL}"
    assert shown_id(ACCOUNT, "account", quoted=True) == f"account {ACCOUNT!r}"


@pytest.mark.parametrize(
    "value",
    [new_psk(), TUNNEL.upper(), TUNNEL[:31], TUNNEL + "0", "t1", "../x", "", None, 42],
    ids=["psk", "upper", "short", "long", "letters", "path", "empty", "none", "int"],
)
def test_anything_else_is_described_without_it(value: object) -> None:
    assert not is_cloudflare_id(value)
    for kind in ("", "tunnel"):
        text = shown_id(value, kind, quoted=True)
        assert "not shown" in text
        if isinstance(value, str) and value:
            assert value not in text
    assert "Cloudflare tunnel id" in shown_id(value, "tunnel")


PSK = "Kqx6hZ3mPq9sVw2nLt8rYb4cXd7fGj5a"


def test_redact_finds_a_secret_whatever_its_case() -> None:
    text = f"psk {PSK.upper()} refused; was {PSK}"
    assert PSK.lower() not in redact(text, [PSK]).lower()


def test_scrub_error_reaches_the_message_the_details_and_the_args() -> None:
    exc = BadRequestError(
        400,
        [ErrorDetail(1001, f"psk {PSK} still active")],
        [ErrorDetail(None, f"note: {PSK.lower()}")],
        ray_id=None,
    )
    scrub_error(exc, [PSK])
    shown = f"{exc!s} {exc!r} {exc.args} {exc.errors} {exc.messages}"
    assert PSK.lower() not in shown.lower()
    assert exc.errors[0].code == 1001  # what is not secret stays


def test_scrub_error_leaves_an_error_without_the_secret_as_it_was() -> None:
    exc = UnexpectedResponseError("no JSON", status=502, ray_id=None, body_excerpt="<html>")
    before = (str(exc), exc.args, exc.body_excerpt)
    scrub_error(exc, [PSK, ""])
    assert (str(exc), exc.args, exc.body_excerpt) == before


def test_an_id_that_may_be_a_secret_is_long_and_not_in_cloudflare_form() -> None:
    assert may_be_secret(PSK)
    assert not may_be_secret("c4a7362d577a6c3019a474fd6f485823")
    assert not may_be_secret("C4A7362D577A6C3019A474FD6F485823")  # the same tunnel
    assert not may_be_secret("t1")  # shorter than any PSK
