"""Concept-memory ablation on the shipped Spider subset with the embedded model.

A slice of ``2 * HALF`` questions from ``--offset``:

1. ``write``: the first half, memory on and written after each task that passes the
   (gold-free) ``exec`` verifier (``--memory-update task``; it reads too, as a run would).
2. ``on``: the second half, reading that memory (``--memory-update off``, so every task
   sees the same memory and the comparison measures reading only).
3. ``off``: the second half without memory. Same graph, budget and seed as ``on``.
4. ``report``: execution accuracy and tokens per task of ``on`` and ``off``, the paired
   difference ``on - off`` with a 95% bootstrap interval (``report.paired_difference``,
   what ``agentloop report --compare`` prints), concepts written and retrieved, and,
   using the gold SQL for the analysis only, how often a concept was written from a task
   whose final SQL was wrong: the verifier passed wrong SQL, so memory learned a wrong lesson.

Each phase is its own invocation, so a shared machine can take a lock per phase::

    flock /tmp/agentloop-cpu.lock python benchmarks/ablation_memory.py write
    flock /tmp/agentloop-cpu.lock python benchmarks/ablation_memory.py on
    flock /tmp/agentloop-cpu.lock python benchmarks/ablation_memory.py off
    python benchmarks/ablation_memory.py report     # no model; writes ablation.json

``all`` runs the four in order. Runs go through :func:`run_suite` and the run store
(``OUT/write``, ``OUT/on``, ``OUT/off``); the memory is ``OUT/memory.sqlite``. Every
phase must be given the same options; ``report`` checks that the runs agree.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import platform
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

from agentloop.backends import BackendOptions, ChatRequest, ChatResponse, Usage, resolve_backend
from agentloop.memory import SQLMemoryStore
from agentloop.records.report import RunReport, paired_difference
from agentloop.records.store import RunStore
from agentloop.runs.runner import RunSpec, memory_run_id, run_suite
from agentloop.suites import Text2SQLSuite
from agentloop.types import Backend

PHASES = ("write", "on", "off")
ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / "results" / "ablation_memory"
NAMESPACE = "ablation"
# The prompt templates a Text2SQL run may render; their hashes say which prompt a run used.
PROMPT_FILES = (
    "text2sql_fewshot.txt",
    "text2sql_fewshot_feedback.txt",
    "text2sql_fewshot_worst.txt",
    "text2sql_system.txt",
    "text2sql_user.txt",
    "graphs_lessons.txt",
    "memory_abstract.txt",
)


class MemoryCallMeter(Backend):
    """Passes every request through and adds up the ones memory makes (abstraction, selection):
    the run store counts task tokens only.
    """

    def __init__(self, inner: Backend):
        self.inner = inner
        self.id = inner.id
        self.usage = Usage()
        self.calls = 0

    async def generate(self, request: ChatRequest) -> ChatResponse:
        response = await self.inner.generate(request)
        if request.raw_prompt is not None:
            text = request.raw_prompt
        else:
            text = request.messages[-1].content if request.messages else ""
        # The JSON and completion abstraction prompts, and the LLM selection prompt.
        if any(
            m in text for m in ("memory of lessons", "Lessons learned from solved tasks", "numbered lessons")
        ):
            self.calls += 1
            self.usage = self.usage + response.usage
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def spec_for(phase: str, args: argparse.Namespace) -> RunSpec:
    offset = args.offset if phase == "write" else args.offset + args.half
    memory: dict[str, Any] = {}
    if phase != "off":
        memory = {
            "memory": str(args.out / "memory.sqlite"),
            "memory_update": "task" if phase == "write" else "off",
            "memory_select": args.select,
            "memory_k": args.k,
            "memory_namespace": NAMESPACE,
        }
    return RunSpec(
        suite="text2sql",
        graph=args.graph,
        backend=args.backend,
        verifier="exec",
        offset=offset,
        limit=args.half,
        n=args.n,
        rounds=args.rounds,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        seed=0,
        # One task at a time: in the write phase, what a task reads depends on what finished
        # before it, and the CPU model gains nothing from more.
        concurrency=1,
        **memory,
    )


def prompt_hashes() -> dict[str, str]:
    out = {}
    for name in PROMPT_FILES:
        f = resources.files("agentloop.prompts") / name
        if f.is_file():
            out[name] = hashlib.sha256(f.read_bytes()).hexdigest()[:12]
    return out


async def run_phase(phase: str, args: argparse.Namespace) -> dict[str, Any]:
    spec = spec_for(phase, args)
    run_dir = args.out / phase
    if run_dir.exists() and not args.resume:
        raise SystemExit(f"{run_dir} exists: pass --resume to finish it, or remove it to start over")
    if phase == "write" and not args.resume and (args.out / "memory.sqlite").exists():
        raise SystemExit(f"{args.out / 'memory.sqlite'} exists from an earlier ablation: remove it first")
    if phase == "on" and not (args.out / "memory.sqlite").exists():
        raise SystemExit("run the write phase first: there is no memory to read")
    backend = MemoryCallMeter(resolve_backend(args.backend, options=BackendOptions(concurrency=1)))
    t0 = time.perf_counter()
    try:
        summary = await run_suite(spec, run_dir=run_dir, backend=backend, resume=args.resume, progress=True)
    finally:
        await backend.aclose()
    record = {
        "phase": phase,
        "spec": spec.to_dict(),
        "prompt_format": Text2SQLSuite.prompt_format(spec),
        "prompt_sha256": prompt_hashes(),
        "summary": summary.to_json(),
        "memory_calls": backend.calls,
        "memory_call_tokens": backend.usage.prompt_tokens + backend.usage.completion_tokens,
        "wall_s": round(time.perf_counter() - t0, 1),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (args.out / f"{phase}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record[k] for k in ("phase", "prompt_format", "wall_s")} | summary.to_json()))
    return record


def wrong_lessons(out: Path) -> dict[str, Any]:
    """Concepts the write phase stored, split by whether the task's final SQL was right per gold."""
    tasks = {t.task_id: t for t in RunStore.for_run_dir(out / "write").load().tasks}
    store = SQLMemoryStore(out / "memory.sqlite")
    try:
        writes = store.writes_by_run(memory_run_id(out / "write"), namespace=NAMESPACE)
        concepts = store.stats(NAMESPACE).concepts
    finally:
        store.close()
    passed = [t for t in tasks.values() if t.passed]
    wrote = [tasks[i] for i in writes if i in tasks]
    wrong = [t for t in wrote if not t.correct]
    drafts = sum(writes.values())
    wrong_drafts = sum(writes[t.task_id] for t in wrong)
    return {
        "tasks": len(tasks),
        "verifier_passed": len(passed),
        "verifier_passed_but_wrong": sum(not t.correct for t in passed),
        "tasks_that_wrote": len(wrote),
        "tasks_that_wrote_but_wrong": len(wrong),
        "wrong_lesson_task_rate": round(len(wrong) / len(wrote), 4) if wrote else None,
        "drafts_written": drafts,
        "drafts_from_wrong_sql": wrong_drafts,
        "wrong_lesson_draft_rate": round(wrong_drafts / drafts, 4) if drafts else None,
        "concepts_stored": concepts,
    }


def shown_from_wrong(out: Path) -> dict[str, Any]:
    """Of the lessons the ``on`` phase showed, how many came only from tasks with wrong SQL."""
    write_tasks = {t.task_id: t.correct for t in RunStore.for_run_dir(out / "write").load().tasks}
    store = SQLMemoryStore(out / "memory.sqlite")
    try:
        from sqlalchemy import text

        with store.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT concept_id, task_id FROM concept_uses WHERE run_id = :r"),
                {"r": memory_run_id(out / "on")},
            ).all()
        sources = {}
        for cid in {r[0] for r in rows}:
            c = store.get(cid)
            sources[cid] = c.provenance.task_ids if c is not None else ()
    finally:
        store.close()
    only_wrong = [
        r for r in rows if sources[r[0]] and not any(write_tasks.get(t, False) for t in sources[r[0]])
    ]
    return {
        "lessons_shown": len(rows),
        "tasks_shown_lessons": len({r[1] for r in rows}),
        "distinct_concepts_shown": len(sources),
        "lessons_shown_from_wrong_sql_only": len(only_wrong),
    }


def report(args: argparse.Namespace) -> dict[str, Any]:
    records = {p: json.loads((args.out / f"{p}.json").read_text()) for p in PHASES}
    on, off = RunReport.load(args.out / "on"), RunReport.load(args.out / "off")
    same = {k for k, v in records["on"]["spec"].items() if not k.startswith("memory")}
    differ = [k for k in sorted(same) if records["on"]["spec"][k] != records["off"]["spec"][k]]
    if differ:
        raise SystemExit(f"the on and off runs differ in {differ}: rerun them with the same options")
    diff = paired_difference(off, on)

    def arm(r: RunReport, rec: dict[str, Any]) -> dict[str, Any]:
        m = r.metrics()
        return {
            "tasks": len(r.tasks),
            "execution_accuracy": m["execution_accuracy"],
            "verifier_pass_rate": m["verifier_pass_rate"],
            "tokens_per_task": m["tokens_per_task"],
            "prompt_tokens_per_task": round(sum(t.prompt_tokens for t in r.tasks) / len(r.tasks), 1),
            "completion_tokens_per_task": m["completion_tokens_per_task"],
            "latency_s_mean": m["latency_s_mean"],
            "errors": m["errors"],
            "memory": rec["summary"].get("memory"),
            "run_dir": str(r.run_dir),
        }

    write = RunReport.load(args.out / "write")
    spec = records["on"]["spec"]
    result = {
        "what": "memory ablation: second half of the slice with memory (read only) vs without",
        "model": records["on"]["spec"]["backend"],
        "graph": spec["graph"],
        "budget": {k: spec[k] for k in ("n", "rounds", "max_tokens", "temperature", "seed")},
        "verifier": spec["verifier"],
        "slice": {
            "write": [records["write"]["spec"]["offset"], records["write"]["spec"]["limit"]],
            "test": [spec["offset"], spec["limit"]],
        },
        "memory_settings": {k: records["on"]["spec"][k] for k in ("memory_select", "memory_k")},
        "prompt_format": {p: records[p]["prompt_format"] for p in PHASES},
        "prompt_sha256": records["on"]["prompt_sha256"],
        "same_prompt_in_all_phases": len({json.dumps(records[p]["prompt_sha256"]) for p in PHASES}) == 1,
        "write_phase": {
            "execution_accuracy": write.metrics()["execution_accuracy"],
            "verifier_pass_rate": write.metrics()["verifier_pass_rate"],
            "tokens_per_task": write.metrics()["tokens_per_task"],
            "memory": records["write"]["summary"].get("memory"),
            "abstraction_calls": records["write"]["memory_calls"],
            "abstraction_tokens": records["write"]["memory_call_tokens"],
        },
        "memory_on": arm(on, records["on"]),
        "memory_off": arm(off, records["off"]),
        "paired_difference_on_minus_off": diff.to_json(),
        "wrong_lessons": wrong_lessons(args.out),
        "lessons_shown": shown_from_wrong(args.out),
        "wall_s": {p: records[p]["wall_s"] for p in PHASES},
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0]},
    }
    (args.out / "ablation.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", choices=(*PHASES, "report", "all"))
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Where the runs, memory and JSON go.")
    p.add_argument("--backend", default="transformers")
    p.add_argument("--half", type=int, default=40, help="Questions per half of the slice.")
    p.add_argument("--offset", type=int, default=0, help="Where the slice starts in the dataset.")
    p.add_argument("--graph", default="greedy")
    p.add_argument("--n", type=int, default=1)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--select", default="lexical", choices=("lexical", "embed", "llm"))
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--resume", action="store_true", help="Finish a phase's interrupted run.")
    args = p.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    phases = PHASES if args.phase == "all" else (() if args.phase == "report" else (args.phase,))
    for phase in phases:
        asyncio.run(run_phase(phase, args))
    if args.phase in ("report", "all"):
        report(args)


if __name__ == "__main__":
    main()
