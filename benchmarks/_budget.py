"""The API budget benchmark (issue 11), run by ``run.py --budget``.

Rotations with the client's limiter on, against the benchmark emulator enforcing the same
budget with its per-user token bucket, so a client that paces wrong gets real 429s (counted
at the emulator, ``state.requests.by_status``). Each scenario is one fresh worker process
(``_worker.py magicwan budget``) with a fresh journal on the local disk.

The bound of a rotation is the limiter's own arithmetic: the limiter is a GCRA that starts
full and keeps ``headroom`` requests of the budget unused (``RateLimiter.headroom``: at
least one request, and at least 1% of the window's time up to one second: 4 requests at
Cloudflare's budget), so it sends a burst of ``limit - headroom`` requests at once and then
one every ``period / limit`` seconds:

    bound(requests) = max(0, requests - (limit - headroom)) * period / limit

the earliest moment the last request may leave. ``method="generate"`` sends one request per
tunnel, ``method="set"`` one per batch of ``batch_size``. :func:`bound_seconds` is checked
against :class:`magicwan.RateLimiter` itself (:func:`simulated_bound`, a fake clock) before
anything runs, so the formula cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "Scenario",
    "bound_seconds",
    "headroom",
    "markdown",
    "plan",
    "rotate_defaults",
    "run",
    "simulated_bound",
]

#: ``_run_worker``'s shape: (mode, n, concurrency, *extra arguments) -> the worker's JSON.
RunWorker = Callable[..., dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One rotation: a budget, a method, how many tunnels, and whether to run it."""

    limit: int
    period: float
    method: str
    n: int
    batch_size: int
    #: The client's default limiter (Cloudflare's budget), not ``rate_limit=`` given.
    default: bool = False
    #: False: only the bound is computed (the run would take too long).
    run: bool = True
    note: str = ""

    @property
    def budget(self) -> str:
        text = f"{self.limit}/{self.period:g}s"
        return f"{text} (Cloudflare's, client default)" if self.default else text

    @property
    def requests(self) -> int:
        """Requests the rotation needs when nothing fails: its share of the budget."""
        return self.n if self.method == "generate" else math.ceil(self.n / self.batch_size)


def rotate_defaults() -> tuple[int, int]:
    """``rotate()``'s default concurrency and set batch size."""
    from magicwan.rotation import DEFAULT_BATCH_SIZE, DEFAULT_CONCURRENCY

    return DEFAULT_CONCURRENCY, DEFAULT_BATCH_SIZE


def headroom(limit: int, period: float) -> float:
    """The limiter's margin, in requests, for this budget (``RateLimiter.headroom``:
    ``MagicWAN`` keeps the default)."""
    from magicwan.ratelimit import RateLimiter

    return RateLimiter(limit, period).headroom


def bound_seconds(requests: int, limit: int, period: float, headroom: float = 1.0) -> float:
    """The earliest time after the first request at which the last one may leave."""
    return max(0.0, requests - (limit - headroom)) * period / limit


def simulated_bound(requests: int, limit: int, period: float) -> float:
    """The same bound from :class:`magicwan.RateLimiter` itself: ``requests`` reservations
    at time 0 on a fake clock; the last one's wait."""
    from magicwan.ratelimit import RateLimiter

    async def never(_: float) -> None:  # reserve() never sleeps
        raise AssertionError

    limiter = RateLimiter(limit, period, clock=lambda: 0.0, sleep=never)
    wait = 0.0
    for _ in range(requests):
        wait = limiter.reserve()
    return wait


def plan(n: int, batch_size: int, smoke: bool) -> list[Scenario]:
    """The scenarios: Cloudflare's budget, then scaled-down ones (same run)."""
    from magicwan.ratelimit import CLOUDFLARE_BUDGET

    limit, period = CLOUDFLARE_BUDGET
    if smoke:  # seconds: the same shapes, small (set's 2,000 tunnels: 200 batches of 10)
        return [
            Scenario(limit, period, "set", n, batch_size, default=True),
            Scenario(limit, period, "generate", n, batch_size, default=True, run=False),
            Scenario(20, 1.0, "generate", 30, batch_size),
            Scenario(20, 1.0, "set", 30 * batch_size, batch_size),
        ]
    return [
        Scenario(limit, period, "set", n, batch_size, default=True),
        Scenario(
            limit,
            period,
            "generate",
            n,
            batch_size,
            default=True,
            run=False,
            note="not run: it would take the bound, ~37 min",
        ),
        # Generate is budget-bound here (10k at 400 req/s), set is one burst.
        Scenario(1200, 3.0, "generate", n, batch_size),
        Scenario(1200, 3.0, "set", n, batch_size),
        # A 25 ms interval: generate paced far beyond its own speed; set still one burst.
        Scenario(120, 3.0, "generate", n // 10, batch_size),
        Scenario(120, 3.0, "set", n, batch_size),
        # A budget smaller than set's batch count: both methods paced, same request count.
        Scenario(20, 3.0, "generate", n // batch_size, batch_size),
        Scenario(20, 3.0, "set", n, batch_size),
    ]


def run(
    scenarios: list[Scenario],
    run_worker: RunWorker,
    concurrency: int,
    fs_type: Callable[[Path], str],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Run every scenario (each in a fresh worker) and return the results section."""
    for s in scenarios:  # the formula must be the limiter's own
        simulated = simulated_bound(s.requests, s.limit, s.period)
        computed = bound_seconds(s.requests, s.limit, s.period, headroom(s.limit, s.period))
        if not math.isclose(simulated, computed, rel_tol=1e-9, abs_tol=1e-9):
            raise RuntimeError(f"bound formula {computed} != RateLimiter's {simulated} for {s}")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="magicwan-budget-") as tmp:
        fs = fs_type(Path(tmp))
        for i, s in enumerate(scenarios):
            room = headroom(s.limit, s.period)
            bound = bound_seconds(s.requests, s.limit, s.period, room)
            row: dict[str, Any] = {
                "budget": s.budget,
                "limit": s.limit,
                "period_s": s.period,
                "client_default_limiter": s.default,
                "method": s.method,
                "n": s.n,
                "batch_size": s.batch_size if s.method == "set" else None,
                "concurrency": concurrency,
                "requests_expected": s.requests,
                "headroom": room,
                "bound_s": bound,
                "run": s.run,
                "note": s.note,
            }
            if s.run:
                journal = Path(tmp) / f"journal-{i}.jsonl"
                budget = "default" if s.default else f"{s.limit}/{s.period!r}"
                r = run_worker(
                    "budget",
                    s.n,
                    concurrency,
                    "--method",
                    s.method,
                    "--budget",
                    budget,
                    "--batch-size",
                    str(s.batch_size),
                    "--journal",
                    str(journal),
                )
                journal.unlink(missing_ok=True)
                row.update(
                    {
                        "wall_s": r["wall_s"],
                        "wall_over_bound": r["wall_s"] / bound if bound else None,
                        "cpu_s": r["cpu_s"],
                        "cpu_per_tunnel_ms": r["cpu_per_req_ms"],
                        "rss_growth_mib": r["rss_growth_mib"],
                        "peak_rss_mib": r["peak_rss_mib"],
                        "journal_bytes": r["journal_bytes"],
                        "journal_lines": r["journal_lines"],
                        "ok": r["ok"],
                        "retried_tunnels": r["retried_tunnels"],
                        "requests_sent": r["requests_sent"],
                        "status_429": r["status_429"],
                        "by_status": r["by_status"],
                        "by_route": r["by_route"],
                        "dropped": r["dropped"],
                        "connections": r["connections"],
                    }
                )
                ratio = row["wall_over_bound"]
                log(
                    f"[budget {s.budget}] {s.method:8} n={s.n:<6} {r['wall_s']:8.2f} s "
                    f"(bound {bound:.2f} s{f', x{ratio:.3f}' if ratio else ''}) "
                    f"{r['requests_sent']} requests, {r['status_429']} x 429"
                )
            rows.append(row)
    return {
        "headroom": "per scenario: RateLimiter(limit, period).headroom",
        "concurrency": concurrency,
        "journal_fs": fs,
        "formula": "bound = max(0, requests - (limit - headroom)) * period / limit",
        "scenarios": rows,
        "set_vs_generate_at_cloudflare_budget": _speedup(rows),
    }


def _speedup(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """10k set measured vs 10k generate's bound, both at Cloudflare's budget."""
    sets = [r for r in rows if r["client_default_limiter"] and r["method"] == "set" and r["run"]]
    gens = [r for r in rows if r["client_default_limiter"] and r["method"] == "generate"]
    if not sets or not gens or sets[0]["n"] != gens[0]["n"]:
        return None
    return {
        "n": sets[0]["n"],
        "set_wall_s": sets[0]["wall_s"],
        "generate_bound_s": gens[0]["bound_s"],
        "generate_bound_over_set_wall": gens[0]["bound_s"] / sets[0]["wall_s"],
    }


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(section: dict[str, Any]) -> list[str]:
    """The results.md lines of the section."""
    lines = [
        "",
        "## API budget: rotations paced by the client's limiter (issue 11)",
        "",
        "The emulator enforces the same budget (its per-user token bucket, full at the start); "
        "429s and requests are counted by the emulator. One fresh process per row, a fresh "
        f"journal on {section['journal_fs']} (every PSK fsynced), rotate's default "
        f"concurrency ({section['concurrency']}). "
        f"Bound: `{section['formula']}` (headroom: the limiter's, per budget): when the last "
        "request may leave at the earliest; the wall time adds its answer and the rest of "
        "the rotation.",
        "",
        "| budget | method | tunnels | requests needed | requests sent | 429s | bound s "
        "| wall s | wall / bound | CPU s | peak RSS growth MiB | journal KiB | ok |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in section["scenarios"]:
        method = r["method"] + (f" (batch {r['batch_size']})" if r["batch_size"] else "")
        if not r["run"]:
            lines.append(
                f"| {r['budget']} | {method} | {r['n']} | {r['requests_expected']} | - | - "
                f"| {_fmt(r['bound_s'])} | {r['note'] or 'not run'} | - | - | - | - | - |"
            )
            continue
        ratio = _fmt(r["wall_over_bound"], 3) if r["wall_over_bound"] else "(in the burst)"
        lines.append(
            f"| {r['budget']} | {method} | {r['n']} | {r['requests_expected']} "
            f"| {r['requests_sent']} | {r['status_429']} | {_fmt(r['bound_s'])} "
            f"| {_fmt(r['wall_s'])} | {ratio} | {_fmt(r['cpu_s'])} "
            f"| {_fmt(r['rss_growth_mib'], 1)} | {_fmt(r['journal_bytes'] / 1024, 0)} "
            f"| {r['ok']} |"
        )
    speedup = section.get("set_vs_generate_at_cloudflare_budget")
    if speedup:
        lines += [
            "",
            f'At Cloudflare\'s budget, {speedup["n"]} tunnels: `method="set"` took '
            f'{speedup["set_wall_s"]:.2f} s; `method="generate"` cannot take less than its '
            f"bound, {speedup['generate_bound_s']:.2f} s ({speedup['generate_bound_s'] / 60:.1f} "
            "min; computed, not run): set is "
            f"{speedup['generate_bound_over_set_wall']:.0f}x faster.",
        ]
    return lines
