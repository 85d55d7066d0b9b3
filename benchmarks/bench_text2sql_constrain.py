"""Schema-constrained SQL on the embedded model: invalid candidates, accuracy, and decode cost.

Usage:
  python benchmarks/bench_text2sql_constrain.py runs [--limit 100] [--search-limit K] [--root DIR]
  python benchmarks/bench_text2sql_constrain.py speed [--repeats 3] [--db DB_ID]
  python benchmarks/bench_text2sql_constrain.py summary [--root DIR] [--out FILE]

``runs`` runs ``agentloop run text2sql`` (SmolLM2-135M, few-shot prompt, 128 new tokens,
seed 0) with ``--constrain schema`` and ``--constrain none``: greedy on the first
``--limit`` questions, ``best_of_n --n 8`` and ``iad --n 4 --rounds 2`` on the first
``--search-limit`` (default: the same). Each run goes to ROOT/GRAPH-MODE; an existing run
is finished with ``--resume``, so the script can be stopped and started again.

``summary`` reads every run back: execution accuracy, tokens and wall time per task, and
for every candidate whether it fails to run or names a table or column the schema lacks
(the ``exec`` verifier's checks: a parse error, a database error, or ``unknown_identifiers``),
and whether the constrained ones match the full schema grammar; then the paired 95%
interval of constrained minus unconstrained accuracy per graph (``agentloop report
--compare``). ``speed`` measures decode tokens/s at n=8 on one few-shot prompt with the
schema grammar (mask cache warm, and cold) against without, every row decoding the same
number of tokens, and the share of the time spent masking.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path("runs/bench-text2sql-constrain")
OUT = Path("benchmarks/results/text2sql_constrain.json")
MODES = ("none", "schema")
COMMON = ("--max-tokens", "128", "--seed", "0", "--prompt", "fewshot")
GRAPHS: dict[str, tuple[str, ...]] = {
    "greedy": ("--graph", "greedy"),
    "best_of_8": ("--graph", "best_of_n", "--n", "8"),
    "iad": ("--graph", "iad", "--n", "4", "--rounds", "2"),
}


def command(graph: str, mode: str, limit: int, run_dir: Path, resume: bool) -> list[str]:
    args = ["agentloop", "run", "text2sql", *GRAPHS[graph], "--constrain", mode, "--limit", str(limit)]
    args += [*COMMON, "--run-dir", str(run_dir), "--json"]
    return args + (["--resume"] if resume else [])


def do_runs(args: argparse.Namespace) -> None:
    search = args.search_limit or args.limit
    graphs = args.graphs.split(",")
    for graph in graphs:
        limit = args.limit if graph == "greedy" else search
        for mode in args.modes.split(","):
            run_dir = args.root / f"{graph}-{mode}"
            cmd = command(graph, mode, limit, run_dir, (run_dir / "run.sqlite").exists())
            print("$", " ".join(cmd[:-1] if cmd[-1] == "--resume" else cmd), flush=True)
            start = time.perf_counter()
            env = {**os.environ, "HF_HUB_OFFLINE": "1"}
            proc = subprocess.run([sys.executable, "-m", *cmd], capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                sys.exit(f"{graph}/{mode} failed: {proc.stderr.strip()}")
            out = json.loads(proc.stdout)
            acc = out["metrics"]["execution_accuracy"]
            print(f"  {graph:10} {mode:6} acc {acc:.3f}  {time.perf_counter() - start:.0f} s", flush=True)


def candidate_checks(run_dir: Path) -> dict[str, Any]:
    """Every stored candidate: parse error, fails to run, unknown names; grammar match."""
    from agentloop.suites.text2sql.data import load_text2sql
    from agentloop.suites.text2sql.grammar import sql_accepted
    from agentloop.suites.text2sql.verifiers import schema_info, unknown_identifiers
    from agentloop.tools.sql import run_sql_sync

    dbs = {e.id: e.db_path for e in load_text2sql(None)}
    with sqlite3.connect(run_dir / "run.sqlite") as conn:
        rows = conn.execute(
            "SELECT t.task_id, c.answer, c.parse_error, c.finish_reason FROM candidates c "
            "JOIN task_results t ON c.task_result_id = t.id"
        ).fetchall()
        # One row per request: its candidates' tokens over its latency (prefill included).
        calls = conn.execute(
            "SELECT sum(c.completion_tokens), max(c.latency_s), count(*) FROM candidates c "
            "GROUP BY c.task_result_id, c.call"
        ).fetchall()
    counts = {"candidates": len(rows), "parse_error": 0, "fails_to_run": 0, "unknown_name": 0}
    counts |= {"cut_at_max_tokens": 0, "grammar_accepted": 0}
    for task_id, answer, parse_error, finish in rows:
        db = dbs[task_id]
        counts["cut_at_max_tokens"] += finish == "length"
        if parse_error is not None or not answer:
            counts["parse_error"] += 1
            continue
        counts["grammar_accepted"] += sql_accepted(db, answer)
        result = run_sql_sync(db, answer, timeout_s=10.0, max_rows=200)
        if not result.ok:
            counts["fails_to_run"] += 1
            continue
        names = unknown_identifiers(answer, schema_info(str(db)))
        counts["unknown_name"] += bool(names is not None and names.unknown)
    invalid = counts["parse_error"] + counts["fails_to_run"] + counts["unknown_name"]
    counts["invalid"] = invalid
    counts["invalid_share"] = round(invalid / max(1, len(rows)), 4)
    rates = [tokens / latency for tokens, latency, n in calls if latency and n == 8]
    if rates:
        counts["n8_requests"] = len(rates)
        counts["n8_tokens_per_s_median"] = round(statistics.median(rates), 1)
    return counts


def report_json(*run_dirs: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "agentloop", "report", str(run_dirs[0]), "--json"]
        + [a for d in run_dirs[1:] for a in ("--compare", str(d))],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout)


def do_summary(args: argparse.Namespace) -> None:
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    table: dict[str, Any] = {}
    for graph in GRAPHS:
        dirs = [args.root / f"{graph}-{mode}" for mode in MODES]
        if not all((d / "run.sqlite").exists() for d in dirs):
            continue
        try:
            rep = report_json(*dirs)
        except subprocess.CalledProcessError as exc:  # e.g. a run with no finished task yet
            print(f"{graph}: skipped ({exc.stderr.strip()})", flush=True)
            continue
        entry: dict[str, Any] = {"comparison": rep["comparison"][0]}
        for mode, run_dir, run in zip(MODES, dirs, rep["runs"], strict=True):
            entry[mode] = {
                "command": " ".join(command(graph, mode, run["config"]["limit"], run_dir, False)),
                "tasks": run["tasks"],
                "execution_accuracy": run["metrics"]["execution_accuracy"],
                "correct": sum(r["correct"] for r in run["results"]),
                "usage": run["usage"],
                "candidate_checks": candidate_checks(run_dir),
            }
        table[graph] = entry
        print(graph, json.dumps(entry, indent=1)[:2000], flush=True)
    results["runs"] = table
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


def unending(grammar: str) -> str:
    """The decode grammar with more statements allowed after each ``;``: rows then decode to the
    token limit, as unconstrained ones with ``ignore_eos`` do, and both run full batches. (With
    the grammar's own end, rows stop at ``;`` one by one, and the shrinking batch, not the
    mask, halved the tokens per second: 281 tokens in the time of 512.)"""
    start = "start: SPACE query_tail (SEMI | SPACE)?"
    assert start in grammar, "the few-shot continuation grammar changed its start rule"
    return grammar.replace(start, "start: SPACE query_tail (SEMI SPACE? query)* (SEMI | SPACE)?")


def do_speed(args: argparse.Namespace) -> None:
    """Decode tokens/s at n=8, schema grammar against none, on one few-shot prompt: dev-0's, or
    with ``--db`` the first question on that database."""
    import torch

    import agentloop.backends.guidance as guidance
    from agentloop.backends import ChatRequest, Constraint
    from agentloop.backends.transformers_backend import TransformersBackend
    from agentloop.models import ensure_embedded_model
    from agentloop.suites.text2sql.data import load_text2sql
    from agentloop.suites.text2sql.task import Text2SQLTask

    backend = TransformersBackend(ensure_embedded_model())
    backend.load()
    examples = load_text2sql(None)
    example = next((e for e in examples if e.db_id == args.db), None) if args.db else examples[0]
    if example is None:
        sys.exit(f"no shipped question on database {args.db!r}")
    task = Text2SQLTask(example, "exec", prompt_format="fewshot", constrain=True)
    prompt = task.completion_prompt(task.build_messages())
    assert prompt is not None and task.constraint is not None
    grammar = unending(str(task.constraint.value))
    # Time spent in masking (llguidance's mask, or the cache, plus applying it to the logits).
    mask_s = [0.0]
    mask_rows = [0]
    plain_mask = guidance.RowMatchers.mask_

    def timed_mask(self: Any, logits: Any, rows: list[int]) -> None:
        start = time.perf_counter()
        plain_mask(self, logits, rows)
        mask_s[0] += time.perf_counter() - start
        mask_rows[0] += len(rows)

    guidance.RowMatchers.mask_ = timed_mask  # type: ignore[method-assign]
    # No stop strings and no EOS: every row decodes 64 tokens in each variant. Interleaved, so
    # other load hits all alike. "warm" shares the mask cache across requests, as a run does
    # (every request on one database); "cold" is a fresh copy of the grammar each time (a
    # comment line differs), so nothing is cached: the first request on a database.
    base = ChatRequest(
        raw_prompt=prompt, n=8, temperature=1.0, max_tokens=args.max_tokens, extra={"ignore_eos": True}
    )
    variants: dict[str, Any] = {
        "unconstrained": lambda r: None,
        "schema_grammar": lambda r: Constraint.grammar(grammar),
        "schema_grammar_cold": lambda r: Constraint.grammar(f"{grammar}// cold {r}\n"),
    }
    rates: dict[str, list[float]] = {k: [] for k in variants}
    # Tokens per CPU second of this process (all its threads): the work a token costs, which
    # other jobs on the cores do not change the way they change the wall clock.
    cpu_rates: dict[str, list[float]] = {k: [] for k in variants}
    shares: dict[str, list[float]] = {k: [] for k in variants}
    tokens: dict[str, list[int]] = {k: [] for k in variants}
    loads = [os.getloadavg()[0]]
    for r in range(args.repeats + 1):
        for name, constraint in variants.items():
            mask_s[0], mask_rows[0] = 0.0, 0
            cpu = time.process_time()
            resp = backend.generate_sync(base.replace(seed=r, constraint=constraint(r)))
            cpu = time.process_time() - cpu
            u = resp.usage
            share = mask_s[0] / u.latency_s
            print(
                f"  {name:20} round {r}: {u.completion_tokens} tokens in {u.latency_s:.1f} s, "
                f"masks {1000 * mask_s[0] / max(1, mask_rows[0]):.2f} ms/row ({share:.0%} of the time), "
                f"{cpu:.1f} CPU s, load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
            if r == 0:
                continue  # warm-up: prefix cache, compiled grammar, llguidance tokenizer
            rates[name].append(u.completion_tokens / u.latency_s)
            cpu_rates[name].append(u.completion_tokens / cpu)
            shares[name].append(share)
            tokens[name].append(u.completion_tokens)
        loads.append(os.getloadavg()[0])
    speed = {
        k: {
            "tokens_per_s": round(statistics.median(rates[k]), 1),
            "tokens_per_cpu_s": round(statistics.median(cpu_rates[k]), 1),
            "tokens": statistics.median(tokens[k]),
            "mask_share_of_time": round(statistics.median(shares[k]), 3),
        }
        for k in variants
    }
    plain = speed["unconstrained"]["tokens_per_s"]
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    results["decode_n8" + (f"_{example.db_id}" if args.db else "")] = {
        **speed,
        "ratio": round(speed["schema_grammar"]["tokens_per_s"] / plain, 3),
        "ratio_cold": round(speed["schema_grammar_cold"]["tokens_per_s"] / plain, 3),
        "cpu_ratio": round(
            speed["schema_grammar"]["tokens_per_cpu_s"] / speed["unconstrained"]["tokens_per_cpu_s"], 3
        ),
        "cpu_ratio_cold": round(
            speed["schema_grammar_cold"]["tokens_per_cpu_s"] / speed["unconstrained"]["tokens_per_cpu_s"], 3
        ),
        "prompt": f"{example.id} few-shot ({example.db_id}), n=8, T=1.0, {args.max_tokens} new tokens per row "
        f"(the grammar allows more statements after ';'), median of {args.repeats}",
        "load_average_1min": [round(x, 1) for x in loads],
        "machine": f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
        "shared with other jobs",
    }
    print(json.dumps(results["decode_n8" + (f"_{example.db_id}" if args.db else "")], indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = ap.add_subparsers(dest="what", required=True)
    runs = sub.add_parser("runs")
    runs.add_argument("--limit", type=int, default=100)
    runs.add_argument("--search-limit", type=int, default=None, help="questions for best_of_8 and iad")
    runs.add_argument("--graphs", default="greedy,best_of_8,iad")
    runs.add_argument("--modes", default=",".join(MODES), help="of none,schema, in this order")
    speed = sub.add_parser("speed")
    speed.add_argument("--repeats", type=int, default=3)
    speed.add_argument("--max-tokens", type=int, default=64)
    speed.add_argument("--db", help="a database id: its first shipped question's prompt (default: dev-0)")
    summary = sub.add_parser("summary")
    for p in (runs, speed, summary):
        p.add_argument("--root", type=Path, default=ROOT)
        p.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    {"runs": do_runs, "speed": do_speed, "summary": do_summary}[args.what](args)


if __name__ == "__main__":
    main()
