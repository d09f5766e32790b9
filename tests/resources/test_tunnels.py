"""Tunnel create/update/delete: request bodies and answer edge cases (aioresponses)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aioresponses import aioresponses
from yarl import URL

from magicwan import APIError, BadRequestError, MagicWAN, UnexpectedResponseError
from magicwan.models import (
    BGP,
    GRETunnelParams,
    HealthCheck,
    HealthCheckTarget,
    IPsecTunnelParams,
)
from tests.support.constants import ACCOUNT, BASE, TOKEN
from tests.support.samples import envelope

TUNNEL = "c4a7362d577a6c3019a474fd6f485823"
IPSEC_URL = f"{BASE}/accounts/{ACCOUNT}/magic/ipsec_tunnels"
GRE_URL = f"{BASE}/accounts/{ACCOUNT}/magic/gre_tunnels"
PSK = "Kx7-secret-psk-value-0123456789AB"
PARAMS = IPsecTunnelParams(
    name="site",
    cloudflare_endpoint="203.0.113.1",
    interface_address="10.0.0.0/31",
    health_check=HealthCheck(enabled=True, target=HealthCheckTarget(saved="198.51.100.1")),
    bgp=BGP(customer_asn=65000),
    psk=PSK,
)


def tunnel(tunnel_id: str = TUNNEL, **extra: Any) -> dict[str, Any]:
    return {
        "id": tunnel_id,
        "name": "site",
        "cloudflare_endpoint": "203.0.113.1",
        "interface_address": "10.0.0.0/31",
        **extra,
    }


def sent(mock_api: aioresponses, method: str, url: str) -> list[Any]:
    return [json.loads(c.kwargs["data"]) for c in mock_api.requests.get((method, URL(url)), [])]


@pytest.mark.asyncio
async def test_the_body_sent_and_the_answers_read(mock_api: aioresponses) -> None:
    mock_api.post(IPSEC_URL, payload=envelope(tunnel()))
    mock_api.put(
        f"{IPSEC_URL}/{TUNNEL.upper()}",
        payload=envelope({"modified": True, "modified_ipsec_tunnel": tunnel(description="x")}),
    )
    mock_api.delete(
        f"{IPSEC_URL}/{TUNNEL}",
        payload=envelope({"deleted": True, "deleted_ipsec_tunnel": tunnel()}),
    )
    async with MagicWAN(api_token=TOKEN) as client:
        created = await client.tunnels.ipsec.create(ACCOUNT, PARAMS)
        updated = await client.tunnels.ipsec.update(ACCOUNT, TUNNEL.upper(), PARAMS)
        deleted = await client.tunnels.ipsec.delete(ACCOUNT, TUNNEL)
    assert created.id == deleted.id == TUNNEL
    assert updated.description == "x"
    expected = {
        "name": "site",
        "cloudflare_endpoint": "203.0.113.1",
        "interface_address": "10.0.0.0/31",
        "health_check": {"enabled": True, "target": "198.51.100.1"},
        "bgp": {"customer_asn": 65000},
        "psk": PSK,
    }
    assert sent(mock_api, "POST", IPSEC_URL) == [expected]
    assert sent(mock_api, "PUT", f"{IPSEC_URL}/{TUNNEL.upper()}") == [expected]
    [call] = mock_api.requests[("DELETE", URL(f"{IPSEC_URL}/{TUNNEL}"))]
    assert call.kwargs.get("data") is None


@pytest.mark.asyncio
async def test_a_create_answered_in_the_older_wrapped_form(mock_api: aioresponses) -> None:
    mock_api.post(IPSEC_URL, payload=envelope({"ipsec_tunnels": [tunnel()]}))
    mock_api.post(IPSEC_URL, payload=envelope({"ipsec_tunnels": [tunnel(), tunnel("f" * 32)]}))
    mock_api.post(GRE_URL, payload=envelope({"gre_tunnels": [{"id": TUNNEL, "name": "g"}]}))
    params = GRETunnelParams(
        name="g",
        cloudflare_gre_endpoint="203.0.113.2",
        customer_gre_endpoint="198.51.100.2",
        interface_address="10.0.0.2/31",
    )
    async with MagicWAN(api_token=TOKEN, max_retries=0) as client:
        assert (await client.tunnels.ipsec.create(ACCOUNT, PARAMS)).id == TUNNEL
        with pytest.raises(UnexpectedResponseError, match="2 tunnels"):
            await client.tunnels.ipsec.create(ACCOUNT, PARAMS)
        assert (await client.tunnels.gre.create(ACCOUNT, params)).name == "g"


@pytest.mark.asyncio
async def test_an_answer_for_another_tunnel_is_refused(mock_api: aioresponses) -> None:
    other = envelope({"modified": True, "modified_ipsec_tunnel": tunnel("f" * 32)})
    mock_api.put(f"{IPSEC_URL}/{TUNNEL}", payload=other)
    async with MagicWAN(api_token=TOKEN, max_retries=0) as client:
        with pytest.raises(UnexpectedResponseError, match="not"):
            await client.tunnels.ipsec.update(ACCOUNT, TUNNEL, PARAMS)


@pytest.mark.asyncio
async def test_a_create_retried_after_an_unknown_outcome_can_only_meet_its_own_name(
    mock_api: aioresponses,
) -> None:
    """The client's policy retries unknown outcomes (retry_unknown_outcome, on by default);
    names are unique per account, so a retry cannot make a second tunnel: it is refused as a
    duplicate, with outcome_unknown set (the lost attempt created the tunnel)."""
    lost = envelope(None, success=False, errors=[{"code": 10001, "message": "oops " + PSK}])
    taken = envelope(None, success=False, errors=[{"code": 1008, "message": "name taken"}])
    mock_api.post(IPSEC_URL, status=502, payload=lost)
    mock_api.post(IPSEC_URL, status=400, payload=taken)
    async with MagicWAN(api_token=TOKEN, max_retries=3) as client:
        with pytest.raises(BadRequestError) as info:
            await client.tunnels.ipsec.create(ACCOUNT, PARAMS)
    assert len(mock_api.requests[("POST", URL(IPSEC_URL))]) == 2
    assert info.value.codes == (1008,)
    assert info.value.outcome_unknown
    assert PSK not in repr(PARAMS)

    mock_api.post(IPSEC_URL, status=502, payload=lost)
    async with MagicWAN(api_token=TOKEN, max_retries=3, retry_unknown_outcome=False) as client:
        with pytest.raises(APIError) as second:
            await client.tunnels.ipsec.create(ACCOUNT, PARAMS)
    assert second.value.outcome_unknown
    assert len(mock_api.requests[("POST", URL(IPSEC_URL))]) == 3  # not retried
    assert PSK not in str(second.value)  # the PSK sent is scrubbed from the error
