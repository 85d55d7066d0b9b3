"""Time ``agentloop eval text2sql`` on hostile predictions, and the shipped gold queries themselves.

Two parts:

- ``gold``: every one of the 645 shipped Spider gold queries, run through the sandbox
  ``--repeats`` times; reports the slowest run of each (max, p99, median) against the 1 s floor
  of the per-prediction time limit ``max(1 s, 20 x gold time)``.
- ``hostile``: 327 predictions on a copy of the shipped data (a deterministic sample of its
  questions), one in six a runaway query (an unbounded recursive CTE, or a 6-way cross join of a
  table with 300+ rows with itself), the rest golds, golds with a ``; DROP TABLE`` tail, writes,
  wrong and broken queries. It runs the real command with default flags in a subprocess pinned to
  two cores, hashes every file of the copy before and after, and scores the non-runaway
  predictions again in-process with the official flat 60 s limit to show the verdicts agree
  (``--flat-runaway K`` also runs K runaway ones under the flat limit: a minute each, in parallel).

    python benchmarks/bench_spider_eval.py            # both parts; writes the results JSON
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agentloop.suites.text2sql import default_spider_dir, load_text2sql, score_predictions
from agentloop.suites.text2sql.execution import (
    DEFAULT_MAX_ROWS,
    DEFAULT_TIMEOUT_S,
    MIN_LIMIT_S,
    executed_text,
)
from agentloop.tools.sql import run_sql_sync

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "spider_eval.json"
N_PREDICTIONS = 327
RECURSIVE = "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT count(*) FROM r"


def gold_times(repeats: int) -> dict[str, Any]:
    """The slowest of ``repeats`` sandboxed runs of each shipped gold query, in both forms the
    evaluator runs it (as written, for ``--keep-distinct``; first statement without DISTINCT)."""
    examples = load_text2sql()
    slowest: list[tuple[float, int]] = []
    for example in examples:
        assert example.gold_sql is not None
        runs = []
        for _ in range(repeats):
            for keep_distinct in (False, True):
                sql = executed_text(example.gold_sql, keep_distinct)
                result = run_sql_sync(
                    example.db_path, sql, timeout_s=DEFAULT_TIMEOUT_S, max_rows=DEFAULT_MAX_ROWS
                )
                assert result.ok, (example.index, result.error)
                runs.append(result.elapsed_s)
        slowest.append((max(runs), example.index))
    times = sorted(t for t, _ in slowest)
    worst_s, worst_index = max(slowest)
    return {
        "gold_queries": len(examples),
        "repeats": repeats,
        "max_s": round(worst_s, 5),
        "max_index": worst_index,
        "max_sql": examples[worst_index].gold_sql,
        "p99_s": round(times[int(0.99 * (len(times) - 1))], 5),
        "median_s": round(statistics.median(times), 5),
        "floor_s": MIN_LIMIT_S,
        "floor_over_max": round(MIN_LIMIT_S / worst_s, 1),
        "above_floor_over_20": sum(20 * t > MIN_LIMIT_S for t in times),
    }


def _largest_tables(data: Path, db_ids: set[str]) -> dict[str, tuple[str, int]]:
    out = {}
    for db in db_ids:
        c = sqlite3.connect(f"{(data / 'database' / db / f'{db}.sqlite').as_uri()}?mode=ro", uri=True)
        try:
            names = [n for (n,) in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            sizes = {n: c.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}
        finally:
            c.close()
        name = max(sizes, key=lambda n: sizes[n])
        out[db] = (name, sizes[name])
    return out


def build_hostile(data: Path) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """A sample of the dev records, one prediction for each, and each prediction's kind."""
    records = json.loads((data / "dev.json").read_text(encoding="utf-8"))
    chosen = sorted(random.Random(N_PREDICTIONS).sample(range(len(records)), N_PREDICTIONS))
    records = [records[i] for i in chosen]
    tables = _largest_tables(data, {r["db_id"] for r in records})
    preds, kinds = [], []
    for i, record in enumerate(records):
        gold = record["query"].strip().rstrip(";")
        table, rows = tables[record["db_id"]]
        slot = i % 6
        if slot == 0 and rows >= 300 and i % 12 == 0:
            six_way = ", ".join(f'"{table}" t{k}' for k in range(6))
            kind, sql = "runaway_cross_join", f"SELECT count(*) FROM {six_way}"
        elif slot == 0:
            kind, sql = "runaway_recursive_cte", RECURSIVE
        elif slot == 1:
            kind, sql = "gold", gold
        elif slot == 2:
            kind, sql = "gold_then_drop", f'{gold}; DROP TABLE "{table}"'
        elif slot == 3:
            kind, sql = "write", (f'DELETE FROM "{table}"', f'DROP TABLE "{table}"', "VACUUM")[i % 3]
        elif slot == 4:
            kind, sql = "wrong", (f'SELECT count(*) FROM "{table}"', "SELECT 1", gold + " LIMIT 0")[i % 3]
        else:
            kind, sql = "broken", (f"{gold} )", "SELEC 1", f'SELECT nope FROM "{table}"')[i % 3]
        preds.append(sql.replace("\n", " "))
        kinds.append(kind)
    return records, preds, kinds


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _two_cores() -> None:
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))[:2]
        os.sched_setaffinity(0, cores)


def hostile(flat_runaway: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "spider"
        shutil.copytree(default_spider_dir(), data)
        before = _digests(data / "database")
        records, preds, kinds = build_hostile(data)
        (data / "dev.json").write_text(json.dumps(records), encoding="utf-8")
        predictions = Path(tmp) / "pred.sql"
        predictions.write_text("\n".join(preds) + "\n", encoding="utf-8")

        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "agentloop", "eval", "text2sql", "--data", str(data)]
            + ["--predictions", str(predictions), "--json"],
            capture_output=True,
            text=True,
            preexec_fn=_two_cores if hasattr(os, "sched_setaffinity") else None,
            check=True,
        )
        wall = time.perf_counter() - start
        results = json.loads(done.stdout)["results"]
        unchanged = _digests(data / "database") == before  # also: no journal, WAL or new file

        runaway = [i for i, k in enumerate(kinds) if k.startswith("runaway")]
        cut = sum(not results[i]["correct"] and "timed out" in (results[i]["error"] or "") for i in runaway)
        # The official flat 60 s limit for every query, on everything that is not a runaway.
        examples = load_text2sql(data)
        rest = [i for i in range(len(preds)) if i not in set(runaway)]
        checked = rest + runaway[:flat_runaway]
        flat_start = time.perf_counter()
        flat = score_predictions(
            [examples[i] for i in checked], [preds[i] for i in checked], min_limit_s=DEFAULT_TIMEOUT_S
        )
        flat_wall = time.perf_counter() - flat_start
        differ = [i for i, r in zip(checked, flat.results, strict=True) if r.correct != results[i]["correct"]]
        by_kind: dict[str, list[int]] = {}
        for i, kind in enumerate(kinds):
            by_kind.setdefault(kind, [0, 0])
            by_kind[kind][0] += 1
            by_kind[kind][1] += bool(results[i]["correct"])
        return {
            "predictions": len(preds),
            "runaway": len(runaway),
            "wall_s": round(wall, 1),
            "runaway_cut_by_time_limit": cut,
            "correct_by_kind": {k: f"{c}/{n}" for k, (n, c) in sorted(by_kind.items())},
            "databases_byte_identical": unchanged,
            "sqlite_files_hashed": sum(name.endswith(".sqlite") for name in before),
            "flat_limit_checked": len(checked),
            "flat_limit_verdicts_differ": len(differ),
            "flat_limit_wall_s": round(flat_wall, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("gold", "hostile", "all"), default="all")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each gold query")
    parser.add_argument("--flat-runaway", type=int, default=0, help="runaway ones to run at the flat 60 s")
    parser.add_argument("--no-write", action="store_true", help="do not write the results JSON")
    args = parser.parse_args()
    out: dict[str, Any] = {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "cpu_count": os.cpu_count(),
        "cores_used": 2 if hasattr(os, "sched_setaffinity") else os.cpu_count(),
    }
    if args.part in ("gold", "all"):
        out["gold"] = gold_times(args.repeats)
        print("gold:", json.dumps(out["gold"]))
    if args.part in ("hostile", "all"):
        out["hostile"] = hostile(args.flat_runaway)
        print("hostile:", json.dumps(out["hostile"]))
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
