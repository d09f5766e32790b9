"""Every crash point (in the manner of ALICE): a fixed scenario of 8 tunnels (generate, set, each
with and without delivery) crashes after each of its storage operations in turn; a fresh
rotation (``resume=True``) resumes from what storage holds, on a fault-free world, and finishes;
the invariant must hold. Each crash point is tried three ways: the process killed (every write
kept), the machine losing power (only what was fsynced), and the last unsynced write torn.
"""

from __future__ import annotations

from typing import Literal

import pytest

from tests.simulation.test_simulation import explain
from tests.support.sim import crash_point_scenario, simulate

MODES: tuple[Literal["process", "power", "torn"], ...] = ("process", "power", "torn")
CASES = [("generate", False), ("generate", True), ("set", False), ("set", True)]


def crash_points(method: Literal["generate", "set"], deliver: bool) -> int:
    """How many storage operations the scenario makes when nothing crashes."""
    report = simulate(crash_point_scenario(method, deliver))
    assert report.ok(), explain(report)
    return report.operations


@pytest.mark.parametrize(("method", "deliver"), CASES, ids=[f"{m}-{d}" for m, d in CASES])
def test_every_crash_point_resumes_without_losing_a_psk(
    method: Literal["generate", "set"], deliver: bool
) -> None:
    total = crash_points(method, deliver)
    assert total > 30  # the scenario does real work
    failures: list[str] = []
    for mode in MODES:
        for after in range(1, total + 1):
            scenario = crash_point_scenario(method, deliver, after, crash_mode=mode)
            report = simulate(scenario)
            if not report.crashed:
                failures.append(f"crash point {after} ({mode}) never crashed")
            elif not report.ok():
                failures.append(f"crash point {after} ({mode}):\n{explain(report)}")
    assert not failures, f"{len(failures)} of {3 * total} crash points fail:\n" + "\n".join(
        failures[:3]
    )
