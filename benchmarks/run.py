"""Side-by-side benchmark: magicwan vs hand-written aiohttp vs Cloudflare's official SDK.

    python benchmarks/run.py                 # full run (a few minutes), writes benchmarks/results/
    python benchmarks/run.py --bulk          # plus the 10,000-tunnel rotation figure
    python benchmarks/run.py --budget        # plus rotations paced by the API budget
    python benchmarks/run.py --smoke --out /tmp/x   # seconds; what CI runs

See benchmarks/README.md for what every figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _budget

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_worker.py"
EMULATOR = HERE / "_emulator.py"
ALL_CLIENTS = ("magicwan", "raw", "cloudflare")
METRICS = (
    "wall_s",
    "rps",
    "cpu_per_req_ms",
    "peak_rss_mib",
    "connections",
    "import_s",
    "first_call_s",
    "process_to_first_call_s",
    "emulator_cpu_per_req_ms",
)


#: Environment of every child process (set by main): bytecode caches on, in a private dir.
CHILD_ENV: dict[str, str] = dict(os.environ)


def _child_env(pycache: Path) -> dict[str, str]:
    """Bytecode caching on, as after ``pip install`` (which compiles every module).

    With PYTHONDONTWRITEBYTECODE set, a source checkout (magicwan here) would be compiled
    on every import while installed wheels (aiohttp, cloudflare) load their .pyc files: an
    unfair import time. The caches go to a private PYTHONPYCACHEPREFIX, not the repository.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def _installed(module: str, python: str) -> bool:
    probe = subprocess.run(
        [python, "-c", f"import {module}"], capture_output=True, check=False, env=CHILD_ENV
    )
    return probe.returncode == 0


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _proc_cpu(pid: int) -> float:
    """utime + stime of a process in seconds (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Emulator:
    """The emulator in its own process (rate limit off, no faults)."""

    def __init__(self, python: str, tunnels: int, workdir: Path) -> None:
        self.ids_file = workdir / "tunnel_ids.json"
        env = {**CHILD_ENV, "PYTHONPATH": str(HERE.parent)}
        self.proc = subprocess.Popen(
            [python, str(EMULATOR), "--tunnels", str(tunnels), "--ids-file", str(self.ids_file)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.env: dict[str, str] = {}
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if line == "READY":
                break
            key, _, value = line.partition("=")
            self.env[key] = value
        else:
            raise RuntimeError(f"the emulator exited with {self.proc.wait()}")

    def cpu(self) -> float:
        return _proc_cpu(self.proc.pid)

    def worker_args(self) -> list[str]:
        return [
            "--ids-file",
            str(self.ids_file),
            "--base-url",
            self.env["MAGICWAN_BASE_URL"],
            "--admin-url",
            self.env["BENCH_ADMIN_URL"],
            "--account-id",
            self.env["MAGICWAN_ACCOUNT_ID"],
            "--token",
            self.env["CLOUDFLARE_API_TOKEN"],
        ]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _run_worker(
    python: str, emulator: Emulator, client: str, mode: str, n: int, concurrency: int, *extra: str
) -> dict[str, Any]:
    cmd = [
        python,
        str(WORKER),
        client,
        mode,
        "--n",
        str(n),
        "--concurrency",
        str(concurrency),
        *emulator.worker_args(),
        *extra,
    ]
    cpu0 = emulator.cpu()
    cmd += ["--t0", repr(time.time())]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=CHILD_ENV)
    emulator_cpu = emulator.cpu() - cpu0
    LOAD_SAMPLES.append(_load())
    if done.returncode != 0:
        raise RuntimeError(f"worker {client} {mode} c={concurrency} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    # Includes the untimed first call and the process start: an upper bound per request.
    result["emulator_cpu_per_req_ms"] = emulator_cpu / (n + 1) * 1000
    return result


def _median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": len(runs)}
    for key in (*METRICS, "rss_growth_mib", "cpu_per_tunnel_ms"):
        values = [r[key] for r in runs if r.get(key) is not None]
        if values:
            out[key] = statistics.median(values)
    return out


#: What each measured import runs: ``import magicwan`` loads its names on first use, so the
#: client's own cost is that of its first name.
_IMPORT_STATEMENTS = {"magicwan": "from magicwan import MagicWAN"}


def _import_statement(module: str) -> str:
    return _IMPORT_STATEMENTS.get(module, f"import {module}")


def _import_times(python: str, modules: list[str], repeats: int) -> dict[str, Any]:
    snippet = "import time; t = time.perf_counter(); {s}; print(time.perf_counter() - t)"
    samples: dict[str, list[float]] = {m: [] for m in modules}
    for _ in range(repeats):
        for module in modules:  # interleaved
            done = subprocess.run(
                [python, "-c", snippet.format(s=_import_statement(module))],
                capture_output=True,
                text=True,
                check=True,
                env=CHILD_ENV,
            )
            samples[module].append(float(done.stdout))
    return {
        m: {"median_ms": statistics.median(v) * 1000, "min_ms": min(v) * 1000, "samples": len(v)}
        for m, v in samples.items()
    }


def _rotations(items: list[str], turn: int) -> list[str]:
    k = turn % len(items)
    return items[k:] + items[:k]


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    mem = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory": mem,
        "python": platform.python_version(),
    }


def _git_commit() -> str | None:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=HERE.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _paired(
    runs: dict[tuple[str, int], list[dict[str, Any]]], a: str, b: str, c: int, key: str
) -> float | None:
    """Median over repeats of a/b, each pair from the same repeat (adjacent processes)."""
    pairs = [
        x[key] / y[key]
        for x, y in zip(runs.get((a, c), []), runs.get((b, c), []), strict=False)
        if x.get(key) and y.get(key)
    ]
    return statistics.median(pairs) if pairs else None


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        "# magicwan benchmark results",
        "",
        f"- date: {meta['date']}",
        f"- command: `{meta['command']}`",
        f"- machine: {meta['machine']['cpu']}, {meta['machine']['cpus']} CPUs, "
        f"{meta['machine']['memory']}, {meta['machine']['platform']}",
        f"- python {meta['machine']['python']}; "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v),
        f"- git commit: {meta['git_commit']}",
        f"- machine load: {_fmt_load(meta.get('load_before'))} before, "
        f"{_fmt_load(meta.get('load_after'))} after (1-minute load average; CPU pressure: "
        "share of the last 60 s in which some task waited for a CPU); while measuring: "
        f"{_fmt_load_during(meta.get('load_during'))} (CPU pressure over the last 10 s)",
        f"- N = {meta['n']} PSK generations per run over N distinct tunnels; "
        f"{meta['repeats']} repeats, clients interleaved, each run in a fresh process; "
        "figures are medians",
        "- magicwan runs with `rate_limit=None` (its default limiter would pace the run to "
        "Cloudflare's 1,200 requests / 5 min); every client allows 100 connections; "
        "the official SDK runs with its defaults (max_retries=2, httpx keep-alive pool of 20)",
        "",
        "## PSK generation",
        "",
        "| client | concurrency | req/s | wall s | CPU/req ms | peak RSS MiB | connections "
        "| import ms | import+first call ms | process start to first call ms "
        "| emulator CPU/req ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["generate"]:
        lines.append(
            f"| {row['client']} | {row['concurrency']} | {_fmt(row.get('rps'), 0)} "
            f"| {_fmt(row.get('wall_s'), 3)} | {_fmt(row.get('cpu_per_req_ms'), 3)} "
            f"| {_fmt(row.get('peak_rss_mib'), 1)} | {_fmt(row.get('connections'), 0)} "
            f"| {_fmt((row.get('import_s') or 0) * 1000, 1)} "
            f"| {_fmt((row.get('first_call_s') or 0) * 1000, 1)} "
            f"| {_fmt((row.get('process_to_first_call_s') or 0) * 1000, 1)} "
            f"| {_fmt(row.get('emulator_cpu_per_req_ms'), 3)} |"
        )
    lines += [
        "",
        "## Ratios (same run)",
        "",
        "| concurrency | magicwan CPU/req vs raw (target <= 1.30) | paired | "
        "magicwan req/s vs official SDK (target >= 5 at 16, 64) | paired | "
        "magicwan req/s vs raw | official SDK CPU/req vs raw |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["ratios"]:
        lines.append(
            f"| {r['concurrency']} | {_fmt(r['cpu_vs_raw'])} | {_fmt(r['cpu_vs_raw_paired'])} "
            f"| {_fmt(r['rps_vs_cloudflare'])} | {_fmt(r['rps_vs_cloudflare_paired'])} "
            f"| {_fmt(r['rps_vs_raw'])} | {_fmt(r['cloudflare_cpu_vs_raw'])} |"
        )
    imports = results["imports"]
    lines += [
        "",
        "## Import time (fresh processes, median)",
        "",
        "| module | median ms | min ms | samples |",
        "|---|---:|---:|---:|",
    ]
    for module, row in imports.items():
        lines.append(
            f"| `{_import_statement(module)}` | {row['median_ms']:.1f} | {row['min_ms']:.1f} "
            f"| {row['samples']} |"
        )
    if "magicwan" in imports and "aiohttp" in imports:
        ratio = imports["magicwan"]["median_ms"] / imports["aiohttp"]["median_ms"]
        lines += [
            "",
            f"`{_import_statement('magicwan')}` / `import aiohttp` = {ratio:.2f} (target <= 1.30)",
        ]
    bulk = results.get("bulk")
    if bulk:
        lines += [
            "",
            f"## Bulk: {bulk['n']} tunnels at concurrency {bulk['concurrency']} "
            f"({bulk['repeats']} repeats, median)",
            "",
            "| job | wall s | tunnels/s | CPU/tunnel ms | peak RSS growth MiB | ok |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, row in bulk["jobs"].items():
            lines.append(
                f"| {name} | {_fmt(row.get('wall_s'), 2)} | {_fmt(row.get('rps'), 0)} "
                f"| {_fmt(row.get('cpu_per_req_ms'), 3)} | {_fmt(row.get('rss_growth_mib'), 1)} "
                f"| {row.get('ok')} |"
            )
        lines += [
            "",
            f"rotate with journal / gather: wall {_fmt(bulk['wall_ratio'])} (target <= 1.5), "
            f"paired {_fmt(bulk['wall_ratio_paired'])}; journal on {bulk['journal_fs']}",
        ]
    if results.get("budget"):
        lines += _budget.markdown(results["budget"])
    return "\n".join(lines) + "\n"


def _load() -> dict[str, float | None]:
    """The machine's load: other processes share the 2 CPUs and skew wall times."""
    pressure: dict[str, float | None] = {"avg10": None, "avg60": None}
    with contextlib.suppress(OSError, ValueError, IndexError):
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0].split()[1:]
        for item in some:
            key, _, value = item.partition("=")
            if key in pressure:
                pressure[key] = float(value)
    return {
        "loadavg_1m": os.getloadavg()[0],
        "cpu_pressure_avg10": pressure["avg10"],
        "cpu_pressure_avg60": pressure["avg60"],
    }


#: One load sample after every worker (set by _run_worker), summarized in the results.
LOAD_SAMPLES: list[dict[str, float | None]] = []


def _load_during() -> dict[str, Any]:
    summary: dict[str, Any] = {"samples": len(LOAD_SAMPLES)}
    for key in ("loadavg_1m", "cpu_pressure_avg10"):
        values = [v for sample in LOAD_SAMPLES if (v := sample.get(key)) is not None]
        if values:
            summary[key] = {"median": statistics.median(values), "max": max(values)}
    return summary


def _fmt_load(load: dict[str, float | None] | None) -> str:
    if not load:
        return "?"
    pressure = load.get("cpu_pressure_avg60")
    shown = f"load {load['loadavg_1m']:.2f}"
    return shown + (f", CPU pressure {pressure:.0f}%" if pressure is not None else "")


def _fmt_load_during(during: dict[str, Any] | None) -> str:
    if not during or not during.get("samples"):
        return "?"
    parts = []
    if "loadavg_1m" in during:
        load = during["loadavg_1m"]
        parts.append(f"load median {load['median']:.2f}, max {load['max']:.2f}")
    if "cpu_pressure_avg10" in during:
        pressure = during["cpu_pressure_avg10"]
        parts.append(f"CPU pressure median {pressure['median']:.0f}%, max {pressure['max']:.0f}%")
    return "; ".join(parts) + f" ({during['samples']} samples, one after each worker)"


def _fs_type(path: Path) -> str:
    done = subprocess.run(
        ["df", "-T", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    rows = done.stdout.strip().splitlines()
    return rows[-1].split()[1] if len(rows) > 1 else "?"


@contextlib.contextmanager
def _emulator(python: str, tunnels: int) -> Iterator[Emulator]:
    with tempfile.TemporaryDirectory(prefix="magicwan-bench-") as tmp:
        emulator = Emulator(python, tunnels, Path(tmp))
        try:
            yield emulator
        finally:
            emulator.stop()


def _log(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="PSK generations per run (5000)")
    parser.add_argument(
        "--concurrency",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 16, 64],
        help="comma-separated concurrencies (1,16,64)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="runs per client and level (5)")
    parser.add_argument("--clients", default=",".join(ALL_CLIENTS), help="comma-separated")
    parser.add_argument("--import-repeats", type=int, default=30, help="fresh imports (30)")
    parser.add_argument("--bulk", action="store_true", help="also run the bulk rotation figure")
    parser.add_argument("--bulk-n", type=int, default=10_000, help="tunnels to rotate (10000)")
    parser.add_argument("--bulk-concurrency", type=int, default=64, help="(64)")
    parser.add_argument("--bulk-repeats", type=int, default=3, help="(3)")
    parser.add_argument("--no-generate", action="store_true", help="skip the per-call runs")
    parser.add_argument(
        "--budget", action="store_true", help="also run the API budget rotations (~2 min)"
    )
    parser.add_argument("--budget-n", type=int, default=10_000, help="tunnels to rotate (10000)")
    parser.add_argument(
        "--budget-batch-size", type=int, default=None, help="set's batch (rotate's default, 100)"
    )
    parser.add_argument(
        "--budget-concurrency", type=int, default=None, help="(rotate's default, 16)"
    )
    parser.add_argument("--smoke", action="store_true", help="a tiny run of everything (seconds)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="results directory")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the workers")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.n, args.concurrency, args.repeats, args.import_repeats = 20, [1, 4], 1, 2
        args.bulk, args.bulk_n, args.bulk_concurrency, args.bulk_repeats = True, 50, 4, 1
        args.budget, args.budget_n, args.budget_batch_size = True, 2000, 10

    concurrency, batch_size = _budget.rotate_defaults()
    args.budget_concurrency = args.budget_concurrency or concurrency
    args.budget_batch_size = args.budget_batch_size or batch_size

    python = args.python
    pycache = Path(tempfile.mkdtemp(prefix="magicwan-bench-pycache-"))
    CHILD_ENV.clear()
    CHILD_ENV.update(_child_env(pycache))
    try:
        return _main(args, argv, python)
    finally:
        shutil.rmtree(pycache, ignore_errors=True)


def _main(args: argparse.Namespace, argv: list[str] | None, python: str) -> int:
    clients = [c for c in args.clients.split(",") if c]
    module = {"magicwan": "magicwan", "raw": "aiohttp", "cloudflare": "cloudflare"}
    missing = [c for c in clients if not _installed(module[c], python)]
    for client in missing:
        _log(args.quiet, f"skipping {client}: `import {module[client]}` fails")
    clients = [c for c in clients if c not in missing]
    # Warm the bytecode cache (every probe above already compiled what it imported).
    for client in clients:
        _installed(f"{module[client]}, magicwan.emulator.app", python)

    started = dt.datetime.now(dt.UTC)
    budget_plan = (
        _budget.plan(args.budget_n, args.budget_batch_size, args.smoke) if args.budget else []
    )
    tunnels = max(
        args.n + 1,
        args.bulk_n if args.bulk else 0,
        *(s.n + 1 for s in budget_plan if s.run),  # + a spare tunnel for the warm-up call
    )
    results: dict[str, Any] = {
        "meta": {
            "date": started.isoformat(timespec="seconds"),
            "command": shlex.join(["python", "benchmarks/run.py", *(argv or sys.argv[1:])]),
            "machine": _machine(),
            "versions": {
                d: _version(d)
                for d in ("magicwan", "aiohttp", "cloudflare", "httpx", "tenacity", "cattrs")
            },
            "git_commit": _git_commit(),
            "n": args.n,
            "repeats": args.repeats,
            "concurrency": args.concurrency,
            "clients": clients,
            "skipped_clients": missing,
            "magicwan_rate_limit": None,
            "cloudflare_max_retries": 2,
            "load_before": _load(),
        },
        "generate": [],
        "ratios": [],
        "imports": {},
        "raw_runs": {},
    }

    with _emulator(python, tunnels) as emulator:
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
        if not args.no_generate:
            for rep in range(args.repeats):
                for c in args.concurrency:
                    for client in _rotations(clients, rep + c):
                        r = _run_worker(python, emulator, client, "generate", args.n, c)
                        runs.setdefault((client, c), []).append(r)
                        _log(
                            args.quiet,
                            f"[{rep + 1}/{args.repeats}] {client:10} c={c:<3} "
                            f"{r['rps']:8.0f} req/s  {r['cpu_per_req_ms']:.3f} ms CPU/req  "
                            f"{r['connections']} conns",
                        )
        for c in args.concurrency:
            for client in clients:
                if (client, c) in runs:
                    row = {"client": client, "concurrency": c, **_median_of(runs[(client, c)])}
                    results["generate"].append(row)
            med = {row["client"]: row for row in results["generate"] if row["concurrency"] == c}

            def get(client: str, key: str, med: dict[str, Any] = med) -> float | None:
                value: float | None = med.get(client, {}).get(key)
                return value

            if med:
                results["ratios"].append(
                    {
                        "concurrency": c,
                        "cpu_vs_raw": _ratio(
                            get("magicwan", "cpu_per_req_ms"), get("raw", "cpu_per_req_ms")
                        ),
                        "cpu_vs_raw_paired": _paired(runs, "magicwan", "raw", c, "cpu_per_req_ms"),
                        "rps_vs_cloudflare": _ratio(
                            get("magicwan", "rps"), get("cloudflare", "rps")
                        ),
                        "rps_vs_cloudflare_paired": _paired(
                            runs, "magicwan", "cloudflare", c, "rps"
                        ),
                        "rps_vs_raw": _ratio(get("magicwan", "rps"), get("raw", "rps")),
                        "cloudflare_cpu_vs_raw": _ratio(
                            get("cloudflare", "cpu_per_req_ms"), get("raw", "cpu_per_req_ms")
                        ),
                    }
                )
        results["raw_runs"] = {f"{k[0]}@{k[1]}": v for k, v in runs.items()}

        if args.bulk:
            jobs: dict[str, list[dict[str, Any]]] = {"rotate+journal": [], "gather": []}
            with tempfile.TemporaryDirectory(prefix="magicwan-journal-") as tmp:
                fs = _fs_type(Path(tmp))
                for rep in range(args.bulk_repeats):
                    order = ["rotate+journal", "gather"]
                    for job in _rotations(order, rep):
                        extra: list[str] = []
                        mode = "bulk-gather"
                        if job == "rotate+journal":
                            journal = Path(tmp) / f"journal-{rep}.jsonl"
                            extra, mode = ["--journal", str(journal)], "bulk-rotate"
                        r = _run_worker(
                            python,
                            emulator,
                            "magicwan",
                            mode,
                            args.bulk_n,
                            args.bulk_concurrency,
                            *extra,
                        )
                        jobs[job].append(r)
                        _log(
                            args.quiet,
                            f"[bulk {rep + 1}/{args.bulk_repeats}] {job:15} {r['wall_s']:.2f} s "
                            f"{r['cpu_per_req_ms']:.3f} ms CPU/tunnel "
                            f"+{r['rss_growth_mib']:.1f} MiB",
                        )
            medians = {}
            for job, job_runs in jobs.items():
                medians[job] = _median_of(job_runs)
                medians[job]["ok"] = min(r["ok"] for r in job_runs)
            results["bulk"] = {
                "n": args.bulk_n,
                "concurrency": args.bulk_concurrency,
                "repeats": args.bulk_repeats,
                "journal_fs": fs,
                "jobs": medians,
                "wall_ratio": _ratio(
                    medians["rotate+journal"]["wall_s"], medians["gather"]["wall_s"]
                ),
                "wall_ratio_paired": statistics.median(
                    a["wall_s"] / b["wall_s"]
                    for a, b in zip(jobs["rotate+journal"], jobs["gather"], strict=True)
                ),
                "runs": jobs,
            }

        if budget_plan and "magicwan" in clients:

            def budget_worker(mode: str, n: int, concurrency: int, *extra: str) -> dict[str, Any]:
                return _run_worker(python, emulator, "magicwan", mode, n, concurrency, *extra)

            results["budget"] = _budget.run(
                budget_plan,
                budget_worker,
                args.budget_concurrency,
                _fs_type,
                lambda text: _log(args.quiet, text),
            )

    import_modules = ["magicwan", "aiohttp"] + (["cloudflare"] if "cloudflare" in clients else [])
    results["imports"] = _import_times(python, import_modules, args.import_repeats)

    results["meta"]["load_after"] = _load()
    results["meta"]["load_during"] = _load_during()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    markdown = _markdown(results)
    (args.out / "results.md").write_text(markdown)
    _log(args.quiet, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
