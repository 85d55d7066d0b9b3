"""Summarise the Qwen2.5-Coder Text2SQL runs of ``bench_text2sql_qwen.sh``: accuracy, invalid candidates, pairs.

Usage: python benchmarks/summarize_text2sql_qwen.py [--root benchmarks/runs/qwen05]
       [--out benchmarks/results/text2sql_qwen.json]

For every run dir there (``greedy-schema``, ``greedy-none``, ``bon8-schema``, ...): the run's
accuracy and usage from ``agentloop report --json``, and every stored candidate checked as
``bench_text2sql_constrain.py`` checks them (fails to parse or run, or names a table or
column the schema lacks). Pairs, from ``agentloop report A --compare B --json`` (paired over
the same questions, with a 95% interval): schema minus none for each graph, and IAD minus
best-of-8 under the same constraint.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

from bench_text2sql_constrain import candidate_checks, report_json

PAIRS = [
    ("greedy-schema", "greedy-none"),
    ("bon8-schema", "bon8-none"),
    ("iad-schema", "iad-none"),
    ("iad-schema", "bon8-schema"),
    ("iad-none", "bon8-none"),
    ("bon8-schema", "greedy-schema"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("benchmarks/runs/qwen05"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/text2sql_qwen.json"))
    args = ap.parse_args()
    runs: dict[str, Any] = {}
    for run_dir in sorted(p for p in args.root.iterdir() if (p / "run.sqlite").exists()):
        out = report_json(run_dir)
        rep = out["runs"][0] if "runs" in out else out
        if not rep.get("complete", True):
            print(f"{run_dir.name}: not finished; its stored tasks are summarised and paired")
        summary = args.out.parent / "text2sql_qwen" / f"{run_dir.name}.summary.json"
        runs[run_dir.name] = {
            "complete": rep.get("complete", True),
            "config": rep["config"],
            "tasks": rep["tasks"],
            "execution_accuracy": rep["metrics"]["execution_accuracy"],
            "correct": sum(r["correct"] for r in rep["results"]),
            "usage": rep["usage"],
            "wall_s": json.loads(summary.read_text())["usage"]["wall_s"] if summary.exists() else None,
            "candidate_checks": candidate_checks(run_dir),
        }
        print(run_dir.name, runs[run_dir.name]["execution_accuracy"], runs[run_dir.name]["candidate_checks"])
    pairs = []
    for a, b in PAIRS:
        if a in runs and b in runs:
            try:
                cmp = report_json(args.root / a, args.root / b)["comparison"][0]
            except subprocess.CalledProcessError as exc:
                print(f"{a} vs {b}: skipped ({exc.stderr.strip()})")
                continue
            pairs.append({"a": a, "b": b, "comparison": cmp})
            print(a, "-", b, json.dumps(cmp)[:400])
    args.out.write_text(json.dumps({"runs": runs, "pairs": pairs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
