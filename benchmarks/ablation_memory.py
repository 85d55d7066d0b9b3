"""Concept-memory ablation on any suite: write lessons on one slice, then test the next slice
with memory read-only against no memory, same graph, budget and seed.

1. ``write``: the write slice, memory on and written after each task that qualifies
   (``--memory-write``, default ``passed``: the gold-free verifier passed it; the task reads too,
   as a run would).
2. ``on``: the test slice, reading that memory (``--memory-update off``, so every task sees
   the same memory and the comparison measures reading only).
3. ``off``: the test slice without memory. Same graph, budget and seed as ``on``. With
   ``--off-from RUN_DIR`` an existing run with the same settings (a superset of the test
   slice, e.g. a greedy run over the whole suite) stands in for it, and nothing is rerun.
4. ``report``: the suite's metric and tokens per task of ``on`` and ``off``, the paired
   difference ``on - off`` with a 95% bootstrap interval (``report.paired_difference``,
   what ``agentloop report --compare`` prints), lessons written and shown, and, using the
   official score for the analysis only, how often a lesson was written from a task whose
   final answer was wrong (the verifier passed a wrong answer, so memory learned a wrong lesson).

Slices: ``--write START:COUNT`` and ``--test START:COUNT``; by default the two halves of
``2 * --half`` examples from ``--offset``. The issue's three ablations::

    python benchmarks/ablation_memory.py all --suite webshop --policy choice \
        --write 0:58 --test 58:58 --out benchmarks/results/ablation_memory_webshop
    python benchmarks/ablation_memory.py all --suite text2sql --backend llamacpp:qwen2.5-coder-0.5b \
        --constrain schema --write 100:100 --test 0:100 --out benchmarks/results/ablation_memory_text2sql_qwen
    python benchmarks/ablation_memory.py all --suite humaneval --backend llamacpp:qwen2.5-coder-0.5b \
        --max-tokens 300 --write 0:82 --test 82:82 --out benchmarks/results/ablation_memory_humaneval_qwen

``--memory-backend ID`` lets another model write (and select) the lessons while
``--backend`` solves. Each phase is its own invocation, so a shared machine can take a
lock per phase::

    flock /tmp/agentloop-cpu.lock python benchmarks/ablation_memory.py write ...
    python benchmarks/ablation_memory.py report ...    # no model; writes ablation.json

``all`` runs the phases in order. Runs go through :func:`run_suite` and the run store
(``OUT/write``, ``OUT/on``, ``OUT/off``); the memory is ``OUT/memory.sqlite``. Every
phase must be given the same options; ``report`` checks that the runs agree.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import platform
import shutil
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

from agentloop.backends import BackendOptions, resolve_backend
from agentloop.memory import SQLMemoryStore
from agentloop.records.report import RunReport, paired_difference
from agentloop.records.store import RunStore
from agentloop.runs.runner import RunSpec, memory_run_id, run_suite
from agentloop.suites import get_suite

PHASES = ("write", "on", "off")
ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / "results" / "ablation_memory"
NAMESPACE = "ablation"
# Settings the three phases may differ in: the memory ones, the slice, and how fast they ran.
PHASE_KEYS = ("offset", "limit", "concurrency")


def parse_slice(text: str) -> tuple[int, int]:
    start, sep, count = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(start), int(count)
    except ValueError:
        raise SystemExit(f"bad slice {text!r}: write START:COUNT, e.g. 0:58") from None


def slices(args: argparse.Namespace) -> dict[str, tuple[int, int]]:
    write = parse_slice(args.write) if args.write else (args.offset, args.half)
    test = parse_slice(args.test) if args.test else (write[0] + write[1], args.half)
    return {"write": write, "on": test, "off": test}


def spec_for(phase: str, args: argparse.Namespace) -> RunSpec:
    offset, limit = slices(args)[phase]
    memory: dict[str, Any] = {}
    if phase != "off":
        memory = {
            "memory": str(args.out / "memory.sqlite"),
            "memory_update": "task" if phase == "write" else "off",
            "memory_select": args.select,
            "memory_k": args.k,
            "memory_namespace": NAMESPACE,
            "memory_write": args.memory_write,
            "memory_backend": args.memory_backend,
        }
    extra: dict[str, Any] = {}
    for key in ("verifier", "constrain", "policy", "prompt"):
        if getattr(args, key) is not None:
            extra[key] = getattr(args, key)
    return RunSpec(
        suite=args.suite,
        graph=args.graph,
        backend=args.backend,
        offset=offset,
        limit=limit,
        n=args.n,
        rounds=args.rounds,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        seed=0,
        # The write phase one task at a time by default: what a task reads depends on what
        # finished before it. Reading phases may run several at once.
        concurrency=args.concurrency if phase != "write" else args.write_concurrency,
        **extra,
        **memory,
    )


def prompt_hashes(suite: str) -> dict[str, str]:
    """Hashes of the prompt templates a run of ``suite`` may render, with memory's own."""
    out = {}
    for f in sorted(resources.files("agentloop.prompts").iterdir(), key=lambda f: f.name):
        if f.name.endswith(".txt") and f.name.startswith((f"{suite}_", "graphs_", "memory_")):
            out[f.name] = hashlib.sha256(f.read_bytes()).hexdigest()[:12]
    return out


async def run_phase(phase: str, args: argparse.Namespace) -> dict[str, Any]:
    spec = spec_for(phase, args)
    run_dir = args.out / phase
    if phase == "off" and args.off_from is not None:
        return adopt_off(spec, args)
    if run_dir.exists() and not args.resume:
        raise SystemExit(f"{run_dir} exists: pass --resume to finish it, or remove it to start over")
    if phase == "write" and not args.resume and (args.out / "memory.sqlite").exists():
        raise SystemExit(f"{args.out / 'memory.sqlite'} exists from an earlier ablation: remove it first")
    if phase == "on" and not (args.out / "memory.sqlite").exists():
        raise SystemExit("run the write phase first: there is no memory to read")
    backend = resolve_backend(args.backend, options=BackendOptions(concurrency=spec.concurrency))
    t0 = time.perf_counter()
    try:
        summary = await run_suite(spec, run_dir=run_dir, backend=backend, resume=args.resume, progress=True)
    finally:
        await backend.aclose()
    record = {
        "phase": phase,
        "spec": spec.to_dict(),
        "run_dir": str(run_dir),
        "prompt_format": type(get_suite(args.suite)).prompt_format(spec),
        "prompt_sha256": prompt_hashes(args.suite),
        "summary": summary.to_json(),
        "wall_s": round(time.perf_counter() - t0, 1),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        # Drafts that are instances are dropped before they are stored (ConceptMemory's default).
        "lesson_check": True,
    }
    (args.out / f"{phase}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record[k] for k in ("phase", "prompt_format", "wall_s")} | summary.to_json()))
    return record


def adopt_off(spec: RunSpec, args: argparse.Namespace) -> dict[str, Any]:
    """Use an existing memory-free run as the ``off`` arm, after checking it ran the same way."""
    source = RunReport.load(args.off_from)
    config = source.run.config
    wanted = {k: v for k, v in spec.to_dict().items() if k not in PHASE_KEYS and not k.startswith("memory")}
    # None asks for the suite's default, which the stored config holds resolved.
    differ = [
        f"{k}: {config.get(k)!r} != {v!r}"
        for k, v in wanted.items()
        if v is not None and k in config and _plain(config[k]) != _plain(v)
    ]
    if config.get("memory"):
        differ.append("it ran with memory")
    if differ:
        raise SystemExit(f"--off-from {args.off_from} ran differently: {'; '.join(differ)}")
    ids = {t.task_id for t in source.tasks}
    test = select(source, spec)
    if len(test.tasks) < spec.limit:
        raise SystemExit(f"--off-from {args.off_from} has {len(test.tasks)} of the {spec.limit} test tasks")
    # A copy beside the other arms, so the ablation's directory holds everything it reports.
    copy = args.out / "off"
    if not copy.exists():
        shutil.copytree(args.off_from, copy)
    record = {
        "phase": "off",
        "spec": {**spec.to_dict(), "concurrency": config.get("concurrency", spec.concurrency)},
        "run_dir": str(copy),
        "adopted_from": str(args.off_from),
        "adopted_tasks": len(test.tasks),
        "source_tasks": len(ids),
        "prompt_format": type(get_suite(args.suite)).prompt_format(spec),
        "prompt_sha256": prompt_hashes(args.suite),
        "summary": {"metrics": test.metrics()},
        "wall_s": round(sum(t.wall_s for t in test.tasks), 1),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (args.out / "off.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({"phase": "off", "adopted_from": str(args.off_from), "tasks": len(test.tasks)}))
    return record


def _plain(value: Any) -> Any:
    """A setting as JSON keeps it (a tuple comes back from the store as a list)."""
    return list(value) if isinstance(value, tuple) else value


def select(report: RunReport, spec: RunSpec) -> RunReport:
    """The tasks of ``report`` that ``spec``'s slice (offset, limit) holds."""
    wanted = {item.task_id for item in get_suite(spec.suite).items(spec)}
    tasks = [t for t in report.tasks if t.task_id in wanted]
    return RunReport(report.run_dir, dataclasses.replace(report.run, tasks=tasks))


def wrong_lessons(out: Path) -> dict[str, Any]:
    """Lessons the write phase stored, split by whether the task's final answer was right (official score)."""
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
        "tasks_that_wrote_from_verified": sum(t.passed for t in wrote),
        "verified_share": round(sum(t.passed for t in wrote) / len(wrote), 4) if wrote else None,
        "tasks_that_wrote_but_wrong": len(wrong),
        "wrong_lesson_task_rate": round(len(wrong) / len(wrote), 4) if wrote else None,
        "drafts_written": drafts,
        "drafts_from_wrong_answers": wrong_drafts,
        "wrong_lesson_draft_rate": round(wrong_drafts / drafts, 4) if drafts else None,
        "concepts_stored": concepts,
    }


def lessons_shown(out: Path, on: RunReport) -> dict[str, Any]:
    """What the ``on`` phase showed: per task, and how many lessons came only from wrong answers."""
    write_tasks = {t.task_id: t.correct for t in RunStore.for_run_dir(out / "write").load().tasks}
    store = SQLMemoryStore(out / "memory.sqlite")
    try:
        from sqlalchemy import text

        with store.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT concept_id, task_id FROM concept_uses WHERE run_id = :r"),
                {"r": memory_run_id(out / "on")},
            ).all()
        concepts = {}
        for cid in {r[0] for r in rows}:
            c = store.get(cid)
            concepts[cid] = c
    finally:
        store.close()

    def sources(cid: Any) -> tuple[str, ...]:
        c = concepts[cid]
        return c.provenance.task_ids if c is not None else ()

    only_wrong = [
        r for r in rows if sources(r[0]) and not any(write_tasks.get(t, False) for t in sources(r[0]))
    ]
    outcome = {t.task_id: t.correct for t in on.tasks}
    shown_tasks = {r[1] for r in rows}
    counts: dict[Any, int] = {}
    for r in rows:
        counts[r[0]] = counts.get(r[0], 0) + 1
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:5]
    return {
        "lessons_shown": len(rows),
        "lessons_per_task": round(len(rows) / len(on.tasks), 2) if on.tasks else None,
        "tasks_shown_lessons": len(shown_tasks),
        "shown_tasks_correct": sum(outcome.get(t, False) for t in shown_tasks),
        "distinct_concepts_shown": len(concepts),
        "lessons_shown_from_wrong_answers_only": len(only_wrong),
        "most_shown": [
            {
                "times": n,
                "title": concepts[cid].title if concepts[cid] is not None else None,
                "suggestion": concepts[cid].suggestion if concepts[cid] is not None else None,
                "from_tasks": list(sources(cid)),
            }
            for cid, n in top
        ],
    }


def report(args: argparse.Namespace) -> dict[str, Any]:
    records = {p: json.loads((args.out / f"{p}.json").read_text()) for p in PHASES}
    on = RunReport.load(args.out / "on")
    off = RunReport.load(records["off"]["run_dir"])
    off = select(off, spec_for("off", args))
    same = {k for k in records["on"]["spec"] if not k.startswith("memory") and k not in PHASE_KEYS}
    differ = [k for k in sorted(same) if records["on"]["spec"][k] != records["off"]["spec"].get(k)]
    if differ:
        raise SystemExit(f"the on and off runs differ in {differ}: rerun them with the same options")
    diff = paired_difference(off, on)

    def arm(r: RunReport) -> dict[str, Any]:
        m = r.metrics()
        keep = (r.metric, "avg_reward", "success_rate", "verifier_pass_rate", "tokens_per_task")
        return {
            "tasks": len(r.tasks),
            **{k: m[k] for k in keep if k in m},
            "prompt_tokens_per_task": round(sum(t.prompt_tokens for t in r.tasks) / len(r.tasks), 1),
            "completion_tokens_per_task": m["completion_tokens_per_task"],
            "candidates_per_task": m["candidates_per_task"],
            "latency_s_mean": m["latency_s_mean"],
            "errors": m["errors"],
            "run_dir": str(r.run_dir),
        }

    write = RunReport.load(args.out / "write")
    spec = records["on"]["spec"]
    store = SQLMemoryStore(args.out / "memory.sqlite")
    try:
        stats = store.stats(NAMESPACE)
    finally:
        store.close()
    result = {
        "what": "memory ablation: the test slice with memory (read only) vs without",
        "suite": spec["suite"],
        "model": spec["backend"],
        "memory_backend": records["write"]["spec"].get("memory_backend") or spec["backend"],
        "graph": spec["graph"],
        "budget": {k: spec[k] for k in ("n", "rounds", "max_tokens", "temperature", "seed")},
        "settings": {k: spec.get(k) for k in ("verifier", "constrain", "policy", "prompt")},
        "slice": {
            "write": [records["write"]["spec"]["offset"], records["write"]["spec"]["limit"]],
            "test": [spec["offset"], spec["limit"]],
        },
        "memory_settings": {
            **{k: records["write"]["spec"][k] for k in ("memory_select", "memory_k", "memory_write")},
            # Write phases run before ConceptMemory(check_lessons=...) existed stored every draft.
            "lesson_check": bool(records["write"].get("lesson_check")),
        },
        "prompt_format": {p: records[p]["prompt_format"] for p in PHASES},
        "prompt_sha256": records["on"]["prompt_sha256"],
        "same_prompt_in_all_phases": len({json.dumps(records[p]["prompt_sha256"]) for p in PHASES}) == 1,
        "off_adopted_from": records["off"].get("adopted_from"),
        "write_phase": {
            **{k: v for k, v in arm(write).items() if k != "run_dir"},
            "memory_usage": write.usage().get("memory"),
            "abstraction": dataclasses.asdict(stats) if dataclasses.is_dataclass(stats) else str(stats),
        },
        "memory_on": arm(on),
        "memory_off": arm(off),
        "paired_difference_on_minus_off": diff.to_json(),
        "lessons_written": wrong_lessons(args.out),
        "lessons_shown": lessons_shown(args.out, on),
        "wall_s": {p: records[p]["wall_s"] for p in PHASES},
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0]},
    }
    (args.out / "ablation.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result, indent=2, default=str))
    return result


def table(dirs: list[Path]) -> str:
    """The markdown table of docs/memory.md, one row per ablation directory's ablation.json."""
    rows = [
        "| suite | solver | lessons by | graph | lesson check | test tasks | off | on | on − off [95% CI] "
        "| lessons written (verified) | wrong-answer lessons | lessons shown / task |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in dirs:
        if not (d / "ablation.json").is_file():
            raise SystemExit(f"{d} has no ablation.json: run its phases, then report")
        a = json.loads((d / "ablation.json").read_text())
        metric = (
            "avg_reward"
            if "avg_reward" in a["memory_on"]
            else next(k for k in a["memory_on"] if k not in ("tasks", "success_rate", "verifier_pass_rate"))
        )
        diff = a["paired_difference_on_minus_off"]
        w, shown = a["lessons_written"], a["lessons_shown"]
        lo, hi = diff["ci"]
        rows.append(
            f"| {a['suite']} | {a['model']} | {a['memory_backend']} | {a['graph']} "
            f"| {'yes' if a['memory_settings'].get('lesson_check') else 'no'} | {diff['paired_tasks']} "
            f"| {a['memory_off'][metric]:.3f} | {a['memory_on'][metric]:.3f} "
            f"| {diff['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}] "
            f"| {w['drafts_written']} ({w['tasks_that_wrote_from_verified']}/{w['tasks_that_wrote']} tasks) "
            f"| {w['tasks_that_wrote_but_wrong']} | {shown['lessons_per_task']} |"
        )
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", choices=(*PHASES, "report", "all", "table"))
    p.add_argument("dirs", nargs="*", type=Path, help="With table: the ablation directories to tabulate.")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Where the runs, memory and JSON go.")
    p.add_argument("--suite", default="text2sql")
    p.add_argument("--backend", default="transformers")
    p.add_argument("--memory-backend", default=None, help="Another backend writes the lessons.")
    p.add_argument("--memory-write", default="passed", choices=("passed", "best", "all"))
    p.add_argument("--half", type=int, default=40, help="Examples per half, without --write/--test.")
    p.add_argument("--offset", type=int, default=0, help="Where the slice starts, without --write.")
    p.add_argument("--write", default=None, help="START:COUNT of the slice that writes lessons.")
    p.add_argument("--test", default=None, help="START:COUNT of the slice on and off run on.")
    p.add_argument("--off-from", type=Path, default=None, help="An existing memory-free run as the off arm.")
    p.add_argument("--graph", default="greedy")
    p.add_argument("--verifier", default=None, help="Default: exec for text2sql, the suite's own otherwise.")
    p.add_argument("--constrain", default=None)
    p.add_argument("--policy", default=None)
    p.add_argument("--prompt", default=None)
    p.add_argument("--n", type=int, default=1)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--select", default="lexical", choices=("lexical", "embed", "llm"))
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=1, help="Tasks at once in the on and off phases.")
    p.add_argument("--write-concurrency", type=int, default=1, help="Tasks at once in the write phase.")
    p.add_argument("--resume", action="store_true", help="Finish a phase's interrupted run.")
    args = p.parse_args()
    if args.phase == "table":
        print(table(args.dirs))
        return
    if args.verifier is None and args.suite == "text2sql":
        args.verifier = "exec"
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    phases = PHASES if args.phase == "all" else (() if args.phase == "report" else (args.phase,))
    for phase in phases:
        asyncio.run(run_phase(phase, args))
    if args.phase in ("report", "all"):
        report(args)


if __name__ == "__main__":
    main()
