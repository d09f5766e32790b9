"""The public import surface, pinned: a change here is an API change."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import magicwan

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
    "RequestAbandonedError",
    "UnexpectedResponseError",
    "DeliveryError",
    "NotAppliedError",
    "RotationHaltedError",
    "RotationOptions",
    "RolloutWindow",
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
    "RequestAbandonedError",
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


def test_py_typed_is_shipped() -> None:
    assert magicwan.__file__ is not None
    from pathlib import Path

    assert (Path(magicwan.__file__).parent / "py.typed").is_file()


# magicwan.delivery's own surface (the deliverers, and what the CLI's delivery flags use).
DELIVERY_PUBLIC = {
    "CHECK_VARIABLE",
    "DEFAULT_SOCKET",
    "ENVIRONMENT",
    "EX_CONFIG",
    "FIELDS",
    "GROUP_KEYS",
    "PERMANENT_FAILURES",
    "Checkable",
    "Command",
    "Deliverer",
    "Delivery",
    "DeliveryError",
    "DeliveryFailure",
    "DeliveryTarget",
    "LimitedDeliverer",
    "StrongSwan",
    "group_key",
    "limit_deliveries",
}


def test_the_delivery_surface_is_pinned() -> None:
    import magicwan.delivery

    assert set(magicwan.delivery.__all__) == DELIVERY_PUBLIC
    for name in DELIVERY_PUBLIC:
        assert hasattr(magicwan.delivery, name)
    assert magicwan.delivery.Delivery is magicwan.Delivery
    assert magicwan.delivery.DeliveryError is magicwan.DeliveryError
