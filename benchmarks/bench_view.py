"""Measure ``agentloop view`` on a large run: a 10,000-task run store, its run page, paging and a task page.

The store is synthetic but shaped like a real IAD Text2SQL run (n=4, two rounds: eight
candidates and two stored prompts per task, Spider questions). Timings are over HTTP to
the real server, from the request to the last byte: a cold open (a new server, so the
task rows are read from the store) and warm requests (the rows cached until the store
changes). With a chromium binary, the browser's own time to the load event is measured
too. The goal is a run page open in at most 2 s.

    python benchmarks/bench_view.py --write-docs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.orm import Session

from agentloop.records.store import CandidateRow, PromptRow, RunStore, TaskResultRow
from agentloop.suites.text2sql.data import load_text2sql
from agentloop.view import ViewServer, open_runs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "view.json"
DOCS = ROOT / "docs" / "view.md"
START_MARK = "<!-- bench:view:start -->"
END_MARK = "<!-- bench:view:end -->"
DIFFICULTY = ("easy", "medium", "hard", "extra")


def build_run(run_dir: Path, tasks: int, *, n: int = 4, rounds: int = 2, seed: int = 0) -> float:
    """Write a ``tasks``-task IAD-shaped run into ``run_dir`` in one transaction; returns seconds."""
    rng = random.Random(seed)
    questions = load_text2sql()
    start = time.perf_counter()
    store = RunStore.for_run_dir(run_dir)
    config = {"suite": "text2sql", "graph": "iad", "n": n, "rounds": rounds, "verifier": "exec"}
    run_id = store.open_run(
        suite="text2sql", graph="iad", backend="function", config=config, planned=tasks, resume=False
    )
    schema = "CREATE TABLE singer (singer_id int, name text, country text, age int)\n" * 12
    with Session(store.engine) as s, s.begin():
        for i in range(tasks):
            ex = questions[i % len(questions)]
            correct = rng.random() < 0.6
            candidates = []
            for r in range(rounds):
                for k in range(n):
                    score = rng.random()
                    sql = f"SELECT name FROM singer WHERE age > {rng.randint(18, 60)}"
                    candidates.append(
                        CandidateRow(
                            position=r * n + k,
                            round=r,
                            index=k,
                            call=r,
                            prompt_hash=f"p{i}-{r}",
                            text=f"```sql\n{sql}\n```",
                            answer=sql,
                            parse_error=None,
                            verdict={
                                "score": score,
                                "passed": score > 0.8,
                                "feedback": "rows differ",
                                "details": {},
                            },
                            score=score,
                            passed=score > 0.8,
                            best=r == rounds - 1 and k == 0,
                            prompt_tokens=420,
                            completion_tokens=24,
                            latency_s=0.4,
                            verify_s=0.01,
                            finish_reason="stop",
                        )
                    )
            prompts = [
                PromptRow(
                    prompt_hash=f"p{i}-{r}",
                    messages=[
                        ["system", "You write SQLite queries."],
                        ["user", f"{schema}\nQuestion: {ex.question}"],
                    ],
                )
                for r in range(rounds)
            ]
            s.add(
                TaskResultRow(
                    run_id=run_id,
                    task_id=f"dev-{i}",
                    index=i,
                    db_id=ex.db_id,
                    difficulty=rng.choice(DIFFICULTY),
                    question=ex.question,
                    answer="SELECT count(*) FROM singer",
                    correct=correct,
                    passed=correct and rng.random() < 0.9,
                    score=rng.random(),
                    candidates=n * rounds,
                    llm_calls=rounds,
                    failed_calls=0,
                    prompt_tokens=840,
                    completion_tokens=n * rounds * 24,
                    cost_usd=None,
                    rounds=rounds,
                    stop_reason=rng.choice(("max_rounds", "passed")),
                    wall_s=rng.uniform(0.5, 4.0),
                    error=None,
                    error_detail=None,
                    eval_error=None,
                    attempt=1,
                    started=float(i),
                    finished=float(i + 1),
                    trajectory=candidates,
                    prompts=prompts,
                )
            )
    store.close()
    return time.perf_counter() - start


def timed_get(client: httpx.Client, url: str) -> tuple[float, int]:
    start = time.perf_counter()
    r = client.get(url)
    r.raise_for_status()
    return time.perf_counter() - start, len(r.content)


def measure(run_dirs: list[Path], repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # Cold: a fresh server each time, so the first page reads every task row from the store.
    colds = []
    for _ in range(repeats):
        start = time.perf_counter()
        with ViewServer(open_runs(run_dirs[:1])).start() as srv, httpx.Client(timeout=120) as client:
            _, size = timed_get(client, srv.url + "run/0")
        colds.append(time.perf_counter() - start)
    out["run_page_cold_s"] = _stats(colds)
    out["run_page_bytes"] = size
    with ViewServer(open_runs(run_dirs)).start() as srv, httpx.Client(timeout=300) as client:
        base = srv.url
        pages = {
            "run_page_warm_s": "run/0",
            "page_100_s": "run/0?page=100",
            "wrong_sorted_by_tokens_page_20_s": "run/0?outcome=wrong&sort=tokens&desc=1&page=20",
            "text_search_s": "run/0?q=singers",
            "task_page_s": "run/0/task/dev-5000",
        }
        for key, path in pages.items():
            timed_get(client, base + path)  # warm the cache and the connection
            out[key] = _stats([timed_get(client, base + path)[0] for _ in range(repeats)])
        if len(run_dirs) > 1:
            # The paired bootstrap over 10,000 pairs is the cost here (as in report --compare).
            out["compare_cold_s"] = round(timed_get(client, base + "compare")[0], 3)
            out["compare_group_page_s"] = _stats(
                [timed_get(client, base + "compare?group=improved&page=3")[0] for _ in range(repeats)]
            )
        out["browser_load_s"] = browser_load(base + "run/0", repeats)
    return out


def browser_load(url: str, repeats: int) -> dict[str, float] | None:
    """Time to the load event of the run page in headless Chromium (the Debian binary), if present."""
    executable = shutil.which(os.environ.get("AGENTLOOP_CHROMIUM") or "chromium")
    if executable is None:
        return None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(url)
        for _ in range(repeats):
            start = time.perf_counter()
            page.goto(url, wait_until="load")
            times.append(time.perf_counter() - start)
        browser.close()
    return _stats(times)


def _stats(xs: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(xs), 3), "max": round(max(xs), 3)}


def markdown(report: dict[str, Any]) -> str:
    m = report["measured"]

    def row(label: str, key: str) -> str:
        v = m.get(key)
        if v is None:
            return ""
        if isinstance(v, dict):
            return f"| {label} | {v['median']:.3f} | {v['max']:.3f} |\n"
        return f"| {label} | {v:.3f} | |\n"

    lines = (
        f"Command: `{report['command']}`\n\n"
        f"Machine: {report['machine']}, {report['cpus']} CPUs (load average {report['load_before']:.2f} before), "
        f"Python {report['python']}. Store: {report['tasks']:,} tasks, {report['candidates']:,} candidates, "
        f"{report['db_mb']:.0f} MB (built in {report['build_s']:.0f} s). {report['repeats']} repeats.\n\n"
        "| what (over HTTP, request to last byte) | median (s) | max (s) |\n|---|---|---|\n"
        + row("run page, cold (new server: reads every task row)", "run_page_cold_s")
        + row("run page, warm", "run_page_warm_s")
        + row("task table page 100", "page_100_s")
        + row("wrong answers sorted by tokens, page 20", "wrong_sorted_by_tokens_page_20_s")
        + row("text search", "text_search_s")
        + row("task page (8 candidates, 2 prompts, diff)", "task_page_s")
        + row("compare two 10,000-task runs, first open (paired bootstrap)", "compare_cold_s")
        + row("compare, a group's page 3", "compare_group_page_s")
        + row("run page in headless Chromium, to the load event", "browser_load_s")
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-compare", action="store_true", help="build one run only (no compare timing)")
    parser.add_argument("--write-docs", action="store_true", help=f"update {DOCS.relative_to(ROOT)}")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-view-") as tmp:
        dirs = [Path(tmp) / "iad"] + ([] if args.no_compare else [Path(tmp) / "other"])
        build_s = build_run(dirs[0], args.tasks)
        for k, d in enumerate(dirs[1:], start=1):
            build_run(d, args.tasks, seed=k)
        print(f"built {len(dirs)} x {args.tasks} tasks in {build_s:.1f} s each", flush=True)
        measured = measure(dirs, args.repeats)
        db_mb = (dirs[0] / "run.sqlite").stat().st_size / 1e6
    report = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": f"{platform.system()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "python": platform.python_version(),
        "tasks": args.tasks,
        "candidates": args.tasks * 8,
        "db_mb": round(db_mb, 1),
        "build_s": round(build_s, 1),
        "repeats": args.repeats,
        "measured": measured,
    }
    print(json.dumps(report, indent=1))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    if args.write_docs:
        text = DOCS.read_text()
        head, rest = text.split(START_MARK, 1)
        _, tail = rest.split(END_MARK, 1)
        DOCS.write_text(f"{head}{START_MARK}\n{markdown(report)}{END_MARK}{tail}")


if __name__ == "__main__":
    main()
