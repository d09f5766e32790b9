"""``magicwan demo --ike``: what the end-to-end proof shows, shown to a person."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from magicwan.journal import read_journal
from tests.support.cli import magicwan, summary
from tests.support.strongswan import require_strongswan


@pytest.mark.asyncio
async def test_demo_ike_proves_every_delivery_and_shows_the_lost_ones_fail(
    tmp_path: Path,
) -> None:
    require_strongswan()
    journal = tmp_path / "demo.jsonl"
    argv = ["demo", "--ike", "--tunnels", "8", "--ike-lose", "2", "--journal", str(journal)]
    result = await magicwan(*argv, "--latency", "0", "--progress", "off")

    assert result.code == 0, result.out + result.err  # exactly what was asked went wrong
    err = result.err
    assert "8 tunnels commissioned with a first PSK, 8 IKE SAs ESTABLISHED" in err
    assert "IKE: 6/8 tunnels ESTABLISHED from the router with their new PSK" in err
    refused = re.search(r"IKE: 2 failed IKE_AUTH with AUTHENTICATION_FAILED .*: (.*)", err)
    assert refused is not None, err
    assert summary(err)["undelivered"] == "2"
    assert summary(err)["delivered"] == "6"
    assert "verified: 8/8 journalled PSKs match the emulator" in err
    records = read_journal(journal)
    assert sum(r.delivered for r in records.values()) == 6
    assert all(r.psk is not None for r in records.values())  # the lost ones are journalled
    assert result.out == ""  # no PSK anywhere near a terminal


@pytest.mark.asyncio
async def test_demo_ike_says_what_is_missing_where_it_cannot_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import magicwan.ikelab as ikelab

    monkeypatch.setattr(
        ikelab, "ike_missing", lambda **_: "needs root (network and mount namespaces)"
    )
    result = await magicwan("demo", "--ike", "--progress", "off")
    assert result.code == 2
    assert "--ike cannot run here: needs root" in result.err
