"""``agentloop run`` and ``agentloop report`` end to end on the embedded model (tiny runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.model


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentloop", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=timeout,
    )


def run_json(*args: str) -> dict:
    proc = run_cli(*args, "--max-tokens", "48", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_best_of_n_counts_n_candidates_per_task_and_reports_them(tmp_path: Path) -> None:
    run_dir = tmp_path / "bon"
    data = run_json(
        "run", "text2sql", "--graph", "best_of_n", "--n", "3", "--limit", "2", "--run-dir", str(run_dir)
    )
    assert data["suite"] == "text2sql" and data["graph"] == "best_of_n" and data["backend"] == "transformers"
    assert data["tasks"] == 2 and data["run_dir"] == str(run_dir)
    assert data["usage"]["candidates"] == 6
    assert data["usage"]["llm_calls"] >= 2 and data["usage"]["completion_tokens"] > 0
    assert 0.0 <= data["metrics"]["execution_accuracy"] <= 1.0

    proc = run_cli("report", str(run_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [r["task_id"] for r in report["results"]] == ["dev-0", "dev-1"]
    assert all(isinstance(r["correct"], bool) for r in report["results"])
    assert report["usage"]["candidates"] == 6


def test_iad_runs_one_or_two_rounds_of_n_per_task(tmp_path: Path) -> None:
    # Two tasks, n=2: a task whose first round passes the verifier stops there (2 candidates),
    # the others run both rounds (4), so the run spends between 4 and 8 candidates.
    data = run_json(
        "run", "text2sql", "--graph", "iad", "--n", "2", "--rounds", "2", "--limit", "2",
        "--run-dir", str(tmp_path / "iad"),
    )  # fmt: skip
    assert data["tasks"] == 2
    assert 4 <= data["usage"]["candidates"] <= 8
