"""The simulation's budget: ``--sim-seeds N`` or ``MAGICWAN_SIM_SEEDS=N`` runs more by hand."""

from __future__ import annotations

import os

import attrs
import pytest

#: Scenarios CI explores on every run (about 10 s on the 2-core CI machine).
CI_SEEDS = 3000


@attrs.frozen
class Budget:
    seeds: int
    #: CI replays the same scenarios every run; a budget given by hand draws fresh ones.
    derandomize: bool


@pytest.fixture
def sim_budget(request: pytest.FixtureRequest) -> Budget:
    given = request.config.getoption("--sim-seeds")
    if given is None and os.environ.get("MAGICWAN_SIM_SEEDS"):
        given = int(os.environ["MAGICWAN_SIM_SEEDS"])
    if given is None:
        return Budget(CI_SEEDS, derandomize=True)
    return Budget(given, derandomize=False)
