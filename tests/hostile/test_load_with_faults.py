"""Load: 5,000 concurrent generates on one client against an emulator with 20% faults."""

from __future__ import annotations

import asyncio
import collections
import gc
import os
import time

import pytest

from magicwan import MagicWAN
from magicwan.emulator import Faults, run
from tests.support.probes import live_locks

pytestmark = pytest.mark.asyncio

TUNNELS = 1000
PER_TUNNEL = 5
# 20% of requests fail, none with a long Retry-After; half of them after the PSK was stored.
FAULTS = Faults(
    server_error=0.05,
    reset_before_store=0.04,
    reset_after_store=0.04,
    truncated_json=0.04,
    html_502=0.03,
)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _quick_sleep(seconds: float) -> None:
    # Backoff is the retry policy's business; here it only needs to yield, not to wait 8 s.
    await asyncio.sleep(min(seconds, 0.01))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
async def test_5000_concurrent_generates_with_20_percent_faults() -> None:
    async with run(tunnels=TUNNELS, rate_limit=None, seed=5000, faults=FAULTS) as emu:
        account, tunnel_ids = emu.account_id, emu.tunnel_ids
        gc.collect()
        await asyncio.sleep(0)
        baseline = _open_fds()  # the emulator's listening socket is part of the baseline

        completed: list[tuple[str, str]] = []

        async def one(client: MagicWAN, tunnel: str) -> None:
            result = await client.tunnels.ipsec.psk.generate(account, tunnel)
            assert result.psk
            completed.append((tunnel, result.psk))

        started = time.monotonic()
        async with asyncio.timeout(120):
            async with MagicWAN(
                api_token=emu.api_token,
                base_url=emu.base_url,
                max_retries=12,
                rate_limit=None,
                sleep=_quick_sleep,
            ) as client:
                idle = live_locks()
                outcomes = await asyncio.gather(
                    *(one(client, t) for t in tunnel_ids for _ in range(PER_TUNNEL)),
                    return_exceptions=True,
                )
                assert live_locks() == idle  # no per-tunnel lock left behind
        elapsed = time.monotonic() - started

        errors = [o for o in outcomes if isinstance(o, BaseException)]
        assert errors == [], errors[:3]
        assert len(completed) == TUNNELS * PER_TUNNEL

        requests = emu.state.requests
        faulted = sum(requests.faults.values())
        assert faulted > 0.15 * requests.total, requests.to_dict()
        assert requests.faults["reset_after_store"] > 0

        # Calls for one tunnel are serialized, so the last to complete holds the stored PSK;
        # every PSK handed out is one the emulator really generated for that tunnel.
        last: dict[str, str] = {}
        per_tunnel: collections.Counter[str] = collections.Counter()
        for tunnel, psk in completed:
            last[tunnel] = psk
            per_tunnel[tunnel] += 1
        assert set(per_tunnel.values()) == {PER_TUNNEL}
        for tunnel in tunnel_ids:
            assert last[tunnel] == emu.state.current_psk(account, tunnel)
            history = {r.psk for r in emu.state.history(account, tunnel)}
            assert all(psk in history for t, psk in completed if t == tunnel)
        # Superseded PSKs from unknown outcomes exist, but nobody holds a stale one as current.
        assert emu.state.total_generations() >= TUNNELS * PER_TUNNEL

        # Every socket the client opened is closed again (server sides close on EOF).
        del client
        gc.collect()
        deadline = time.monotonic() + 5
        while _open_fds() > baseline and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert _open_fds() == baseline
    print(f"5000 generates in {elapsed:.1f}s, {requests.total} requests, {faulted} faults")
