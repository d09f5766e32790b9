"""Choosing tunnels by the age of their PSK, for every command that selects
(``tunnels list --older-than``, ``psk rotate --older-than``, ``psk audit``).

Pure functions of the tunnel list and ``now``: no clock is read here.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from magicwan.models.tunnels import IPsecTunnel

__all__ = ["older_than", "psk_age"]


def psk_age(tunnel: IPsecTunnel, now: datetime) -> timedelta | None:
    """How long ago the tunnel's PSK was generated (``psk_metadata.last_generated_on``), or
    None when the list says it never was. A stamp in the future (a skewed clock) is age 0."""
    meta = tunnel.psk_metadata
    stamp = meta.last_generated_on if meta is not None else None
    if stamp is None:
        return None
    return max(timedelta(0), now - stamp)


def older_than(tunnels: Iterable[IPsecTunnel], age: timedelta, now: datetime) -> list[IPsecTunnel]:
    """The tunnels whose PSK is older than ``age`` at ``now`` (timezone-aware), in the
    order given. A tunnel whose PSK was never generated (no ``last_generated_on``) counts
    as old: it is the first a policy should catch."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    selected = []
    for tunnel in tunnels:
        current = psk_age(tunnel, now)
        if current is None or current > age:
            selected.append(tunnel)
    return selected
