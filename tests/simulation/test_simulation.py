"""Deterministic simulation of whole rotations: a seeded world (Cloudflare with faults, a journal
storage that fails or tears writes, routers, virtual time), the invariant after every loop step.

A failure prints the scenario and the command that replays it; Hypothesis shrinks it first. See
``tests/support/sim.py`` for the world and the invariant, and ``KNOWN_DEFECTS`` there for the
defects of today's engine that the scenarios steer around (``test_known_defects.py`` runs them).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.simulation.conftest import Budget
from tests.support.sim import (
    KNOWN_DEFECTS,
    SET_FAULTS,
    STORAGE_FAULTS,
    Report,
    Scenario,
    replay_command,
    simulate,
)

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")


def explain(report: Report) -> str:
    lines = [
        f"{len(report.violations)} violation(s) of the invariant:",
        *(f"  - {v}" for v in report.violations),
        f"scenario: {report.scenario!r}",
        f"replay: {replay_command(report.scenario)}",
        "trace (virtual seconds):",
        *(f"  {line}" for line in report.trace[-60:]),
    ]
    return "\n".join(lines)


def check(scenario: Scenario) -> Report:
    report = simulate(scenario)
    assert report.ok(), explain(report)
    return report


scenarios = st.builds(
    Scenario,
    seed=st.integers(0, 2**32 - 1),
    tunnels=st.integers(1, 10),
    method=st.sampled_from(("generate", "set")),
    concurrency=st.integers(1, 4),
    batch_size=st.integers(1, 6),
    max_batch=st.sampled_from((1000, 2, 3)),
    deliver=st.sampled_from((None, "ok", "mixed", "always_fail")),
    fault_rate=st.sampled_from((0.0, 0.1, 0.3, 0.6)),
    faults=st.lists(st.sampled_from(SET_FAULTS), min_size=1, unique=True).map(tuple),
    read_fault_rate=st.sampled_from((0.0, 0.2)),
    storage_fault=st.sampled_from((None, *STORAGE_FAULTS, "rotated")),
    storage_fault_at=st.integers(0, 12),
    halt_after=st.sampled_from((None, 2, 5)),
    crash_after=st.one_of(st.none(), st.integers(1, 90)),
    crash_mode=st.sampled_from(("process", "power", "torn")),
    rerun=st.booleans(),
)


@pytest.mark.timeout(3600)  # a budget given by hand may take long; a livelock fails fast
def test_the_simulation_holds_its_invariant(sim_budget: Budget) -> None:
    @settings(
        max_examples=sim_budget.seeds,
        derandomize=sim_budget.derandomize,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )
    @given(scenario=scenarios)
    def explore(scenario: Scenario) -> None:
        check(scenario)

    explore()


def test_a_scenario_replays_exactly() -> None:
    scenario = Scenario(seed=7, tunnels=6, fault_rate=0.6, deliver="mixed", rerun=True)
    first, second = simulate(scenario), simulate(scenario)
    assert first.trace == second.trace
    assert first.operations == second.operations
    assert [len(run) for run in first.outcomes] == [6, 6]


def test_the_world_does_what_it_is_told() -> None:
    # The faults do happen (a simulation whose faults never fire proves nothing).
    reports = [
        check(Scenario(seed=seed, tunnels=10, fault_rate=0.6, deliver="mixed")) for seed in range(4)
    ]
    text = "\n".join(line for report in reports for line in report.trace)
    for needle in ("APITimeoutError", "InternalServerError", "UnexpectedResponseError", "read "):
        assert needle in text
    assert any(o.state.value == "undelivered" for r in reports for o in r.outcomes[0])


def test_replay() -> None:
    """``MAGICWAN_SIM_REPLAY='Scenario(...)'``: run one scenario and show its trace."""
    text = os.environ.get("MAGICWAN_SIM_REPLAY")
    if not text:
        pytest.skip("set MAGICWAN_SIM_REPLAY to a scenario printed by a failure")
    scenario = eval(text, {"Scenario": Scenario, "frozenset": frozenset})  # noqa: S307 - by hand
    assert isinstance(scenario, Scenario)
    report = simulate(scenario)
    print(explain(report) if report.violations else "\n".join(report.trace))
    assert report.ok(), explain(report)


def test_known_defects_are_named() -> None:
    assert all(isinstance(name, str) and name for name in KNOWN_DEFECTS)


def test_the_window_checks_run_when_the_engine_has_a_window() -> None:
    # Make the engine report a window of 1 while it runs with its real one, and see the
    # check fire.
    from magicwan.rotation import Rotation, rotate

    class Pretending(Rotation[Any]):
        @property
        def window(self) -> int:
            return 1

    def with_window(*args: Any, **kwargs: Any) -> Any:
        rotation = rotate(*args, **kwargs)
        rotation.__class__ = Pretending
        return rotation

    def never_halting(*args: Any, **kwargs: Any) -> Any:
        return rotate(*args, **{**kwargs, "halt_after": None})

    report = simulate(Scenario(seed=5, tunnels=8, deliver="ok"), rotate_fn=with_window)
    assert any("live but undelivered" in v for v in report.violations), report.violations
    failing = Scenario(seed=5, tunnels=8, deliver="always_fail", halt_after=2)
    report = simulate(failing, rotate_fn=never_halting)
    assert any("tunnels broken, halt_after=2" in v for v in report.violations), report.violations
