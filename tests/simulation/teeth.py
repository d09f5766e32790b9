"""The simulation's teeth: plant a bug in a copy of the engine and see the simulation catch it.

``plant(bug, into)`` copies the ``magicwan`` package into ``into`` and applies the bug's textual
patch (each ``old`` text must be found exactly once, so a drifted engine fails loudly instead of
testing nothing). Run the simulation against such a copy in a child process::

    python -m tests.simulation.teeth BUG [--seeds N] [--first]

(with the copy's folder first on ``sys.path``: the test does this in a temporary folder), which
prints one JSON line: the seeds and crash points that caught the bug. By hand, every bug with
its full counts (about ten seconds a bug)::

    python -m tests.simulation.teeth --report
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

#: bug -> (what it does, [(file in magicwan/, old text, new text), ...]), applied in order.
PLANTED: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    "hand-over-before-fsync": (
        "an answered PSK counts as durable once its line is written, before its fsync",
        [
            (
                "rotation/machine.py",
                "    return run, [*effects, Sync()]\n",
                "    return _durable(rules, _with_held_kept_in(run, Where.DURABLE))"
                "  # planted: no fsync\n",
            )
        ],
    ),
    "drop-psk-on-enospc": (
        "a PSK whose line cannot be written (a full disk) is dropped: the tunnel's outcome "
        "comes without it",
        [
            (
                "rotation/machine.py",
                "    return _done(run, _failure(run, OutcomeState.UNRECORDED, event.error, "
                "run.may_hold))\n",
                "    return _done(run, _failure(run, OutcomeState.UNRECORDED, event.error, "
                "None))  # planted\n",
            )
        ],
    ),
    "set-intent-after-request": (
        "a set sends its PSK without writing (and fsyncing) its intent line first",
        [
            (
                "rotation/machine.py",
                "        if not rules.journalled:\n"
                "            return attrs.evolve(run, stage=Stage.READY), []\n",
                "        if True:  # planted: the request first, no intent\n"
                "            return attrs.evolve(run, stage=Stage.READY), []\n",
            )
        ],
    ),
    "release-before-late-store-window": (
        "a tunnel whose answer a retry made uncertain is handed on at once, not read back "
        "after the settle window in which a late store may land",
        [
            (
                "rotation/machine.py",
                "    due = event.now + rules.settle_window if event.uncertain else None\n",
                "    due = None  # planted: no settle window\n",
            )
        ],
    ),
}


def plant(bug: str, into: Path) -> Path:
    """Copy ``magicwan`` into ``into`` with ``bug`` planted; return the copy's folder."""
    import magicwan

    source = Path(magicwan.__file__).parent
    target = into / "magicwan"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    for name, old, new in PLANTED[bug][1]:
        path = target / name
        text = path.read_text()
        found = text.count(old)
        if found != 1:
            raise AssertionError(
                f"{bug}: the text to replace is found {found} times in {name} (the engine "
                f"changed: update PLANTED):\n{old}"
            )
        path.write_text(text.replace(old, new))
    return into


def run_planted(bug: str, *, seeds: int, first: bool) -> dict[str, Any]:
    """Plant ``bug`` in a temporary copy and run the simulation against it in a child."""
    root = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory(prefix="magicwan-teeth-") as tmp:
        plant(bug, Path(tmp))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([tmp, str(root)]))
        argv = [sys.executable, "-m", "tests.simulation.teeth", bug, "--seeds", str(seeds)]
        done = subprocess.run(  # noqa: S603 - our own interpreter and module
            [*argv, *(["--first"] if first else [])],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"the child failed:\n{done.stdout}\n{done.stderr}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        if not str(result["engine"]).startswith(tmp):
            raise AssertionError(f"the child ran {result['engine']}, not the planted copy")
        return result


def _simulate_here(seeds: int, first: bool) -> dict[str, Any]:
    import magicwan
    from tests.support.sim import crash_point_scenario, random_scenario, simulate

    caught_seeds: list[int] = []
    example = ""
    for seed in range(seeds):
        report = simulate(random_scenario(seed))
        if report.violations:
            caught_seeds.append(seed)
            example = example or report.violations[0]
            if first:
                break
    points: list[str] = []
    tried = 0
    for method in ("generate", "set") if not (first and caught_seeds) else ():
        for deliver in (False, True):
            total = simulate(crash_point_scenario(method, deliver)).operations
            for mode in ("process", "power", "torn"):
                for after in range(1, total + 1):
                    tried += 1
                    scenario = crash_point_scenario(method, deliver, after, crash_mode=mode)
                    report = simulate(scenario)
                    if report.violations:
                        points.append(f"{method}{'+deliver' if deliver else ''}/{mode}/{after}")
                        example = example or report.violations[0]
                        if first:
                            break
                if first and points:
                    break
            if first and points:
                break
        if first and points:
            break
    return {
        "engine": magicwan.__file__,
        "seeds_run": seeds if not first or not caught_seeds else caught_seeds[-1] + 1,
        "seeds_caught": len(caught_seeds),
        "first_seed": caught_seeds[0] if caught_seeds else None,
        "crash_points_tried": tried,
        "crash_points_caught": len(points),
        "first_crash_point": points[0] if points else None,
        "example": example,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bug", nargs="?", choices=sorted(PLANTED))
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--first", action="store_true", help="stop at the first catch of each")
    parser.add_argument("--report", action="store_true", help="plant each bug in turn")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    if args.report:
        for bug, (what, _) in PLANTED.items():
            print(bug, "-", what)
            print("   ", json.dumps(run_planted(bug, seeds=args.seeds, first=args.first)))
        return
    if args.bug is None:
        parser.error("name a bug, or --report")
    print(json.dumps(_simulate_here(args.seeds, args.first)))


if __name__ == "__main__":
    main()
