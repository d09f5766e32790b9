"""``magicwan.cli.metrics``: the Prometheus text files of ``psk audit`` and ``psk rotate``,
read back with prometheus_client's own parser."""

from __future__ import annotations

import math
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from magicwan.cli.common import UsageError
from magicwan.cli.metrics import (
    ROTATION_OUTCOMES,
    MetricsError,
    check_metrics_path,
    write_audit_metrics,
    write_rotation_metrics,
)

START = datetime(2026, 12, 5, 3, 17, tzinfo=UTC)
END = START + timedelta(seconds=451.5)
ROTATION_NAMES = {
    "magicwan_rotation_last_run_timestamp_seconds",
    "magicwan_rotation_last_success_timestamp_seconds",
    "magicwan_rotation_tunnels",
    "magicwan_rotation_duration_seconds",
    "magicwan_rotation_rate_limited_total",
}


def samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(name, sorted labels) -> value, parsed by prometheus_client."""
    found = {}
    for family in text_string_to_metric_families(path.read_text()):
        assert family.type == "gauge"
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def names(path: Path) -> set[str]:
    return {name for name, _ in samples(path)}


def test_a_successful_rotation_writes_every_metric_and_every_outcome(tmp_path: Path) -> None:
    path = tmp_path / "magicwan.prom"

    write_rotation_metrics(
        str(path),
        counts={"rotated": 2990, "failed": 7, "skipped": 3, "delivered": 2990},
        started_at=START,
        finished_at=END,
        succeeded=True,
        rate_limited=2,
    )

    found = samples(path)
    assert names(path) == ROTATION_NAMES
    assert found[("magicwan_rotation_last_run_timestamp_seconds", ())] == END.timestamp()
    assert found[("magicwan_rotation_last_success_timestamp_seconds", ())] == END.timestamp()
    assert found[("magicwan_rotation_duration_seconds", ())] == 451.5
    assert found[("magicwan_rotation_rate_limited_total", ())] == 2
    tunnels = {
        dict(labels)["outcome"]: value
        for (name, labels), value in found.items()
        if name == "magicwan_rotation_tunnels"
    }
    assert tunnels == {
        "rotated": 2990,
        "failed": 7,
        "skipped": 3,
        "not_attempted": 0,
        "unrecorded": 0,
        "delivered": 2990,
        "undelivered": 0,
    }
    assert list(tunnels) == list(ROTATION_OUTCOMES)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["magicwan.prom"]  # no temporary left


def test_a_failed_run_keeps_the_last_success_of_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "magicwan.prom"
    later = END + timedelta(days=7)

    write_rotation_metrics(
        str(path), counts={}, started_at=START, finished_at=END, succeeded=False, rate_limited=0
    )
    never = names(path)
    write_rotation_metrics(
        str(path), counts={}, started_at=START, finished_at=END, succeeded=True, rate_limited=0
    )
    write_rotation_metrics(
        str(path),
        counts={"failed": 1},
        started_at=later,
        finished_at=later + timedelta(seconds=1),
        succeeded=False,
        rate_limited=9,
    )

    assert "magicwan_rotation_last_success_timestamp_seconds" not in never
    found = samples(path)
    assert found[("magicwan_rotation_last_success_timestamp_seconds", ())] == END.timestamp()
    assert (
        found[("magicwan_rotation_last_run_timestamp_seconds", ())]
        == (later + timedelta(seconds=1)).timestamp()
    )
    assert found[("magicwan_rotation_tunnels", (("outcome", "failed"),))] == 1


def test_a_previous_file_that_is_not_metrics_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "magicwan.prom"
    path.write_bytes(b"\xff\xfenot metrics {{{\n")

    write_rotation_metrics(
        str(path), counts={}, started_at=START, finished_at=END, succeeded=False, rate_limited=0
    )

    assert names(path) == ROTATION_NAMES - {"magicwan_rotation_last_success_timestamp_seconds"}


def test_rotation_metrics_refuse_an_unknown_outcome_and_naive_times(tmp_path: Path) -> None:
    path = str(tmp_path / "m.prom")
    with pytest.raises(ValueError, match="unknown rotation outcomes"):
        write_rotation_metrics(
            path,
            counts={"rotatd": 1},
            started_at=START,
            finished_at=END,
            succeeded=True,
            rate_limited=0,
        )
    with pytest.raises(ValueError, match="timezone-aware"):
        write_rotation_metrics(
            path,
            counts={},
            started_at=START.replace(tzinfo=None),
            finished_at=END,
            succeeded=True,
            rate_limited=0,
        )
    assert not os.path.exists(path)


def test_audit_metrics_one_sample_per_tunnel_and_the_oldest(tmp_path: Path) -> None:
    path = tmp_path / "audit.prom"
    write_audit_metrics(
        str(path),
        [
            ("a" * 32, "filiale-zürich", timedelta(days=10)),
            ("b" * 32, 'odd "name"\n', timedelta(days=100)),
        ],
    )
    found = samples(path)
    assert found == {
        (
            "magicwan_psk_age_seconds",
            (("name", "filiale-zürich"), ("tunnel_id", "a" * 32)),
        ): 864000.0,
        (
            "magicwan_psk_age_seconds",
            (("name", 'odd "name"\n'), ("tunnel_id", "b" * 32)),
        ): 8640000.0,
        ("magicwan_psk_oldest_age_seconds", ()): 8640000.0,
    }

    write_audit_metrics(str(path), [("c" * 32, None, None)])  # never generated
    never = samples(path)
    assert never[("magicwan_psk_oldest_age_seconds", ())] == math.inf
    assert never[("magicwan_psk_age_seconds", (("name", ""), ("tunnel_id", "c" * 32)))] == (
        math.inf
    )

    write_audit_metrics(str(path), [])  # no tunnels: nothing is old
    assert samples(path) == {("magicwan_psk_oldest_age_seconds", ()): 0.0}


def test_a_metrics_file_that_cannot_be_written_is_a_metrics_error(tmp_path: Path) -> None:
    with pytest.raises(MetricsError, match="cannot write metrics"):
        write_audit_metrics(str(tmp_path / "missing" / "m.prom"), [])


def test_check_metrics_path(tmp_path: Path) -> None:
    check_metrics_path(str(tmp_path / "m.prom"))
    with pytest.raises(UsageError, match="is a directory"):
        check_metrics_path(str(tmp_path))
    with pytest.raises(UsageError, match="does not exist"):
        check_metrics_path(str(tmp_path / "missing" / "m.prom"))
