"""Exports imported on first use (PEP 562), for a package whose ``__init__`` must stay cheap."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, sources: Mapping[str, str], exported: Iterable[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``.

    ``sources`` maps each exported name to the module that defines it; that module is imported
    when the name is first read, and the value kept in the package. A public submodule not yet
    imported is imported when read as an attribute (as if ``__init__`` had imported it).
    """
    names = frozenset(exported)

    def __getattr__(name: str) -> Any:
        source = sources.get(name)
        if source is not None:
            value = getattr(importlib.import_module(source), name)
        elif _is_submodule(package, name):
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *names})

    return __getattr__, __dir__


def _is_submodule(package: str, name: str) -> bool:
    return (
        name.isidentifier()
        and not name.startswith("_")
        and importlib.util.find_spec(f"{package}.{name}") is not None
    )
