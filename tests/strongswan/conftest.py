"""Fixtures of the real-strongSwan suite: a running edge/router pair per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from magicwan import IPsecTunnel
from tests.support.strongswan import (
    StrongSwanPair,
    make_tunnels,
    require_strongswan,
    strongswan_pair,
)

TUNNELS: list[IPsecTunnel] = make_tunnels(2)


@pytest_asyncio.fixture
async def pair(tmp_path: Path) -> AsyncIterator[StrongSwanPair]:
    """Edge and router with two tunnels' connections and no PSK on either side."""
    require_strongswan()
    async with strongswan_pair(TUNNELS, keep_logs=tmp_path / "charon") as running:
        yield running
