"""An error's texts are scrubbed of the secrets a caller holds, wherever the error keeps them."""

from __future__ import annotations

from magicwan.errors import BadRequestError, ErrorDetail, UnexpectedResponseError
from magicwan.internal.redaction import redact, scrub_error

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
