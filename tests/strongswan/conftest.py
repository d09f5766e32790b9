"""Fixtures of the real-strongSwan suite: a running edge/router lab per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from magicwan import IPsecTunnel
from tests.support.strongswan import (
    IKELab,
    ike_lab,
    make_tunnels,
    require_strongswan,
)

TUNNELS: list[IPsecTunnel] = make_tunnels(2)


@pytest_asyncio.fixture
async def lab(tmp_path: Path) -> AsyncIterator[IKELab]:
    """Edge and router with two tunnels' connections and no PSK on either side."""
    require_strongswan()
    async with ike_lab(TUNNELS, keep_logs=tmp_path / "charon") as running:
        yield running
