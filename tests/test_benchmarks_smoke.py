"""The benchmark script must keep working: a tiny run of it (no timing thresholds).

One smoke run serves every test here. The official SDK (``cloudflare``) is measured only when it
is installed: it lives in the ``bench`` extra (CI installs it); without it, its test is skipped.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "run.py"

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the harness reads /proc"
)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The output directory and ``results.json`` of one ``run.py --smoke``."""
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, str(RUN), "--smoke", "--quiet", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    return out, results


def test_smoke_run_writes_results(smoke: tuple[Path, dict[str, Any]]) -> None:
    out, results = smoke
    assert (out / "results.md").read_text().startswith("# magicwan benchmark results")
    assert {"meta", "generate", "ratios", "imports", "bulk", "budget"} <= results.keys()
    meta_keys = {"date", "command", "machine", "versions", "git_commit", "n", "repeats"}
    assert meta_keys | {"load_before", "load_after", "load_during"} <= results["meta"].keys()
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


def test_smoke_run_measures_the_official_sdk(smoke: tuple[Path, dict[str, Any]]) -> None:
    pytest.importorskip(
        "cloudflare",
        reason="the official SDK is not installed: it is in the bench extra "
        "(pip install -e '.[test,bench]')",
    )
    _, results = smoke
    rows = [row for row in results["generate"] if row["client"] == "cloudflare"]
    assert {row["concurrency"] for row in rows} == {1, 4}
    assert all(row["rps"] > 0 for row in rows)
    assert "cloudflare" in results["imports"]
    for ratio in results["ratios"]:
        assert ratio["rps_vs_cloudflare"] > 0


def test_smoke_run_measures_the_api_budget(smoke: tuple[Path, dict[str, Any]]) -> None:
    out, results = smoke
    budget = results["budget"]
    assert {"headroom", "concurrency", "journal_fs", "formula", "scenarios"} <= budget.keys()
    scenarios = budget["scenarios"]
    # Cloudflare's budget with the client's default limiter: set measured, generate's bound only.
    at_cloudflare = {(r["method"], r["run"]) for r in scenarios if r["client_default_limiter"]}
    assert at_cloudflare == {("set", True), ("generate", False)}
    # A scaled-down budget: both methods measured in the same run.
    scaled = {r["method"] for r in scenarios if r["run"] and not r["client_default_limiter"]}
    assert scaled == {"generate", "set"}
    for row in scenarios:
        assert {"budget", "method", "n", "requests_expected", "bound_s", "run"} <= row.keys()
        if not row["run"]:
            continue
        for key in (
            "wall_s",
            "wall_over_bound",
            "requests_sent",
            "status_429",
            "by_status",
            "rss_growth_mib",
            "journal_bytes",
        ):
            assert key in row, (row["budget"], row["method"], key)
        assert row["ok"] == row["n"]
        assert row["journal_bytes"] > 0
    speedup = budget["set_vs_generate_at_cloudflare_budget"]
    assert {"set_wall_s", "generate_bound_s", "generate_bound_over_set_wall"} <= speedup.keys()
    assert "## API budget" in (out / "results.md").read_text()
