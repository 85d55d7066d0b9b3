"""Measure what OpenTelemetry tracing costs per candidate, on the graph-overhead benchmark's workload.

The workload is bench_graph_overhead.py's: one best_of_n round of n candidates against a stub
backend that answers at once (0 ms latency), so the time is all framework. Three settings,
interleaved so that machine load hits them alike:

- ``off``: tracing off (the default): the hooks are one check of a module global each;
- ``on``: tracing on with the SDK's BatchSpanProcessor and an exporter that drops the spans,
  the backend wrapped in TracingBackend as ``agentloop run --otel`` does;
- ``on+content``: the same, recording prompt and completion text.

The cost per candidate is the difference from ``off``, divided by n. Run:

    python benchmarks/bench_tracing.py --write-docs
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from agentloop import tracing
from agentloop.graphs import LoopConfig, run_task

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "tracing_overhead.json"
DOCS = ROOT / "docs" / "tracing.md"
START_MARK = "<!-- bench:tracing:start -->"
END_MARK = "<!-- bench:tracing:end -->"


def _graph_bench() -> Any:
    spec = importlib.util.spec_from_file_location(
        "bench_graph_overhead", ROOT / "benchmarks" / "bench_graph_overhead.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class DropExporter(SpanExporter):
    """Counts the spans and drops them: the cost measured is agentloop's and the SDK's, not a network's."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


async def one_setting(setting: str, n: int, repeats: int, batched: bool) -> list[float]:
    bench = _graph_bench()
    backend: Any = bench.StubBackend(0.0)
    exporter = DropExporter()
    if setting != "off":
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=100_000))
        tracing.configure(provider=provider, content=setting == "on+content")
        backend = tracing.TracingBackend(backend)
    task = bench.StubTask()
    config = LoopConfig(n=n, max_tokens=64, batched=batched, concurrency=n)
    try:
        await run_task(task, backend, "best_of_n", config=config)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            with tracing.span("invoke_agent best_of_n"):  # the task span the runner adds
                result = await run_task(task, backend, "best_of_n", config=config)
            times.append(time.perf_counter() - start)
            assert result.usage.candidates == n
    finally:
        tracing.disable()
    return times


async def measure(ns: Sequence[int], repeats: int, rotations: int) -> list[dict[str, Any]]:
    rows = []
    for n in ns:
        for batched in (True, False):
            walls: dict[str, list[float]] = {"off": [], "on": [], "on+content": []}
            for _ in range(rotations):  # interleaved: load changes hit every setting alike
                for setting in walls:
                    walls[setting] += await one_setting(setting, n, repeats, batched)
            off = statistics.median(walls["off"])
            row: dict[str, Any] = {"path": "batched" if batched else "gather", "n": n}
            for setting, ws in walls.items():
                med = statistics.median(ws)
                row[f"{setting}_per_candidate_us"] = round(med / n * 1e6, 1)
                if setting != "off":
                    row[f"{setting}_overhead_per_candidate_us"] = round((med - off) / n * 1e6, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']}, {report['cpus']} CPUs (load average {report['load_before']:.2f} "
        f"before, {report['load_after']:.2f} after); Python {report['python']}; opentelemetry-sdk "
        f"{report['otel']}. Medians of {report['samples']} runs per setting, interleaved.",
        "",
        "| path | n | off (µs / candidate) | on | on + content | tracing cost (µs / candidate) "
        "| with content |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['path']} | {r['n']} | {r['off_per_candidate_us']:.1f} | {r['on_per_candidate_us']:.1f} | "
            f"{r['on+content_per_candidate_us']:.1f} | {r['on_overhead_per_candidate_us']:+.1f} | "
            f"{r['on+content_overhead_per_candidate_us']:+.1f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rotations", type=int, default=3)
    parser.add_argument("--write-docs", action="store_true", help=f"put the table into {DOCS.name}")
    args = parser.parse_args(argv)
    from opentelemetry.sdk.version import __version__ as otel_version

    load_before = os.getloadavg()[0]
    rows = asyncio.run(measure(args.n, args.repeats, args.rotations))
    report = {
        "command": "python " + " ".join(["benchmarks/bench_tracing.py", *(argv or sys.argv[1:])]),
        "machine": f"{platform.system()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "python": platform.python_version(),
        "otel": otel_version,
        "samples": args.repeats * args.rotations,
        "rows": rows,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")
    if args.write_docs:
        text = DOCS.read_text(encoding="utf-8")
        head, rest = text.split(START_MARK, 1)
        _, tail = rest.split(END_MARK, 1)
        DOCS.write_text(f"{head}{START_MARK}\n{markdown(report)}\n{END_MARK}{tail}", encoding="utf-8")
        print(f"updated {DOCS}")


if __name__ == "__main__":
    main()
