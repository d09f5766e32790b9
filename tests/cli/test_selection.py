"""``magicwan.cli.selection``: tunnels chosen by the age of their PSK (pure, no clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from magicwan.cli.selection import older_than, psk_age
from magicwan.models.psk import PSKMetadata
from magicwan.models.tunnels import IPsecTunnel

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def _tunnel(number: int, generated: datetime | None, *, metadata: bool = True) -> IPsecTunnel:
    meta = PSKMetadata(last_generated_on=generated) if metadata else None
    return IPsecTunnel(
        id=f"{number:032x}",
        name=f"t{number}",
        cloudflare_endpoint="203.0.113.1",
        customer_endpoint="198.51.100.1",
        interface_address="10.0.0.0/31",
        psk_metadata=meta,
    )


def test_older_than_keeps_the_order_and_counts_a_never_rotated_tunnel_as_old() -> None:
    tunnels = [
        _tunnel(1, NOW - timedelta(days=91)),
        _tunnel(2, NOW - timedelta(days=89)),
        _tunnel(3, None),  # psk_metadata without a stamp
        _tunnel(4, None, metadata=False),  # no psk_metadata at all
        _tunnel(5, NOW - timedelta(days=90)),  # exactly 90 days: not older
        _tunnel(6, NOW - timedelta(days=90, seconds=1)),
        _tunnel(7, NOW + timedelta(hours=1)),  # a skewed clock: brand new
    ]

    chosen = older_than(tunnels, timedelta(days=90), NOW)

    assert [t.name for t in chosen] == ["t1", "t3", "t4", "t6"]


def test_psk_age() -> None:
    assert psk_age(_tunnel(1, NOW - timedelta(hours=12)), NOW) == timedelta(hours=12)
    assert psk_age(_tunnel(1, NOW + timedelta(hours=1)), NOW) == timedelta(0)
    assert psk_age(_tunnel(1, None), NOW) is None
    assert psk_age(_tunnel(1, None, metadata=False), NOW) is None


def test_older_than_needs_an_aware_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        older_than([], timedelta(days=1), datetime(2026, 1, 1))
