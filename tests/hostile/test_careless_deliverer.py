"""Attacks by a careless deliverer: BaseExceptions out of ``deliver=`` (real emulator)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from magicwan import Delivery
from magicwan.emulator import run
from tests.integration.integration_support import make_client

pytestmark = pytest.mark.asyncio


async def test_a_deliverer_raising_cancelled_error_does_not_hang_the_rotation(
    tmp_path: Path,
) -> None:
    # A deliverer that awaits something another task cancelled (a shared connection's
    # future, a task group torn down elsewhere) sees CancelledError although nobody
    # cancelled *it*. The rotation must still end: every tunnel gets an outcome.
    async def deliver(delivery: Delivery) -> None:
        raise asyncio.CancelledError

    async with run(tunnels=2, rate_limit=None) as emu, make_client(emu) as client:
        rotation = client.tunnels.ipsec.psk.rotate(
            emu.account_id,
            emu.tunnel_ids,
            journal=tmp_path / "j.jsonl",
            deliver=deliver,
            deliver_retries=0,
            concurrency=1,
            drain_timeout=1.0,
        )

        async def consume() -> list[object]:
            async with rotation:
                return [o async for o in rotation]

        try:
            outcomes = await asyncio.wait_for(consume(), 5)
        except TimeoutError:
            pytest.fail("the rotation hung: a deliverer's CancelledError stalled it forever")
        assert len(outcomes) == 2


@pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt])
async def test_a_deliverer_raising_a_base_exception_does_not_drop_the_psk(
    exc_type: type[BaseException],
) -> None:
    # method="generate" needs no journal. The PSK is live at the emulator once the
    # deliverer is called; a deliverer that calls sys.exit() (or sees Ctrl-C) must not
    # make the rotation forget it: the caller gets it in an outcome (or unclaimed).
    async def deliver(delivery: Delivery) -> None:
        raise exc_type("deliverer gave up")

    async with run(tunnels=1, rate_limit=None) as emu, make_client(emu) as client:
        tunnel = emu.tunnel_ids[0]
        rotation = client.tunnels.ipsec.psk.rotate(
            emu.account_id, [tunnel], deliver=deliver, deliver_retries=0
        )
        received: list[str | None] = []

        async def consume() -> None:
            async with rotation:
                async for outcome in rotation:
                    received.append(outcome.psk)

        with pytest.raises(exc_type):  # the deliverer's own exception comes back: fine
            await consume()
        received += [o.psk for o in rotation.unclaimed]
        edge = emu.state.current_psk(emu.account_id, tunnel)
        assert edge is not None  # a new PSK was made, and the deliverer was called with it
        assert edge in received, "the edge holds a PSK the caller never got"


async def test_printing_an_undelivered_outcome_does_not_show_the_psk(tmp_path: Path) -> None:
    # SECURITY.md: "Printing a result, a RotationOutcome, a Delivery or a journal record
    # does not show a PSK." But RotationFailure's attrs repr includes delivery_error, the
    # deliverer's own exception, and plenty of everyday exceptions quote their input
    # (pydantic's ValidationError "input_value=...", a router API's 400 body, a KeyError on
    # a lookup by PSK). `log.error("tunnel failed: %r", outcome)` then logs the live PSK.
    async def deliver(delivery: Delivery) -> None:
        raise ValueError(f"router refused key {delivery.psk!r}: too long for this model")

    async with run(tunnels=1, rate_limit=None) as emu, make_client(emu) as client:
        tunnel = emu.tunnel_ids[0]
        rotation = client.tunnels.ipsec.psk.rotate(
            emu.account_id,
            [tunnel],
            journal=tmp_path / "j.jsonl",
            deliver=deliver,
            deliver_retries=0,
        )
        async with rotation:
            [outcome] = [o async for o in rotation]
        psk = emu.state.current_psk(emu.account_id, tunnel)
    assert psk is not None
    assert not outcome.ok
    assert psk not in str(outcome.error)  # the SDK's own error is scrubbed ...
    assert psk not in repr(outcome), "... but printing the outcome shows the PSK"
