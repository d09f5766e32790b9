"""The state machine on its own: every reachable state, and a cut from each of them.

The walk starts from every kind of journal record (none, rotated, doubtful, a generate or
a set left open) for both methods, with and without a journal and a deliverer, and feeds
every event each stage accepts. After every step it checks what each stage promises about
``may_hold``; from every state reached it applies a cut and checks that exactly one
outcome comes out, carrying ``may_hold``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest

from magicwan import (
    APITimeoutError,
    DeliveryError,
    IPsecTunnel,
    JournalError,
    NotFoundError,
    PSKGenerateResult,
    PSKMetadata,
    new_psk,
)
from magicwan.errors import RotationHaltedError
from magicwan.journal import JournalRecord
from magicwan.rotation import machine as m
from magicwan.rotation.outcomes import OutcomeState
from tests.support.constants import TUNNEL

T = "c4a7362d577a6c3019a474fd6f485823"
STAMP = datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=UTC)
NEWER = datetime(2026, 11, 27, 10, 0, 5, 123456, tzinfo=UTC)
P_OLD, P_NEW, P_SENT, P_OTHER = ("o" * 32, "n" * 32, "s" * 32, "x" * 32)


def _result(psk: str, stamp: datetime | None = STAMP) -> PSKGenerateResult:
    return PSKGenerateResult(
        ipsec_tunnel_id=T, psk=psk, psk_metadata=PSKMetadata(last_generated_on=stamp)
    )


def _edge(stamp: datetime | None) -> IPsecTunnel:
    return IPsecTunnel(id=T, psk_metadata=PSKMetadata(last_generated_on=stamp))


def _record(kind: str) -> JournalRecord | None:
    base: dict[str, Any] = {"account_id": "a" * 32, "tunnel_id": T, "last_time": STAMP}
    if kind == "none":
        return None
    if kind == "rotated":
        return JournalRecord(event="rotated", psk=P_OLD, last_generated_on=STAMP, **base)
    if kind == "doubtful":
        return JournalRecord(
            event="rotated", psk=P_OLD, last_generated_on=STAMP, uncertain=True, **base
        )
    if kind == "generate-left-open":
        return JournalRecord(event="intent", psk=P_OLD, in_flight=True, **base)
    return JournalRecord(event="intent", pending_psk=P_SENT, in_flight=True, **base)


#: Events each stage may meet, with sample payloads.
def _events(rules: m.Rules, run: m.TunnelRun) -> Iterator[m.Event]:
    journal_error = JournalError("disk full")
    stage = run.stage
    if stage is m.Stage.PENDING:
        yield m.Begin(0.0, P_SENT if rules.method == "set" else None)
    elif stage in (m.Stage.INTENT, m.Stage.RECORDING):
        yield from (m.Written(), m.WriteFailed(journal_error))
        yield from (m.Synced(), m.SyncFailed(journal_error))
    elif stage is m.Stage.READY:
        yield m.Sent()
    elif stage is m.Stage.REQUESTING:
        psk = run.sending or P_NEW
        yield m.Answered(_result(psk), 1, False, 0.0)
        yield m.Answered(_result(psk), 2, True, 0.0)
        yield m.Failed(NotFoundError(404), unknown=False)
        yield m.Failed(APITimeoutError("timed out"), unknown=True)
        if rules.method == "set":
            yield m.OtherPsk(_result(P_OTHER), 1)
    elif stage is m.Stage.UNSETTLED:
        yield from (m.ReadBack(_edge(STAMP)), m.ReadBack(_edge(NEWER)), m.ReadBack(_edge(None)))
        yield m.ReadBackFailed("read-back failed: 500")
    elif stage is m.Stage.DELIVERING:
        yield m.Delivered(1)
        yield m.Undelivered(DeliveryError("no", reason="error"), 1)
        yield from (m.Synced(), m.SyncFailed(journal_error))


def _accepts(run: m.TunnelRun, event: m.Event) -> bool:
    return (run.stage, type(event)) in m._HANDLERS  # the table under test


def _check(rules: m.Rules, run: m.TunnelRun, effects: list[m.Effect]) -> None:
    """What each stage promises about the PSK it may hold."""
    held = run.may_hold
    if run.stage is m.Stage.RECORDING:
        assert held is not None
        assert held.source is m.Source.ANSWERED
    if run.stage is m.Stage.REQUESTING and rules.method == "set":
        assert held is not None
        assert held.source is m.Source.SENT
    if run.stage in (m.Stage.UNSETTLED, m.Stage.DELIVERING):
        assert held is not None
        assert held.psk is not None
    emitted = [e.outcome for e in effects if isinstance(e, m.Emit)]
    assert len(emitted) <= 1
    if emitted:
        assert run.stage is m.Stage.DONE
        outcome = emitted[0]
        if outcome.ok and outcome.state is not OutcomeState.VALIDATED:
            assert held is not None
            assert outcome.psk == held.psk  # an ok outcome carries what the tunnel holds
        if held is not None and held.psk is not None:
            assert outcome.psk == held.psk, (run.stage, outcome)


def _walk(rules: m.Rules, start: m.TunnelRun, depth: int) -> Iterator[m.TunnelRun]:
    frontier = [start]
    seen: set[tuple[Any, ...]] = set()
    for _ in range(depth):
        following = []
        for run in frontier:
            yield run
            for event in _events(rules, run):
                if not _accepts(run, event):
                    continue
                after, effects = m.step(rules, run, event)
                _check(rules, after, effects)
                key = (after.stage, after.may_hold, after.rounds, after.error is None)
                if after.stage is not m.Stage.DONE and key not in seen:
                    seen.add(key)
                    following.append(after)
        frontier = following


CASES = list(
    itertools.product(
        ["generate", "set"],
        [True, False],  # journalled
        [True, False],  # delivering
        ["none", "rotated", "doubtful", "generate-left-open", "set-left-open"],
    )
)


@pytest.mark.parametrize(("method", "journalled", "delivering", "record"), CASES)
def test_a_cut_from_every_reachable_state_hands_over_what_it_may_hold(
    method: str, journalled: bool, delivering: bool, record: str
) -> None:
    rules = m.Rules(
        account_id="a" * 32,
        method=method,  # type: ignore[arg-type]
        validate_only=False,
        journalled=journalled,
        delivering=delivering,
        settle_window=5.0,
    )
    start = m.start(rules, m.TunnelRun(tunnel_id=T), _record(record), now=0.0, since_last=1.0)
    reached = 0
    for run in _walk(rules, start, depth=9):
        reached += 1
        for cut in (
            m.Cut(RotationHaltedError("halted")),
            m.Cut(RotationHaltedError("left"), caller_left=True),
            m.Cut(JournalError("disk full"), durable=True),
        ):
            after, effects = m.step(rules, run, cut)
            emitted = [e.outcome for e in effects if isinstance(e, m.Emit)]
            assert after.stage is m.Stage.DONE
            if not emitted:  # only a tunnel never begun, holding nothing, when the caller left
                assert cut.caller_left
                assert run.may_hold is None
                assert run.stage is m.Stage.PENDING
                continue
            (outcome,) = emitted
            held = after.may_hold
            assert outcome.psk == (held.psk if held is not None else None), (run.stage, cut)
            if run.stage is m.Stage.REQUESTING and method == "generate":
                assert outcome.outcome_unknown  # a request in flight may have stored a PSK
    assert reached > (5 if record == "none" else 0)


def test_a_late_store_seen_by_the_read_back_starts_the_tunnel_again() -> None:
    rules = m.Rules(
        account_id="a" * 32,
        method="generate",
        validate_only=False,
        journalled=True,
        delivering=False,
        settle_window=5.0,
    )
    run = attrs.evolve(
        m.TunnelRun(tunnel_id=T),
        stage=m.Stage.UNSETTLED,
        may_hold=m.Held(result=_result(P_NEW), source=m.Source.ANSWERED, where=m.Where.DURABLE),
        read_back_due=5.0,
    )
    after, effects = m.step(rules, run, m.ReadBack(_edge(NEWER)))
    assert after.stage is m.Stage.PENDING
    assert [type(e) for e in effects] == [m.Requeue]
    # Cut before it begins again: the PSK it held is carried, and the doubt is said.
    _, cut = m.step(rules, after, m.Cut(RotationHaltedError("halted")))
    (emit,) = cut
    assert isinstance(emit, m.Emit)
    assert emit.outcome.psk == P_NEW
    assert emit.outcome.outcome_unknown


def test_the_state_machines_objects_never_show_a_psk_in_their_repr() -> None:
    # README ("How the engine keeps the promise") presents magicwan.rotation.machine:
    # TunnelRun, its events and effects, `step(rules, run, event) -> (run, effects)`.
    # They are what anyone debugging a rotation prints (a log line, a pytest assertion,
    # the simulation's failure report): like every public model, their reprs hide the PSK
    # they carry.
    psk = new_psk()
    result = PSKGenerateResult(ipsec_tunnel_id=TUNNEL, psk=psk)
    shown = {
        "TunnelRun": repr(m.TunnelRun(tunnel_id=TUNNEL, sending=psk)),
        "Begin": repr(m.Begin(0.0, psk)),
        "Deliver": repr(m.Deliver(psk, result)),
    }
    leaking = sorted(name for name, text in shown.items() if psk in text)
    assert not leaking, f"the repr of {', '.join(leaking)} shows the PSK"
