"""Measure the graphs' overhead per candidate against a stub backend with a fixed latency.

Workload: one round of n candidates (best_of_n), each generated and verified. Paths:

- ``batched``: agentloop's best_of_n; one request with n=k that takes ``latency`` in
  total, as a batching server would.
- ``gather``: agentloop's best_of_n with ``batched=False``; k concurrent n=1 requests,
  each taking ``latency``.
- ``send``: the same work through raw LangGraph ``Send`` fan-out, one node per
  candidate (generate n=1, then verify), reduced into a list.

The ideal wall time is the latency itself. Run:

    python benchmarks/bench_graph_overhead.py --write-docs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import operator
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from agentloop.graphs import Candidate, LoopConfig, Task, Verdict, run_task
from agentloop.types import Backend, ChatRequest, ChatResponse, Completion, Message, Usage

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "graph_overhead.json"
DOCS = ROOT / "docs" / "graphs.md"
START_MARK = "<!-- bench:graph_overhead:start -->"
END_MARK = "<!-- bench:graph_overhead:end -->"

_COMPLETION = Completion(text="SELECT 1", finish_reason="stop", completion_tokens=2)
_VERDICT = Verdict(score=0.5, passed=False, feedback="ok")


class StubBackend(Backend):
    """Sleeps ``latency_s`` per request, whatever its n, and returns n fixed completions."""

    id = "stub"

    def __init__(self, latency_s: float):
        self.latency_s = latency_s

    async def generate(self, request: ChatRequest) -> ChatResponse:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        usage = Usage(prompt_tokens=8, completion_tokens=2 * request.n, latency_s=self.latency_s, llm_calls=1)
        return ChatResponse(completions=[_COMPLETION] * request.n, usage=usage, model="stub")


class StubTask(Task):
    id = "stub"
    _messages = [Message("user", "Return SELECT 1.")]

    def build_messages(self, lessons: Sequence[str] = ()) -> list[Message]:
        return list(self._messages)

    async def verify(self, candidate: Candidate) -> Verdict:
        return _VERDICT


# --- raw Send fan-out, for comparison --------------------------------------------------------


class FanState(TypedDict, total=False):
    n: int
    results: Annotated[list[tuple[str, float]], operator.add]


def send_graph(backend: Backend, task: StubTask) -> Any:
    messages = tuple(task.build_messages())

    async def fan_out(state: FanState) -> list[Send]:
        return [Send("generate", {"n": 1}) for _ in range(state["n"])]

    async def generate(state: FanState) -> FanState:
        response = await backend.generate(ChatRequest(messages=messages, n=1, max_tokens=64))
        text = response.completions[0].text
        cand = Candidate(round=0, index=0, text=text, prompt_hash="", answer=text)
        verdict = await task.verify(cand)
        return {"results": [(text, verdict.score)]}

    g = StateGraph(FanState)
    g.add_node("generate", generate)
    g.add_conditional_edges(START, fan_out, ["generate"])
    g.add_edge("generate", END)
    return g.compile()


# --- measurement ----------------------------------------------------------------------------


async def time_runs(fn: Callable[[], Awaitable[Any]], repeats: int) -> list[float]:
    await fn()  # warm-up: first-call imports and compilation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - start)
    return times


def path_runner(path: str, n: int, latency_s: float) -> Callable[[], Awaitable[Any]]:
    backend, task = StubBackend(latency_s), StubTask()
    if path == "send":
        graph = send_graph(backend, task)

        async def run_send() -> Any:
            out = await graph.ainvoke({"n": n, "results": []}, config={"recursion_limit": 10})
            assert len(out["results"]) == n
            return out

        return run_send
    config = LoopConfig(n=n, max_tokens=64, batched=(path == "batched"), concurrency=n)

    async def run_loop() -> Any:
        result = await run_task(task, backend, "best_of_n", config=config)
        assert result.usage.candidates == n, result.usage
        return result

    return run_loop


async def measure(ns: Sequence[int], latency_s: float, repeats: int) -> list[dict[str, Any]]:
    rows = []
    for n in ns:
        for path in ("batched", "gather", "send"):
            walls = await time_runs(path_runner(path, n, latency_s), repeats)
            zero = await time_runs(path_runner(path, n, 0.0), repeats)
            wall, wall0 = statistics.median(walls), statistics.median(zero)
            rows.append(
                {
                    "path": path,
                    "n": n,
                    "latency_ms": latency_s * 1e3,
                    "wall_ms": round(wall * 1e3, 2),
                    "wall_ms_min": round(min(walls) * 1e3, 2),
                    "ratio": round(wall / latency_s, 4),
                    "ratio_min": round(min(walls) / latency_s, 4),
                    "overhead_per_candidate_us": round((wall - latency_s) / n * 1e6, 1),
                    "zero_latency_wall_ms": round(wall0 * 1e3, 2),
                    "zero_latency_per_candidate_us": round(wall0 / n * 1e6, 1),
                }
            )
            print(_fmt_row(rows[-1]), flush=True)
    return rows


async def sleep_floor(latency_s: float, repeats: int) -> float:
    """What the stub alone takes (asyncio timer slack included), with no framework around it."""
    backend = StubBackend(latency_s)
    request = ChatRequest(messages=(Message("user", "x"),), n=1)
    walls = await time_runs(lambda: backend.generate(request), repeats)
    return statistics.median(walls)


async def langgraph_floor(latency_s: float, repeats: int) -> float:
    """A bare three-node LangGraph graph whose first node awaits the stub: what any design on it pays."""
    backend = StubBackend(latency_s)
    request = ChatRequest(messages=(Message("user", "x"),), n=1)

    async def call(state: FanState) -> FanState:
        await backend.generate(request)
        return {"n": 1}

    async def noop(state: FanState) -> FanState:
        return {"n": 2}

    g = StateGraph(FanState)
    g.add_sequence([("propose", call), ("verify", noop), ("select", noop)])
    g.add_edge(START, "propose")
    graph = g.compile()
    walls = await time_runs(lambda: graph.ainvoke({"n": 0}), repeats)
    return statistics.median(walls)


def _fmt_row(r: dict[str, Any]) -> str:
    return (
        f"| {r['path']} | {r['n']} | {r['wall_ms']:.1f} | {r['ratio']:.3f} | {r['ratio_min']:.3f} | "
        f"{r['overhead_per_candidate_us']:.1f} | {r['zero_latency_per_candidate_us']:.1f} |"
    )


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']}, {report['cpus']} CPUs (load average {report['load_before']:.2f} "
        f"before, {report['load_after']:.2f} after); Python {report['python']}; langgraph {report['langgraph']}. "
        f"Median of {report['repeats']} runs after a warm-up (and the best run); stub latency "
        f"{report['latency_ms']:.0f} ms. The stub alone measures {report['stub_floor_ms']:.1f} ms; "
        f"a bare three-node LangGraph graph around it, {report['langgraph_floor_ms']:.1f} ms.",
        "",
        "| path | n | wall (ms) | wall / latency | best run | overhead per candidate (µs) "
        "| per candidate at 0 ms latency (µs) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [_fmt_row(r) for r in report["rows"]]
    return "\n".join(lines)


def write_docs(table: str) -> None:
    text = DOCS.read_text(encoding="utf-8")
    if START_MARK not in text or END_MARK not in text:
        raise SystemExit(f"{DOCS} lacks the {START_MARK} / {END_MARK} markers")
    head, rest = text.split(START_MARK, 1)
    _, tail = rest.split(END_MARK, 1)
    DOCS.write_text(f"{head}{START_MARK}\n{table}\n{END_MARK}{tail}", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[8, 64, 512])
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--write-docs", action="store_true", help=f"put the table into {DOCS.name}")
    args = parser.parse_args(argv)

    import langgraph.version

    latency_s = args.latency_ms / 1e3
    load_before = os.getloadavg()[0]
    print("| path | n | wall (ms) | wall / latency | best run | overhead/cand (µs) | at 0 ms (µs/cand) |")
    rows = asyncio.run(measure(args.n, latency_s, args.repeats))
    report = {
        "command": "python " + " ".join(["benchmarks/bench_graph_overhead.py", *(argv or sys.argv[1:])]),
        "machine": f"{platform.system()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "python": platform.python_version(),
        "langgraph": langgraph.version.__version__,
        "latency_ms": args.latency_ms,
        "repeats": args.repeats,
        "stub_floor_ms": round(asyncio.run(sleep_floor(latency_s, args.repeats)) * 1e3, 2),
        "langgraph_floor_ms": round(asyncio.run(langgraph_floor(latency_s, args.repeats)) * 1e3, 2),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    if args.write_docs:
        write_docs(markdown(report))
        print(f"updated {DOCS}")


if __name__ == "__main__":
    main()
