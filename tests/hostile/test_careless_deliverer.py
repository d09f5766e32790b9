"""A careless deliverer (the caller's own ``deliver=`` code): BaseExceptions, a swallowed
cancellation, an error that cannot be printed or that quotes the PSK, a plain (not async)
function. The rotation still ends, every tunnel keeps its PSK, and printing an outcome shows
no PSK."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from magicwan import Delivery, InvalidInputError, MagicWAN, MagicWANError
from magicwan.emulator import run
from tests.support.constants import ACCOUNT, TUNNEL
from tests.support.loopback import make_client
from tests.support.tiny_server import client_of, envelope, tiny_server

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
    # does not show a PSK." That holds when the outcome carries the deliverer's own error
    # and that error quotes its input (pydantic's ValidationError "input_value=...", a
    # router API's 400 body, a KeyError on a lookup by PSK): `log.error("tunnel failed:
    # %r", outcome)` logs no live PSK.
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


async def test_a_deliverer_that_swallows_one_cancellation_still_times_out(
    tmp_path: Path,
) -> None:
    # A deliverer that catches CancelledError once (a retry loop around a flaky router
    # API, a `try: ... except BaseException:` in someone's SSH helper) and keeps waiting.
    # The delivery try is abandoned at deliver_timeout and the tunnel comes back
    # `undelivered` with its PSK, whatever the deliverer does with the cancellation (the
    # test gives up after 5 s, so that it ends).
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


class RouterError(Exception):
    """A deliverer's own error type whose __str__ expects attributes set by its usual
    constructor: raised the short way, printing it raises AttributeError."""

    def __str__(self) -> str:
        return f"router {self.router} refused the key"  # type: ignore[attr-defined]


async def test_a_deliverer_error_that_cannot_be_printed_does_not_drop_the_psk() -> None:
    # method="generate" needs no journal. The deliverer raises its own exception type, whose
    # __str__ fails (AttributeError). The tunnel's new PSK, live at Cloudflare and in no
    # journal, still reaches an outcome (or unclaimed), and nothing but an SDK error
    # escapes the rotation.
    psk = "generated-psk-0123456789abcdefgh"

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        result = {
            "ipsec_tunnel_id": TUNNEL,
            "psk": psk,
            "psk_metadata": {"last_generated_on": "2030-01-01T00:00:00.123456Z"},
        }
        return web.Response(body=envelope(result), content_type="application/json")

    async def deliver(delivery: Delivery) -> None:
        raise RouterError()

    seen: list[Any] = []
    raised: BaseException | None = None
    async with tiny_server(handler) as base, client_of(base) as client:
        rotation = client.tunnels.ipsec.psk.rotate(
            ACCOUNT, [TUNNEL], deliver=deliver, deliver_retries=0
        )
        try:
            async with rotation:
                async for outcome in rotation:
                    seen.append(outcome)
        except Exception as exc:  # what escapes is the point
            raised = exc
        seen += rotation.unclaimed
    held = [o.psk for o in seen]
    assert psk in held, "the PSK generated is in no outcome and in no journal"
    assert raised is None or isinstance(raised, MagicWANError), f"raw {raised!r}"


async def test_a_sync_deliverer_is_refused_before_any_request() -> None:
    # rotate(deliver=push) with `def push(delivery): ...` (not async): accepted; the
    # canary tunnel gets a new PSK, push() runs (and pushes it), then awaiting its None
    # raises TypeError; it is retried twice more and the tunnel reported `undelivered`
    # although the router has it. Expected: an InvalidInputError when rotate() is
    # called, before anything is sent, as for any other bad argument. (A `def` declared
    # `-> None` is certainly wrong; a callable only a call can judge is the next test's.)
    calls: list[str] = []

    def push(delivery: Delivery) -> None:
        calls.append(delivery.tunnel_id)

    async with run(tunnels=1, rate_limit=None) as emu:
        async with MagicWAN(api_token=emu.api_token, base_url=emu.base_url, environ={}) as client:
            try:
                rotation = client.tunnels.ipsec.psk.rotate(
                    emu.account_id,
                    emu.tunnel_ids,
                    deliver=push,  # type: ignore[arg-type]
                )
                async with rotation:
                    _ = [outcome async for outcome in rotation]
            except MagicWANError:
                pass
        assert emu.state.tunnel(emu.account_id, emu.tunnel_ids[0]).generation == 0
    assert calls == []


async def test_a_deliverer_returning_no_awaitable_stops_the_rotation_at_the_canary() -> None:
    # deliver=lambda d: push(d) with a plain push(): a lambda may return a coroutine, so
    # only its first call tells. That call returns None: the canary's delivery fails at
    # once (not retried: the call may have pushed already), the rotation stops with an
    # InvalidInputError saying deliver must return an awaitable, no other tunnel gets a
    # new PSK, and the canary's PSK is in its outcome.
    calls: list[str] = []

    def push(delivery: Delivery) -> None:
        calls.append(delivery.tunnel_id)

    async with run(tunnels=3, rate_limit=None) as emu, make_client(emu) as client:
        rotation = client.tunnels.ipsec.psk.rotate(
            emu.account_id,
            emu.tunnel_ids,
            deliver=lambda delivery: push(delivery),  # type: ignore[arg-type,return-value]
        )
        taken: list[Any] = []

        async def consume() -> None:
            async with rotation:
                async for outcome in rotation:
                    taken.append(outcome)

        with pytest.raises(InvalidInputError, match="deliver must return an awaitable"):
            await consume()
        outcomes = taken + rotation.unclaimed
        rotated = [
            tunnel
            for tunnel in emu.tunnel_ids
            if emu.state.tunnel(emu.account_id, tunnel).generation > 0
        ]
        assert len(rotated) == 1, "a tunnel beyond the canary got a new PSK"
        (canary,) = rotated
        assert calls == [canary]
        (outcome,) = [o for o in outcomes if o.tunnel_id == canary]
        assert outcome.psk == emu.state.current_psk(emu.account_id, canary)
        assert not outcome.delivered
        assert outcome.psk not in str(outcome.error)
