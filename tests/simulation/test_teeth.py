"""The simulation catches bugs planted on purpose in a copy of today's engine (see ``teeth.py``;
``python -m tests.simulation.teeth --report`` prints how many seeds and crash points catch each)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.simulation.teeth import PLANTED, plant, run_planted


@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_the_simulation_catches_a_planted_bug(bug: str) -> None:
    result = run_planted(bug, seeds=1000, first=True)
    assert result["seeds_caught"] or result["crash_points_caught"], result


def test_a_patch_whose_text_drifted_fails_loudly(tmp_path: Path) -> None:
    PLANTED["drifted"] = ("nothing", [("rotation/machine.py", "text no engine has\n", "")])
    try:
        with pytest.raises(AssertionError, match="found 0 times"):
            plant("drifted", tmp_path)
    finally:
        del PLANTED["drifted"]
