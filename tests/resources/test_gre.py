"""``client.tunnels.gre``: list and get GRE tunnels (aioresponses)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from aioresponses import aioresponses

from magicwan import GRETunnel, InvalidInputError, MagicWAN, NotFoundError
from tests.support.constants import ACCOUNT, BASE, TOKEN
from tests.support.samples import envelope

GRE = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
LIST_URL = f"{BASE}/accounts/{ACCOUNT}/magic/gre_tunnels"


def gre(tunnel_id: str = GRE, **extra: Any) -> dict[str, Any]:
    return {
        "id": tunnel_id,
        "name": "gre_1",
        "cloudflare_gre_endpoint": "203.0.113.10",
        "customer_gre_endpoint": "198.51.100.10",
        "interface_address": "10.212.0.9/31",
        "created_on": "2026-01-02T03:04:05Z",
        "mtu": 1476,
        "ttl": 64,
        "health_check": {"enabled": True, "target": {"effective": "198.51.100.10"}},
        "a_field_from_a_newer_api": {"ignored": True},
        **extra,
    }


@pytest.mark.asyncio
async def test_list_and_get(mock_api: aioresponses) -> None:
    mock_api.get(LIST_URL, payload=envelope({"gre_tunnels": [gre(), gre("f" * 32, mtu=1400)]}))
    mock_api.get(f"{LIST_URL}/{GRE}", payload=envelope({"gre_tunnel": gre()}))
    async with MagicWAN(api_token=TOKEN) as client:
        tunnels = await client.tunnels.gre.list(ACCOUNT)
        one = await client.tunnels.gre.get(ACCOUNT, GRE)
    assert [t.id for t in tunnels] == [GRE, "f" * 32]
    assert tunnels[1].mtu == 1400
    assert isinstance(one, GRETunnel)
    assert one == tunnels[0]
    assert one.cloudflare_gre_endpoint == "203.0.113.10"
    assert one.created_on == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert one.health_check is not None
    assert one.health_check.target is not None
    assert one.health_check.target.effective == "198.51.100.10"


@pytest.mark.asyncio
async def test_with_reply_and_errors(mock_api: aioresponses) -> None:
    failure = envelope(None, success=False, errors=[{"code": 1002, "message": "not found"}])
    mock_api.get(f"{LIST_URL}/{GRE}", status=404, payload=failure, headers={"cf-ray": "r-1"})
    mock_api.get(LIST_URL, payload=envelope({"gre_tunnels": []}), headers={"cf-ray": "r-2"})
    async with MagicWAN(api_token=TOKEN) as client:
        with pytest.raises(NotFoundError) as info:
            await client.tunnels.gre.get(ACCOUNT, GRE)
        reply = await client.tunnels.gre.with_reply.list(ACCOUNT)
        with pytest.raises(InvalidInputError):
            await client.tunnels.gre.get(ACCOUNT, "../ipsec_tunnels")
    assert info.value.codes == (1002,)
    assert info.value.ray_id == "r-1"
    assert reply.value == []
    assert reply.ray_id == "r-2"
    assert reply.attempts == 1
