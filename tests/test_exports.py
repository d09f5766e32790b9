"""The public import surface, pinned: a change here is an API change."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

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


def _lazy_exports(package: str) -> tuple[dict[str, str], dict[str, str]]:
    """What a lazy ``__init__`` tells a type checker (its ``if TYPE_CHECKING:`` imports) and
    what it imports at run time (its ``_SOURCES`` table): name -> module, both read from its
    source."""
    module = importlib.import_module(package)
    assert module.__file__ is not None
    tree = ast.parse(Path(module.__file__).read_text())
    typed: dict[str, str] = {}
    table: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom)
                source = statement.module
                assert source is not None
                typed.update((alias.name, source) for alias in statement.names)
        elif isinstance(node, ast.AnnAssign) and ast.unparse(node.target) == "_SOURCES":
            assert node.value is not None
            table = ast.literal_eval(node.value)
    return typed, table


@pytest.mark.parametrize("package", ["magicwan", "magicwan.emulator"])
def test_a_lazy_init_imports_at_run_time_what_it_tells_the_type_checker(package: str) -> None:
    typed, table = _lazy_exports(package)
    assert table == typed
    assert set(table) | {"__version__"} >= set(importlib.import_module(package).__all__)


@pytest.mark.parametrize("package", ["magicwan", "magicwan.emulator"])
def test_a_lazy_init_answers_like_an_eager_one(package: str) -> None:
    module = importlib.import_module(package)
    assert set(dir(module)) >= set(module.__all__)
    with pytest.raises(AttributeError, match="no_such_name"):
        module.no_such_name  # noqa: B018 - the attribute access is the test


def test_import_magicwan_loads_the_client_on_first_use() -> None:
    code = (
        "import sys, magicwan;"
        "assert 'aiohttp' not in sys.modules and 'magicwan.client' not in sys.modules;"
        "assert magicwan.MagicWAN.__module__ == 'magicwan.client';"
        "assert magicwan.delivery.StrongSwan is not None;"  # a submodule, as an attribute
        "from magicwan import *;"
        "assert RotationOptions is magicwan.rotation.RotationOptions"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)  # noqa: S603 - our code
