"""Measure ``--executor ray`` against ``local`` on this machine: overhead, start-up, and the throughput model.

Workload: Text2SQL tasks (the shipped Spider subset) through a graph, against a stub backend
that answers ``SELECT 1`` after a real ``asyncio.sleep`` of ``--latency`` seconds per request
(FunctionBackend). Every task is verified (the SQL runs), scored against gold and stored, as
in a real run. The headline: 200 tasks, greedy, 100 ms per request, concurrency 16, local
against Ray with 2 workers (actors), on a local 2-CPU Ray cluster.

Each run's wall time is split at ``on_start`` (the run is open and, with Ray, every worker is
set up): the start-up before it, the tasks after it. The ratio compares the task phases;
Ray's start-up cost (starting the cluster, then the workers) is reported on its own, and
the end-to-end ratio too. The other points check the throughput model in docs/scale.md:
latency 0 gives the per-task CPU cost on a worker, and more tasks in flight show where a
worker's core, not the endpoint, becomes the limit.

    python benchmarks/bench_scale.py                 # writes benchmarks/results/scale.json
    python benchmarks/bench_scale.py --postgres postgresql://USER:PASS@HOST/DB   # + the pair in PostgreSQL
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray

from agentloop.backends import ChatRequest, FunctionBackend
from agentloop.runs.runner import RunSpec, run_suite

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "scale.json"


def answer(request: ChatRequest) -> str:
    return "```sql\nSELECT 1\n```"


async def one_run(
    *, executor: str, tasks: int, latency: float, concurrency: int, workers: int | None, graph: str, n: int,
    store: str | None, root: Path, label: str,
) -> dict[str, Any]:  # fmt: skip
    """One run; its wall time split at on_start (run open, workers set up)."""
    spec = RunSpec(
        graph=graph,
        n=n,
        backend="function",
        limit=tasks,
        concurrency=concurrency,
        max_tokens=32,
        executor=executor,
        workers=workers,
    )
    run_dir = root / label
    marks: dict[str, float] = {}

    def started(*_: object) -> None:
        marks["start"] = time.perf_counter()

    t0 = time.perf_counter()
    summary = await run_suite(
        spec,
        run_dir=run_dir,
        backend=FunctionBackend(answer, latency_s=latency),
        store_url=store,
        on_start=started,
    )
    end = time.perf_counter()
    assert summary.tasks == tasks and summary.errors == 0, summary
    return {
        "startup_s": round(marks["start"] - t0, 3),
        "tasks_s": round(end - marks["start"], 3),
        "wall_s": round(end - t0, 3),
        "tasks_per_s": round(tasks / (end - marks["start"]), 1),
    }


async def measure(args: argparse.Namespace, root: Path, pg: str | None) -> dict[str, Any]:
    # Ray is started here, once, and timed: run_suite then joins it, as it would a cluster.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    t0 = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    cluster_start = time.perf_counter() - t0
    points = [
        # (name, executor, workers, concurrency, latency, graph, n)
        ("local", "local", None, args.concurrency, args.latency, "greedy", 1),
        ("ray", "ray", 2, args.concurrency, args.latency, "greedy", 1),
        ("local_cpu", "local", None, args.concurrency, 0.0, "greedy", 1),
        ("ray1_cpu", "ray", 1, args.concurrency, 0.0, "greedy", 1),
        ("ray2_cpu", "ray", 2, args.concurrency, 0.0, "greedy", 1),
        ("local_c4", "local", None, 4, args.latency, "greedy", 1),
        ("ray2_c4", "ray", 2, 4, args.latency, "greedy", 1),
        ("local_c64", "local", None, 64, args.latency, "greedy", 1),
        ("ray2_c64", "ray", 2, 64, args.latency, "greedy", 1),
        ("local_bon4", "local", None, args.concurrency, args.latency, "best_of_n", 4),
        ("local_bon4_cpu", "local", None, args.concurrency, 0.0, "best_of_n", 4),
        ("ray2_bon4", "ray", 2, args.concurrency, args.latency, "best_of_n", 4),
        ("ray2_bon4_cpu", "ray", 2, args.concurrency, 0.0, "best_of_n", 4),
    ]
    if args.quick:
        points = points[:2]
    if args.postgres:
        points += [
            ("local_pg", "local", None, args.concurrency, args.latency, "greedy", 1),
            ("ray_pg", "ray", 2, args.concurrency, args.latency, "greedy", 1),
        ]
    out: dict[str, Any] = {}
    try:
        for rep in range(args.repeats):
            # Interleaved, so that a change in the machine's load hits every point alike.
            for name, executor, workers, conc, latency, graph, n in points:
                r = await one_run(
                    executor=executor, tasks=args.tasks, latency=latency, concurrency=conc, workers=workers,
                    graph=graph, n=n, store=pg if name.endswith("_pg") else None, root=root, label=f"{name}-{rep}",
                )  # fmt: skip
                point = out.setdefault(
                    name,
                    {"executor": executor, "workers": workers, "concurrency": conc, "latency_s": latency,
                     "graph": graph, "n": n, "runs": []},
                )  # fmt: skip
                point["runs"].append(r)
                print(f"{name:14s} rep {rep}: {r}", flush=True)
    finally:
        ray.shutdown()
    for point in out.values():
        for key in ("startup_s", "tasks_s", "wall_s"):
            point[key] = round(statistics.median(r[key] for r in point["runs"]), 3)
        point["tasks_per_s"] = round(args.tasks / point["tasks_s"], 1)
    return {"cluster_start_s": round(cluster_start, 3), "points": out}


# Each point with a latency, and the latency-0 point that measures its per-task CPU cost.
MODEL_POINTS = {
    "local": "local_cpu",
    "local_c4": "local_cpu",
    "local_c64": "local_cpu",
    "local_bon4": "local_bon4_cpu",
    "ray": "ray2_cpu",
    "ray2_c4": "ray2_cpu",
    "ray2_c64": "ray2_cpu",
    "ray2_bon4": "ray2_bon4_cpu",
}


def mva(tasks_in_flight: int, delay_s: float, cpu_s: float) -> float:
    """Tasks/s of a closed network: ``tasks_in_flight`` tasks, each waiting ``delay_s`` on the
    endpoint (no queue) then ``cpu_s`` on one CPU queue (exact Mean Value Analysis).
    """
    queue = throughput = 0.0
    for n in range(1, tasks_in_flight + 1):
        residence = cpu_s * (1 + queue)
        throughput = n / (delay_s + residence)
        queue = throughput * residence
    return throughput


def model_check(points: dict[str, Any], tasks: int) -> dict[str, Any]:
    """The docs/scale.md model's predictions for the measured points.

    ``s`` (CPU seconds per task, all processes together) comes from the latency-0 point; Ray's
    dispatch latency ``delta`` (a task's extra time in flight: the round trip to a worker) from
    the pair at 4 in flight, where the CPU hardly queues.
    """
    out: dict[str, Any] = {}
    delta = 0.0
    if "local_c4" in points and "ray2_c4" in points:
        c4 = points["local_c4"]["concurrency"]
        delta = max(0.0, (points["ray2_c4"]["tasks_s"] - points["local_c4"]["tasks_s"]) * c4 / tasks)
        out["ray_dispatch_ms"] = round(delta * 1000, 2)
    for name, cpu_point in MODEL_POINTS.items():
        if name not in points or cpu_point not in points:
            continue
        p = points[name]
        cpu_s = 1 / points[cpu_point]["tasks_per_s"]
        delay = p["latency_s"] + (delta if p["executor"] == "ray" else 0.0)
        predicted = mva(p["concurrency"], delay, cpu_s)
        out[name] = {
            "cpu_ms_per_task": round(cpu_s * 1000, 2),
            "bound_little": round(p["concurrency"] / (delay + cpu_s), 1),
            "bound_cpu": round(1 / cpu_s, 1),
            "predicted_tasks_per_s": round(predicted, 1),
            "measured_tasks_per_s": p["tasks_per_s"],
            "measured_over_predicted": round(p["tasks_per_s"] / predicted, 3),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per request")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--cpus", type=int, default=2, help="the local Ray cluster's CPUs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--postgres", default=None, help="also run the headline pair with this PostgreSQL as the run store"
    )
    parser.add_argument("--quick", action="store_true", help="only the headline pair")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--model-only", action="store_true", help="recompute the model's predictions in --out from its points"
    )
    args = parser.parse_args()
    if args.model_only:
        result = json.loads(args.out.read_text())
        result["model"] = model_check(result["points"], args.tasks)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        return
    with tempfile.TemporaryDirectory() as tmp, _schema(args.postgres) as pg:
        result = asyncio.run(measure(args, Path(tmp), pg))
    points = result["points"]
    local, remote = points["local"], points["ray"]
    result["model"] = model_check(points, args.tasks)
    result.update(
        {
            "benchmark": "bench_scale",
            "workload": f"{args.tasks} text2sql tasks, stub backend sleeping {args.latency * 1000:g} ms a request",
            "store": "run.sqlite in the run dir; *_pg points: PostgreSQL on this machine",
            "ratio_tasks": round(remote["tasks_s"] / local["tasks_s"], 3),
            "ratio_tasks_by_concurrency": {
                str(points[a]["concurrency"]): round(points[b]["tasks_s"] / points[a]["tasks_s"], 3)
                for a, b in (("local_c4", "ray2_c4"), ("local", "ray"), ("local_c64", "ray2_c64"))
                if a in points and b in points
            },
            "ratio_end_to_end": round(remote["wall_s"] / local["wall_s"], 3),
            "ray_startup_s": round(result["cluster_start_s"] + remote["startup_s"], 3),
            "goal": "ratio_tasks <= 1.15",
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "ray": ray.__version__,
                "load_avg_after": [round(x, 2) for x in os.getloadavg()],
            },
            "command": "python benchmarks/bench_scale.py"
            + (f" --repeats {args.repeats}" if args.repeats != 3 else "")
            + (" --quick" if args.quick else "")
            + (" --postgres URL" if args.postgres else ""),
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"local {local['tasks_s']} s, ray {remote['tasks_s']} s: ratio {result['ratio_tasks']} "
        f"(end to end {result['ratio_end_to_end']}); ray start-up {result['ray_startup_s']} s "
        f"(cluster {result['cluster_start_s']} s + workers {remote['startup_s']} s) -> {args.out}"
    )


@contextmanager
def _schema(url: str | None) -> Iterator[str | None]:
    """A fresh schema of the PostgreSQL at ``url`` for the runs (dropped after), as a URL."""
    if url is None:
        yield None
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, pool_pre_ping=True)  # PostgreSQL may restart meanwhile (shared machine)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield make_url(url).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(False)
    finally:
        try:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        except Exception as exc:  # the results are written already: say so, and leave the schema
            print(f"could not drop the schema {schema}: {type(exc).__name__}", file=sys.stderr)
        admin.dispose()


if __name__ == "__main__":
    main()
