"""How the emulator checks a tunnel a client creates or updates (pure: no aiohttp, no state).

Cloudflare documents these rules (the official SDK's ``ipsec_tunnel_create_params`` and
``gre_tunnel_create_params``), and the emulator enforces them:

* required fields: ``name``, ``cloudflare_endpoint`` and ``interface_address`` (IPsec);
  ``name``, ``cloudflare_gre_endpoint``, ``customer_gre_endpoint`` and ``interface_address``
  (GRE);
* endpoints are IP addresses; ``interface_address`` is an IPv4 ``/31``; ``interface_address6``
  an IPv6 ``/127`` whose address is the first of its subnet;
* a GRE tunnel's name has no spaces or special characters and at most 15 characters;
  a GRE ``mtu`` is at least 576;
* ``health_check.target`` is an object (``{"saved": ...}``) when the request carries
  ``x-magic-new-hc-target: true``, a string otherwise; ``direction``, ``rate`` and ``type``
  take their documented values;
* ``automatic_return_routing: true`` needs the account's ``coupler_integration`` flag;
* a BGP ``md5_key`` holds no ``"``, ``?`` or control character;
* ``custom_remote_identities.fqdn_id`` is ``<label>.<account id>.custom.ipsec.cloudflare.com``.

Where Cloudflare publishes no rule, :class:`TunnelRules` holds the emulator's choice (each one
configurable; docs/emulator.md lists them under Assumptions). Unknown fields are ignored.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

import attrs

__all__ = [
    "GRE_REQUIRED",
    "IPSEC_REQUIRED",
    "MissingField",
    "TunnelProblem",
    "TunnelRules",
    "check_gre",
    "check_ipsec",
]

IPSEC_REQUIRED: Final = ("name", "cloudflare_endpoint", "interface_address")
GRE_REQUIRED: Final = (
    "name",
    "cloudflare_gre_endpoint",
    "customer_gre_endpoint",
    "interface_address",
)
_GRE_NAME = re.compile(r"[A-Za-z0-9_]+")
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_MD5_FORBIDDEN = frozenset('"?')
_DIRECTIONS: Final = ("unidirectional", "bidirectional")
_RATES: Final = ("low", "mid", "high")
_TYPES: Final = ("reply", "request")
_PRIVATE = tuple(
    ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)


@attrs.frozen(kw_only=True)
class TunnelRules:
    """The emulator's choices where Cloudflare publishes no rule (docs/emulator.md, Assumptions).

    ``name_scope``: names are unique among all tunnels of an account (``"account"``, IPsec
    and GRE together) or among tunnels of one kind (``"kind"``); compared exactly.
    ``private_interface_only``: refuse an ``interface_address`` outside 10/8, 172.16/12 and
    192.168/16 (Cloudflare's docs ask for one but its own SDK tests use 192.0.2.0/31).
    ``coupler_integration``: the account flag that ``automatic_return_routing: true`` needs.
    ``gre_max_name``: the longest GRE name; ``gre_mtu``: the MTU bounds (576 is Cloudflare's
    minimum); ``gre_ttl``: the TTL bounds; ``asn``: a BGP ``customer_asn``'s bounds (0 is
    reserved, RFC 7607).
    """

    name_scope: Literal["account", "kind"] = "account"
    private_interface_only: bool = False
    coupler_integration: bool = False
    gre_max_name: int = 15
    gre_mtu: tuple[int, int] = (576, 1500)
    gre_ttl: tuple[int, int] = (1, 255)
    asn: tuple[int, int] = (1, 4_294_967_295)


@attrs.frozen
class TunnelProblem(Exception):
    """A field the emulator refuses: its dotted name and why (never its value)."""

    field: str
    reason: str


@attrs.frozen
class MissingField(Exception):
    """A required field is absent."""

    field: str


def _str(body: Mapping[str, Any], name: str, prefix: str = "") -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise TunnelProblem(prefix + name, "must be a string")
    return value


def _bool(body: Mapping[str, Any], name: str, prefix: str = "") -> bool | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise TunnelProblem(prefix + name, "must be true or false")
    return value


def _int(
    body: Mapping[str, Any], name: str, bounds: tuple[int, int], prefix: str = ""
) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise TunnelProblem(prefix + name, f"must be a whole number from {low} to {high}")
    return value


def _address(body: Mapping[str, Any], name: str) -> str | None:
    value = _str(body, name)
    if value is None:
        return None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise TunnelProblem(name, "must be an IP address") from None
    return value


def _interface4(value: str, rules: TunnelRules) -> str:
    try:
        interface = ipaddress.IPv4Interface(value)
    except ValueError:
        raise TunnelProblem("interface_address", "must be an IPv4 address with a /31") from None
    if "/" not in value or interface.network.prefixlen != 31:
        raise TunnelProblem("interface_address", "must be a /31 (two hosts, one each side)")
    if rules.private_interface_only and not any(interface.ip in n for n in _PRIVATE):
        raise TunnelProblem(
            "interface_address", "must be in 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"
        )
    return value


def _interface6(value: str) -> str:
    try:
        interface = ipaddress.IPv6Interface(value)
    except ValueError:
        raise TunnelProblem("interface_address6", "must be an IPv6 address with a /127") from None
    if "/" not in value or interface.network.prefixlen != 127:
        raise TunnelProblem("interface_address6", "must be a /127")
    if interface.ip != interface.network.network_address:
        raise TunnelProblem("interface_address6", "must be the first address of its /127")
    return value


def _health_check(body: Mapping[str, Any], new_hc_target: bool) -> dict[str, Any] | None:
    value = body.get("health_check")
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TunnelProblem("health_check", "must be an object")
    p = "health_check."
    out: dict[str, Any] = {}
    enabled = _bool(value, "enabled", p)
    if enabled is not None:
        out["enabled"] = enabled
    for name, allowed in (("direction", _DIRECTIONS), ("rate", _RATES), ("type", _TYPES)):
        text = _str(value, name, p)
        if text is not None:
            if text not in allowed:
                raise TunnelProblem(p + name, f"must be one of {', '.join(allowed)}")
            out[name] = text
    target = value.get("target")
    if target is not None:
        if new_hc_target:
            if not isinstance(target, Mapping):
                raise TunnelProblem(
                    "health_check.target", "must be an object with x-magic-new-hc-target: true"
                )
            saved = _str(target, "saved", "health_check.target.")
            target = saved if saved is not None else ""
        elif not isinstance(target, str):
            raise TunnelProblem(
                "health_check.target", "must be a string without x-magic-new-hc-target: true"
            )
        if target:
            try:
                ipaddress.ip_address(target)
            except ValueError:
                raise TunnelProblem("health_check.target", "must be an IP address") from None
        out["target"] = target
    return out


def _bgp(body: Mapping[str, Any], rules: TunnelRules) -> dict[str, Any] | None:
    value = body.get("bgp")
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TunnelProblem("bgp", "must be an object")
    p = "bgp."
    asn = _int(value, "customer_asn", rules.asn, p)
    if asn is None:
        raise MissingField("bgp.customer_asn")
    out: dict[str, Any] = {"customer_asn": asn}
    prefixes = value.get("extra_prefixes")
    if prefixes is not None:
        if not isinstance(prefixes, list) or not all(isinstance(x, str) for x in prefixes):
            raise TunnelProblem("bgp.extra_prefixes", "must be a list of strings")
        for prefix in prefixes:
            try:
                ipaddress.ip_network(prefix)
            except ValueError:
                raise TunnelProblem("bgp.extra_prefixes", "must hold IP prefixes") from None
        out["extra_prefixes"] = tuple(prefixes)
    md5 = _str(value, "md5_key", p)
    if md5 is not None:
        if not md5 or any(c in _MD5_FORBIDDEN or not " " <= c <= "~" for c in md5):
            raise TunnelProblem(
                "bgp.md5_key", 'must be printable ASCII without ", ? or control characters'
            )
        out["md5_key"] = md5
    for name in ("export_filter_id", "import_filter_id"):
        text = _str(value, name, p)
        if text is not None:
            out[name] = text
    return out


def _common(
    body: Mapping[str, Any], rules: TunnelRules, new_hc_target: bool, required: tuple[str, ...]
) -> dict[str, Any]:
    for field in required:
        if body.get(field) is None:
            raise MissingField(field)
    out: dict[str, Any] = {}
    name = _str(body, "name")
    if name is not None:
        if not name.strip():
            raise TunnelProblem("name", "must not be empty")
        out["name"] = name
    description = _str(body, "description")
    if description is not None:
        out["description"] = description
    interface = _str(body, "interface_address")
    if interface is not None:
        out["interface_address"] = _interface4(interface, rules)
    interface6 = _str(body, "interface_address6")
    if interface6 is not None:
        out["interface_address6"] = _interface6(interface6)
    arr = _bool(body, "automatic_return_routing")
    if arr is not None:
        if arr and not rules.coupler_integration:
            raise TunnelProblem(
                "automatic_return_routing",
                "true requires the coupler_integration account flag",
            )
        out["automatic_return_routing"] = arr
    health_check = _health_check(body, new_hc_target)
    if health_check is not None:
        out["health_check"] = health_check
    bgp = _bgp(body, rules)
    if bgp is not None:
        out["bgp"] = bgp
    return out


def check_ipsec(
    body: Mapping[str, Any],
    *,
    account_id: str,
    rules: TunnelRules,
    new_hc_target: bool,
    psk_problem: Callable[[object], str | None],
) -> dict[str, Any]:
    """The fields of an IPsec tunnel to create or replace, checked (``psk`` included);
    raises :class:`MissingField` or :class:`TunnelProblem`."""
    out = _common(body, rules, new_hc_target, IPSEC_REQUIRED)
    for name in ("cloudflare_endpoint", "customer_endpoint"):
        address = _address(body, name)
        if address is not None:
            out[name] = address
    for name in ("replay_protection", "allow_null_cipher"):
        flag = _bool(body, name)
        if flag is not None:
            out[name] = flag
    identities = body.get("custom_remote_identities")
    if identities is not None:
        if not isinstance(identities, Mapping):
            raise TunnelProblem("custom_remote_identities", "must be an object")
        fqdn = _str(identities, "fqdn_id", "custom_remote_identities.")
        if fqdn is not None:
            suffix = f".{account_id}.custom.ipsec.cloudflare.com"
            label = fqdn[: -len(suffix)] if fqdn.endswith(suffix) else ""
            if not all(_LABEL.fullmatch(part) for part in label.split(".")):
                raise TunnelProblem(
                    "custom_remote_identities.fqdn_id",
                    "must be <custom label>.<account ID>.custom.ipsec.cloudflare.com",
                )
            out["custom_fqdn_id"] = fqdn
    if "psk" in body and body["psk"] is not None:
        problem = psk_problem(body["psk"])
        if problem is not None:
            raise TunnelProblem("psk", problem)
        out["psk"] = body["psk"]
    return out


def check_gre(
    body: Mapping[str, Any], *, rules: TunnelRules, new_hc_target: bool
) -> dict[str, Any]:
    """The fields of a GRE tunnel to create or replace, checked; raises
    :class:`MissingField` or :class:`TunnelProblem`."""
    out = _common(body, rules, new_hc_target, GRE_REQUIRED)
    name: str | None = out.get("name")
    if name is not None and (len(name) > rules.gre_max_name or not _GRE_NAME.fullmatch(name)):
        raise TunnelProblem(
            "name",
            f"must be at most {rules.gre_max_name} letters, digits or underscores",
        )
    for field in ("cloudflare_gre_endpoint", "customer_gre_endpoint"):
        address = _address(body, field)
        if address is not None:
            out[field] = address
    mtu = _int(body, "mtu", rules.gre_mtu)
    if mtu is not None:
        out["mtu"] = mtu
    ttl = _int(body, "ttl", rules.gre_ttl)
    if ttl is not None:
        out["ttl"] = ttl
    return out
