"""The agentloop command: JSON output from the embedded model, and one-line errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "agentloop", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.model
def test_generate_json_returns_n_completions_with_usage():
    proc = run_cli(
        "generate", "Name three colors.", "--n", "3", "--max-tokens", "12", "--seed", "1", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert len(data["completions"]) == 3
    assert all(isinstance(c["text"], str) for c in data["completions"])
    usage = data["usage"]
    assert usage["prompt_tokens"] > 0
    assert 3 <= usage["completion_tokens"] <= 36


def test_unknown_backend_is_one_line_with_a_suggestion():
    assert_one_line_error(
        run_cli("generate", "hi", "--backend", "antropic:claude"), "Did you mean 'anthropic'"
    )


def test_missing_extra_names_the_pip_line(tmp_path):
    # Shadow the SDK with a module that fails to import, as if it were not installed.
    (tmp_path / "openai.py").write_text("raise ImportError(\"No module named 'openai'\", name='openai')\n")
    proc = run_cli(
        "generate",
        "hi",
        "--backend",
        "openai:gpt-4o-mini",
        env={"PYTHONPATH": str(tmp_path), "OPENAI_API_KEY": "sk-test"},
    )
    assert_one_line_error(proc, "pip install 'agentloop[openai]'")


def test_missing_api_key_names_the_variable():
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    proc = subprocess.run(
        [sys.executable, "-m", "agentloop", "generate", "hi", "--backend", "openai:gpt-4o-mini"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert_one_line_error(proc, "OPENAI_API_KEY")


def test_anthropic_missing_api_key_names_the_variable():
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    proc = subprocess.run(
        [sys.executable, "-m", "agentloop", "generate", "hi", "--backend", "anthropic:claude-sonnet-4-5"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert_one_line_error(proc, "ANTHROPIC_API_KEY")


def test_unreachable_base_url_is_one_line():
    url = f"http://127.0.0.1:{closed_port()}/v1"
    proc = run_cli("generate", "hi", "--backend", "openai:some-model", "--base-url", url, timeout=180)
    assert_one_line_error(proc, url)


def test_models_path_prints_the_dir_under_agentloop_home(tmp_path):
    from agentloop.models import embedded_model_dir, is_pulled

    if not is_pulled():
        pytest.skip("embedded model not pulled yet")
    proc = run_cli("models", "path")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(embedded_model_dir())
