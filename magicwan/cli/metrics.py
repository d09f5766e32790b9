"""``--metrics-file PATH``: what a run leaves for Prometheus (a node_exporter textfile
collector), in its text format, through ``prometheus_client``.

The file is replaced atomically (a temporary file in the same directory, fsynced, then
renamed over it), so a collector never reads half a file. It holds no secret: counts,
times, tunnel ids and names; mode 0644 so an exporter running as another user can read it.

From ``psk audit`` (:func:`write_audit_metrics`)::

    magicwan_psk_age_seconds{tunnel_id="...",name="..."}   one sample per tunnel
    magicwan_psk_oldest_age_seconds

From ``psk rotate`` (:func:`write_rotation_metrics`)::

    magicwan_rotation_last_run_timestamp_seconds
    magicwan_rotation_last_success_timestamp_seconds   (kept from the previous file when
                                                        this run did not succeed)
    magicwan_rotation_tunnels{outcome="rotated|failed|skipped|not_attempted|unrecorded|
                                      delivered|undelivered"}
    magicwan_rotation_duration_seconds
    magicwan_rotation_rate_limited_total

A PSK that was never generated has the age ``+Inf``: it is older than any policy.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from magicwan.cli.common import UsageError

__all__ = [
    "LAST_SUCCESS",
    "ROTATION_OUTCOMES",
    "MetricsError",
    "add_metrics_option",
    "check_metrics_path",
    "read_last_success",
    "rotation_metrics",
    "write_audit_metrics",
    "write_metrics",
    "write_rotation_metrics",
]

#: Every label ``magicwan_rotation_tunnels`` has, in this order; one absent from a run's
#: counts is 0, so a query never meets a missing series.
ROTATION_OUTCOMES = (
    "rotated",
    "failed",
    "skipped",
    "not_attempted",
    "unrecorded",
    "delivered",
    "undelivered",
)
LAST_SUCCESS = "magicwan_rotation_last_success_timestamp_seconds"


class MetricsError(Exception):
    """The metrics file could not be written (the message says where and why)."""


def add_metrics_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--metrics-file PATH``."""
    parser.add_argument(
        "--metrics-file",
        metavar="PATH",
        help=(
            "write Prometheus metrics (text format) to PATH at the end, atomically (for "
            "node_exporter's textfile collector); no secret is in it"
        ),
    )


def check_metrics_path(path: str) -> None:
    """Before anything is sent: PATH's directory exists and PATH is not a directory (a
    usage error otherwise), so a run does not end with metrics it cannot write."""
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"--metrics-file {path} is a directory; give a file name in it")
    parent = target.parent
    if not parent.is_dir():
        raise UsageError(f"--metrics-file {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(
            f"--metrics-file {path}: cannot write in {parent} (the file is replaced by a "
            "rename, so its directory must be writable)"
        )


def write_metrics(path: str, families: Iterable[Metric]) -> None:
    """Write ``families`` to ``path`` in Prometheus' text format, atomically (temporary
    file in the same directory, fsync, rename; mode 0644). Raises :class:`MetricsError`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_FixedCollector(list(families)))
    data = generate_latest(registry)
    target = Path(path)
    directory = target.parent
    try:
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise MetricsError(f"cannot write metrics in {directory}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fchmod(file.fileno(), 0o644)
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise MetricsError(f"cannot write metrics to {path}: {exc.strerror}") from None
    with contextlib.suppress(OSError):  # the rename itself survives a power cut
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class _FixedCollector:
    """A collector of metric families computed once."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def _seconds(age: timedelta | None) -> float:
    return math.inf if age is None else age.total_seconds()


def write_audit_metrics(
    path: str, ages: Iterable[tuple[str, str | None, timedelta | None]]
) -> None:
    """``psk audit``'s metrics: ``ages`` is ``(tunnel_id, name, age)`` per tunnel (age None:
    never generated, written as +Inf). The oldest is 0 for an account without tunnels."""
    per_tunnel = GaugeMetricFamily(
        "magicwan_psk_age_seconds",
        "Seconds since the tunnel's PSK was generated (+Inf: never).",
        labels=["tunnel_id", "name"],
    )
    oldest = 0.0
    for tunnel_id, name, age in ages:
        seconds = _seconds(age)
        per_tunnel.add_metric([tunnel_id, name or ""], seconds)
        oldest = max(oldest, seconds)
    write_metrics(
        path,
        [
            per_tunnel,
            GaugeMetricFamily(
                "magicwan_psk_oldest_age_seconds",
                "Age in seconds of the oldest PSK of the account (+Inf: one was never generated).",
                value=oldest,
            ),
        ],
    )


def read_last_success(path: str) -> float | None:
    """The last success time a previous metrics file at ``path`` recorded, or None (no
    file, not ours, or not parsable: the next success writes it again)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS and math.isfinite(sample.value):
                    return float(sample.value)
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return None


def rotation_metrics(
    *,
    counts: Mapping[str, int],
    started_at: datetime,
    finished_at: datetime,
    succeeded: bool,
    rate_limited: int,
    last_success: float | None = None,
) -> list[Metric]:
    """The metric families of one rotation (see :func:`write_rotation_metrics`)."""
    unknown = set(counts) - set(ROTATION_OUTCOMES)
    if unknown:
        raise ValueError(f"unknown rotation outcomes: {sorted(unknown)}")
    for moment in (started_at, finished_at):
        if moment.tzinfo is None:
            raise ValueError("started_at and finished_at must be timezone-aware")
    finished = finished_at.timestamp()
    if succeeded:
        last_success = finished
    families: list[Metric] = [
        GaugeMetricFamily(
            "magicwan_rotation_last_run_timestamp_seconds",
            "When the last rotation run ended (Unix time).",
            value=finished,
        )
    ]
    if last_success is not None:
        families.append(
            GaugeMetricFamily(
                LAST_SUCCESS,
                "When the last rotation run that succeeded ended (Unix time).",
                value=last_success,
            )
        )
    tunnels = GaugeMetricFamily(
        "magicwan_rotation_tunnels",
        "Tunnels of the last rotation run, by outcome.",
        labels=["outcome"],
    )
    for outcome in ROTATION_OUTCOMES:
        tunnels.add_metric([outcome], counts.get(outcome, 0))
    families += [
        tunnels,
        GaugeMetricFamily(
            "magicwan_rotation_duration_seconds",
            "How long the last rotation run took.",
            value=max(0.0, (finished_at - started_at).total_seconds()),
        ),
        GaugeMetricFamily(
            "magicwan_rotation_rate_limited_total",
            "429 answers the last rotation run met.",
            value=rate_limited,
        ),
    ]
    return families


def write_rotation_metrics(
    path: str,
    *,
    counts: Mapping[str, int],
    started_at: datetime,
    finished_at: datetime,
    succeeded: bool,
    rate_limited: int,
) -> None:
    """``psk rotate``'s metrics, written atomically to ``path``.

    ``counts`` maps outcomes (:data:`ROTATION_OUTCOMES`; missing ones are 0, unknown ones
    a ``ValueError``) to tunnels; ``started_at``/``finished_at`` are timezone-aware;
    ``succeeded`` sets ``magicwan_rotation_last_success_timestamp_seconds`` to
    ``finished_at``, else the previous file's value is kept (so an alert on "no success
    in 91 days" survives failing runs). Raises :class:`MetricsError` when it cannot write.
    """
    families = rotation_metrics(
        counts=counts,
        started_at=started_at,
        finished_at=finished_at,
        succeeded=succeeded,
        rate_limited=rate_limited,
        last_success=None if succeeded else read_last_success(path),
    )
    write_metrics(path, families)
