"""pytest glue for the IKE lab (:mod:`magicwan.ikelab`): two real strongSwan daemons.

The lab itself (the edge and router charons, their commands, the emulator's bridge) lives in
the package, so ``magicwan demo --ike`` can use it too; it is re-exported here. This module
adds what only tests need: :func:`require_strongswan` (skip where the lab cannot run, fail
instead under CI), :func:`require_vici`, :func:`make_tunnels` (tunnel objects without an
emulator) and :func:`emulated_lab` (emulator, client, lab and bridge in one)::

    require_strongswan()
    async with ike_lab(tunnels, keep_logs=tmp_path / "charon") as lab:
        await lab.load_edge_psk(ipsec_id, psk)      # what Cloudflare holds
        await StrongSwan(lab.router_socket, reauth=True)(delivery)
        assert await lab.sa_state(conn) == "ESTABLISHED"
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Unpack

import attrs
import pytest
from aiohttp.typedefs import Middleware

from magicwan import MagicWAN
from magicwan.emulator import Emulator, run
from magicwan.emulator.state import StateOptions
from magicwan.ikelab import (
    CHARON,
    Bridge,
    IKELab,
    IKELabError,
    TunnelEnds,
    bridge,
    ike_lab,
    ike_missing,
)
from magicwan.models.tunnels import IPsecTunnel

__all__ = [
    "CHARON",
    "EDGE_ID",
    "Bridge",
    "EmulatedLab",
    "HarnessError",
    "IKELab",
    "IKELabError",
    "StrongSwanPair",
    "TunnelEnds",
    "bridge",
    "emulated_lab",
    "ike_lab",
    "make_tunnels",
    "require_strongswan",
    "require_vici",
    "strongswan_missing",
    "strongswan_pair",
]

#: The edge's IKE identity in :func:`make_tunnels` (a Cloudflare anycast address).
EDGE_ID = "162.159.0.1"

#: The names these had before the lab moved into the package (code written against the
#: harness still imports them).
StrongSwanPair = IKELab
HarnessError = IKELabError
strongswan_pair = ike_lab


def strongswan_missing(*, child_sas: bool = False) -> str | None:
    """Why the lab cannot run here, or None when it can (:func:`ike_missing`)."""
    return ike_missing(child_sas=child_sas)


def _skip_or_fail(reason: str, *, module: bool = False) -> None:
    """Skip where a prerequisite is missing; fail instead under CI, which must run everything."""
    if os.environ.get("CI"):
        pytest.fail(f"strongSwan tests must run under CI, but this machine {reason}", pytrace=False)
    pytest.skip(f"strongSwan: {reason}", allow_module_level=module)


def require_strongswan(*, child_sas: bool = False) -> None:
    """Skip the calling test where real strongSwan cannot run; under CI, fail it instead."""
    reason = strongswan_missing(child_sas=child_sas)
    if reason is not None:
        _skip_or_fail(reason)


def require_vici() -> None:
    """At a test module's top: skip it without the ``vici`` package; under CI, fail it."""
    if importlib.util.find_spec("vici") is None:
        _skip_or_fail("needs the vici package (pip install 'magicwan[strongswan]')", module=True)


def make_tunnels(
    count: int, *, account_id: str = "023e105f4ecef8ad9ca31a8372d0c353"
) -> list[IPsecTunnel]:
    """``count`` IPsec tunnels with the facts the daemons need (as Cloudflare would list them)."""
    tunnels = []
    for index in range(count):
        tunnel_id = f"{index + 1:032x}"
        tunnels.append(
            IPsecTunnel(
                id=tunnel_id,
                name=f"tunnel-{index + 1:03d}",
                cloudflare_endpoint=EDGE_ID,
                customer_endpoint="127.0.0.1",
                ipsec_id=f"{tunnel_id}.{account_id}.ipsec.cloudflare.com",
            )
        )
    return tunnels


@attrs.frozen(kw_only=True)
class EmulatedLab:
    """A running emulator, a client of it, its IPsec tunnels as the client lists them, the
    IKE lab built from those tunnels, and the bridge keeping the edge's PSKs equal to the
    emulator's."""

    emu: Emulator
    client: MagicWAN
    tunnels: list[IPsecTunnel]
    lab: IKELab
    bridge: Bridge

    @property
    def account_id(self) -> str:
        return self.emu.account_id

    def current_psk(self, tunnel: IPsecTunnel) -> str | None:
        """The emulator's (and so the edge's) PSK of ``tunnel``."""
        return self.emu.state.current_psk(self.account_id, tunnel.id)

    def generation(self, tunnel: IPsecTunnel) -> int:
        """How many PSKs the emulator stored for ``tunnel``."""
        return self.emu.state.tunnel(self.account_id, tunnel.id).generation


@asynccontextmanager
async def emulated_lab(
    count: int,
    *,
    keep_logs: Path | None = None,
    middlewares: Iterable[Middleware] = (),
    **options: Unpack[StateOptions],
) -> AsyncIterator[EmulatedLab]:
    """``magicwan.emulator.run(tunnels=count, gre_tunnels=0, rate_limit=None, **options)``
    (with ``middlewares``), a ``MagicWAN`` client of it, ``client.tunnels.ipsec.list()``,
    ``ike_lab()`` of those tunnels and ``bridge()``: all stopped at exit. Call
    :func:`require_strongswan` first."""
    options["tunnels"] = count
    options.setdefault("gre_tunnels", 0)
    options.setdefault("rate_limit", None)
    async with (
        run(shutdown_timeout=1.0, middlewares=middlewares, **options) as emu,
        MagicWAN(api_token=emu.api_token, base_url=emu.base_url, environ={}) as client,
    ):
        listed = await client.tunnels.ipsec.list(emu.account_id)
        async with ike_lab(listed, keep_logs=keep_logs) as lab:
            with bridge(emu.state, lab) as link:
                yield EmulatedLab(emu=emu, client=client, tunnels=listed, lab=lab, bridge=link)
