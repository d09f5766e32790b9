"""Outside review: the rotation metrics of a policy job whose run has nothing to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import cli_emulator, magicwan

pytestmark = pytest.mark.asyncio


async def test_a_policy_run_with_nothing_old_enough_still_writes_its_metrics(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A weekly policy job: `magicwan psk rotate --older-than 90d --journal-dir DIR
    # --metrics-file rotation.prom`. Most weeks no PSK is old enough: the command says
    # "nothing to rotate" and exits 0 before the rotation, so run_rotation() (where the
    # metrics are written) never runs: no magicwan_rotation_last_run_timestamp_seconds,
    # no last_success. The README's alert `time() -
    # magicwan_rotation_last_success_timestamp_seconds > 91 * 86400` then fires on a
    # healthy job (and a job that silently stopped running looks the same as one that
    # ran and found nothing). Expected: a run that succeeds with nothing to do still
    # writes its metrics (last run, last success, zero counts).
    metrics = tmp_path / "rotation.prom"
    policy = [
        "psk",
        "rotate",
        "--older-than",
        "30d",
        "--journal-dir",
        str(tmp_path / "journals"),
        "--metrics-file",
        str(metrics),
        "-q",
    ]
    async with cli_emulator(monkeypatch, tunnels=2) as (_, _answers):
        assert (await magicwan(*policy)).code == 0  # every PSK was never generated: old
        assert metrics.exists()
        metrics.unlink()  # as if this were a fresh machine, or to see the next run's file
        quiet = await magicwan(*policy)  # the next week: every PSK is fresh
    assert quiet.code == 0
    assert metrics.exists(), f"a successful run wrote no metrics: {quiet.err!r}"
    assert "magicwan_rotation_last_success_timestamp_seconds" in metrics.read_text()
