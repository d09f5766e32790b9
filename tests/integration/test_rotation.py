"""Bulk rotation against the emulator: faults, the journal, reruns, cancellation, concurrency."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest

from magicwan import NotFoundError, RotationOutcome, read_journal
from magicwan.emulator import Emulator, EmulatorState, Faults
from magicwan.emulator.faults import FaultKind
from tests.support.disk import DurableBytes
from tests.support.loopback import Tracker, make_client, serve
from tests.support.probes import journal_lines, magicwan_tasks

pytestmark = pytest.mark.asyncio

UNKNOWN = "f" * 32
FAST = 20.0  # the client's clock runs 20x: Retry-After 1 s costs 50 ms, backoff likewise

#: Every outcome fault the emulator can inject (from its own enum), each on 5% of requests.
FAULTS = Faults(**dict.fromkeys((kind.value for kind in FaultKind), 0.05))


def assert_journal_matches_emulator(path: Path, emu: Emulator, tunnel_ids: list[str]) -> None:
    records = read_journal(path)
    for tunnel_id in tunnel_ids:
        record = records[(emu.account_id, tunnel_id)]
        assert record.event == "rotated", (tunnel_id, record.event)
        assert record.psk is not None
        assert record.psk == emu.state.current_psk(emu.account_id, tunnel_id), tunnel_id


async def test_a_thousand_tunnels_through_faults_lose_no_psk(tmp_path: Path) -> None:
    """Issue 4, "Done when": faults on, 1,000 tunnels, every journalled PSK is the edge's PSK."""
    journal = tmp_path / "rotation.jsonl"
    state = EmulatorState(tunnels=1000, seed=11, rate_limit=None, faults=FAULTS)
    async with serve(state) as emu, make_client(emu, fast=FAST, max_retries=12) as client:
        outcomes = [
            o
            async for o in client.tunnels.ipsec.psk.rotate(
                emu.account_id, emu.tunnel_ids, concurrency=32, journal=journal, resume=True
            )
        ]
    counted = emu.state.requests
    for kind in FaultKind:
        assert counted.faults[kind.value] >= 20, counted.faults  # the faults really happened
    assert sorted(o.tunnel_id for o in outcomes) == sorted(emu.tunnel_ids)
    failed = [o for o in outcomes if not o.ok]
    assert not failed, [(o.tunnel_id, repr(o.error)) for o in failed[:5]]
    for o in outcomes:
        assert o.result is not None
        assert o.result.psk == emu.state.current_psk(emu.account_id, o.tunnel_id)
    assert any(o.verified for o in outcomes)
    assert_journal_matches_emulator(journal, emu, emu.tunnel_ids)
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600


async def test_outcomes_one_per_tunnel_and_failures_stay_local(
    emu: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "j.jsonl"
    ids = [*emu.tunnel_ids[:5], emu.tunnel_ids[0], UNKNOWN, emu.tunnel_ids[1], *emu.tunnel_ids[5:]]
    async with make_client(emu) as client:
        outcomes = [
            o
            async for o in client.tunnels.ipsec.psk.rotate(
                emu.account_id, ids, concurrency=3, journal=journal, resume=True
            )
        ]
    assert sorted(o.tunnel_id for o in outcomes) == sorted({*emu.tunnel_ids, UNKNOWN})
    by_id = {o.tunnel_id: o for o in outcomes}
    bad = by_id[UNKNOWN]
    assert not bad.ok
    assert isinstance(bad.error, NotFoundError)
    assert bad.result is None
    for tunnel_id in emu.tunnel_ids:
        assert by_id[tunnel_id].ok
        assert emu.state.tunnel(emu.account_id, tunnel_id).generation == 1  # duplicates: once
    assert emu.state.requests.by_route["psk_generate"] == len(emu.tunnel_ids) + 1

    lines = journal_lines(journal)
    assert all(isinstance(e["tunnel_id"], str) and isinstance(e["event"], str) for e in lines)
    rotated = [e for e in lines if e["event"] == "rotated"]
    assert len(rotated) == len(emu.tunnel_ids)
    for event in rotated:
        assert event["psk"] == emu.state.current_psk(emu.account_id, event["tunnel_id"])
        stamp = emu.state.tunnel(emu.account_id, event["tunnel_id"]).last_generated_on
        assert event["last_generated_on"] is not None
        assert event["last_generated_on"].replace("Z", "+00:00") == stamp.isoformat()  # type: ignore[union-attr]
    failed = [e for e in lines if e["event"] == "failed"]
    assert [e["tunnel_id"] for e in failed] == [UNKNOWN]
    for tunnel_id in [*emu.tunnel_ids, UNKNOWN]:
        mine = [e["event"] for e in lines if e["tunnel_id"] == tunnel_id]
        assert mine[0] == "intent"  # the intent is on disk before the request
    assert_journal_matches_emulator(journal, emu, emu.tunnel_ids)


@pytest.mark.parametrize("umask", [0o022, 0o000])
async def test_journal_is_0600_from_creation(emu: Emulator, tmp_path: Path, umask: int) -> None:
    journal = tmp_path / "secret.jsonl"
    old = os.umask(umask)
    try:
        async with make_client(emu) as client:
            modes = []
            async for _ in client.tunnels.ipsec.psk.rotate(
                emu.account_id, emu.tunnel_ids, concurrency=2, journal=journal, resume=True
            ):
                modes.append(stat.S_IMODE(journal.stat().st_mode))
    finally:
        os.umask(old)
    assert modes
    assert set(modes) == {0o600}
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600


async def test_an_existing_loose_journal_is_tightened(emu: Emulator, tmp_path: Path) -> None:
    journal = tmp_path / "loose.jsonl"
    journal.write_text("")
    journal.chmod(0o644)
    async with make_client(emu) as client:
        async for _ in client.tunnels.ipsec.psk.rotate(
            emu.account_id, emu.tunnel_ids[:1], journal=journal, resume=True
        ):
            pass
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600


async def test_a_rerun_skips_every_rotated_tunnel(emu: Emulator, tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    async with make_client(emu) as client:
        rotate = client.tunnels.ipsec.psk.rotate
        first = [
            o async for o in rotate(emu.account_id, emu.tunnel_ids, journal=journal, resume=True)
        ]
        generations = emu.state.total_generations()
        requests = emu.state.requests.total
        again = [
            o async for o in rotate(emu.account_id, emu.tunnel_ids, journal=journal, resume=True)
        ]
    assert all(o.ok and not o.skipped for o in first)
    assert all(o.ok and o.skipped for o in again)
    assert emu.state.total_generations() == generations == len(emu.tunnel_ids)
    assert emu.state.requests.total == requests  # not a single request
    for o in again:
        assert o.result is not None
        assert o.result.psk == emu.state.current_psk(emu.account_id, o.tunnel_id)
    assert_journal_matches_emulator(journal, emu, emu.tunnel_ids)


async def test_a_rerun_redoes_an_intent_without_rotated(emu: Emulator, tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    redo = emu.tunnel_ids[4]
    async with make_client(emu) as client:
        rotate = client.tunnels.ipsec.psk.rotate
        async for _ in rotate(emu.account_id, emu.tunnel_ids, journal=journal, resume=True):
            pass
        # As if a crash hit after a new request for `redo` was sent: its PSK may have changed.
        with journal.open("a") as fh:
            fh.write(
                json.dumps({"event": "intent", "account_id": emu.account_id, "tunnel_id": redo})
                + "\n"
            )
        emu.state.generate_psk(emu.state.tunnel(emu.account_id, redo))  # the unseen PSK
        again = [
            o async for o in rotate(emu.account_id, emu.tunnel_ids, journal=journal, resume=True)
        ]
    by_id = {o.tunnel_id: o for o in again}
    assert not by_id[redo].skipped
    assert by_id[redo].ok
    assert emu.state.tunnel(emu.account_id, redo).generation == 3
    assert all(o.skipped for o in again if o.tunnel_id != redo)
    assert emu.state.requests.by_route["psk_generate"] == len(emu.tunnel_ids) + 1
    assert_journal_matches_emulator(journal, emu, emu.tunnel_ids)


def _mark_uncertain(journal: Path, tunnel_id: str) -> None:
    """Rewrite the journal as if a retry had made this tunnel's rotated line uncertain."""
    lines = journal_lines(journal)
    for line in lines:
        if line["tunnel_id"] == tunnel_id and line["event"] == "rotated":
            line["uncertain"] = True
    journal.write_text("".join(json.dumps(line) + "\n" for line in lines))


async def test_a_rerun_verifies_an_uncertain_record_without_regenerating(
    emu: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "j.jsonl"
    doubt = emu.tunnel_ids[2]
    async with make_client(emu) as client:
        rotate = client.tunnels.ipsec.psk.rotate
        async for _ in rotate(emu.account_id, emu.tunnel_ids, journal=journal, resume=True):
            pass
        _mark_uncertain(journal, doubt)
        # settle_window: the doubt was just written; this test does not wait it out.
        again = [
            o
            async for o in rotate(
                emu.account_id, emu.tunnel_ids, journal=journal, resume=True, settle_window=0.1
            )
        ]
        # Verified once: the journal now says so, and a third run reads nothing back.
        reads = emu.state.requests.by_route["get_ipsec_tunnel"]
        third = [
            o async for o in rotate(emu.account_id, emu.tunnel_ids, journal=journal, resume=True)
        ]
    by_id = {o.tunnel_id: o for o in again}
    outcome = by_id[doubt]
    assert outcome.ok
    assert outcome.verified
    assert outcome.skipped
    assert emu.state.tunnel(emu.account_id, doubt).generation == 1  # nothing regenerated
    assert reads == 1
    assert emu.state.requests.by_route["get_ipsec_tunnel"] == reads
    assert all(o.skipped and not o.verified for o in third)
    assert_journal_matches_emulator(journal, emu, emu.tunnel_ids)


async def test_a_rerun_regenerates_an_uncertain_record_the_edge_superseded(
    emu: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "j.jsonl"
    doubt = emu.tunnel_ids[3]
    async with make_client(emu) as client:
        rotate = client.tunnels.ipsec.psk.rotate
        async for _ in rotate(emu.account_id, emu.tunnel_ids, journal=journal, resume=True):
            pass
        _mark_uncertain(journal, doubt)
        emu.state.generate_psk(emu.state.tunnel(emu.account_id, doubt))  # the unseen PSK
        again = [
            o
            async for o in rotate(
                emu.account_id, emu.tunnel_ids, journal=journal, resume=True, settle_window=0.1
            )
        ]
    by_id = {o.tunnel_id: o for o in again}
    outcome = by_id[doubt]
    assert outcome.ok
    assert not outcome.verified  # a certain answer after the window: nothing to prove
    assert not outcome.skipped
    assert emu.state.tunnel(emu.account_id, doubt).generation == 3
    assert_journal_matches_emulator(journal, emu, emu.tunnel_ids)


async def _requests_settle(emu: Emulator) -> int:
    """Wait until the emulator sees no new request for a while; return the count."""
    seen = emu.state.requests.total
    for _ in range(20):
        await asyncio.sleep(0.1)
        if emu.state.requests.total == seen:
            return seen
        seen = emu.state.requests.total
    raise AssertionError("requests kept coming")


SLOW = Faults(latency=0.02, latency_probability=1.0)


async def test_leaving_the_block_starts_nothing_new_and_keeps_what_finished(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "j.jsonl"
    state = EmulatorState(tunnels=300, seed=12, rate_limit=None, faults=SLOW)
    async with serve(state) as emu, make_client(emu) as client:
        claimed: list[RotationOutcome] = []
        rotate = client.tunnels.ipsec.psk.rotate
        async with rotate(
            emu.account_id, emu.tunnel_ids, concurrency=8, journal=journal, resume=True
        ) as rotation:
            async for outcome in rotation:
                assert outcome.ok
                claimed.append(outcome)
                if len(claimed) == 20:
                    break
        # Leaving the block drained what was in flight: nothing is running, nothing new
        # is ever sent.
        assert magicwan_tasks() == []
        settled = emu.state.requests.total
        assert settled < 20 + 3 * 8  # nowhere near 300
        await asyncio.sleep(0.3)
        assert emu.state.requests.total == settled
        unclaimed = rotation.unclaimed
    # Every PSK that was made is journalled, true, and in the caller's hands.
    records = read_journal(journal)
    rotated = [k[1] for k, r in records.items() if r.event == "rotated"]
    assert len(rotated) == len(claimed) + len(unclaimed) == settled
    assert {o.tunnel_id for o in claimed + unclaimed} == set(rotated)
    for outcome in unclaimed:
        assert outcome.ok
        assert outcome.psk == emu.state.current_psk(emu.account_id, outcome.tunnel_id)
    assert_journal_matches_emulator(journal, emu, rotated)


async def test_a_plain_loop_left_by_break_stops_within_concurrency_tunnels(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "j.jsonl"
    state = EmulatorState(tunnels=300, seed=15, rate_limit=None, faults=SLOW)
    async with serve(state) as emu, make_client(emu) as client:
        rotation = client.tunnels.ipsec.psk.rotate(
            emu.account_id, emu.tunnel_ids, concurrency=8, journal=journal, resume=True
        )
        got = 0
        async for _ in rotation:
            got += 1
            if got == 20:
                break
        settled = await _requests_settle(emu)
        # Bounded look-ahead: at most `concurrency` outcomes wait unclaimed, plus those
        # that were in flight.
        assert settled <= 20 + 2 * 8
        assert len(rotation.unclaimed) == settled - 20
        await rotation.aclose()
        assert magicwan_tasks() == []
        assert emu.state.requests.total == settled
    rotated = [k[1] for k, r in read_journal(journal).items() if r.event == "rotated"]
    assert len(rotated) == settled
    assert_journal_matches_emulator(journal, emu, rotated)


async def test_cancelling_the_consumer_task_stops_the_work(tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    state = EmulatorState(tunnels=300, seed=13, rate_limit=None, faults=SLOW)
    async with serve(state) as emu, make_client(emu) as client:
        seen: list[str] = []
        rotation = client.tunnels.ipsec.psk.rotate(
            emu.account_id, emu.tunnel_ids, concurrency=8, journal=journal, resume=True
        )

        async def consume() -> None:
            async with rotation:
                async for outcome in rotation:
                    seen.append(outcome.tunnel_id)

        task = asyncio.ensure_future(consume())
        while len(seen) < 20:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert magicwan_tasks() == []
        settled = emu.state.requests.total
        assert settled < 100
        await asyncio.sleep(0.3)
        assert emu.state.requests.total == settled
        assert len(seen) + len(rotation.unclaimed) == settled
        # The client is still usable afterwards.
        result = await client.tunnels.ipsec.psk.generate(emu.account_id, emu.tunnel_ids[-1])
        assert result.psk == emu.state.current_psk(emu.account_id, emu.tunnel_ids[-1])
    rotated = [k[1] for k, r in read_journal(journal).items() if r.event == "rotated"]
    assert_journal_matches_emulator(journal, emu, rotated)


async def test_concurrency_bounds_requests_in_flight_and_tasks(
    tracked: tuple[Emulator, Tracker], tmp_path: Path
) -> None:
    emu, tracker = tracked
    emu.set_faults(Faults(latency=0.01, latency_probability=1.0))
    peak = 0  # the most magicwan tasks pending at once, seen between two outcomes
    async with make_client(emu) as client:
        async for outcome in client.tunnels.ipsec.psk.rotate(
            emu.account_id, emu.tunnel_ids, concurrency=8, journal=tmp_path / "j.jsonl"
        ):
            assert outcome.ok
            peak = max(peak, len(magicwan_tasks()))
    assert tracker.max_in_flight == 8  # reached, never exceeded
    assert len(tracker.arrivals) == len(emu.tunnel_ids) == 200
    # A bounded crew, never one task per tunnel: a task per request in flight (8), and per
    # answered one whose line waits for the group commit (its slot is free for the next
    # request meanwhile); the look-ahead, 2 x concurrency, bounds those together. Plus the
    # one that hands the outcomes over and at most one fsync at any moment. A slow disk (a
    # loaded machine) shows more than 8 + 2. Counted by where the tasks' code lives.
    assert 8 <= peak <= 2 * 8 + 1 + 1
    assert magicwan_tasks() == []


async def test_an_uncertain_outcome_is_verified_by_read_back(tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    state = EmulatorState(
        tunnels=60,
        seed=14,
        rate_limit=None,
        faults=Faults(reset_after_store=0.3, truncated_json=0.1),
    )
    async with serve(state) as emu, make_client(emu, fast=FAST, max_retries=12) as client:
        outcomes = [
            o
            async for o in client.tunnels.ipsec.psk.rotate(
                emu.account_id, emu.tunnel_ids, concurrency=8, journal=journal, resume=True
            )
        ]
    assert all(o.ok for o in outcomes)
    retried = [o for o in outcomes if o.attempts > 1]
    assert retried  # faults made some outcomes uncertain
    for o in outcomes:
        assert o.result is not None
        assert o.result.psk == emu.state.current_psk(emu.account_id, o.tunnel_id)
        history = emu.state.history(emu.account_id, o.tunnel_id)
        if len(history) > 1:  # an earlier attempt stored a PSK nobody saw
            assert o.verified
    assert all(o.verified for o in retried)
    assert emu.state.requests.by_route["get_ipsec_tunnel"] >= len(retried)
    lines = journal_lines(journal)
    verified = {e["tunnel_id"] for e in lines if e["event"] == "verified"}
    assert verified == {o.tunnel_id for o in outcomes if o.verified}
    assert_journal_matches_emulator(journal, emu, emu.tunnel_ids)


async def test_every_psk_is_on_disk_before_its_outcome_is_handed_over(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = tmp_path / "j.jsonl"
    durable = DurableBytes(monkeypatch)  # what the last completed fsync covered
    handed = 0
    async with make_client(emu) as client:
        rotate = client.tunnels.ipsec.psk.rotate
        async for outcome in rotate(
            emu.account_id, emu.tunnel_ids, concurrency=4, journal=journal, resume=True
        ):
            assert outcome.ok
            assert outcome.result is not None
            assert outcome.result.psk is not None
            on_disk = durable.text(journal)
            assert outcome.result.psk in on_disk, outcome.tunnel_id
            handed += 1
    assert handed == len(emu.tunnel_ids)
