"""``magicwan.errors``: the error tree, status mapping, what errors show, and which failures leave
the outcome of a request unknown.

Every list of classes here is checked against ``magicwan.errors.__all__``: a new error class
cannot be added without a row in these tables.
"""

from __future__ import annotations

import pytest

import magicwan
import magicwan.errors as errors
from magicwan.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    InvalidInputError,
    MagicWANError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    UnexpectedResponseError,
    UnprocessableEntityError,
    mark_outcome_unknown,
)

#: Every exception class ``magicwan.errors`` exports, from its ``__all__``.
ERROR_CLASSES = sorted(
    (
        obj
        for obj in (getattr(errors, name) for name in errors.__all__)
        if isinstance(obj, type) and issubclass(obj, BaseException)
    ),
    key=lambda cls: cls.__name__,
)
#: The exported APIError subclasses (APIError itself included).
API_ERROR_CLASSES = [cls for cls in ERROR_CLASSES if issubclass(cls, APIError)]


def test_the_module_exports_its_errors() -> None:
    # The lists above are not vacuous: the contract's names are all there.
    names = {cls.__name__ for cls in ERROR_CLASSES}
    assert {"MagicWANError", "APIError", "RateLimitError", "APITimeoutError"} <= names
    assert len(API_ERROR_CLASSES) >= 9


# --- the tree ----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_exported_error_is_a_magicwan_error(cls: type[BaseException]) -> None:
    assert issubclass(cls, MagicWANError)
    assert issubclass(cls, Exception)


def test_error_hierarchy() -> None:
    assert issubclass(errors.APIError, errors.MagicWANError)
    assert issubclass(errors.MagicWANError, Exception)
    assert issubclass(errors.InvalidInputError, errors.MagicWANError)
    assert issubclass(errors.InvalidInputError, ValueError)
    assert issubclass(errors.APIConnectionError, errors.MagicWANError)
    assert issubclass(errors.APITimeoutError, errors.APIConnectionError)
    assert issubclass(errors.UnexpectedResponseError, errors.MagicWANError)
    assert not issubclass(errors.UnexpectedResponseError, errors.APIError)
    assert not issubclass(errors.APIConnectionError, errors.APIError)
    for name in magicwan.__all__:
        obj = getattr(magicwan, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, errors.MagicWANError), name


# --- status -> class ---------------------------------------------------------------------

API_ERRORS = [
    (errors.BadRequestError, 400),
    (errors.AuthenticationError, 401),
    (errors.PermissionDeniedError, 403),
    (errors.NotFoundError, 404),
    (errors.ConflictError, 409),
    (errors.UnprocessableEntityError, 422),
    (errors.RateLimitError, 429),
    (errors.InternalServerError, 500),
    (errors.InternalServerError, 503),
    (errors.APIError, 405),
    (errors.APIError, 418),
]


@pytest.mark.parametrize(("cls", "status"), API_ERRORS)
def test_status_maps_to_its_error(cls: type[errors.APIError], status: int) -> None:
    assert errors.error_class_for(status) is cls
    assert issubclass(cls, errors.APIError)
    assert issubclass(cls, errors.MagicWANError)


def test_every_api_error_class_has_a_status_row() -> None:
    assert {cls for cls, _ in API_ERRORS} == set(API_ERROR_CLASSES)


def test_every_status_maps_to_an_exported_api_error() -> None:
    for status in range(100, 600):
        cls = errors.error_class_for(status)
        assert cls in API_ERROR_CLASSES, status
        assert (cls is errors.InternalServerError) is (status >= 500), status


# --- what an error shows -----------------------------------------------------------------


def test_api_error_attributes_and_str() -> None:
    error = errors.RateLimitError(
        429,
        [errors.ErrorDetail(971, "Please wait")],
        [errors.ErrorDetail(None, "note")],
        "ray-LHR",
        retry_after=30.0,
    )
    assert error.status == 429
    assert error.codes == (971,)
    assert error.messages == (errors.ErrorDetail(None, "note"),)
    assert error.ray_id == "ray-LHR"
    assert error.retry_after == 30.0
    assert (
        str(error)
        == "HTTP 429: 971: Please wait [messages: note] (cf-ray ray-LHR) (retry after 30s)"
    )
    assert repr(error) == f"RateLimitError({error})"
    assert error.args == (str(error),)


def test_connection_error_attributes() -> None:
    assert errors.APIConnectionError("x").request_sent is True
    assert errors.APITimeoutError("x", request_sent=False).request_sent is False


# --- outcome_unknown ---------------------------------------------------------------------

OUTCOMES: list[tuple[MagicWANError, bool]] = [
    (APIConnectionError("x", request_sent=True), True),
    (APIConnectionError("x", request_sent=False), False),
    (APITimeoutError("x", request_sent=True), True),
    (RateLimitError(429), False),
    (InternalServerError(500), True),
    (ConflictError(409), True),
    (APIError(408), True),
    (APIError(200), True),  # success: false on a 2xx: the server may have acted
    (NotFoundError(404), False),
    (UnexpectedResponseError("x"), True),
    (UnexpectedResponseError("x", status=200), True),
    (UnexpectedResponseError("x", status=503), True),
    (UnexpectedResponseError("x", status=301), False),
    (UnexpectedResponseError("x", status=400), False),
    (MagicWANError("x"), False),
    (InvalidInputError("x"), False),  # refused before anything was sent
    (BadRequestError(400), False),
    (AuthenticationError(401), False),
    (PermissionDeniedError(403), False),
    (UnprocessableEntityError(422), False),
    (errors.DeliveryError("x", reason="timeout"), False),  # Cloudflare was not involved
    (errors.NotAppliedError("tunnel not found"), False),  # Cloudflare refused it
    (errors.RotationHaltedError("x"), False),  # never sent
    (errors.RequestAbandonedError("x"), True),  # cut short in flight
]


@pytest.mark.parametrize(("exc", "unknown"), OUTCOMES)
def test_outcome_unknown(exc: MagicWANError, unknown: bool) -> None:
    assert exc.outcome_unknown is unknown


def test_every_error_class_has_its_outcome_pinned() -> None:
    assert {type(exc) for exc, _ in OUTCOMES} == set(ERROR_CLASSES)


def test_a_call_marked_uncertain_stays_unknown_whatever_its_last_error() -> None:
    # Attempt 1 timed out after sending; attempt 2 got a 404: the tunnel may still hold
    # a PSK from attempt 1, so the call's error must say the outcome is unknown.
    exc = NotFoundError(404)
    assert not exc.outcome_unknown
    mark_outcome_unknown(exc)
    assert exc.outcome_unknown
    assert not NotFoundError(404).outcome_unknown  # per instance, not per class
