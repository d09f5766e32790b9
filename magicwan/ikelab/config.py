"""What the two daemons are told: their ``strongswan.conf``, one IKE connection per tunnel,
and the edge's shared keys. Pure: nothing here starts a process or touches a file.

Every tunnel is one IKE connection on each side, named after the tunnel (its ``name``): the
router's local identity is the tunnel's ``ipsec_id`` (an FQDN) and its remote identity the
edge's, the tunnel's ``cloudflare_endpoint`` (an IPv4 address); the edge mirrors that. One
edge identity may serve every tunnel: the edge tells tunnels apart by the router's identity.
PSK authentication, ``mobike = no`` (IKE_AUTH would float to port 4500 and miss the peer's
NAT-T port), MODP-2048.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import attrs

if TYPE_CHECKING:
    from magicwan.models.tunnels import IPsecTunnel

__all__ = [
    "PORTS",
    "Side",
    "TunnelEnds",
    "child_ts",
    "connection",
    "edge_key",
    "strongswan_conf",
]

#: IKE and NAT-T ports of each daemon (a private network namespace: they cannot collide).
PORTS = {"edge": (10500, 14500), "router": (10501, 14501)}
_PLUGINS = "random nonce aes sha1 sha2 hmac kdf gmp socket-default kernel-netlink vici"
_IKE_PROPOSAL = "aes256-sha256-modp2048"
_ESP_PROPOSAL = "aes256-sha256"

Side = Literal["edge", "router"]


@attrs.frozen(kw_only=True)
class TunnelEnds:
    """One tunnel as both daemons see it."""

    conn: str  #: the IKE connection's name on both daemons
    ipsec_id: str  #: the router's identity (the edge's remote identity)
    edge_id: str  #: the edge's identity (the router's remote identity)

    @classmethod
    def of(cls, tunnel: IPsecTunnel) -> TunnelEnds:
        """The ends of a tunnel as Cloudflare (or the emulator) lists it: connection
        ``name``, router ``ipsec_id``, edge ``cloudflare_endpoint``."""
        if not (tunnel.name and tunnel.ipsec_id and tunnel.cloudflare_endpoint):
            raise ValueError(
                f"tunnel {tunnel.id} needs a name, an ipsec_id and a cloudflare_endpoint"
            )
        return cls(conn=tunnel.name, ipsec_id=tunnel.ipsec_id, edge_id=tunnel.cloudflare_endpoint)


def child_ts(index: int) -> tuple[str, str]:
    """Per-tunnel /32 traffic selectors (router, edge): both must be local addresses, since
    kernel-libipsec installs a route with a source address inside the local selector."""
    router = ipaddress.IPv4Address("10.0.0.1") + index
    edge = ipaddress.IPv4Address("10.128.0.1") + index
    return f"{router}/32", f"{edge}/32"


def strongswan_conf(directory: Path, side: Side, *, child_sas: bool) -> str:
    """``side``'s ``strongswan.conf``: its ports, plugins, VICI socket and log in ``directory``."""
    port, natt = PORTS[side]
    plugins = (
        _PLUGINS.replace("kernel-netlink", "kernel-libipsec kernel-netlink")
        if child_sas
        else _PLUGINS
    )
    return f"""\
charon {{
  load_modular = no
  load = {plugins}
  port = {port}
  port_nat_t = {natt}
  install_routes = no
  install_virtual_ip = no
  retransmit_tries = 2
  retransmit_timeout = 1.0
  # Many tunnels from one address at once: no cookies, no blocking of half-open SAs.
  block_threshold = 100000
  cookie_threshold = 100000
  cookie_threshold_ip = 100000
  plugins {{
    vici {{
      socket = unix://{directory / f"{side}.vici"}
    }}
    bypass-lan {{
      load = no
    }}
  }}
  filelog {{
    {side} {{
      path = {directory / f"{side}.log"}
      time_format = %H:%M:%S
      flush_line = yes
      default = 1
      cfg = 2
    }}
  }}
}}
"""


def connection(tunnel: TunnelEnds, index: int, side: Side, *, child_sas: bool) -> dict[str, Any]:
    """The VICI ``load-conn`` message of ``tunnel`` (the ``index``-th) on ``side``."""
    other: Side = "router" if side == "edge" else "edge"
    local_id, remote_id = (
        (tunnel.ipsec_id, tunnel.edge_id) if side == "router" else (tunnel.edge_id, tunnel.ipsec_id)
    )
    conn: dict[str, Any] = {
        "version": "2",
        "local_addrs": ["127.0.0.1"],
        "remote_addrs": ["127.0.0.1"],
        "local_port": str(PORTS[side][0]),
        "remote_port": str(PORTS[other][0]),
        "mobike": "no",
        "proposals": [_IKE_PROPOSAL],
        "local": {"auth": "psk", "id": local_id},
        "remote": {"auth": "psk", "id": remote_id},
    }
    if child_sas:
        router_ts, edge_ts = child_ts(index)
        local_ts, remote_ts = (router_ts, edge_ts) if side == "router" else (edge_ts, router_ts)
        conn["children"] = {
            "net": {
                "local_ts": [local_ts],
                "remote_ts": [remote_ts],
                "esp_proposals": [_ESP_PROPOSAL],
            }
        }
    return {tunnel.conn: conn}


def edge_key(ipsec_id: str, psk: str) -> dict[str, Any]:
    """The edge's shared key for the router ``ipsec_id`` (re-loading replaces it)."""
    return {"id": f"edge-{ipsec_id}", "type": "IKE", "data": psk, "owners": [ipsec_id]}
