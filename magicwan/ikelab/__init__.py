"""An IKE lab: two real strongSwan charon daemons, and a bridge from the emulator to one of them.

A test and demo tool, like :mod:`magicwan.emulator`: it shows PSK rotation and delivery end to
end on one machine. Never point it at anything real.

One daemon, the *edge*, stands in for Cloudflare: through :func:`bridge` it holds, for every
tunnel, the PSK the emulator holds. The other, the *router*, is the customer's device, which
should get its PSKs only through :class:`magicwan.delivery.StrongSwan` (on
:attr:`IKELab.router_socket`). Both run in one private network namespace, loopback only::

    async with run(tunnels=24, gre_tunnels=0, rate_limit=None) as emu, MagicWAN(...) as client:
        tunnels = await client.tunnels.ipsec.list(emu.account_id)
        async with ike_lab(tunnels) as lab:
            with bridge(emu.state, lab):  # every PSK the emulator stores reaches the edge
                deliver = StrongSwan(lab.router_socket, reauth=True)
                ...  # rotate with deliver=deliver
                assert await lab.sa_states() == {t.name: "ESTABLISHED" for t in tunnels}

Needs Linux, root, ``unshare``/``nsenter`` (util-linux), ``ip`` (iproute2), charon
(``strongswan-charon``) and the ``vici`` package (``pip install 'magicwan[strongswan]'``);
with ``child_sas=True`` also the ``kernel-libipsec`` plugin (``libcharon-extra-plugins``),
since the kernel may lack ESP. :func:`ike_missing` says what is missing, if anything.

Modules: ``prerequisites`` (what the machine needs), ``config`` (what the daemons are told:
``strongswan.conf``, connections, shared keys), ``lab`` (the daemons: start, drive, stop),
``emulator_bridge`` (the emulator's PSKs on the edge), ``errors``.
"""

from magicwan.ikelab.config import PORTS, Side, TunnelEnds
from magicwan.ikelab.emulator_bridge import Bridge, bridge
from magicwan.ikelab.errors import IKELabError
from magicwan.ikelab.lab import IKELab, ike_lab
from magicwan.ikelab.prerequisites import CHARON, LIBIPSEC, ike_missing

__all__ = [
    "CHARON",
    "LIBIPSEC",
    "PORTS",
    "Bridge",
    "IKELab",
    "IKELabError",
    "Side",
    "TunnelEnds",
    "bridge",
    "ike_lab",
    "ike_missing",
]
