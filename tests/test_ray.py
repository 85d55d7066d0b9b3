"""``--executor ray`` on a real local Ray cluster: the same results as local, endpoints spread over
the workers, one-line errors, and the three faults (a worker SIGKILLed mid-task, the driver
SIGKILLed mid-run, PostgreSQL restarted mid-run), each against the real test PostgreSQL.

One cluster (``ray.init(num_cpus=2)`` in this process) serves the module; CLI runs in
subprocesses join it with ``--ray-address``. Nothing here asserts a duration: deadlines
are only there so that a hang fails instead of blocking CI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import ray
from sqlalchemy import create_engine, text

from agentloop.backends import ChatRequest, FunctionBackend
from agentloop.errors import AgentloopError
from agentloop.records.store import RunStore, open_store
from agentloop.runs import ray_executor as _ray
from agentloop.runs.runner import RunSpec, run_suite

pytestmark = pytest.mark.ray

GOLD = {
    "What is the total number of singers?": "SELECT count(*) FROM singer",
    "What is the average, minimum, and maximum age of all singers from France?": (
        "SELECT avg(age), min(age), max(age) FROM singer WHERE country = 'France'"
    ),
}
# Functions defined here reach the Ray workers by value: they cannot import a test module.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def answer(request: ChatRequest) -> list[str]:
    """Right for two questions; for the rest, wrong answers (some that fail to run) picked by the
    prompt and the seed, so that rounds and answers differ from task to task and seed to seed.
    """
    prompt = request.raw_prompt or request.messages[-1].content
    for question, sql in GOLD.items():
        if question in prompt:
            return [f"```sql\n{sql}\n```"] * request.n
    h = zlib.crc32(prompt.encode()) + (request.seed or 0)
    picks = [(h + i) % 5 for i in range(request.n)]
    return [
        "```sql\nSELECT nope FROM singer\n```" if k < 2 else f"```sql\nSELECT name FROM singer LIMIT {k}\n```"
        for k in picks
    ]


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A 2-CPU Ray cluster for the module; yields its address for CLI drivers."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no reports from test clusters
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def stored(run_dir: Path, store: str | None = None) -> dict[str, dict]:
    """Each stored task's result and candidates, by task id (what must not depend on the executor)."""
    with open_store(run_dir, store=store) as s:
        run = s.load()
        out = {}
        for t in run.tasks:
            cands = [(c["text"], c["score"], c["passed"], c["best"]) for c in s.trajectory(t.task_id)]
            out[t.task_id] = {
                "answer": t.answer,
                "correct": t.correct,
                "score": t.score,
                "rounds": t.rounds,
                "stop_reason": t.stop_reason,
                "error": t.error,
                "candidates": cands,
            }
        return out


def each_task_once(url: str) -> dict[str, int]:
    """Rows per task id over the store's one run (every value must be 1), read with plain SQL."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT task_id, count(*) FROM task_results GROUP BY task_id")).all()
            assert (
                conn.execute(text("SELECT count(*) FROM task_results WHERE error IS NOT NULL")).scalar() == 0
            )
    finally:
        engine.dispose()
    return {task_id: n for task_id, n in rows}


# --- the same run, either executor ----------------------------------------------------------------


async def test_ray_stores_the_same_results_as_local(cluster: str, tmp_path: Path) -> None:
    spec = RunSpec(graph="iad", n=2, rounds=2, backend="function", limit=8, concurrency=4, max_tokens=64)
    seen: dict[str, list[str]] = {"local": [], "ray": []}
    for executor in ("local", "ray"):
        summary = await run_suite(
            RunSpec(**{**_fields(spec), "executor": executor}),
            run_dir=tmp_path / executor,
            backend=FunctionBackend(answer),
            on_task=lambda o, e=executor: seen[e].append(o.task_id),
        )
        assert summary.tasks == 8 and summary.errors == 0
    local, remote = stored(tmp_path / "local"), stored(tmp_path / "ray")
    assert len(local) == 8 and local == remote
    # Answers and rounds differ from task to task: equal stores are no accident.
    assert len({t["answer"] for t in local.values()}) > 2
    assert {t["rounds"] for t in local.values()} == {1, 2}
    assert sorted(seen["local"]) == sorted(seen["ray"]) == sorted(local)


async def test_a_run_budget_gives_the_same_run_on_ray(cluster: str, tmp_path: Path) -> None:
    # --budget-total: every task's allowance goes with it to the worker, and the ledger's allowances
    # do not depend on the executor.
    spec = RunSpec(
        graph="adaptive", n=4, backend="function", limit=8, concurrency=4, max_tokens=64, budget_total=14,
        budget_window=2,
    )  # fmt: skip
    budgets = {}
    for executor in ("local", "ray"):
        summary = await run_suite(
            RunSpec(**{**_fields(spec), "executor": executor}),
            run_dir=tmp_path / executor,
            backend=FunctionBackend(answer),
        )
        assert summary.tasks == 8 and summary.errors == 0 and summary.budget["spent"] <= 14
        budgets[executor] = summary.budget
    assert stored(tmp_path / "local") == stored(tmp_path / "ray")
    assert budgets["local"] == budgets["ray"]


def _fields(spec: RunSpec) -> dict:
    return {k: getattr(spec, k) for k in RunSpec.__dataclass_fields__}


def with_lessons(request: ChatRequest) -> str | list[str]:
    """``answer``, and a JSON concept for memory's abstraction prompt."""
    prompt = request.raw_prompt or request.messages[-1].content
    if "memory of lessons" in prompt:
        question = prompt.split("Task:\n", 1)[1].split("\n", 1)[0]
        concept = {
            "title": f"Lesson from: {question[:60]}",
            "situation": f"A question about singers, like: {question}",
            "cues": ["singers", "age"],
            "suggestion": "Read the age column of the singer table.",
            "parameters": [],
            "kind": "strategy",
        }
        return json.dumps({"concepts": [concept]})
    return answer(request)


async def test_memory_on_ray_shows_and_writes_what_local_does(
    cluster: str, pg_url: str, tmp_path: Path
) -> None:
    # One task at a time: which lessons a task sees then depends on no timing, under either executor.
    base = RunSpec(graph="greedy", backend="function", limit=6, concurrency=1, max_tokens=64, memory=pg_url)
    runs = {}
    for executor in ("local", "ray"):
        spec = RunSpec(**{**_fields(base), "executor": executor, "memory_namespace": f"ns-{executor}"})
        summary = await run_suite(spec, run_dir=tmp_path / executor, backend=FunctionBackend(with_lessons))
        assert summary.errors == 0 and summary.memory is not None
        runs[executor] = summary.memory
    assert runs["local"] == runs["ray"] and runs["ray"]["written"] > 0 and runs["ray"]["retrieved"] > 0


# --- endpoints and the CLI --------------------------------------------------------------------------


class _Server:
    """A minimal OpenAI-compatible chat server that answers from GOLD and counts its requests."""

    def __init__(self, delay_s: float = 0.0):
        self.requests = 0
        self.delay_s = delay_s
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests += 1
                time.sleep(owner.delay_s)
                replies = answer(ChatRequest.from_prompt(body["messages"][-1]["content"], n=body.get("n", 1)))
                choices = [
                    {"index": i, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
                    for i, reply in enumerate(replies)
                ]
                data = json.dumps(
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": choices,
                        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[list[_Server]]:
    made = [_Server(delay_s=0.05), _Server(delay_s=0.05)]
    try:
        yield made
    finally:
        for s in made:
            s.close()


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "HF_HUB_OFFLINE": "1", "OPENAI_API_KEY": "unused", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "agentloop", "run", *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=timeout,
    )


def test_cli_runs_on_the_cluster_into_postgres_with_endpoints_spread(
    cluster: str, servers: list[_Server], pg_url: str, tmp_path: Path
) -> None:
    a, b = servers
    proc = cli(
        "text2sql", "--graph", "greedy", "--backend", "openai:stub", "--base-url", a.url, "--base-url", b.url,
        "--limit", "12", "--concurrency", "4", "--executor", "ray", "--ray-address", cluster, "--workers", "2",
        "--store", pg_url, "--run-dir", str(tmp_path / "run"), "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["tasks"] == 12 and summary["errors"] == 0
    assert summary["metrics"]["execution_accuracy"] > 0  # the gold questions scored right
    # Each worker talks to its own endpoint: both served a share.
    assert a.requests > 0 and b.requests > 0 and a.requests + b.requests == 12
    assert set(each_task_once(pg_url).values()) == {1}


# --- one-line errors -----------------------------------------------------------------------------


def test_bad_executor_input_is_one_line(tmp_path: Path) -> None:
    for args, needle in (
        (["--executor", "rya"], "unknown executor 'rya'. Did you mean 'ray'?"),
        (["--executor", "ray", "--ray-address", "127.0.0.1:1"], "cannot reach a Ray cluster at 127.0.0.1:1"),
        (["--executor", "ray", "--ray-address", "nohost"], "is not HOST:PORT"),
        (["--workers", "2"], "--workers goes with --executor ray"),
        (["--base-url", "http://a/v1,http://b/v1"], "2 --base-url endpoints are spread over Ray workers"),
    ):
        proc = cli(
            "text2sql", "--backend", "openai:stub", "--run-dir", str(tmp_path / "r"), *args, timeout=120
        )
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr, (args, proc.stderr)
    assert not (tmp_path / "r").exists()


def test_a_worker_that_cannot_set_up_fails_in_one_line_and_leaves_no_run(
    cluster: str, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    args = ["text2sql", "--executor", "ray", "--ray-address", cluster, "--run-dir", str(run_dir)]
    proc = cli(*args, "--backend", "nosuch:model", timeout=180)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown backend 'nosuch:model'" in lines[0], proc.stderr
    with (
        RunStore(f"sqlite:///{run_dir / 'run.sqlite'}", create=False) as store,
        store.engine.connect() as conn,
    ):
        assert conn.execute(text("SELECT count(*) FROM runs")).scalar() == 0  # so no --resume is needed


def test_without_ray_installed_the_error_names_the_extra(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "ray"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named ray', name='ray')\n")
    proc = cli(
        "text2sql", "--executor", "ray", "--run-dir", str(tmp_path / "r"),
        env={"PYTHONPATH": str(shadow.parent)}, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert (
        proc.stderr.strip()
        == "error: the 'ray' package is not installed; install it with: pip install 'agentloop[ray]'"
    )


async def test_sqlite_on_a_multi_node_cluster_is_refused(
    cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_ray, "alive_nodes", lambda: 2)
    spec = RunSpec(graph="greedy", backend="function", limit=2, executor="ray")
    with pytest.raises(AgentloopError, match=r"SQLite file.*2-node Ray cluster.*--store postgresql://"):
        await run_suite(spec, run_dir=tmp_path / "run", backend=FunctionBackend(answer))
    assert not (tmp_path / "run").exists()  # refused before anything was created
    memory = RunSpec(**{**_fields(spec), "memory": str(tmp_path / "lessons.db")})
    with pytest.raises(AgentloopError, match=r"--memory is a SQLite file.*--memory postgresql://"):
        # The store URL is never opened: the refusal comes first.
        await run_suite(
            memory, run_dir=tmp_path / "run", backend=FunctionBackend(answer), store_url="postgresql://u@h/db"
        )


# --- faults --------------------------------------------------------------------------------------

KILL_TASK = "dev-3"


def killer(marker_dir: str):
    """An answer function that SIGKILLs its own worker process the first time it meets KILL_TASK."""

    def fn(request: ChatRequest) -> str:
        prompt = request.raw_prompt or request.messages[-1].content
        if "maximum age of all singers from France" in prompt:  # KILL_TASK's question
            first = Path(marker_dir) / "killed"
            try:
                fd = os.open(first, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                (Path(marker_dir) / "rerun").write_text(str(os.getpid()))
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.1)
        return answer(request)

    return fn


async def test_a_worker_killed_mid_task_is_rerun_and_every_task_stored_once(
    cluster: str, pg_url: str, tmp_path: Path
) -> None:
    spec = RunSpec(graph="greedy", backend="function", limit=10, concurrency=4, max_tokens=64, executor="ray")
    marks = tmp_path / "marks"
    marks.mkdir()
    summary = await run_suite(
        spec, run_dir=tmp_path / "run", store_url=pg_url, backend=FunctionBackend(killer(str(marks)))
    )
    killed, rerun = (marks / "killed").read_text(), (marks / "rerun").read_text()
    assert killed != rerun  # the task ran again, in another process
    assert summary.tasks == 10 and summary.errors == 0
    counts = each_task_once(pg_url)
    assert len(counts) == 10 and set(counts.values()) == {1}
    with open_store(tmp_path / "run", store=pg_url) as store:
        task = next(t for t in store.load().tasks if t.task_id == KILL_TASK)
    assert task.correct and task.error is None  # the killed task's answer is the rerun's


def always_kills(request: ChatRequest) -> list[str]:
    """``answer``, except that KILL_TASK's question SIGKILLs the worker every time."""
    prompt = request.raw_prompt or request.messages[-1].content
    if "maximum age of all singers from France" in prompt:
        os.kill(os.getpid(), signal.SIGKILL)
    return answer(request)


async def test_a_task_that_kills_every_worker_is_stored_as_failed_and_the_run_goes_on(
    cluster: str, tmp_path: Path
) -> None:
    # One task at a time: only the killer task is on the worker when it dies.
    spec = RunSpec(graph="greedy", backend="function", limit=5, concurrency=1, max_tokens=64, executor="ray")
    summary = await run_suite(spec, run_dir=tmp_path / "run", backend=FunctionBackend(always_kills))
    assert summary.tasks == 5 and summary.errors == 1
    with open_store(tmp_path / "run") as store:
        errors = {t.task_id: t.error for t in store.load().tasks}
    assert errors.pop(KILL_TASK).startswith(
        f"WorkerDied: the Ray worker running this task died {_ray.WORKER_RETRIES + 1} times"
    )
    assert set(errors.values()) == {None}


def test_the_driver_killed_mid_run_resumes_and_finishes_the_rest(
    cluster: str, pg_url: str, tmp_path: Path
) -> None:
    server = _Server(delay_s=0.4)
    run_dir = tmp_path / "run"
    args = [
        "text2sql", "--graph", "greedy", "--backend", "openai:stub", "--base-url", server.url, "--limit", "16",
        "--concurrency", "2", "--executor", "ray", "--ray-address", cluster, "--store", pg_url,
        "--run-dir", str(run_dir), "--json",
    ]  # fmt: skip
    full = {**os.environ, "HF_HUB_OFFLINE": "1", "OPENAI_API_KEY": "unused"}
    try:
        driver = subprocess.Popen(
            [sys.executable, "-m", "agentloop", "run", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=full,
        )
        deadline = time.monotonic() + 180
        before: dict[str, float] = {}
        while len(before) < 4:  # kill it with some tasks stored and the rest to do
            assert driver.poll() is None, driver.communicate()[1]
            assert time.monotonic() < deadline, "the run stored nothing in 180 s"
            time.sleep(0.2)
            before = _finished(pg_url)
        driver.send_signal(signal.SIGKILL)
        driver.communicate(timeout=30)
        assert len(before) < 16
        before = _finished(pg_url)  # anything committed while the signal was on its way
        proc = cli(*args[:-1], "--resume", "--json")
        assert proc.returncode == 0, proc.stderr
        summary = json.loads(proc.stdout)
    finally:
        server.close()
    # Workers of the killed driver may commit a task or two more before Ray ends them.
    assert summary["tasks"] == 16 and summary["errors"] == 0 and summary["skipped"] >= len(before)
    counts = each_task_once(pg_url)
    assert len(counts) == 16 and set(counts.values()) == {1}
    # The tasks stored before the kill were not run again.
    after = _finished(pg_url)
    assert all(after[t] == f for t, f in before.items())


def _finished(url: str) -> dict[str, float]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            try:
                rows = conn.execute(text("SELECT task_id, finished FROM task_results")).all()
            except Exception:  # the store's tables are not made yet
                return {}
    finally:
        engine.dispose()
    return {task_id: finished for task_id, finished in rows}


async def test_postgres_restarted_mid_run_loses_nothing(
    cluster: str, pg_url: str, pg_cluster: tuple[str, str], tmp_path: Path
) -> None:
    version, name = pg_cluster
    restarted = threading.Event()
    failure: list[str] = []

    def restart_midway() -> None:
        deadline = time.monotonic() + 180
        while len(_finished(pg_url)) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        (marks / "restarting").touch()
        done = subprocess.run(["pg_ctlcluster", version, name, "restart"], capture_output=True, text=True)
        if done.returncode != 0:
            failure.append(done.stderr)
        restarted.set()

    marks = tmp_path / "marks"
    marks.mkdir()

    def slow(request: ChatRequest) -> str:
        # After the first few tasks, each waits for the restart to begin: their writes meet it.
        (marks / uuid.uuid4().hex).touch()
        if sum(1 for _ in marks.iterdir()) > 6:
            deadline = time.monotonic() + 120
            while not (marks / "restarting").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        time.sleep(0.1)
        return answer(request)

    spec = RunSpec(graph="greedy", backend="function", limit=30, concurrency=4, max_tokens=64, executor="ray")
    watcher = threading.Thread(target=restart_midway, daemon=True)
    watcher.start()
    summary = await run_suite(spec, run_dir=tmp_path / "run", store_url=pg_url, backend=FunctionBackend(slow))
    watcher.join(timeout=60)
    assert restarted.is_set() and not failure, failure
    assert summary.tasks == 30 and summary.errors == 0
    counts = each_task_once(pg_url)
    assert len(counts) == 30 and set(counts.values()) == {1}
    with RunStore(pg_url, create=False, run_name="run") as store:
        assert len(store.load().tasks) == 30
