"""Outside review: careless callers of the library."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from magicwan import Delivery, InvalidInputError, MagicWAN, new_psk
from magicwan.emulator import run

pytestmark = pytest.mark.asyncio


async def test_psks_giving_one_tunnel_two_psks_is_refused(tmp_path: Path) -> None:
    # rotate(method="set", psks={"ABC...": p1, "abc...": p2}): the same tunnel twice (ids
    # are hex: the SDK itself treats two spellings as one tunnel), with two different
    # PSKs. psk.set() refuses this ("tunnel ... is given twice"), but rotate() takes it
    # and silently sends only one of them (the engine lowercases the keys, last wins).
    # A caller who stored p1 for that router (the README: "store it first") now has a
    # PSK the tunnel will never hold. Expected: InvalidInputError, before anything is
    # sent, as psk.set() does.
    async with run(tunnels=2, rate_limit=None) as emu:
        tunnel = emu.tunnel_ids[0]
        client = MagicWAN(api_token=emu.api_token, base_url=emu.base_url, environ={})
        async with client:
            psks = {tunnel.upper(): new_psk(), tunnel.lower(): new_psk()}
            with pytest.raises(InvalidInputError):
                client.tunnels.ipsec.psk.rotate(
                    emu.account_id, [tunnel], method="set", journal=tmp_path / "j", psks=psks
                )


async def test_a_deliverer_that_swallows_one_cancellation_still_times_out(
    tmp_path: Path,
) -> None:
    # A deliverer that catches CancelledError once (a retry loop around a flaky router
    # API, a `try: ... except BaseException:` in someone's SSH helper) and keeps waiting.
    # deliver_timeout=0.2 cancels it, the cancellation is swallowed, and the rotation
    # waits for it for good: no outcome, no `undelivered`, and aclose() waits past
    # drain_timeout too. (Here it gives up after 5 s so the test ends.) Expected: the
    # delivery try is abandoned at deliver_timeout and the tunnel comes back
    # `undelivered` with its PSK, whatever the deliverer does with the cancellation.
    release = asyncio.Event()

    async def stubborn(delivery: Delivery) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # swallowed once
            await asyncio.sleep(3600)
        await release.wait()

    async with run(tunnels=1, rate_limit=None) as emu:
        client = MagicWAN(api_token=emu.api_token, base_url=emu.base_url, environ={})
        async with client:
            rotation = client.tunnels.ipsec.psk.rotate(
                emu.account_id,
                emu.tunnel_ids,
                journal=tmp_path / "j.jsonl",
                deliver=stubborn,
                deliver_timeout=0.2,
                deliver_retries=0,
                drain_timeout=0.2,
            )
            async with rotation:
                try:
                    first = await asyncio.wait_for(anext(aiter(rotation)), 5)
                except TimeoutError:
                    first = None
                finally:
                    release.set()
    assert first is not None, "no outcome: the rotation waits on the deliverer forever"
    assert first.state.value == "undelivered"
