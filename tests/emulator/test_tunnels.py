"""Tunnel create, update and delete (IPsec and GRE), their checks, and ``x-magic-new-hc-target``."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from magicwan.emulator import Emulator, EmulatorState, TunnelRules, run
from tests.support.emulator import (
    ENVELOPE,
    a_psk,
    assert_failure,
    call,
    gre_url,
    token_headers,
    tunnels_url,
)

pytestmark = pytest.mark.asyncio

NEW_TARGET = {"x-magic-new-hc-target": "true"}
IPSEC: dict[str, Any] = {
    "name": "IPsec_1",
    "cloudflare_endpoint": "203.0.113.1",
    "interface_address": "192.0.2.0/31",
}
GRE: dict[str, Any] = {
    "name": "GRE_1",
    "cloudflare_gre_endpoint": "203.0.113.1",
    "customer_gre_endpoint": "203.0.113.9",
    "interface_address": "10.1.0.0/31",
}


async def _send(
    session: aiohttp.ClientSession,
    emu: Emulator,
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    kwargs: dict[str, Any] = {"headers": {**token_headers(emu), **(headers or {})}}
    if body is not None:
        kwargs["json"] = body
    status, _, answer = await call(session, method, url, **kwargs)
    return status, answer


async def test_create_get_update_delete_an_ipsec_tunnel(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    status, body = await _send(session, emu, "POST", tunnels_url(emu), IPSEC)
    assert status == 200
    ENVELOPE.validate(body)
    tunnel = body["result"]
    tunnel_id = tunnel["id"]
    assert tunnel_id in emu.tunnel_ids
    assert {k: tunnel[k] for k in IPSEC} == IPSEC
    assert tunnel["ipsec_id"] == f"{tunnel_id}.{emu.account_id}.ipsec.cloudflare.com"
    assert "psk_metadata" not in tunnel
    assert tunnel["health_check"]["target"] == ""  # no customer endpoint: nothing in effect
    url = f"{tunnels_url(emu)}/{tunnel_id}"
    status, one = await _send(session, emu, "GET", url)
    assert one["result"]["ipsec_tunnel"] == tunnel

    update = {**IPSEC, "description": "ISP X", "customer_endpoint": "198.51.100.4"}
    status, body = await _send(session, emu, "PUT", url, update)
    assert status == 200
    assert body["result"]["modified"] is True
    modified = body["result"]["modified_ipsec_tunnel"]
    assert modified["description"] == "ISP X"
    assert modified["health_check"]["target"] == "198.51.100.4"
    assert modified["created_on"] == tunnel["created_on"]
    # Fields not given stay.
    status, body = await _send(session, emu, "PUT", url, IPSEC)
    assert body["result"]["modified_ipsec_tunnel"]["description"] == "ISP X"

    status, body = await _send(session, emu, "DELETE", url)
    assert status == 200
    assert body["result"]["deleted"] is True
    assert body["result"]["deleted_ipsec_tunnel"]["id"] == tunnel_id
    assert tunnel_id not in emu.tunnel_ids
    for method in ("GET", "DELETE", "PUT"):
        status, body = await _send(session, emu, method, url, IPSEC if method == "PUT" else None)
        assert status == 404
        assert_failure(body, 1002, "ipsec_tunnel not found")
    routes = emu.state.requests.by_route
    assert routes["create_ipsec_tunnel"] == 1
    assert routes["update_ipsec_tunnel"] == 3
    assert routes["delete_ipsec_tunnel"] == 2


async def test_a_psk_given_at_create_or_update_is_the_tunnels_psk_and_never_echoed(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    psk = a_psk()
    status, body = await _send(session, emu, "POST", tunnels_url(emu), {**IPSEC, "psk": psk})
    assert status == 200
    tunnel_id = body["result"]["id"]
    assert psk not in str(body)
    assert emu.state.current_psk(emu.account_id, tunnel_id) == psk
    assert "psk_metadata" in body["result"]
    for bad in ("short", "x" * 129, "has space inside ok", 12345678901234567):
        status, body = await _send(
            session, emu, "PUT", f"{tunnels_url(emu)}/{tunnel_id}", {**IPSEC, "psk": bad}
        )
        assert status == 400
        assert_failure(body, 1007)
        assert body["errors"][0]["message"].startswith("psk ")
        assert str(bad) not in body["errors"][0]["message"]
    assert emu.state.current_psk(emu.account_id, tunnel_id) == psk


@pytest.mark.parametrize("field", ["name", "cloudflare_endpoint", "interface_address"])
async def test_a_missing_required_ipsec_field_is_1006(
    emu: Emulator, session: aiohttp.ClientSession, field: str
) -> None:
    body = {k: v for k, v in IPSEC.items() if k != field}
    status, answer = await _send(session, emu, "POST", tunnels_url(emu), body)
    assert status == 400
    assert_failure(answer, 1006, f"{field} is required")


@pytest.mark.parametrize(
    "field", ["name", "cloudflare_gre_endpoint", "customer_gre_endpoint", "interface_address"]
)
async def test_a_missing_required_gre_field_is_1006(
    emu: Emulator, session: aiohttp.ClientSession, field: str
) -> None:
    body = {k: v for k, v in GRE.items() if k != field}
    status, answer = await _send(session, emu, "POST", gre_url(emu), body)
    assert status == 400
    assert_failure(answer, 1006, f"{field} is required")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": 7}, "name"),
        ({"name": "  "}, "name"),
        ({"cloudflare_endpoint": "203.0.113"}, "cloudflare_endpoint"),
        ({"customer_endpoint": "example.com"}, "customer_endpoint"),
        ({"interface_address": "10.0.0.0"}, "interface_address"),
        ({"interface_address": "10.0.0.0/30"}, "interface_address"),
        ({"interface_address": "2001:db8::/127"}, "interface_address"),
        ({"interface_address6": "2001:db8::/126"}, "interface_address6"),
        ({"interface_address6": "2001:db8::1/127"}, "interface_address6"),
        ({"interface_address6": "10.0.0.0/31"}, "interface_address6"),
        ({"replay_protection": "yes"}, "replay_protection"),
        ({"automatic_return_routing": True}, "automatic_return_routing"),
        ({"health_check": {"direction": "sideways"}}, "health_check.direction"),
        ({"health_check": {"rate": "fast"}}, "health_check.rate"),
        ({"health_check": {"type": "ping"}}, "health_check.type"),
        ({"health_check": {"target": {"saved": "203.0.113.1"}}}, "health_check.target"),
        ({"health_check": {"target": "nowhere"}}, "health_check.target"),
        ({"bgp": {"customer_asn": 0}}, "bgp.customer_asn"),
        ({"bgp": {"customer_asn": 65000, "extra_prefixes": ["string"]}}, "bgp.extra_prefixes"),
        ({"bgp": {"customer_asn": 65000, "md5_key": 'a"b'}}, "bgp.md5_key"),
        ({"bgp": {"customer_asn": 65000, "md5_key": "why?"}}, "bgp.md5_key"),
        ({"custom_remote_identities": {"fqdn_id": "fqdn_id"}}, "custom_remote_identities.fqdn_id"),
    ],
)
async def test_ipsec_fields_cloudflare_documents_are_checked(
    emu: Emulator, session: aiohttp.ClientSession, changes: dict[str, Any], field: str
) -> None:
    status, body = await _send(session, emu, "POST", tunnels_url(emu), {**IPSEC, **changes})
    assert status == 400
    assert_failure(body, 1007)
    assert body["errors"][0]["message"].startswith(field + " ")
    assert len(emu.tunnel_ids) == 3


async def test_a_missing_bgp_asn_and_bodies_that_are_not_objects(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    status, body = await _send(session, emu, "POST", tunnels_url(emu), {**IPSEC, "bgp": {}})
    assert status == 400
    assert_failure(body, 1006, "bgp.customer_asn is required")
    for raw in (b"", b"[]", b"{oops"):
        headers = {**token_headers(emu), "Content-Type": "application/json"}
        status, _, body = await call(session, "POST", gre_url(emu), data=raw, headers=headers)
        assert status == 400
        assert_failure(body, 1001, "Request body must be a JSON object")


async def test_a_valid_full_ipsec_tunnel(emu: Emulator, session: aiohttp.ClientSession) -> None:
    fqdn = f"site-1.{emu.account_id}.custom.ipsec.cloudflare.com"
    body = {
        **IPSEC,
        "customer_endpoint": "2001:db8::99",
        "description": "everything",
        "interface_address6": "2606:54c1:7:0:a9fe:12d2:1:200/127",
        "replay_protection": True,
        "health_check": {
            "enabled": False,
            "target": {"saved": "203.0.113.7"},
            "direction": "bidirectional",
            "rate": "low",
            "type": "request",
        },
        "bgp": {
            "customer_asn": 65010,
            "extra_prefixes": ["10.8.0.0/16"],
            "md5_key": "S0me'key!",
            "export_filter_id": "a" * 32,
        },
        "custom_remote_identities": {"fqdn_id": fqdn},
        "an_unknown_field": 1,
    }
    status, answer = await _send(session, emu, "POST", tunnels_url(emu), body, NEW_TARGET)
    assert status == 200, answer
    tunnel = answer["result"]
    assert tunnel["health_check"] == {
        "enabled": False,
        "target": {"effective": "203.0.113.7", "saved": "203.0.113.7"},
        "direction": "bidirectional",
        "rate": "low",
        "type": "request",
    }
    assert tunnel["bgp"]["md5_key"] == "S0me'key!"
    assert tunnel["custom_remote_identities"] == {"fqdn_id": fqdn}
    assert tunnel["replay_protection"] is True
    assert "an_unknown_field" not in tunnel


async def test_names_are_unique_per_account_across_both_kinds(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    status, _ = await _send(session, emu, "POST", tunnels_url(emu), IPSEC)
    assert status == 200
    message = "a tunnel named 'IPsec_1' already exists in this account"
    status, body = await _send(session, emu, "POST", tunnels_url(emu), IPSEC)
    assert status == 400
    assert_failure(body, 1008, message)
    status, body = await _send(session, emu, "POST", gre_url(emu), {**GRE, "name": "IPsec_1"})
    assert status == 400
    assert_failure(body, 1008, message)
    # Renaming a tunnel onto another's name is refused; keeping its own name is fine.
    other = emu.tunnel_ids[0]
    url = f"{tunnels_url(emu)}/{other}"
    status, body = await _send(session, emu, "PUT", url, IPSEC)
    assert_failure(body, 1008, message)
    status, _ = await _send(session, emu, "PUT", url, {**IPSEC, "name": "emu_tunnel_00001"})
    assert status == 200
    # Another account may use the name.
    assert not emu.state.name_taken(emu.state.add_account(), "IPsec_1", "ipsec")


async def test_the_rules_cloudflare_does_not_publish_are_configurable() -> None:
    rules = TunnelRules(name_scope="kind", private_interface_only=True, coupler_integration=True)
    state = EmulatorState(tunnels=1, gre_tunnels=1, rate_limit=None, tunnel_rules=rules)
    async with run(state=state) as emu, aiohttp.ClientSession() as session:
        gre_named_like_ipsec = {**GRE, "name": "emu_tunnel_1"}
        state.tunnel(emu.account_id, emu.tunnel_ids[0]).name = "emu_tunnel_1"
        status, _ = await _send(session, emu, "POST", gre_url(emu), gre_named_like_ipsec)
        assert status == 200  # names are unique per kind only
        status, body = await _send(session, emu, "POST", tunnels_url(emu), IPSEC)
        assert status == 400  # 192.0.2.0/31 is not private
        assert_failure(body, 1007)
        assert body["errors"][0]["message"].startswith("interface_address ")
        private = {**IPSEC, "interface_address": "192.168.7.0/31"}
        status, body = await _send(
            session, emu, "POST", tunnels_url(emu), {**private, "automatic_return_routing": True}
        )
        assert status == 200, body
        assert body["result"]["automatic_return_routing"] is True


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": "has space"}, "name"),
        ({"name": "sixteen_chars_xx"}, "name"),
        ({"name": "dash-ed"}, "name"),
        ({"mtu": 575}, "mtu"),
        ({"mtu": 1501}, "mtu"),
        ({"ttl": 0}, "ttl"),
        ({"ttl": True}, "ttl"),
        ({"customer_gre_endpoint": "nope"}, "customer_gre_endpoint"),
    ],
)
async def test_gre_fields_are_checked(
    emu: Emulator, session: aiohttp.ClientSession, changes: dict[str, Any], field: str
) -> None:
    status, body = await _send(session, emu, "POST", gre_url(emu), {**GRE, **changes})
    assert status == 400
    assert_failure(body, 1007)
    assert body["errors"][0]["message"].startswith(field + " ")


async def test_create_update_delete_a_gre_tunnel(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    status, body = await _send(session, emu, "POST", gre_url(emu), {**GRE, "mtu": 1400})
    assert status == 200
    created = body["result"]
    assert (created["mtu"], created["ttl"]) == (1400, 64)
    assert created["health_check"]["target"] == "203.0.113.9"  # the customer endpoint
    url = gre_url(emu, created["id"])
    status, body = await _send(session, emu, "PUT", url, {**GRE, "ttl": 30}, NEW_TARGET)
    assert status == 200
    modified = body["result"]["modified_gre_tunnel"]
    assert (modified["mtu"], modified["ttl"]) == (1400, 30)
    assert modified["health_check"]["target"] == {"effective": "203.0.113.9", "saved": ""}
    status, body = await _send(session, emu, "DELETE", url)
    assert body["result"]["deleted"] is True
    assert body["result"]["deleted_gre_tunnel"]["ttl"] == 30
    status, body = await _send(session, emu, "DELETE", url)
    assert status == 404
    assert_failure(body, 1002, "gre_tunnel not found")


@pytest.mark.parametrize("value", ["true", "True", " true "])
async def test_the_new_health_check_target_header(
    emu: Emulator, session: aiohttp.ClientSession, value: str
) -> None:
    headers = {"x-magic-new-hc-target": value}
    status, body = await _send(session, emu, "GET", tunnels_url(emu), headers=headers)
    assert status == 200
    for tunnel in body["result"]["ipsec_tunnels"]:
        target = tunnel["health_check"]["target"]
        assert target == {"effective": tunnel["customer_endpoint"], "saved": target["saved"]}
    status, body = await _send(
        session, emu, "GET", gre_url(emu, emu.gre_tunnel_ids[0]), None, headers
    )
    assert isinstance(body["result"]["gre_tunnel"]["health_check"]["target"], dict)
    # Without it (or with anything but true), the string form.
    for other in ({}, {"x-magic-new-hc-target": "false"}, {"x-magic-new-hc-target": "1"}):
        status, body = await _send(session, emu, "GET", tunnels_url(emu), headers=other)
        assert isinstance(body["result"]["ipsec_tunnels"][0]["health_check"]["target"], str)


async def test_validate_only_changes_nothing(emu: Emulator, session: aiohttp.ClientSession) -> None:
    params = {"validate_only": "true"}
    headers = token_headers(emu)
    psk = a_psk()
    status, _, body = await call(
        session,
        "POST",
        tunnels_url(emu),
        json={**IPSEC, "psk": psk},
        params=params,
        headers=headers,
    )
    assert status == 200
    assert body["result"]["name"] == "IPsec_1"
    assert body["result"]["id"] not in emu.tunnel_ids
    assert len(emu.tunnel_ids) == 3
    first = emu.tunnel_ids[0]
    url = f"{tunnels_url(emu)}/{first}"
    status, _, body = await call(
        session, "PUT", url, json={**IPSEC, "psk": psk}, params=params, headers=headers
    )
    assert body["result"]["modified"] is False
    assert body["result"]["modified_ipsec_tunnel"]["name"] == "IPsec_1"
    assert emu.state.tunnel(emu.account_id, first).name == "emu_tunnel_00001"
    assert emu.state.current_psk(emu.account_id, first) is None
    status, _, body = await call(session, "DELETE", url, params=params, headers=headers)
    assert body["result"]["deleted"] is False
    assert first in emu.tunnel_ids
    status, _, body = await call(
        session, "DELETE", url, params={"validate_only": "maybe"}, headers=headers
    )
    assert_failure(body, 1003)
    assert emu.state.total_generations() == 0


async def test_bulk_update(emu: Emulator, session: aiohttp.ClientSession) -> None:
    first, second = emu.tunnel_ids[:2]
    entries = [
        {**IPSEC, "id": first, "description": "one"},
        {**IPSEC, "id": second, "name": "IPsec_2", "psk": a_psk()},
    ]
    for body in (entries, {"ipsec_tunnels": entries}):
        status, answer = await _send(session, emu, "PUT", tunnels_url(emu), body)
        assert status == 200, answer
        assert answer["result"]["modified"] is True
        modified = answer["result"]["modified_ipsec_tunnels"]
        assert [t["id"] for t in modified] == [first, second]
        assert modified[0]["description"] == "one"
    assert emu.state.tunnel(emu.account_id, second).generation == 2
    # All are checked before anything changes.
    for bad, code in (
        ([{**IPSEC, "id": first, "description": "two"}, {**IPSEC, "id": "0" * 32}], 1002),
        ([{**IPSEC, "id": first}, {**IPSEC, "id": second}], 1008),  # the same name twice
        ([{**IPSEC, "id": first}, {**IPSEC, "id": first}], 1007),
        ([{**IPSEC}], 1006),
        ([{**IPSEC, "id": first, "interface_address": "x"}], 1007),
        ([], 1007),
        ({"tunnels": []}, 1007),
    ):
        status, answer = await _send(session, emu, "PUT", tunnels_url(emu), bad)
        assert status in (400, 404)
        assert_failure(answer, code)
    assert emu.state.tunnel(emu.account_id, first).description == "one"
    status, answer = await _send(
        session, emu, "PUT", gre_url(emu), [{**GRE, "id": emu.gre_tunnel_ids[0]}]
    )
    assert status == 200
    assert answer["result"]["modified_gre_tunnels"][0]["name"] == "GRE_1"
