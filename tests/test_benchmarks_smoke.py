"""The benchmark script must keep working: a tiny run of it (no timing thresholds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "run.py"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the harness reads /proc")
def test_smoke_run_writes_results(tmp_path: Path) -> None:
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, str(RUN), "--smoke", "--quiet", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "results.md").read_text().startswith("# magicwan benchmark results")
    assert {"meta", "generate", "ratios", "imports", "bulk"} <= results.keys()
    assert {"date", "command", "machine", "versions", "n", "repeats"} <= results["meta"].keys()
    clients = {row["client"] for row in results["generate"]}
    assert {"magicwan", "raw"} <= clients
    assert {row["concurrency"] for row in results["generate"]} == {1, 4}
    for row in results["generate"]:
        for key in (
            "wall_s",
            "rps",
            "cpu_per_req_ms",
            "peak_rss_mib",
            "connections",
            "import_s",
            "first_call_s",
            "process_to_first_call_s",
        ):
            assert key in row, (row["client"], key)
    for ratio in results["ratios"]:
        assert {"concurrency", "cpu_vs_raw", "rps_vs_cloudflare"} <= ratio.keys()
    assert {"magicwan", "aiohttp"} <= results["imports"].keys()
    bulk = results["bulk"]
    assert {"rotate+journal", "gather"} == bulk["jobs"].keys()
    for job in bulk["jobs"].values():
        assert job["ok"] == bulk["n"]
        assert {"wall_s", "cpu_per_req_ms", "rss_growth_mib"} <= job.keys()
