"""Defects the simulation found in the rotation engine of its day, each a failing test.

Each one has a focused scenario (scripted faults, fixed latencies: it fails for exactly that
reason) and a sweep of random scenarios that no longer steer around it. Both are strict xfails
while the defect's name is in ``KNOWN_DEFECTS`` (``tests/support/sim.py``): an engine that fixes
one makes them pass, and then the name comes out of ``KNOWN_DEFECTS`` (so the CI budget of
``test_simulation.py`` explores its trigger too).
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from tests.simulation.test_simulation import explain
from tests.support.sim import (
    DEFECTS_FOUND,
    KNOWN_DEFECTS,
    Scenario,
    crash_point_scenario,
    random_scenario,
    simulate,
)

WHY = {
    "same-second-verified": (
        "a late store lands in the same whole second as the retry's PSK: the GET's whole-second "
        "stamp equals the held PSK's at the coarser precision and the engine reports it "
        "verified; the edge holds the late PSK, which nobody has (issue 16 #4)"
    ),
    "unrecorded-uncertain": (
        "an uncertain generate (a timeout before the retry) whose rotated line meets a full "
        "disk is handed over and delivered at once as unrecorded, outcome_unknown=False, no "
        "unverified note, without the settle window; the late store lands 5 s later and the "
        "tunnel holds a PSK nobody has"
    ),
    "request-after-journal-failure": (
        "a set batch awaiting its intents' fsync sends its request although another batch's "
        "intent write failed meanwhile (the journal is broken): a new request after the "
        "journal failed (its PSKs are durable, so none is lost)"
    ),
    "rerun-skips-settle": (
        "a rerun (resume) regenerates a tunnel whose request was left with an unknown outcome "
        "at once and reports it ok without a read-back; the earlier request's late store lands "
        "4 s later: the edge holds a PSK in no journal (issue 16 #1)"
    ),
    "rerun-drops-doubt": (
        "run 1 leaves a tunnel failed with outcome_unknown (a 500 after the store, then 502s); "
        "the rerun halts (halt_after=2, a deliverer that always fails) before attempting it and "
        "reports it not_attempted with outcome_unknown=False and no PSK: the edge holds a PSK "
        "nobody has and the outcome no longer says so"
    ),
}

FOCUSED: dict[str, Scenario] = {
    "same-second-verified": Scenario(
        seed=1, tunnels=1, script=((0, ("timeout_late", None)),), latency=0.01, late_delay=0.9
    ),
    "unrecorded-uncertain": Scenario(
        seed=1,
        tunnels=1,
        script=((0, ("timeout_late", None)),),
        latency=0.01,
        late_delay=5.0,
        storage_fault="rotated",
    ),
    "request-after-journal-failure": Scenario(
        seed=1,
        tunnels=3,
        method="set",
        batch_size=1,
        concurrency=3,
        storage_fault="enospc",
        storage_fault_at=1,
    ),
    "rerun-skips-settle": Scenario(
        seed=1,
        tunnels=1,
        script=((0, ("timeout_late",) * 3),),
        latency=0.01,
        late_delay=4.0,
        rerun=True,
    ),
    "rerun-drops-doubt": Scenario(
        seed=0,
        tunnels=4,
        concurrency=1,
        batch_size=1,
        deliver="always_fail",
        fault_rate=0.6,
        faults=("5xx_before", "5xx_after"),
        halt_after=2,
        rerun=True,
    ),
}


def _cases() -> list[Any]:
    marks = {
        name: pytest.mark.xfail(strict=True, reason=WHY[name]) if name in KNOWN_DEFECTS else ()
        for name in DEFECTS_FOUND
    }
    return [pytest.param(name, marks=marks[name], id=name) for name in DEFECTS_FOUND]


@pytest.mark.parametrize("defect", _cases())
def test_focused(defect: str) -> None:
    scenario = attrs.evolve(FOCUSED[defect], avoid=KNOWN_DEFECTS - {defect})
    report = simulate(scenario)
    assert report.ok(), explain(report)


#: Where the random scenarios meet a defect often enough to sweep for it in a second or two.
LEANINGS: dict[str, dict[str, Any]] = {
    "rerun-drops-doubt": {"rerun": True, "method": "generate", "halt_after": 2},
}


@pytest.mark.parametrize("defect", _cases())
def test_random_scenarios_that_do_not_avoid_it(defect: str) -> None:
    for seed in range(1500):
        scenario = random_scenario(seed, avoid=KNOWN_DEFECTS - {defect}, **LEANINGS.get(defect, {}))
        report = simulate(scenario)
        assert report.ok(), explain(report)


@pytest.mark.skipif("rerun-skips-settle" in KNOWN_DEFECTS, reason=WHY["rerun-skips-settle"])
def test_crash_points_keep_the_doubt_of_a_request_in_flight() -> None:
    # A crash while a generate is in flight leaves its intent open: the resumed run must treat
    # the tunnel as in doubt (read it back after the settle window), not report it ok at once.
    avoid = KNOWN_DEFECTS - {"rerun-skips-settle"}
    total = simulate(crash_point_scenario("generate", False)).operations
    for after in range(1, total + 1):
        report = simulate(crash_point_scenario("generate", False, after, avoid=avoid))
        assert report.ok(), explain(report)


def test_every_defect_has_its_cases() -> None:
    assert set(FOCUSED) == set(WHY) == set(DEFECTS_FOUND) >= KNOWN_DEFECTS | set(LEANINGS)
