"""Resource namespaces: each builds paths and converts results, nothing more."""

from magicwan.resources.ipsec import IPsecTunnels
from magicwan.resources.psk import IPsecPSK
from magicwan.resources.tunnels import Tunnels

__all__ = ["IPsecPSK", "IPsecTunnels", "Tunnels"]
