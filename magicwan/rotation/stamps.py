"""Pure: what a read-back says of a PSK held, from the two ``last_generated_on`` stamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from magicwan.models.psk import PSKGenerateResult
from magicwan.models.tunnels import IPsecTunnel

__all__ = ["coarse_equal", "compare_stamps", "read_back_verdict", "undecided_reason"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _precision(stamp: datetime) -> timedelta:
    """The precision of a stamp: what its text had (a ``Stamp``), else microseconds (a
    datetime made in code claims no less)."""
    digits = getattr(stamp, "digits", 6)
    return timedelta(microseconds=10 ** (6 - max(0, min(digits, 6))))


def compare_stamps(held: datetime | None, edge: datetime | None) -> int | None:
    """-1, 0 or 1 as the edge's stamp is older, equal or newer than the held PSK's;
    None when either is missing or the two cannot be told apart.

    The stamps are compared at the coarser precision of the two (the precision their
    TEXT had: ``.500000`` is microseconds). Newer or older at that precision decides;
    equal decides only when both stamps have the same precision: Cloudflare answers a
    generate in microseconds and a GET in whole seconds, and a late store in the same
    second as the PSK held would otherwise pass for it.
    """
    if held is None or edge is None:
        return None
    mine, theirs = _precision(held), _precision(edge)
    step = max(mine, theirs)
    held_ticks = (held - _EPOCH) // step
    edge_ticks = (edge - _EPOCH) // step
    if held_ticks == edge_ticks:
        return 0 if mine == theirs else None
    return 1 if edge_ticks > held_ticks else -1


def _stamps(held: PSKGenerateResult, edge: IPsecTunnel) -> tuple[datetime | None, datetime | None]:
    mine = held.psk_metadata.last_generated_on if held.psk_metadata else None
    theirs = edge.psk_metadata.last_generated_on if edge.psk_metadata else None
    return mine, theirs


def read_back_verdict(held: PSKGenerateResult, edge: IPsecTunnel) -> int | None:
    """What a read-back says of the PSK held: 0 the edge holds it, > 0 the edge holds a
    newer one; negative (the edge's is older) or None (a stamp missing, or equal only at
    a coarser precision) cannot decide."""
    return compare_stamps(*_stamps(held, edge))


def undecided_reason(held: PSKGenerateResult, edge: IPsecTunnel) -> str:
    """Why a read-back whose verdict is negative or None cannot decide."""
    mine, theirs = _stamps(held, edge)
    if mine is None or theirs is None:
        why = "no stamp to compare"
    elif compare_stamps(mine, theirs) is None:
        why = "the stamps are equal only at the coarser precision of the two"
    else:
        why = "the edge's stamp is older"
    return f"read-back cannot decide ({why})"


def coarse_equal(held: PSKGenerateResult, edge: IPsecTunnel) -> bool:
    """Both stamps are there and equal only at the coarser precision: a late store in the
    same second (or millisecond) cannot be told from the PSK held."""
    mine, theirs = _stamps(held, edge)
    return mine is not None and theirs is not None and compare_stamps(mine, theirs) is None
