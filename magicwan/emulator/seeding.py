"""How the emulator's seeded tunnels look: pure functions of the creation index (no aiohttp).

Made-up values, reproducible from the seed and the tunnel's creation index ``i`` (counted over
all accounts of an :class:`~magicwan.emulator.state.EmulatorState`; IPsec and GRE tunnels count
separately):

* ids: 32 lowercase hex characters from ``random.Random`` streams of the seed (accounts, users,
  IPsec tunnels and GRE tunnels each have their own, so one does not shift another);
* IPsec: ``cloudflare_endpoint`` 203.0.113.1 (TEST-NET-3), ``customer_endpoint`` 198.18.0.0/15
  (the benchmarking range), ``interface_address`` ``10.x.y.z/31``, ``interface_address6``
  ``2001:db8:4d57::<2i>/127`` (documentation prefix); ``ipsec_id``
  ``<tunnel_id>.<account_id>.ipsec.cloudflare.com``; every third tunnel (``i % 3 == 2``) has a
  custom FQDN identity ``site<i+1>.<account_id>.custom.ipsec.cloudflare.com``;
* GRE: ``cloudflare_gre_endpoint`` 203.0.113.2, ``customer_gre_endpoint`` 198.51.100.0/24
  (TEST-NET-2), ``interface_address`` ``172.16-31.x.y/31``, ``interface_address6``
  ``2001:db8:4d58::<2i>/127``, ``mtu`` 1476, ``ttl`` 64;
* every second tunnel of either kind (``i % 2 == 1``) speaks BGP: a private ASN
  (64512 + i mod 1023), no extra prefixes, no MD5 key, and a ``bgp_status`` of ``BGP_UP``
  between the two addresses of its ``/31`` (Cloudflare's side is the even one, port 179).
"""

from __future__ import annotations

import ipaddress
from datetime import datetime

from magicwan.emulator.models import Bgp, BgpStatus, GreTunnel, HealthCheck, Tunnel

__all__ = ["gre_tunnel", "ipsec_tunnel"]

_CLOUDFLARE_ENDPOINT = "203.0.113.1"  # TEST-NET-3: clearly not a real Cloudflare address
_CLOUDFLARE_GRE_ENDPOINT = "203.0.113.2"
_CUSTOMER_BASE = int(ipaddress.IPv4Address("198.18.0.0"))  # benchmarking range (RFC 2544)
_CUSTOMER_GRE_BASE = int(ipaddress.IPv4Address("198.51.100.0"))  # TEST-NET-2
_INTERFACE_BASE = int(ipaddress.IPv4Address("10.0.0.0"))
_GRE_INTERFACE_BASE = int(ipaddress.IPv4Address("172.16.0.0"))
_INTERFACE6_BASE = int(ipaddress.IPv6Address("2001:db8:4d57::"))  # documentation (RFC 3849)
_GRE_INTERFACE6_BASE = int(ipaddress.IPv6Address("2001:db8:4d58::"))
_PRIVATE_ASN_BASE = 64512


def _bgp(index: int, interface: ipaddress.IPv4Address, now: datetime) -> tuple[Bgp, BgpStatus]:
    status = BgpStatus(
        state="BGP_UP",
        tcp_established=True,
        updated_at=now,
        bgp_state="Established",
        cf_speaker_ip=str(interface),
        cf_speaker_port=179,
        customer_speaker_ip=str(interface + 1),
        customer_speaker_port=49152 + (index * 7919) % 16384,
    )
    return Bgp(customer_asn=_PRIVATE_ASN_BASE + index % 1023), status


def ipsec_tunnel(
    index: int,
    tunnel_id: str,
    account_id: str,
    now: datetime,
    *,
    name: str | None = None,
    description: str | None = None,
) -> Tunnel:
    """The ``index``-th IPsec tunnel, created ``now``."""
    customer = str(ipaddress.IPv4Address(_CUSTOMER_BASE + 1 + index % 131_070))
    interface = ipaddress.IPv4Address(_INTERFACE_BASE + (2 * index) % (1 << 24))
    interface6 = ipaddress.IPv6Address(_INTERFACE6_BASE + 2 * (index % (1 << 64)))
    bgp, bgp_status = _bgp(index, interface, now) if index % 2 == 1 else (None, None)
    fqdn_id = None
    if index % 3 == 2:
        fqdn_id = f"site{index + 1:05d}.{account_id}.custom.ipsec.cloudflare.com"
    return Tunnel(
        id=tunnel_id,
        account_id=account_id,
        name=name or f"emu_tunnel_{index + 1:05d}",
        description=description if description is not None else "Emulated IPsec tunnel",
        cloudflare_endpoint=_CLOUDFLARE_ENDPOINT,
        customer_endpoint=customer,
        interface_address=f"{interface}/31",
        interface_address6=f"{interface6}/127",
        created_on=now,
        modified_on=now,
        health_check=HealthCheck(target=customer),
        custom_fqdn_id=fqdn_id,
        bgp=bgp,
        bgp_status=bgp_status,
    )


def gre_tunnel(
    index: int,
    tunnel_id: str,
    account_id: str,
    now: datetime,
    *,
    name: str | None = None,
    description: str | None = None,
) -> GreTunnel:
    """The ``index``-th GRE tunnel, created ``now``."""
    customer = str(ipaddress.IPv4Address(_CUSTOMER_GRE_BASE + 1 + index % 254))
    interface = ipaddress.IPv4Address(_GRE_INTERFACE_BASE + (2 * index) % (1 << 20))
    interface6 = ipaddress.IPv6Address(_GRE_INTERFACE6_BASE + 2 * (index % (1 << 64)))
    bgp, bgp_status = _bgp(index, interface, now) if index % 2 == 1 else (None, None)
    return GreTunnel(
        id=tunnel_id,
        account_id=account_id,
        name=name or f"emu_gre_{index + 1:05d}",
        description=description if description is not None else "Emulated GRE tunnel",
        cloudflare_gre_endpoint=_CLOUDFLARE_GRE_ENDPOINT,
        customer_gre_endpoint=customer,
        interface_address=f"{interface}/31",
        interface_address6=f"{interface6}/127",
        created_on=now,
        modified_on=now,
        health_check=HealthCheck(target=customer),
        bgp=bgp,
        bgp_status=bgp_status,
    )
