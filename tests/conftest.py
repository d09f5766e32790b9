"""Fixtures for the whole suite. Shared helpers live in ``tests/support/``, never here."""

from __future__ import annotations

import inspect
import os
import types
from collections.abc import Iterator
from typing import Any

import aioresponses.core
import pytest
from aiohttp import ClientResponse
from aioresponses import aioresponses as _aioresponses

from magicwan.internal import env as _env

if "stream_writer" in inspect.signature(ClientResponse.__init__).parameters:
    # aioresponses 0.7.9 predates aiohttp 3.14, whose ClientResponse needs a
    # stream_writer (pnuckowski/aioresponses#289). Give it an inert one.
    class _CompatClientResponse(ClientResponse):
        def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
            kwargs.setdefault("stream_writer", types.SimpleNamespace(output_size=0))
            super().__init__(method, url, **kwargs)

    aioresponses.core.ClientResponse = _CompatClientResponse  # type: ignore[attr-defined]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--sim-seeds",
        type=int,
        default=None,
        help="how many scenarios tests/simulation explores (default: MAGICWAN_SIM_SEEDS, else "
        "the CI budget); given by hand, each run draws fresh ones",
    )


@pytest.fixture
def mock_api() -> Iterator[_aioresponses]:
    """aioresponses that lets loopback traffic (the emulator) through."""
    with _aioresponses(passthrough=["http://127.0.0.1"]) as mocked:
        yield mocked


@pytest.fixture(autouse=True)
def _clean_cloudflare_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _env.__all__:  # every variable magicwan reads, from the one list
        monkeypatch.delenv(getattr(_env, name), raising=False)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """umask 000 for the test: a file made without an explicit mode would be world-writable."""
    old = os.umask(0o000)
    try:
        yield
    finally:
        os.umask(old)
