"""The public import surface, pinned: a change here is an API change."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import magicwan
import magicwan.errors as errors

PUBLIC = {
    # client
    "MagicWAN",
    "DEFAULT_BASE_URL",
    "RateLimiter",
    "__version__",
    # models
    "PSKGenerateResult",
    "PSKMetadata",
    "IPsecTunnel",
    "HealthCheck",
    "HealthCheckTarget",
    "GRETunnel",
    "AppliedPSK",
    "PSKSetResult",
    "Reply",
    "new_psk",
    # rotation and delivery
    "Rotation",
    "RotationOutcome",
    "RotationSuccess",
    "RotationFailure",
    "Validated",
    "ValidationOutcome",
    "OutcomeState",
    "JournalError",
    "JournalRecord",
    "read_journal",
    "Delivery",
    "Deliverer",
    # errors
    "MagicWANError",
    "InvalidInputError",
    "ErrorDetail",
    "APIError",
    "BadRequestError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "ConflictError",
    "UnprocessableEntityError",
    "RateLimitError",
    "InternalServerError",
    "APIConnectionError",
    "APITimeoutError",
    "UnexpectedResponseError",
    "DeliveryError",
    "NotAppliedError",
    "RotationHaltedError",
}

# The names issues make a contract (Cloudflare's official SDK spells the errors the same).
CONTRACT = {
    "new_psk",
    "Delivery",
    "RotationOutcome",
    "JournalRecord",
    "MagicWAN",
    "PSKGenerateResult",
    "PSKMetadata",
    "MagicWANError",
    "APIError",
    "BadRequestError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "ConflictError",
    "UnprocessableEntityError",
    "RateLimitError",
    "InternalServerError",
    "APIConnectionError",
    "APITimeoutError",
    "UnexpectedResponseError",
}


def test_public_surface_is_pinned() -> None:
    assert set(magicwan.__all__) == PUBLIC
    assert len(magicwan.__all__) == len(set(magicwan.__all__))


def test_contract_names_are_exported() -> None:
    assert set(magicwan.__all__) >= CONTRACT


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_every_exported_name_is_importable(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from magicwan import {name}", namespace)  # noqa: S102 - a fixed name list
    assert namespace[name] is getattr(magicwan, name)


def test_version_is_a_string() -> None:
    assert isinstance(magicwan.__version__, str)
    assert magicwan.__version__.count(".") >= 2


def test_every_public_module_declares_all() -> None:
    missing = []
    for info in pkgutil.walk_packages(magicwan.__path__, "magicwan."):
        if any(part.startswith("_") for part in info.name.split(".")[1:]):
            continue
        if info.name.endswith("__main__") or ".emulator" in info.name:
            continue
        module = importlib.import_module(info.name)
        if not hasattr(module, "__all__"):
            missing.append(info.name)
    assert missing == []


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


def test_py_typed_is_shipped() -> None:
    assert magicwan.__file__ is not None
    from pathlib import Path

    assert (Path(magicwan.__file__).parent / "py.typed").is_file()
