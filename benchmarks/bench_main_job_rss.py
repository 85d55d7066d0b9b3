"""Peak RSS and wall time of the README's main job as a user runs it (``agentloop run``), before and after.

Usage: python benchmarks/bench_main_job_rss.py [--repeats 2] [--baseline-rev REV]
       [--variants before,after] [--job main|concurrency] [--out FILE]

Each run is a fresh ``python -m agentloop run text2sql ... --json`` process; its peak
RSS is the child's own ``ru_maxrss`` (``os.wait4``, the number ``/usr/bin/time -v``
prints as "Maximum resident set size"), its wall time includes start-up and model load.

Variants, run interleaved (A B, B A, ...):
  before: the package as of ``--baseline-rev`` (``git archive`` into a temp dir, on PYTHONPATH);
  after:  the working tree.

Jobs:
  main:         ``agentloop run text2sql`` (IAD, 10 questions, 4 tasks in flight);
  concurrency:  ``--graph best_of_n --n 4 --limit 8 --max-tokens 48`` at ``--concurrency 1``
                and ``4`` (the variant names become ``VARIANT@c1`` / ``VARIANT@c4``).

Every child gets OMP_WAIT_POLICY=PASSIVE (on a shared CPU, spinning OpenMP threads
steal the other job's time). The load average around each run is recorded.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MAIN = ["run", "text2sql"]
CONCURRENCY = ["run", "text2sql", "--graph", "best_of_n", "--n", "4", "--limit", "8", "--max-tokens", "48"]


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def export_rev(rev: str, dest: Path) -> Path:
    """The package as of ``rev``, unpacked under ``dest``; returns the dir to put on PYTHONPATH."""
    data = subprocess.run(
        ["git", "archive", rev, "agentloop"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def measure(source: Path, args: list[str], run_dir: Path) -> dict[str, Any]:
    """Run ``agentloop`` from ``source`` once; its wall time, own peak RSS and the report's key numbers."""
    shutil.rmtree(run_dir, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(source), OMP_WAIT_POLICY="PASSIVE")
    cmd = [sys.executable, "-m", "agentloop", *args, "--run-dir", str(run_dir), "--json"]
    load_before = load_average()
    start = time.perf_counter()
    # cwd: ``python -m`` puts the working dir first on sys.path, ahead of PYTHONPATH.
    cwd = run_dir.parent
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}")
    report = json.loads(out)
    imported = subprocess.run(
        [sys.executable, "-c", "import agentloop; print(agentloop.__file__)"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not imported.startswith(str(source)):
        raise SystemExit(f"the run imported {imported}, not the package under {source}")
    return {
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),  # Linux reports KiB
        "load_before": load_before,
        "load_after": load_average(),
        "accuracy": report["metrics"].get("execution_accuracy"),
        "completion_tokens": report["usage"]["completion_tokens"],
        "report_wall_s": report["usage"]["wall_s"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--variants", default="before,after")
    ap.add_argument("--baseline-rev", default="HEAD")
    ap.add_argument("--job", choices=("main", "concurrency"), default="main")
    ap.add_argument(
        "--out", default=None, help="default: benchmarks/results/main_job_rss.json (or _concurrency_rss)"
    )
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="main_job_rss_"))
    sources = {"after": ROOT}
    rev = subprocess.run(
        ["git", "rev-parse", args.baseline_rev], cwd=ROOT, capture_output=True, text=True
    ).stdout
    if "before" in args.variants.split(","):
        sources["before"] = export_rev(args.baseline_rev, tmp / "before")
    runs = [(v, MAIN) for v in args.variants.split(",")]
    if args.job == "concurrency":
        runs = [(f"{v}@c{c}", [*CONCURRENCY, "--concurrency", str(c)]) for v, _ in runs for c in (1, 4)]
    rows: list[dict[str, Any]] = []
    for rep in range(args.repeats):
        for name, cli in runs if rep % 2 == 0 else runs[::-1]:  # A B, B A: neither always first
            row = {"variant": name, **measure(sources[name.split("@")[0]], cli, tmp / f"{name}-{rep}")}
            print(json.dumps(row), flush=True)
            rows.append(row)
    summary: dict[str, Any] = {
        "job": args.job,
        "command": "python -m agentloop " + " ".join(runs[0][1]) + " --run-dir DIR --json",
        "baseline_rev": rev.strip(),
        "cpus": os.cpu_count(),
        "runs": rows,
    }
    for name, _ in runs:
        mine = [r for r in rows if r["variant"] == name]
        summary[name] = {
            "wall_s_median": statistics.median(r["wall_s"] for r in mine),
            "peak_rss_mb_max": max(r["peak_rss_mb"] for r in mine),
            "accuracy": sorted({r["accuracy"] for r in mine}),
        }
    if args.job == "concurrency":
        for v in args.variants.split(","):
            summary[f"{v} c1/c4 wall"] = round(
                summary[f"{v}@c1"]["wall_s_median"] / summary[f"{v}@c4"]["wall_s_median"], 2
            )
    out = Path(
        args.out or f"benchmarks/results/main_job{'' if args.job == 'main' else '_concurrency'}_rss.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
