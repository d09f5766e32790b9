"""Rules of the rotation engine, each pinned through the public ``rotate()``: doubt left by an
earlier run or a coarser stamp, a refused set that may have applied, a batch split and cut, a
reused journal, a crash in the driver, a deliverer that always fails. Each test names the
rule it protects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from magicwan import (
    APITimeoutError,
    Delivery,
    OutcomeState,
    PSKGenerateResult,
    PSKMetadata,
    PSKSetResult,
    Reply,
    RotationFailure,
    new_psk,
    read_journal,
)
from magicwan.errors import APIError, InvalidInputError
from magicwan.internal.timestamps import parse_datetime
from magicwan.models.psk import AppliedPSK
from magicwan.models.tunnels import IPsecTunnel
from magicwan.rotation import Rotation, rotate
from tests.support.clock import FakeClock
from tests.support.constants import ACCOUNT

pytestmark = pytest.mark.asyncio

A = "c4a7362d577a6c3019a474fd6f485823"
T0 = datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=UTC)


class Edge:
    """A tiny Cloudflare on a virtual clock: one PSK per tunnel, and stores that land late.

    ``late`` maps a tunnel to (delay, count): its next ``count`` generate requests time out
    (outcome unknown) and their PSK is stored ``delay`` seconds later. Generate answers are
    stamped in microseconds, read-backs in whole seconds when ``coarse_get`` is set.
    """

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.psks: dict[str, tuple[str, datetime]] = {}
        self.late: dict[str, tuple[float, int]] = {}
        self.landing: list[tuple[float, str, str]] = []
        self.reads = 0
        self.generated = 0
        self.coarse_get = False
        self.shadow: dict[str, float] = {}
        self.tick = timedelta(milliseconds=1)

    def _land(self) -> None:
        for due, tunnel, psk in list(self.landing):
            if due <= self.clock.now:
                self.landing.remove((due, tunnel, psk))
                self.store(tunnel, psk)

    def store(self, tunnel: str, psk: str) -> datetime:
        previous = self.psks.get(tunnel)
        stamp = previous[1] + self.tick if previous else T0
        self.psks[tunnel] = (psk, stamp)
        return stamp

    def current(self, tunnel: str) -> str:
        self._land()
        return self.psks[tunnel][0]

    async def generate(self, account: str, tunnel: str, validate_only: bool) -> Reply[Any]:
        await asyncio.sleep(0)
        self._land()
        self.generated += 1
        delay, count = self.late.get(tunnel, (0.0, 0))
        psk = new_psk()
        if count:
            self.late[tunnel] = (delay, count - 1)
            self.landing.append((self.clock.now + delay, tunnel, psk))
            raise APITimeoutError("timed out", request_sent=True)
        stamp = self.store(tunnel, psk)
        meta = PSKMetadata(last_generated_on=stamp)
        result = PSKGenerateResult(ipsec_tunnel_id=tunnel, psk=psk, psk_metadata=meta)
        shadow = self.shadow.pop(tunnel, None)
        if shadow is not None:
            # This answer came on a retry: the first attempt's PSK lands behind it.
            self.landing.append((self.clock.now + shadow, tunnel, new_psk()))
            return Reply(result, 2, True)
        return Reply(result, 1, False)

    async def set_psks(
        self, account: str, psks: Mapping[str, str], validate_only: bool
    ) -> Reply[PSKSetResult]:
        raise AssertionError("no set here")

    async def read_back(self, account: str, tunnel: str) -> Reply[IPsecTunnel]:
        await asyncio.sleep(0)
        self._land()
        self.reads += 1
        stamp = self.psks[tunnel][1]
        if self.coarse_get:
            stamp = parse_datetime(stamp.strftime("%Y-%m-%dT%H:%M:%SZ"))
        meta = PSKMetadata(last_generated_on=stamp)
        return Reply(IPsecTunnel(id=tunnel, psk_metadata=meta), 1, False)

    def rotate(self, tunnels: list[str], **kwargs: Any) -> Rotation[Any]:
        kwargs.setdefault("drain_timeout", 5.0)
        return rotate(
            ACCOUNT,
            tunnels,
            generate=self.generate,
            set_psks=self.set_psks,
            read_back=self.read_back,
            clock=self.clock,
            sleep=self.clock.sleep,
            **kwargs,
        )


async def run(rotation: Rotation[Any]) -> list[Any]:
    async with rotation:
        return [outcome async for outcome in rotation]


@pytest.fixture
def edge() -> Edge:
    return Edge(FakeClock())


async def test_a_request_an_earlier_run_left_open_is_doubt_like_a_retry(
    edge: Edge, tmp_path: Path
) -> None:
    # Run 1's request times out; the server stores its PSK 4 s later. Run 2, resumed at
    # once with an 8 s settle window, must read the tunnel back after the window and not
    # hand over a PSK the late store superseded.
    journal = tmp_path / "j"
    edge.late[A] = (4.0, 1)
    (first,) = await run(edge.rotate([A], journal=journal, settle_window=8.0))
    assert isinstance(first, RotationFailure)
    assert first.outcome_unknown
    (second,) = await run(edge.rotate([A], journal=journal, settle_window=8.0, resume=True))
    assert edge.reads >= 1  # never "rotated" without looking
    assert second.ok
    assert second.psk == edge.current(A)
    assert read_journal(journal)[(ACCOUNT, A)].psk == edge.current(A)


async def test_equal_stamps_at_a_coarser_precision_never_verify(edge: Edge, tmp_path: Path) -> None:
    # Generate answers carry microseconds, the GET whole seconds; a retry's answer is
    # followed, in the same second, by the first attempt's late store. Equal at the
    # coarser precision cannot tell the two apart: never "verified".
    edge.coarse_get = True
    edge.shadow[A] = 0.3
    (outcome,) = await run(edge.rotate([A], journal=tmp_path / "j", settle_window=2.0))
    assert edge.reads == 1
    assert edge.generated == 2  # so the settle window passed, then a new PSK superseded it
    assert outcome.ok
    assert not outcome.verified
    assert outcome.psk == edge.current(A)


class SetEdge:
    """Bulk set: ``stored_then`` applies the PSKs sent and then answers as told."""

    def __init__(self) -> None:
        self.psks: dict[str, str] = {}
        self.answers: list[str] = []  # "lost", "refused-after-retry", "refused", "ok", "413"
        self.sent: list[dict[str, str]] = []

    async def generate(self, *args: Any) -> Reply[Any]:
        raise AssertionError("no generate here")

    async def read_back(self, account: str, tunnel: str) -> Reply[IPsecTunnel]:
        return Reply(IPsecTunnel(id=tunnel), 1, False)

    async def set_psks(
        self, account: str, psks: Mapping[str, str], validate_only: bool
    ) -> Reply[PSKSetResult]:
        await asyncio.sleep(0)
        self.sent.append(dict(psks))
        answer = self.answers.pop(0) if self.answers else "ok"
        if answer == "413":
            if len(psks) > 1:
                raise APIError(413, [])
            answer = "hang"
        if answer == "hang":
            await asyncio.sleep(3600)
        if answer in ("lost", "refused-after-retry"):
            self.psks.update(psks)  # the first attempt stored them
        if answer == "lost":
            raise APITimeoutError("timed out", request_sent=True)
        if answer.startswith("refused"):
            unapplied = dict.fromkeys(psks, "tunnel is busy")
            uncertain = answer == "refused-after-retry"
            return Reply(PSKSetResult(applied={}, unapplied=unapplied), 2, uncertain)
        self.psks.update(psks)
        applied = {
            t: AppliedPSK(ipsec_tunnel_id=t, psk=p, psk_metadata=PSKMetadata())
            for t, p in psks.items()
        }
        return Reply(PSKSetResult(applied=applied, unapplied={}), 1, False)

    def rotate(self, tunnels: list[str], **kwargs: Any) -> Rotation[Any]:
        clock = FakeClock()
        kwargs.setdefault("drain_timeout", 5.0)
        return rotate(
            ACCOUNT,
            tunnels,
            generate=self.generate,
            set_psks=self.set_psks,
            read_back=self.read_back,
            clock=clock,
            sleep=clock.sleep,
            method="set",
            **kwargs,
        )


async def test_an_unapplied_entry_after_an_uncertain_attempt_carries_the_psk_sent(
    tmp_path: Path,
) -> None:
    edge = SetEdge()
    edge.answers = ["refused-after-retry"]
    (outcome,) = await run(edge.rotate([A], journal=tmp_path / "j"))
    assert isinstance(outcome, RotationFailure)
    assert outcome.outcome_unknown
    assert outcome.psk == edge.psks[A]  # the edge holds it: the outcome must too


async def test_a_second_set_with_another_psk_keeps_the_first_ones_doubt(tmp_path: Path) -> None:
    # Run 1's PSK P1 is stored but its answer is lost. Run 2 sends P2, which is refused:
    # the edge holds P1, and the outcome must carry it and say it is uncertain.
    edge = SetEdge()
    journal = tmp_path / "j"
    edge.answers = ["lost", "refused"]
    (first,) = await run(edge.rotate([A], journal=journal))
    p1 = edge.psks[A]
    assert first.psk == p1
    p2 = new_psk()
    (second,) = await run(edge.rotate([A], journal=journal, psks={A: p2}))
    assert edge.sent[-1] == {A: p2}
    assert isinstance(second, RotationFailure)
    assert second.psk == p1 == edge.psks[A]
    assert second.outcome_unknown


async def test_a_split_batch_cut_short_gives_every_tunnel_one_outcome(tmp_path: Path) -> None:
    # A batch of 4 is refused as too large and split; the first half hangs and the
    # rotation is left: all four tunnels still get exactly one outcome, each carrying the
    # PSK it may hold.
    edge = SetEdge()
    ids = [f"{n:032x}" for n in range(1, 5)]
    edge.answers = ["413", "hang"]
    rotation = edge.rotate(ids, journal=tmp_path / "j", batch_size=4, drain_timeout=0.1)
    async with rotation:
        task = asyncio.ensure_future(rotation.__anext__())
        while len(edge.sent) < 2:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    outcomes = rotation.unclaimed
    assert sorted(o.tunnel_id for o in outcomes) == ids
    hanging = edge.sent[1]  # the first half: sent, never answered
    for outcome in outcomes:
        if outcome.tunnel_id in hanging:  # it may hold the PSK sent: carried
            assert outcome.psk == hanging[outcome.tunnel_id]
            assert outcome.outcome_unknown
        else:  # the second half was never sent
            assert outcome.state is OutcomeState.NOT_ATTEMPTED
            assert outcome.psk is None


async def test_a_reused_journal_is_refused_unless_resuming(edge: Edge, tmp_path: Path) -> None:
    journal = tmp_path / "j"
    await run(edge.rotate([A], journal=journal))
    with pytest.raises(InvalidInputError, match="resume=True"):
        await run(edge.rotate([A], journal=journal))
    (again,) = await run(edge.rotate([A], journal=journal, resume=True))
    assert again.state is OutcomeState.SKIPPED
    assert edge.generated == 1


async def test_a_crash_in_the_driver_hands_every_psk_over(edge: Edge, tmp_path: Path) -> None:
    # A bare OSError where none was expected (a lazy import without descriptors): the
    # rotation stops, and the PSK already received is in an outcome, never dropped.
    original = edge.generate

    async def doubtful(account: str, tunnel: str, validate_only: bool) -> Reply[Any]:
        reply = await original(account, tunnel, validate_only)
        return Reply(reply.value, 2, True)  # a retry left doubt: a read-back follows

    async def read_back(account: str, tunnel: str) -> Reply[IPsecTunnel]:
        raise OSError(24, "Too many open files")

    edge.generate = doubtful  # type: ignore[method-assign]
    edge.read_back = read_back  # type: ignore[method-assign]
    rotation = edge.rotate([A], journal=tmp_path / "j", settle_window=0.0)
    with pytest.raises(OSError, match="Too many open files"):
        await run(rotation)
    (outcome,) = rotation.unclaimed
    assert outcome.psk == edge.current(A)
    assert outcome.unverified is not None


class FailingRouter:
    """A delivery script that always fails."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, delivery: Delivery) -> None:
        self.calls += 1
        raise RuntimeError("router unreachable")


@pytest.mark.parametrize(
    ("method", "concurrency", "batch_size"),
    [("generate", 16, 100), ("set", 16, 100), ("set", 4, 1000), ("generate", 64, 100)],
)
async def test_an_always_failing_deliverer_breaks_at_most_halt_after_tunnels(
    tmp_path: Path, method: str, concurrency: int, batch_size: int
) -> None:
    ids = [f"{n:032x}" for n in range(1, 3001)]
    clock = FakeClock()
    held: dict[str, str] = {}
    router = FailingRouter()

    async def generate(account: str, tunnel: str, validate_only: bool) -> Reply[Any]:
        await asyncio.sleep(0)
        held[tunnel] = psk = new_psk()
        return Reply(PSKGenerateResult(ipsec_tunnel_id=tunnel, psk=psk), 1, False)

    async def set_psks(account: str, psks: Mapping[str, str], v: bool) -> Reply[PSKSetResult]:
        await asyncio.sleep(0)
        held.update(psks)
        applied = {t: AppliedPSK(ipsec_tunnel_id=t, psk=p) for t, p in psks.items()}
        return Reply(PSKSetResult(applied=applied), 1, False)

    async def read_back(account: str, tunnel: str) -> Reply[IPsecTunnel]:
        raise AssertionError("no read-back")

    rotation = rotate(
        ACCOUNT,
        ids,
        generate=generate,
        set_psks=set_psks,
        read_back=read_back,
        clock=clock,
        sleep=clock.sleep,
        method=method,  # type: ignore[arg-type]
        concurrency=concurrency,
        batch_size=batch_size,
        journal=tmp_path / "j",
        deliver=router,
        deliver_retries=0,
    )
    outcomes = await run(rotation)
    assert rotation.halted
    broken = [o for o in outcomes if o.state is OutcomeState.UNDELIVERED]
    assert len(held) == len(broken) <= 5  # the library's default halt_after with a deliverer
    assert {o.state for o in outcomes} == {OutcomeState.UNDELIVERED, OutcomeState.NOT_ATTEMPTED}
