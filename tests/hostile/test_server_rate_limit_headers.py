"""Rate-limit headers a broken server sends, against the hostile server.

- ``Ratelimit`` / ``Ratelimit-Policy`` headers that cannot be parsed (a window of 0, numbers of
  400 digits, junk) on a 200 that carries a PSK: the header is ignored (a DEBUG line says so,
  never the PSK), the PSK comes back from the one request, and a rotation finishes with every
  tunnel's PSK.
- ``Retry-After`` far in the future (``999999999`` seconds, or the year 9999): the call raises
  at once, and the client's own cooldown holds the next calls for at most
  :data:`magicwan.ratelimit.MAX_COOLDOWN` seconds of (virtual) time, not for a year.
- A 429 is retried, but at most ``max_retries`` times.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from magicwan import MagicWAN, RateLimitError, read_journal
from magicwan.ratelimit import MAX_COOLDOWN
from tests.support.clock import FakeClock
from tests.support.constants import ACCOUNT, TUNNEL
from tests.support.hostile import (
    RETRY_AFTER_ONCE,
    UNREADABLE_RATELIMIT,
    HostileServer,
    hostile_psk,
)
from tests.support.secrets import HOSTILE_PSK, SECRET_TOKEN, assert_no_secret, log_texts

pytestmark = pytest.mark.asyncio

TUNNELS = [f"{i:02x}" * 16 for i in range(1, 7)]


def _client(base_url: str, fake: FakeClock, **kwargs: object) -> MagicWAN:
    # The client's own limiter stays on (Cloudflare's budget): it is what reads the headers.
    options: dict[str, object] = {"timeout": 5.0, "clock": fake.clock, "sleep": fake.sleep}
    options.update(kwargs)
    return MagicWAN(api_token=SECRET_TOKEN, base_url=base_url, **options)  # type: ignore[arg-type]


# --- Ratelimit / Ratelimit-Policy that cannot be parsed -----------------------------------


@pytest.mark.parametrize("scenario", sorted(UNREADABLE_RATELIMIT))
async def test_an_unreadable_ratelimit_header_never_costs_the_psk(
    hostile: HostileServer, scenario: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="magicwan")
    fake = FakeClock()
    async with _client(hostile.url(scenario), fake) as client:
        result = await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
        assert hostile.hits(scenario) == 1  # one request: nothing was regenerated
        # What could not be read holds nobody back: the next call goes at once.
        again = await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNELS[0])
    assert result.psk == hostile_psk(TUNNEL)
    assert again.psk == hostile_psk(TUNNELS[0])
    assert hostile.hits(scenario) == 2
    assert [s for s in fake.sleeps if s > 0] == []
    ignored = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.DEBUG and "cannot be parsed" in r.getMessage()
    ]
    assert ignored, "no DEBUG line says the header was ignored"
    assert any("Ratelimit" in line for line in ignored)
    assert_no_secret(log_texts(caplog.records), (HOSTILE_PSK, SECRET_TOKEN), where="the log")


@pytest.mark.parametrize("scenario", sorted(UNREADABLE_RATELIMIT))
async def test_a_rotation_through_unreadable_ratelimit_headers_finishes(
    hostile: HostileServer, scenario: str, tmp_path: Path
) -> None:
    # The header came with every answer; the old SDK aborted the whole run at the first.
    fake = FakeClock()
    journal = tmp_path / "rotation.jsonl"
    async with _client(hostile.url(scenario), fake) as client:
        rotation = client.tunnels.ipsec.psk.rotate(ACCOUNT, TUNNELS, concurrency=3, journal=journal)
        async with rotation:
            outcomes = [outcome async for outcome in rotation]
    assert sorted(o.tunnel_id for o in outcomes) == TUNNELS
    assert all(o.ok for o in outcomes), [repr(o.error) for o in outcomes if not o.ok]
    assert {o.tunnel_id: o.result.psk for o in outcomes if o.result} == {
        t: hostile_psk(t) for t in TUNNELS
    }
    assert hostile.hits(scenario) == len(TUNNELS)  # one request per tunnel
    records = read_journal(journal)
    assert {tunnel: r.psk for (_, tunnel), r in records.items()} == {
        t: hostile_psk(t) for t in TUNNELS
    }


# --- Retry-After far in the future -------------------------------------------------------


@pytest.mark.parametrize("scenario", sorted(RETRY_AFTER_ONCE))
@pytest.mark.parametrize("max_retry_after", [60.0, 600.0])
async def test_a_far_retry_after_holds_the_client_for_at_most_max_cooldown(
    hostile: HostileServer, scenario: str, max_retry_after: float
) -> None:
    fake = FakeClock()
    # The cap is MAX_COOLDOWN, or max_retry_after if the caller agreed to wait longer.
    cap = max(MAX_COOLDOWN, max_retry_after)
    async with _client(hostile.url(scenario), fake, max_retry_after=max_retry_after) as client:
        psk = client.tunnels.ipsec.psk
        with pytest.raises(RateLimitError) as first:
            await psk.generate(ACCOUNT, TUNNEL)
        # Raised at once: no retry, no sleep, whatever max_retry_after allows.
        assert first.value.status == 429
        assert first.value.retry_after is not None
        assert first.value.retry_after > max_retry_after
        assert hostile.hits(scenario) == 1
        assert [s for s in fake.sleeps if s > 0] == []
        assert client.rate_limiter.paused_until <= fake.now + cap

        if max_retry_after < MAX_COOLDOWN:
            # The cooldown is longer than the caller will wait: refused without sending, and
            # it says how long is left, which is at most MAX_COOLDOWN.
            with pytest.raises(RateLimitError) as refused:
                await psk.generate(ACCOUNT, TUNNEL)
            assert "not sent" in str(refused.value)
            assert refused.value.retry_after is not None
            assert 0 < refused.value.retry_after <= MAX_COOLDOWN
            assert hostile.hits(scenario) == 1
            fake.advance(MAX_COOLDOWN)
            result = await psk.generate(ACCOUNT, TUNNEL)  # goes through once it is over
            assert fake.elapsed == pytest.approx(MAX_COOLDOWN)
        else:
            # The caller would wait that long: the next call waits out the cooldown (at most
            # the cap, of virtual time), then goes through.
            result = await psk.generate(ACCOUNT, TUNNEL)
            assert 0 < fake.elapsed <= cap
    assert result.psk == hostile_psk(TUNNEL)
    assert hostile.hits(scenario) == 2


@pytest.mark.parametrize("max_retries", [0, 1, 3])
async def test_a_429_is_retried_at_most_max_retries_times(
    hostile: HostileServer, max_retries: int
) -> None:
    # Every answer is a 429 with "Retry-After: 1" (well within max_retry_after): each is
    # worth a retry, and the call still ends after 1 + max_retries requests.
    fake = FakeClock()
    async with _client(
        hostile.url("rate_limited_briefly"), fake, max_retries=max_retries
    ) as client:
        with pytest.raises(RateLimitError) as info:
            await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    assert info.value.retry_after == 1.0
    assert hostile.hits("rate_limited_briefly") == 1 + max_retries
    assert fake.elapsed == pytest.approx(max_retries * 1.0)  # each retry waited Retry-After
