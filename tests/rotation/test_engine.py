"""``magicwan.rotation`` on its own: the engine driven by plain fake callables on virtual time.

Every rule of the engine is checked here without HTTP: the settle window, read-back verdicts,
journal failures, bulk set batches, delivery, halting, leaving early. The same scenarios
against the emulator and hostile servers are in ``tests/integration/``.
"""

from __future__ import annotations

import asyncio
import errno
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from magicwan import (
    APIConnectionError,
    BadRequestError,
    Delivery,
    DeliveryError,
    ErrorDetail,
    InternalServerError,
    InvalidInputError,
    IPsecTunnel,
    JournalError,
    MagicWAN,
    NotAppliedError,
    NotFoundError,
    OutcomeState,
    PSKGenerateResult,
    PSKMetadata,
    PSKSetResult,
    Reply,
    RotationFailure,
    RotationHaltedError,
    RotationSuccess,
    new_psk,
    read_journal,
)
from magicwan.internal.timestamps import format_datetime, parse_datetime
from magicwan.journal import Finished, JournalEvent, iter_events, run_finished
from magicwan.models.psk import AppliedPSK
from magicwan.rotation import MAX_VERIFY_ROUNDS, Rotation, compare_stamps, rotate
from tests.support.clock import FakeClock
from tests.support.constants import ACCOUNT
from tests.support.storage import MemoryStorage, event_kind

A = "c4a7362d577a6c3019a474fd6f485823"
B = "0123456789abcdef0123456789abcdef"
IDS = [f"{n:032x}" for n in range(1, 41)]
T0 = datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=UTC)

pytestmark = pytest.mark.asyncio


class FakeAPI:
    """The callables rotation is given: a tiny Cloudflare with one PSK per tunnel.

    ``edge`` is what Cloudflare holds: (psk, stamp) per tunnel. ``uncertain`` lists tunnels
    whose next generate answers with ``uncertain=True``; ``fail`` maps a tunnel to the error
    its next generate raises; ``late`` maps a tunnel to a PSK stored behind the client's
    back right after its next (uncertain) answer, as a late store would.
    """

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.edge: dict[str, tuple[str, datetime]] = {}
        self.generated: list[str] = []
        self.sets: list[dict[str, str]] = []
        self.reads: list[tuple[float, str]] = []
        self.uncertain: set[str] = set()
        self.fail: dict[str, Exception] = {}
        self.late: dict[str, int] = {}
        self.read_override: dict[str, Callable[[str], IPsecTunnel]] = {}
        self.set_error: list[Exception] = []
        self.unapplied: dict[str, str] = {}
        self.max_batch: int | None = None
        self.stamp_step = timedelta(microseconds=1)

    def _store(self, tunnel_id: str, psk: str) -> datetime:
        previous = self.edge.get(tunnel_id.lower())
        stamp = previous[1] + timedelta(seconds=1) if previous else T0
        self.edge[tunnel_id.lower()] = (psk, stamp)
        return stamp

    def current(self, tunnel_id: str) -> str:
        return self.edge[tunnel_id.lower()][0]

    async def generate(
        self, account_id: str, tunnel_id: str, validate_only: bool
    ) -> Reply[PSKGenerateResult]:
        await asyncio.sleep(0)
        self.generated.append(tunnel_id)
        error = self.fail.pop(tunnel_id, None)
        if error is not None:
            raise error
        if validate_only:
            return Reply(PSKGenerateResult(ipsec_tunnel_id=tunnel_id), 1, False)
        psk = new_psk()
        stamp = self._store(tunnel_id, psk)
        result = PSKGenerateResult(
            ipsec_tunnel_id=tunnel_id,
            psk=psk,
            psk_metadata=PSKMetadata(last_generated_on=stamp),
            ipsec_id=f"{tunnel_id}.{account_id}.ipsec.cloudflare.com",
        )
        uncertain = tunnel_id in self.uncertain
        self.uncertain.discard(tunnel_id)
        if uncertain and self.late.get(tunnel_id, 0):
            self.late[tunnel_id] -= 1
            self._store(tunnel_id, new_psk())  # an unanswered request lands after ours
        return Reply(result, 2 if uncertain else 1, uncertain)

    async def set_psks(
        self, account_id: str, psks: Mapping[str, str], validate_only: bool
    ) -> Reply[PSKSetResult]:
        await asyncio.sleep(0)
        self.sets.append(dict(psks))
        if self.set_error:
            raise self.set_error.pop(0)
        if self.max_batch is not None and len(psks) > self.max_batch:
            raise BadRequestError(400, [ErrorDetail(1005, "too many psks in one request")])
        applied = {}
        unapplied = {}
        for tunnel_id, psk in psks.items():
            if tunnel_id in self.unapplied:
                unapplied[tunnel_id] = self.unapplied[tunnel_id]
                continue
            stamp = T0 if validate_only else self._store(tunnel_id, psk)
            applied[tunnel_id] = AppliedPSK(
                ipsec_tunnel_id=tunnel_id,
                ipsec_id=f"{tunnel_id}.x.ipsec.cloudflare.com",
                psk=psk,
                psk_metadata=PSKMetadata(last_generated_on=stamp),
            )
        return Reply(PSKSetResult(applied=applied, unapplied=unapplied), 1, False)

    async def read_back(self, account_id: str, tunnel_id: str) -> Reply[IPsecTunnel]:
        await asyncio.sleep(0)
        self.reads.append((self.clock.now, tunnel_id))
        override = self.read_override.get(tunnel_id)
        if override is not None:
            return Reply(override(tunnel_id), 1, False)
        stamp = self.edge[tunnel_id.lower()][1]
        meta = PSKMetadata(last_generated_on=stamp)
        return Reply(IPsecTunnel(id=tunnel_id, psk_metadata=meta), 1, False)

    def rotate(self, tunnels: Any, **kwargs: Any) -> Rotation[Any]:
        kwargs.setdefault("settle_window", 10.0)
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


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def api(clock: FakeClock) -> FakeAPI:
    return FakeAPI(clock)


async def run(rotation: Rotation[Any]) -> list[Any]:
    async with rotation:
        return [outcome async for outcome in rotation]


async def run_into(rotation: Rotation[Any], got: list[Any]) -> None:
    """Like :func:`run`, keeping what came out before the iteration raised."""
    async with rotation:
        async for outcome in rotation:
            got.append(outcome)


def events(path: Path) -> list[JournalEvent]:
    return list(iter_events(path))


def kinds(path: Path, tunnel_id: str) -> list[str]:
    return [e.kind for e in events(path) if e.tunnel_id == tunnel_id]


# --- arguments -----------------------------------------------------------------------------


async def test_duplicates_are_dropped_keeping_first_order_and_spelling(api: FakeAPI) -> None:
    outcomes = await run(api.rotate([A, B, A, A.upper(), B.upper()], concurrency=1))
    assert api.generated == [A, B]
    assert [o.tunnel_id for o in outcomes] == [A, B]
    assert all(o.ok for o in outcomes)


async def test_tunnel_objects_and_ids_mix_and_the_object_is_kept(api: FakeAPI) -> None:
    obj = IPsecTunnel(id=B.upper(), name="b")
    outcomes = await run(api.rotate([A, B, obj, IPsecTunnel(id=A)], concurrency=1))
    assert api.generated == [A, B]
    assert [(o.tunnel_id, o.tunnel) for o in outcomes] == [(A, IPsecTunnel(id=A)), (B, obj)]


async def test_one_string_is_not_a_list_of_ids(api: FakeAPI) -> None:
    with pytest.raises(TypeError, match="iterable"):
        api.rotate(A)
    assert api.generated == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tunnels": [A, "../etc"]}, "tunnel_id"),
        ({"tunnels": [A], "concurrency": 0}, "concurrency"),
        ({"tunnels": [A], "journal": 5}, "journal"),
        ({"tunnels": [A], "method": "push"}, "method"),
        ({"tunnels": [A], "method": "set"}, "needs a journal"),
        ({"tunnels": [A], "batch_size": 0}, "batch_size"),
        ({"tunnels": [A], "batch_size": 1001}, "batch_size"),
        ({"tunnels": [A], "halt_after": 0}, "halt_after"),
        ({"tunnels": [A], "deliver": "push"}, "deliver"),
        ({"tunnels": [A], "deliver_retries": -1}, "deliver_retries"),
        ({"tunnels": [A], "deliver_timeout": 0}, "deliver_timeout"),
        ({"tunnels": [A], "settle_window": -1}, "settle_window"),
        ({"tunnels": [A], "settle_window": float("nan")}, "settle_window"),
        ({"tunnels": [A], "drain_timeout": 0}, "drain_timeout"),
    ],
)
async def test_bad_arguments_are_refused_when_rotate_is_called(
    kwargs: dict[str, object], message: str
) -> None:
    async with MagicWAN(api_token="t") as client:
        with pytest.raises(InvalidInputError, match=message):
            client.tunnels.ipsec.psk.rotate(ACCOUNT, **kwargs)  # type: ignore[call-overload]


# --- generate: the settle window and read-back ---------------------------------------------


@pytest.mark.parametrize(
    ("held", "edge", "verdict"),
    [
        ("2026-11-27T10:00:00.123456Z", "2026-11-27T10:00:00.123456Z", 0),
        ("2026-11-27T10:00:00.123456Z", "2026-11-27T10:00:00.123457Z", 1),
        ("2026-11-27T10:00:00.123456Z", "2026-11-27T09:59:59.123456Z", -1),
        # Milliseconds on one side, microseconds on the other: compared in milliseconds,
        # where newer decides but equal cannot (a late store in the same millisecond, or
        # the same second, would pass for the PSK held).
        ("2026-11-27T10:00:00.123456Z", "2026-11-27T10:00:00.123Z", None),
        ("2026-11-27T10:00:00.123Z", "2026-11-27T10:00:00.123456Z", None),
        ("2026-11-27T10:00:00.123Z", "2026-11-27T10:00:00.124456Z", 1),
        ("2026-11-27T10:00:00Z", "2026-11-27T10:00:00.123456Z", None),  # whole seconds
        ("2026-11-27T10:00:01Z", "2026-11-27T10:00:00.123456Z", -1),
        # The precision is the text's: ".500000" is a microsecond stamp, not a round half
        # second, so a store one microsecond later is newer.
        ("2026-11-27T10:00:00.500000Z", "2026-11-27T10:00:00.500001Z", 1),
        ("2026-11-27T10:00:00.000000Z", "2026-11-27T10:00:00.000001Z", 1),
        (None, "2026-11-27T10:00:00Z", None),
        ("2026-11-27T10:00:00Z", None, None),
    ],
)
async def test_stamps_compare_at_the_coarser_precision_of_their_text(
    held: str | None, edge: str | None, verdict: int | None
) -> None:
    def read(text: str | None) -> datetime | None:
        return parse_datetime(text) if text is not None else None

    assert compare_stamps(read(held), read(edge)) == verdict


async def test_a_stamp_keeps_its_precision_through_the_journal() -> None:
    for text in ("2026-11-27T10:00:00.500000Z", "2026-11-27T10:00:00.123Z", "2026-11-27T10:00:00Z"):
        stamp = parse_datetime(text)
        again = parse_datetime(format_datetime(stamp))
        assert again == stamp
        assert compare_stamps(stamp, again) == 0
    # A datetime made in code (no text) claims microseconds.
    assert compare_stamps(T0, T0 + timedelta(microseconds=1)) == 1


async def test_a_certain_answer_is_never_read_back(api: FakeAPI, tmp_path: Path) -> None:
    outcomes = await run(api.rotate(IDS[:5], journal=tmp_path / "j"))
    assert api.reads == []
    assert all(isinstance(o, RotationSuccess) and not o.verified for o in outcomes)
    for o in outcomes:
        assert o.psk == api.current(o.tunnel_id)


async def test_an_uncertain_answer_is_read_back_only_after_the_settle_window(
    api: FakeAPI, clock: FakeClock, tmp_path: Path
) -> None:
    api.uncertain = {A}
    start = clock.now
    outcomes = await run(api.rotate([A, B], journal=tmp_path / "j", settle_window=30.0))
    by_id = {o.tunnel_id: o for o in outcomes}
    assert [t for _, t in api.reads] == [A]
    assert api.reads[0][0] - start >= 30.0  # not a moment earlier
    assert by_id[A].ok
    assert by_id[A].verified
    assert by_id[A].psk == api.current(A)
    assert api.generated.count(A) == 1  # nothing regenerated: the read-back matched
    assert kinds(tmp_path / "j", A) == ["intent", "rotated", "verified"]


async def test_a_late_store_is_caught_and_superseded(
    api: FakeAPI, clock: FakeClock, tmp_path: Path
) -> None:
    # The edge ends up with a PSK stored after our answer (a late store): the read-back after
    # the window shows a newer stamp, so the tunnel is generated again.
    api.uncertain = {A}
    api.late = {A: 1}
    outcomes = await run(api.rotate([A], journal=tmp_path / "j"))
    (outcome,) = outcomes
    assert outcome.ok
    assert not outcome.verified  # certain: the window had passed, nothing can land after it
    assert outcome.psk == api.current(A)
    assert api.generated == [A, A]
    assert len(api.reads) == 1
    assert read_journal(tmp_path / "j")[(ACCOUNT, A)].psk == api.current(A)


async def test_rounds_are_bounded_and_the_last_psk_is_carried(api: FakeAPI, tmp_path: Path) -> None:
    # Somebody else keeps storing newer PSKs: after MAX_VERIFY_ROUNDS the tunnel fails, and
    # its outcome still carries the last PSK received.
    newer = T0 + timedelta(days=1)

    def always_newer(t: str) -> IPsecTunnel:
        api.uncertain.add(A)  # and every answer needs a retry: each is read back again
        return IPsecTunnel(id=t, psk_metadata=PSKMetadata(last_generated_on=newer))

    api.read_override[A] = always_newer
    api.uncertain = {A}
    (outcome,) = await run(api.rotate([A], journal=tmp_path / "j"))
    assert isinstance(outcome, RotationFailure)
    assert outcome.state is OutcomeState.FAILED
    assert api.generated.count(A) == 1 + MAX_VERIFY_ROUNDS
    assert outcome.psk == api.current(A)
    assert "newer PSK" in str(outcome.error)


def _no_stamp(t: str) -> IPsecTunnel:
    return IPsecTunnel(id=t, psk_metadata=PSKMetadata(last_generated_on=None))


def _older(t: str) -> IPsecTunnel:
    return IPsecTunnel(id=t, psk_metadata=PSKMetadata(last_generated_on=T0 - timedelta(days=1)))


@pytest.mark.parametrize(
    ("override", "failure", "reason"),
    [
        (_no_stamp, None, "no stamp"),
        (lambda t: IPsecTunnel(id=t), None, "no stamp"),
        (_older, None, "older"),
        (None, InternalServerError(500), "read-back failed"),
        (None, NotFoundError(404), "read-back failed"),
    ],
)
async def test_a_read_back_that_proves_nothing_generates_again(
    api: FakeAPI,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    override: Callable[[str], IPsecTunnel] | None,
    failure: Exception | None,
    reason: str,
) -> None:
    # Only proof keeps the PSK held: after the settle window a new PSK supersedes every
    # earlier request, and its certain answer needs no read-back.
    if override is not None:
        api.read_override[A] = override
    if failure is not None:
        raised = failure

        def boom(t: str) -> IPsecTunnel:
            raise raised

        api.read_override[A] = boom
    api.uncertain = {A}
    (outcome,) = await run(api.rotate([A], journal=tmp_path / "j"))
    assert isinstance(outcome, RotationSuccess)
    assert outcome.psk == api.current(A)
    assert api.generated == [A, A]
    assert len(api.reads) <= 1  # the second answer was certain: not read back
    assert reason in caplog.text
    assert "generating again" in caplog.text
    assert outcome.psk not in caplog.text
    record = read_journal(tmp_path / "j")[(ACCOUNT, A)]
    assert not record.uncertain
    assert record.psk == outcome.psk
    assert kinds(tmp_path / "j", A) == ["intent", "rotated", "intent", "rotated"]


async def test_a_rerun_checks_a_tunnel_left_unverified_again(api: FakeAPI, tmp_path: Path) -> None:
    # The first run is stopped while the tunnel waits for its read-back: handed over
    # unverified, journalled uncertain. The rerun reads it back and keeps it on proof.
    api.uncertain = {A}
    rotation = api.rotate([A], journal=tmp_path / "j")
    async with rotation:
        while not rotation.waiting:
            await asyncio.sleep(0)
    (first,) = rotation.unclaimed
    assert first.unverified is not None
    (outcome,) = await run(api.rotate([A], journal=tmp_path / "j", resume=True))
    assert outcome.ok
    assert outcome.verified
    assert outcome.skipped
    assert api.generated == [A]


async def test_a_failed_generate_after_a_journalled_psk_carries_that_psk(
    api: FakeAPI, tmp_path: Path
) -> None:
    await run(api.rotate([A], journal=tmp_path / "j"))
    first = api.current(A)
    journal = tmp_path / "j"
    # Make the journal say a request was left open, so the rerun generates again.
    with journal.open("a") as fh:
        fh.write(json.dumps({"event": "intent", "account_id": ACCOUNT, "tunnel_id": A}) + "\n")
    api.fail[A] = NotFoundError(404)
    (outcome,) = await run(api.rotate([A], journal=journal))
    assert isinstance(outcome, RotationFailure)
    assert outcome.psk == first  # still the tunnel's PSK: never dropped
    # The request the journal left open may have stored a PSK nobody saw: a certain
    # failure now does not clear that doubt.
    assert outcome.outcome_unknown


async def test_an_unknown_outcome_failure_says_so(api: FakeAPI) -> None:
    api.fail[A] = APIConnectionError("reset after sending", request_sent=True)
    (outcome,) = await run(api.rotate([A]))
    assert isinstance(outcome, RotationFailure)
    assert outcome.outcome_unknown
    assert outcome.psk is None


# --- the journal failing -----------------------------------------------------------------


async def test_a_rotated_line_that_cannot_be_written_hands_the_psk_over_and_stops(
    api: FakeAPI, tmp_path: Path
) -> None:
    storage = MemoryStorage()
    # The third rotated line meets a full disk.
    storage.fail("write", errno.ENOSPC, skip=2, when=lambda data: event_kind(data) == "rotated")
    rotation = api.rotate(IDS, journal=tmp_path / "j", concurrency=1, storage=storage)
    got: list[Any] = []
    with pytest.raises(JournalError, match=r"1 tunnel\(s\) hold PSKs that are not in the journal"):
        await run_into(rotation, got)
    unrecorded = [o for o in got if o.state is OutcomeState.UNRECORDED]
    assert len(unrecorded) == 1
    (lost,) = unrecorded
    assert isinstance(lost, RotationFailure)
    assert isinstance(lost.error, JournalError)
    assert lost.psk == api.current(lost.tunnel_id)  # in the caller's hands
    assert rotation.unrecorded == 1
    # No new request after the failure: the others were never attempted.
    assert len(api.generated) == 3
    not_attempted = [o for o in got if o.state is OutcomeState.NOT_ATTEMPTED]
    assert len(not_attempted) == len(IDS) - 3
    assert all(o.psk is None for o in not_attempted)
    assert len(got) == len(IDS)


async def test_a_regeneration_whose_intent_cannot_be_written_gives_one_outcome(
    api: FakeAPI, tmp_path: Path
) -> None:
    # The read-back proves nothing, so the tunnel is begun again; its new intent meets a
    # full disk. Nothing more is sent, and the tunnel's one outcome carries the PSK it may
    # still hold (durable) and says it may hold another.
    api.uncertain = {A}
    api.read_override[A] = _no_stamp
    storage = MemoryStorage()
    intents = [0]

    def second_intent(data: bytes) -> bool:
        if event_kind(data) != "intent":
            return False
        intents[0] += 1
        return intents[0] == 2

    storage.fail("write", errno.ENOSPC, when=second_intent)
    rotation = api.rotate([A], journal=tmp_path / "j", storage=storage)
    got: list[Any] = []
    with pytest.raises(JournalError):
        await run_into(rotation, got)
    assert [(o.tunnel_id, o.state) for o in got] == [(A, OutcomeState.NOT_ATTEMPTED)]
    assert got[0].psk == api.current(A)
    assert got[0].outcome_unknown
    assert api.generated == [A]
    assert read_journal(tmp_path / "j", storage=storage)[(ACCOUNT, A)].psk == api.current(A)


async def test_an_intent_that_cannot_be_written_sends_nothing(api: FakeAPI, tmp_path: Path) -> None:
    storage = MemoryStorage()
    # EFBIG: every event's write fails (the header, written at opening, goes through).
    storage.fail("write", errno.EFBIG, times=None, when=lambda data: event_kind(data) != "journal")
    rotation = api.rotate(IDS[:10], journal=tmp_path / "j", concurrency=4, storage=storage)
    got: list[Any] = []
    with pytest.raises(JournalError, match="every PSK made is in the journal"):
        await run_into(rotation, got)
    assert api.generated == []
    assert {o.state for o in got} == {OutcomeState.NOT_ATTEMPTED}
    assert len(got) == 10


async def test_a_failing_fsync_marks_every_pending_psk_unrecorded(
    api: FakeAPI, tmp_path: Path
) -> None:
    storage = MemoryStorage()
    # The journal's own opening fsync and one group commit succeed, then every one fails.
    storage.fail("fsync", errno.EIO, skip=2, times=None)
    rotation = api.rotate(IDS[:20], journal=tmp_path / "j", concurrency=4, storage=storage)
    got: list[Any] = []
    with pytest.raises(JournalError, match="cannot sync journal"):
        await run_into(rotation, got)
    assert len(got) == 20
    for o in got:
        if o.tunnel_id.lower() in api.edge:  # a PSK was made: it is in the caller's hands
            assert o.psk == api.current(o.tunnel_id)
            assert o.state in (OutcomeState.ROTATED, OutcomeState.UNRECORDED)
        else:
            assert o.state is OutcomeState.NOT_ATTEMPTED
    assert sum(o.state is OutcomeState.UNRECORDED for o in got) == rotation.unrecorded >= 1


# --- method="set" ----------------------------------------------------------------------------


async def test_set_journals_every_psk_durably_before_sending(
    api: FakeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = tmp_path / "j"
    storage = MemoryStorage()
    original = api.set_psks

    async def checked(account: str, psks: Mapping[str, str], validate_only: bool) -> Any:
        on_disk = storage.durable(journal).decode()
        for psk in psks.values():
            assert psk in on_disk  # written AND fsynced before the request leaves
        return await original(account, psks, validate_only)

    monkeypatch.setattr(api, "set_psks", checked)
    rotation = api.rotate(IDS, method="set", batch_size=7, journal=journal, storage=storage)
    outcomes = await run(rotation)
    assert len(api.sets) == 6  # 40 tunnels in batches of 7
    assert all(len(batch) <= 7 for batch in api.sets)
    assert all(o.ok and o.state is OutcomeState.ROTATED for o in outcomes)
    assert api.generated == []
    assert api.reads == []  # nothing is ever unknown: no read-back
    records = read_journal(journal, storage=storage)
    for o in outcomes:
        assert o.psk == api.current(o.tunnel_id) == records[(ACCOUNT, o.tunnel_id)].psk
        assert o.result.ipsec_id is not None


async def test_a_batch_refused_as_too_large_is_split(api: FakeAPI, tmp_path: Path) -> None:
    api.max_batch = 8
    outcomes = await run(api.rotate(IDS[:30], method="set", batch_size=30, journal=tmp_path / "j"))
    assert all(o.ok for o in outcomes)
    sizes = [len(batch) for batch in api.sets]
    assert sizes[0] == 30
    assert max(s for s in sizes if s <= 8) <= 8
    applied = [batch for batch in api.sets if len(batch) <= 8]
    assert sum(len(b) for b in applied) == 30


async def test_unapplied_is_a_failure_with_cloudflares_reason(api: FakeAPI, tmp_path: Path) -> None:
    api.unapplied = {B: "tunnel is being deleted"}
    outcomes = await run(api.rotate([A, B], method="set", journal=tmp_path / "j"))
    by_id = {o.tunnel_id: o for o in outcomes}
    failed = by_id[B]
    assert isinstance(failed, RotationFailure)
    assert isinstance(failed.error, NotAppliedError)
    assert failed.error.reason == "tunnel is being deleted"
    assert not failed.outcome_unknown
    assert by_id[A].ok


async def test_a_lost_answer_keeps_the_sent_psk_and_a_rerun_resends_it(
    api: FakeAPI, tmp_path: Path
) -> None:
    journal = tmp_path / "j"
    api.set_error = [APIConnectionError("reset after sending", request_sent=True)]
    (first,) = await run(api.rotate([A], method="set", journal=journal))
    assert isinstance(first, RotationFailure)
    assert first.psk is not None  # the PSK we sent: the tunnel may hold it
    assert first.outcome_unknown  # it may hold it, or still the old one
    record = read_journal(journal)[(ACCOUNT, A)]
    assert record.pending_psk == first.psk
    (again,) = await run(api.rotate([A], method="set", journal=journal))
    assert again.ok
    assert again.psk == first.psk == api.current(A)  # the same PSK, resent
    assert [batch[A] for batch in api.sets] == [first.psk, first.psk]
    (third,) = await run(api.rotate([A], method="set", journal=journal, resume=True))
    assert third.skipped
    assert len(api.sets) == 2


async def test_validate_only_set_changes_nothing(api: FakeAPI) -> None:
    outcomes = await run(api.rotate([A, B], method="set", validate_only=True))
    assert {o.state for o in outcomes} == {OutcomeState.VALIDATED}
    assert api.edge == {}
    # The PSK sent to be validated stays with the caller: a server that applied it anyway
    # would have made it the tunnel's.
    (sent,) = api.sets
    assert {o.tunnel_id: o.result.psk for o in outcomes} == sent


# --- delivery ------------------------------------------------------------------------------


class Router:
    """A deliverer that records what reached it, and fails as told."""

    def __init__(self) -> None:
        self.got: dict[str, str] = {}
        self.calls: list[str] = []
        self.failing: dict[str, int] = {}  # tunnel -> how many more calls fail
        self.hang: set[str] = set()

    async def __call__(self, delivery: Delivery) -> None:
        self.calls.append(delivery.tunnel_id)
        if delivery.tunnel_id in self.hang:
            await asyncio.sleep(3600)
        if self.failing.get(delivery.tunnel_id, 0):
            self.failing[delivery.tunnel_id] -= 1
            raise RuntimeError(f"router refused {delivery.psk}\x1b[31m")
        self.got[delivery.tunnel_id] = delivery.psk


async def test_every_psk_is_delivered_after_it_is_durable(api: FakeAPI, tmp_path: Path) -> None:
    router = Router()
    journal = tmp_path / "j"
    seen_on_disk: list[bool] = []
    inner = router.__call__

    async def deliver(delivery: Delivery) -> None:
        seen_on_disk.append(delivery.psk in journal.read_text())
        await inner(delivery)

    obj = IPsecTunnel(id=B, name="b", cloudflare_endpoint="162.159.0.1")
    outcomes = await run(api.rotate([A, obj], journal=journal, deliver=deliver))
    assert all(seen_on_disk)
    assert all(o.ok and o.delivered for o in outcomes)
    assert router.got == {A: api.current(A), B: api.current(B)}
    assert kinds(journal, A) == ["intent", "rotated", "delivered"]
    assert read_journal(journal)[(ACCOUNT, B)].delivered


async def test_a_failed_delivery_is_retried_then_undelivered_with_its_psk(
    api: FakeAPI, clock: FakeClock, tmp_path: Path
) -> None:
    router = Router()
    router.failing = {A: 2, B: 99}
    outcomes = await run(
        api.rotate([A, B], journal=tmp_path / "j", deliver=router, deliver_retries=2)
    )
    by_id = {o.tunnel_id: o for o in outcomes}
    assert by_id[A].ok
    assert by_id[A].delivered
    failed = by_id[B]
    assert isinstance(failed, RotationFailure)
    assert failed.state is OutcomeState.UNDELIVERED
    assert failed.delivered is False
    assert failed.psk == api.current(B)  # live at Cloudflare: never dropped
    assert isinstance(failed.error, DeliveryError)
    assert failed.error.reason == "error"
    assert failed.psk not in str(failed.error)  # the deliverer's text is scrubbed
    assert "\x1b" not in str(failed.error)
    assert isinstance(failed.delivery_error, RuntimeError)
    assert router.calls.count(B) == 3
    assert kinds(tmp_path / "j", B) == ["intent", "rotated", "undelivered"]


async def test_a_rerun_delivers_without_generating_and_skips_the_delivered(
    api: FakeAPI, tmp_path: Path
) -> None:
    journal = tmp_path / "j"
    router = Router()
    router.failing = {B: 99}
    await run(api.rotate([A, B], journal=journal, deliver=router, deliver_retries=0))
    router.failing = {}
    router.calls.clear()
    outcomes = await run(api.rotate([A, B], journal=journal, deliver=router, resume=True))
    assert api.generated == [A, B]  # nothing generated again
    by_id = {o.tunnel_id: o for o in outcomes}
    assert by_id[A].skipped
    assert by_id[A].delivered
    assert by_id[B].skipped
    assert by_id[B].delivered
    assert router.calls == [B]  # A was delivered already
    assert router.got[B] == api.current(B)


async def test_a_delivery_that_hangs_times_out(api: FakeAPI, tmp_path: Path) -> None:
    router = Router()
    router.hang = {A}
    (outcome,) = await run(api.rotate([A], deliver=router, deliver_retries=0, deliver_timeout=0.05))
    assert isinstance(outcome, RotationFailure)
    assert isinstance(outcome.error, DeliveryError)
    assert outcome.error.reason == "timeout"
    assert outcome.psk == api.current(A)


async def test_halt_after_starts_no_new_tunnel(api: FakeAPI, tmp_path: Path) -> None:
    router = Router()
    router.failing = dict.fromkeys(IDS, 99)
    rotation = api.rotate(
        IDS, journal=tmp_path / "j", deliver=router, deliver_retries=0, halt_after=3, concurrency=2
    )
    outcomes = await run(rotation)
    assert rotation.halted
    assert len(outcomes) == len(IDS)
    states = [o.state for o in outcomes]
    assert states.count(OutcomeState.UNDELIVERED) >= 3
    not_attempted = [o for o in outcomes if o.state is OutcomeState.NOT_ATTEMPTED]
    assert not_attempted
    assert all(isinstance(o.error, RotationHaltedError) for o in not_attempted)
    # Nothing was sent for a tunnel never attempted, and it holds no new PSK.
    assert {o.tunnel_id for o in not_attempted}.isdisjoint(api.generated)
    assert len(api.generated) + len(not_attempted) == len(IDS)


# --- the finished line -----------------------------------------------------------------------


def finished_lines(path: Path, storage: MemoryStorage | None = None) -> list[dict[str, Any]]:
    data = storage.durable(path) if storage is not None else path.read_bytes()
    lines = [json.loads(line) for line in data.splitlines()]
    return [line for line in lines if line["event"] == Finished.kind]


async def test_a_run_that_gives_every_tunnel_its_outcome_ends_its_journal_finished(
    api: FakeAPI, tmp_path: Path
) -> None:
    router = Router()
    journal = tmp_path / "j"
    outcomes = await run(api.rotate(IDS, journal=journal, deliver=router, concurrency=4))
    assert all(o.ok for o in outcomes)
    assert run_finished(journal) is True
    (line,) = finished_lines(journal)
    assert line["account_id"] == ACCOUNT
    assert line["tunnels"] == len(IDS)
    assert json.loads(journal.read_bytes().splitlines()[-1]) == line  # the last word
    # A failure for certain is an outcome too: the run finished.
    api.fail[A] = NotFoundError(404, [ErrorDetail(1002, "no such tunnel")])
    again = tmp_path / "again"
    outcomes = await run(api.rotate([A, B], journal=again))
    assert [o.ok for o in outcomes].count(False) == 1
    assert run_finished(again) is True


async def test_a_resumed_run_that_finishes_ends_the_journal_finished_again(
    api: FakeAPI, tmp_path: Path
) -> None:
    journal = tmp_path / "j"
    rotation = api.rotate(IDS, journal=journal, concurrency=2)
    async with rotation:
        async for _ in rotation:
            break
    assert run_finished(journal) is False
    outcomes = await run(api.rotate(IDS, journal=journal, resume=True, concurrency=2))
    assert len(outcomes) == len(IDS)
    assert OutcomeState.SKIPPED in {o.state for o in outcomes}
    assert run_finished(journal) is True
    assert len(finished_lines(journal)) == 1


async def test_a_halted_run_leaves_no_finished_line(api: FakeAPI, tmp_path: Path) -> None:
    router = Router()
    router.failing = dict.fromkeys(IDS, 99)
    journal = tmp_path / "j"
    rotation = api.rotate(
        IDS, journal=journal, deliver=router, deliver_retries=0, halt_after=3, concurrency=2
    )
    await run(rotation)
    assert rotation.halted
    assert run_finished(journal) is False
    assert finished_lines(journal) == []


async def test_a_run_left_early_leaves_no_finished_line(api: FakeAPI, tmp_path: Path) -> None:
    journal = tmp_path / "j"
    rotation = api.rotate(IDS, journal=journal, concurrency=4)
    async with rotation:
        async for _ in rotation:
            break
    assert run_finished(journal) is False
    # Even when every outcome was in: a caller who leaves before the end stopped the run.
    last = tmp_path / "last"
    rotation = api.rotate([A], journal=last)
    async with rotation:
        async for _ in rotation:
            break
    assert run_finished(last) is False


async def test_a_run_whose_journal_failed_leaves_no_finished_line(
    api: FakeAPI, tmp_path: Path
) -> None:
    storage = MemoryStorage()
    storage.fail("write", errno.ENOSPC, skip=2, when=lambda data: event_kind(data) == "rotated")
    journal = tmp_path / "j"
    with pytest.raises(JournalError):
        await run(api.rotate(IDS, journal=journal, concurrency=1, storage=storage))
    assert run_finished(journal, storage=storage) is False


async def test_a_finished_line_that_cannot_be_written_costs_no_tunnel_anything(
    api: FakeAPI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Every PSK is durable before the finished line is written: a full disk then is
    # logged, the outcomes stand, and the next resume finds the run unfinished.
    storage = MemoryStorage()
    storage.fail("write", errno.ENOSPC, when=lambda data: event_kind(data) == Finished.kind)
    journal = tmp_path / "j"
    outcomes = await run(api.rotate(IDS[:5], journal=journal, storage=storage))
    assert all(o.ok for o in outcomes)
    assert run_finished(journal, storage=storage) is False
    records = read_journal(journal, storage=storage)
    assert all(records[(ACCOUNT, o.tunnel_id)].psk == o.psk for o in outcomes)
    assert "could not record that the run finished" in caplog.text


# --- leaving early ---------------------------------------------------------------------------


async def test_leaving_the_block_finishes_what_was_sent_and_keeps_it(
    api: FakeAPI, tmp_path: Path
) -> None:
    rotation = api.rotate(IDS, journal=tmp_path / "j", concurrency=4)
    claimed = []
    async with rotation:
        async for outcome in rotation:
            claimed.append(outcome)
            if len(claimed) == 5:
                break
    generated = len(api.generated)
    assert generated < len(IDS)
    assert len(claimed) + len(rotation.unclaimed) == generated
    records = read_journal(tmp_path / "j")
    for o in claimed + rotation.unclaimed:
        assert o.psk == api.current(o.tunnel_id) == records[(ACCOUNT, o.tunnel_id)].psk
    await asyncio.sleep(0)
    assert len(api.generated) == generated  # nothing started after leaving


async def test_leaving_early_hands_unsettled_psks_over_unverified(
    api: FakeAPI, tmp_path: Path
) -> None:
    api.uncertain = set(IDS[:3])
    # Real time here: the virtual clock would jump straight to the end of the window.
    rotation = rotate(
        ACCOUNT,
        IDS[:3],
        generate=api.generate,
        set_psks=api.set_psks,
        read_back=api.read_back,
        journal=tmp_path / "j",
        settle_window=1000.0,
    )
    async with rotation:
        while len(api.generated) < 3:  # the three now wait for their settle window
            await asyncio.sleep(0.01)
    assert api.reads == []
    assert len(rotation.unclaimed) == 3
    for o in rotation.unclaimed:
        assert o.ok
        assert not o.verified
        assert o.unverified is not None
        assert "stopped" in o.unverified
        assert o.psk == api.current(o.tunnel_id)


async def test_a_delivery_cut_short_by_the_drain_timeout_is_still_handed_over(
    api: FakeAPI, tmp_path: Path
) -> None:
    router = Router()
    router.hang = {A}
    rotation = api.rotate(
        [A], journal=tmp_path / "j", deliver=router, deliver_timeout=3600, drain_timeout=0.05
    )
    async with rotation:
        while not router.calls:
            await asyncio.sleep(0.01)
    (outcome,) = rotation.unclaimed
    assert isinstance(outcome, RotationFailure)
    assert outcome.state is OutcomeState.UNDELIVERED
    assert isinstance(outcome.error, DeliveryError)
    assert outcome.error.reason == "stopped"
    assert outcome.psk == api.current(A)


async def test_a_second_rotation_on_the_same_journal_is_refused_at_once(
    api: FakeAPI, tmp_path: Path
) -> None:
    journal = tmp_path / "j"
    async with api.rotate([A], journal=journal) as first:
        with pytest.raises(JournalError, match="in use by another rotation"):
            async with api.rotate([B], journal=journal):
                pass
        outcomes = [o async for o in first]
    assert api.generated == [A]
    assert [o.tunnel_id for o in outcomes] == [A]


async def test_a_rerun_of_skipped_tunnels_holds_at_most_the_look_ahead(
    api: FakeAPI, tmp_path: Path
) -> None:
    journal = tmp_path / "j"
    await run(api.rotate(IDS, journal=journal))
    rotation = api.rotate(IDS, journal=journal, concurrency=2, resume=True)
    async for _ in rotation:
        break  # a caller who stops reading
    for _ in range(20):
        await asyncio.sleep(0)
    # Never one pending outcome per tunnel: the stages wait for the caller.
    assert len(rotation.unclaimed) <= 2 * 2
    await rotation.aclose()
    assert len(rotation.unclaimed) == len(IDS) - 1  # closing hands the rest over
    assert all(o.skipped for o in rotation.unclaimed)


async def test_a_caller_cancelled_during_shutdown_still_closes_and_unlocks_the_journal(
    api: FakeAPI, tmp_path: Path
) -> None:
    # Cancelled once, the caller leaves the block (a drain); twice, the drain is cut and the
    # rotation shuts its tasks down; a third time while it waits for a deliverer that is slow
    # to die. The journal's file and lock must not outlive the rotation anyway.
    journal = tmp_path / "j"
    delivering: list[str] = []

    async def stubborn(delivery: Delivery) -> None:
        delivering.append(delivery.tunnel_id)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0.3)  # cleans up slowly before it goes
            raise

    rotation = api.rotate(IDS[:2], journal=journal, deliver=stubborn, drain_timeout=3600)

    async def consume() -> None:
        async with rotation:
            async for _ in rotation:
                pass

    task = asyncio.ensure_future(consume())
    while not delivering:  # the rollout window lets one tunnel deliver at first
        await asyncio.sleep(0.01)
    for _ in range(3):
        task.cancel()
        await asyncio.sleep(0.1)
    with pytest.raises(asyncio.CancelledError):
        await task
    async with api.rotate([B], journal=journal) as again:  # the lock is free
        assert [o.ok async for o in again] == [True]
