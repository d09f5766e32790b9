"""An answer that carries a PSK is never discarded for its metadata.

The hostile server answers each tunnel with a valid PSK whose ``psk_metadata.last_generated_on``
comes in an odd form (``tests.support.hostile.ODD_STAMPS``): RFC 3339 with a lowercase ``t`` and
``z`` (valid: parsed), Go's ``time.String()``, an epoch number, an epoch in a string (not RFC
3339: the stamp is left unset and a warning says so, without the value). Either way the PSK comes
back from the one request: a PSK generation is never repeated because of its stamp.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from magicwan import MagicWAN, read_journal
from tests.support.clock import FakeClock
from tests.support.constants import ACCOUNT, TUNNEL
from tests.support.hostile import ODD_STAMPS, HostileServer, hostile_psk
from tests.support.secrets import HOSTILE_PSK, SECRET_TOKEN, assert_no_secret, log_texts

#: What each stamp reads as: only RFC 3339 is read (lowercase letters are RFC 3339 too).
PARSED: dict[str, datetime | None] = {
    "stamp_lowercase": datetime(2024, 1, 1, 0, 0, 0, 123456, tzinfo=UTC),
    "stamp_go_string": None,
    "stamp_epoch_number": None,
    "stamp_epoch_string": None,
}
TUNNELS = [f"{i:02x}" * 16 for i in range(1, 5)]


def test_every_odd_stamp_has_an_expectation() -> None:
    assert sorted(PARSED) == sorted(ODD_STAMPS)


def _client(base_url: str) -> MagicWAN:
    fake = FakeClock()  # a retry would not wait for real; there must be none
    return MagicWAN(
        api_token=SECRET_TOKEN,
        base_url=base_url,
        rate_limit=None,
        timeout=5.0,
        clock=fake.clock,
        sleep=fake.sleep,
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("scenario", sorted(ODD_STAMPS))
async def test_an_odd_stamp_never_costs_the_psk(
    hostile: HostileServer, scenario: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="magicwan")
    async with _client(hostile.url(scenario)) as client:
        reply = await client.tunnels.ipsec.psk.with_reply.generate(ACCOUNT, TUNNEL)
    result = reply.value
    assert hostile.hits(scenario) == 1  # no regeneration
    assert reply.attempts == 1
    assert result.psk == hostile_psk(TUNNEL)
    assert result.psk_metadata is not None
    assert result.psk_metadata.last_generated_on == PARSED[scenario]

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    if PARSED[scenario] is None:
        assert any("not RFC 3339" in r.getMessage() for r in warnings)
    else:
        assert warnings == []
    # The warning never shows the value (a hostile server may put anything there), nor the PSK.
    shown = str(ODD_STAMPS[scenario])
    assert_no_secret(log_texts(caplog.records), (HOSTILE_PSK, SECRET_TOKEN), where="the log")
    if PARSED[scenario] is None:
        assert all(shown not in text for text in log_texts(warnings))


@pytest.mark.asyncio
@pytest.mark.parametrize("scenario", sorted(ODD_STAMPS))
async def test_a_rotation_keeps_every_psk_whatever_its_stamp(
    hostile: HostileServer, scenario: str, tmp_path: Path
) -> None:
    journal = tmp_path / "rotation.jsonl"
    async with _client(hostile.url(scenario)) as client:
        rotation = client.tunnels.ipsec.psk.rotate(ACCOUNT, TUNNELS, concurrency=2, journal=journal)
        async with rotation:
            outcomes = [outcome async for outcome in rotation]
    assert all(o.ok for o in outcomes), [repr(o.error) for o in outcomes if not o.ok]
    assert {o.tunnel_id: o.result.psk for o in outcomes if o.result} == {
        t: hostile_psk(t) for t in TUNNELS
    }
    assert hostile.hits(scenario) == len(TUNNELS)  # one request per tunnel
    records = {tunnel: r for (_, tunnel), r in read_journal(journal).items()}
    assert {t: r.psk for t, r in records.items()} == {t: hostile_psk(t) for t in TUNNELS}
    assert {r.last_generated_on for r in records.values()} == {PARSED[scenario]}
