"""The run store on a URL: PostgreSQL (or a shared SQLite file) instead of the run dir's run.sqlite.

Migrations from older stores, run dirs that record their database without its password,
idempotent writes from concurrent processes, writes that outlive a PostgreSQL restart, and
the CLI's one-line errors. PostgreSQL tests run when AGENTLOOP_TEST_POSTGRES_URL is set
(each in a schema of its own); AGENTLOOP_REQUIRE_POSTGRES makes them fail instead of skip.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from agentloop.backends import ChatRequest, FunctionBackend
from agentloop.errors import AgentloopError
from agentloop.graphs import Candidate, LoopUsage, Verdict
from agentloop.records import migrate as run_migrate
from agentloop.records._schema import Base
from agentloop.records.report import RunReport
from agentloop.records.store import (
    STORE_ENV,
    STORE_FILE,
    RunExistsError,
    RunNotFoundError,
    RunStore,
    RunStoreError,
    RunStoreUnavailableError,
    TaskOutcome,
    open_store,
)
from agentloop.runs.runner import RunSpec, run_suite

FIXTURES = Path(__file__).parent / "fixtures"
WRITER = FIXTURES / "run_store_writer.py"
SPEC = RunSpec(graph="greedy", backend="function", limit=3, concurrency=2, max_tokens=64)

sys.path.insert(0, str(FIXTURES))
import slow_text2sql_run as gold  # noqa: E402


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.sqlite'}"
    else:
        yield request.getfixturevalue("pg_url")


@pytest.fixture
def no_password_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (STORE_ENV, "PGPASSWORD", "PGPASSFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")


def password(url: str) -> str:
    pw = make_url(url).password
    assert pw
    return str(pw)


def outcome(task_id: str, *, n: int = 2, error: str | None = None) -> TaskOutcome:
    now = time.time()
    cands = [
        Candidate(
            round=0,
            index=i,
            text=f"c{i}",
            prompt_hash="p",
            answer=f"SELECT {i}",
            verdict=Verdict(0.5, i == 1),
        )
        for i in range(n)
    ]
    index = int(task_id.rsplit("-", 1)[1])
    return TaskOutcome(
        task_id, index, "q?", error is None, now, now, 0.1, answer="SELECT 1", usage=LoopUsage(candidates=n),
        error=error, candidates=cands, best_position=1,
    )  # fmt: skip


def open_run(store: RunStore, name: str | None = None, *, resume: bool = False) -> int:
    return store.open_run(
        suite="text2sql",
        graph="greedy",
        backend="function",
        config={"n": 1},
        planned=3,
        resume=resume,
        name=name,
    )


# --- migrations ------------------------------------------------------------------------------


def test_a_new_store_is_at_head_and_matches_the_models(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with RunStore(db_url) as store:
        assert store.revision == run_migrate.head_revision() == "0004"
        with store.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table": run_migrate.VERSION_TABLE})
            assert compare_metadata(ctx, Base.metadata) == []


def _legacy_store(url: str, *, first_release: bool) -> None:
    """A store as an agentloop before migrations left it: its tables, rows, no version table."""
    engine = create_engine(url)
    if first_release:
        run_migrate.upgrade(engine, "0001")  # the first release's tables, as frozen in 0001
    else:
        Base.metadata.create_all(engine)  # what the previous version made: the current tables
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE {run_migrate.VERSION_TABLE}" if first_release else "SELECT 1"))
        conn.execute(
            text(
                "INSERT INTO runs (name, suite, graph, backend, config, planned, created, updated, wall_s, sessions)"
                " VALUES ('default', 'text2sql', 'greedy', 'function', '{\"n\": 1}', 2, 1.0, 2.0, 3.5, 1)"
            )
        )
        conn.execute(
            text(
                'INSERT INTO task_results (run_id, task_id, "index", question, correct, passed, score,'
                " candidates, llm_calls, failed_calls, prompt_tokens, completion_tokens, rounds, wall_s,"
                " attempt, started, finished) VALUES (1, 'dev-0', 0, 'q?', true, true, 1.0, 1, 1, 0, 10, 5,"
                " 1, 0.5, 1, 1.0, 2.0)"
            )
        )
        conn.execute(
            text(
                'INSERT INTO candidates (task_result_id, position, round, "index", call, prompt_hash, text,'
                " score, passed, best, prompt_tokens, completion_tokens, latency_s, verify_s)"
                " VALUES (1, 0, 0, 0, 0, 'p', 'old text', 1.0, true, true, 10, 5, 0.1, 0.0)"
            )
        )
    engine.dispose()


@pytest.mark.parametrize("first_release", [True, False], ids=["first-release", "previous-version"])
def test_a_store_from_before_migrations_is_stamped_and_upgraded(db_url: str, first_release: bool) -> None:
    _legacy_store(db_url, first_release=first_release)
    with RunStore(db_url, create=False) as store:
        assert store.revision == run_migrate.head_revision()
        run = store.load()
        (task,) = run.tasks
        assert (task.task_id, task.correct, task.reward, task.source, task.wall_s) == (
            "dev-0",
            True,
            None,
            None,
            0.5,
        )
        assert run.wall_s == 3.5 and run.memory_usage is None
        assert [c["text"] for c in store.trajectory("dev-0")] == ["old text"]
        assert store.prompts("dev-0") == {}
        # The upgraded store takes new rows with the columns added since.
        store.record(store.run_id(), TaskOutcome("dev-1", 1, "q?", False, 3.0, 4.0, 0.5, reward=0.25))
        assert [t.reward for t in store.load().tasks] == [None, 0.25]
    with RunStore(db_url, create=False) as again:  # opening again finds the work done
        assert again.revision == run_migrate.head_revision() and len(again.load().tasks) == 2


def test_a_store_from_a_newer_agentloop_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'run.sqlite'}"
    RunStore(url).close()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {run_migrate.VERSION_TABLE} SET version_num = '0099'"))
    engine.dispose()
    with pytest.raises(AgentloopError, match="newer agentloop"):
        RunStore(url)


def test_run_and_memory_stores_share_one_database(tmp_path: Path) -> None:
    """Each keeps its own Alembic version table, so neither mistakes the other's revision for its own."""
    from agentloop.memory import SQLMemoryStore

    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    with RunStore(url) as runs:
        open_run(runs, "a")
    memory = SQLMemoryStore(url)
    memory.close()
    with RunStore(url, create=False) as runs:
        assert runs.revision == run_migrate.head_revision() and runs.run_id("a") > 0


# --- run dirs and URLs ---------------------------------------------------------------------------


@pytest.mark.postgres
def test_a_run_in_postgres_is_found_again_from_its_run_dir(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_password_sources: None
) -> None:
    run_dir = tmp_path / "runs" / f"pg-{uuid.uuid4().hex[:6]}"
    summary = asyncio.run(
        run_suite(SPEC, run_dir=run_dir, backend=FunctionBackend(gold.answer), store_url=pg_url)
    )
    assert summary.tasks == 3 and not (run_dir / "run.sqlite").exists()
    record = json.loads((run_dir / STORE_FILE).read_text())
    assert record["run"] == run_dir.name
    assert (
        make_url(record["url"]).password is None
        and f":{password(pg_url)}@" not in (run_dir / STORE_FILE).read_text()
    )
    assert "search_path" in record["url"]  # the schema is part of where the run is

    # The password comes from --store again (store=), or from AGENTLOOP_STORE_URL.
    assert len(RunReport.load(run_dir, store=pg_url).tasks) == 3
    monkeypatch.setenv(STORE_ENV, pg_url)
    report = RunReport.load(run_dir)
    assert report.run.name == run_dir.name and report.metrics()["execution_accuracy"] == 0.3333
    # ... and without one, the error says where to give it, and never shows one.
    monkeypatch.delenv(STORE_ENV)
    with pytest.raises(RunStoreError, match=f"password.*{STORE_ENV}") as info:
        RunReport.load(run_dir)
    assert f":{password(pg_url)}@" not in str(info.value) and "\n" not in str(info.value)

    # By name, without the run dir.
    assert RunReport.load(run_dir.name, store=pg_url).run.name == run_dir.name
    with pytest.raises(RunNotFoundError, match="no run named 'nosuch'"):
        open_store("nosuch", store=pg_url)


@pytest.mark.postgres
def test_the_viewer_reads_a_run_in_postgres_and_sees_new_tasks(pg_url: str, tmp_path: Path) -> None:
    from agentloop.view import open_runs

    run_dir = tmp_path / "v"
    asyncio.run(run_suite(SPEC, run_dir=run_dir, backend=FunctionBackend(gold.answer), store_url=pg_url))
    (source,) = open_runs([run_dir], store=pg_url)
    try:
        before = source.version()
        detail = source.task("dev-0")
        assert detail is not None and detail.rounds and detail.prompts_stored
        with open_store(run_dir, store=pg_url) as store:
            store.record(store.run_id(), outcome("dev-9"))
        assert source.version() != before and source.position("dev-9") == 3
    finally:
        source.close()


@pytest.mark.postgres
def test_resume_in_postgres_retries_only_failed_tasks_and_counts_each_once(
    pg_url: str, tmp_path: Path
) -> None:
    run_dir = tmp_path / "r"
    broken = {"n": 0}

    def flaky(request: ChatRequest) -> str:
        if "total number of singers" in request.messages[-1].content:
            broken["n"] += 1
            raise RuntimeError("server hiccup")
        return gold.answer(request)

    first = asyncio.run(run_suite(SPEC, run_dir=run_dir, backend=FunctionBackend(flaky), store_url=pg_url))
    assert first.errors == 1 and broken["n"] >= 1
    # --resume: the run dir says where the run is; --store must name the same database if given.
    second = asyncio.run(
        run_suite(
            RunSpec(**{**SPEC.to_dict(), "limit": 4}),
            run_dir=run_dir, resume=True, backend=FunctionBackend(gold.answer), store_url=pg_url,
        )
    )  # fmt: skip
    assert (second.tasks, second.errors, second.skipped) == (4, 0, 2)
    with open_store(run_dir, store=pg_url) as store:
        run = store.load()
        assert sorted(t.task_id for t in run.tasks) == [f"dev-{i}" for i in range(4)]
        assert sorted(t.attempt for t in run.tasks) == [1, 1, 1, 2] and run.sessions == 2
    other = f"sqlite:///{tmp_path / 'other.sqlite'}"
    with pytest.raises(RunStoreError, match="keeps its run in"):
        RunStore.for_run_dir(run_dir, store=other)


@pytest.mark.postgres
def test_a_run_name_taken_in_the_database_is_refused_and_leaves_no_record(
    pg_url: str, tmp_path: Path
) -> None:
    with RunStore.for_run_dir(tmp_path / "a" / "same", store=pg_url) as store:
        open_run(store)
    assert (tmp_path / "a" / "same" / STORE_FILE).is_file()
    with (
        RunStore.for_run_dir(tmp_path / "b" / "same", store=pg_url) as store,
        pytest.raises(RunExistsError) as info,
    ):
        open_run(store)
    message = str(info.value)
    assert "under the name 'same'" in message and "--run-dir" in message and "***" in message
    assert not (tmp_path / "b" / "same" / STORE_FILE).exists()  # it must not point at the other run


def test_the_default_stays_run_sqlite_and_a_shared_sqlite_file_holds_many_runs(tmp_path: Path) -> None:
    backend = FunctionBackend(gold.answer)
    asyncio.run(run_suite(SPEC, run_dir=tmp_path / "own", backend=backend))
    assert (tmp_path / "own" / "run.sqlite").is_file() and not (tmp_path / "own" / STORE_FILE).exists()
    assert RunReport.load(tmp_path / "own").run.name == "default"

    shared = tmp_path / "db" / "shared.sqlite"
    for name in ("x", "y"):
        asyncio.run(run_suite(SPEC, run_dir=tmp_path / name, backend=backend, store_url=str(shared)))
    with RunStore(shared, create=False) as store:
        assert [r.name for r in store.runs()] == ["y", "x"] and [r.tasks for r in store.runs()] == [3, 3]
    assert json.loads((tmp_path / "x" / STORE_FILE).read_text())["url"] == f"sqlite:///{shared}"
    assert len(RunReport.load(tmp_path / "x").tasks) == 3
    with pytest.raises(RunStoreError, match="own run.sqlite"):
        RunStore.for_run_dir(tmp_path / "own", store=str(shared))
    with pytest.raises(RunNotFoundError, match="does not exist"):
        RunStore(tmp_path / "nowhere.sqlite", create=False)


def test_a_store_crosses_to_another_process_as_its_url(db_url: str) -> None:
    import pickle

    with RunStore(db_url, run_name="p") as store:
        run_id = open_run(store)
        clone = pickle.loads(pickle.dumps(store))
        clone.record(run_id, outcome("dev-0"))
        assert clone.run_name == "p" and [t.task_id for t in store.load().tasks] == ["dev-0"]
        clone.close()


# --- idempotent writes from several processes -------------------------------------------------------


def test_the_same_outcome_twice_leaves_the_row_and_a_new_attempt_replaces_it(db_url: str) -> None:
    with RunStore(db_url) as store:
        run_id = open_run(store)
        first = outcome("dev-0", n=3)
        store.record(run_id, first)
        store.record(run_id, first)  # a retry whose first commit went through
        (task,) = store.load().tasks
        assert task.attempt == 1 and len(store.trajectory("dev-0")) == 3
        store.record(run_id, outcome("dev-0", n=1))
        (task,) = store.load().tasks
        assert task.attempt == 2 and len(store.trajectory("dev-0")) == 1


def _writer(url: str, run_id: int, first: int, count: int, name: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WRITER), url, str(run_id), str(first), str(count), name, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _check_each_task_once(store: RunStore, count: int, writers: set[str]) -> list[int]:
    tasks = store.load().tasks
    assert sorted(t.task_id for t in tasks) == sorted(f"dev-{i}" for i in range(count))
    for t in tasks:
        # The row and its candidates come from one writer's outcome: never a mix, never twice.
        texts = [c["text"] for c in store.trajectory(t.task_id)]
        assert t.answer in writers and texts == [f"{t.answer} candidate {i}" for i in range(3)], (t, texts)
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM candidates")).scalar() == 3 * count
    return [t.attempt for t in tasks]


@pytest.mark.postgres
def test_two_processes_racing_on_the_same_tasks_store_each_once(pg_url: str) -> None:
    count = 40
    with RunStore(pg_url) as store:
        run_id = open_run(store)
    start = time.time() + 3.0  # both start writing together, after their imports
    procs = [_writer(pg_url, run_id, 0, count, name, "--start-at", str(start)) for name in ("w1", "w2")]
    for p in procs:
        out, errors = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == f"recorded {count}", errors
    with RunStore(pg_url, create=False) as store:
        attempts = _check_each_task_once(store, count, {"w1", "w2"})
    # Every task was written twice: the second write replaced the first.
    assert set(attempts) == {2}


# --- transient failures -------------------------------------------------------------------------------


class _Proxy:
    """A TCP relay to the database that a test can cut and restore: PostgreSQL going away, in miniature."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.port = 0
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen()
        self.port = server.getsockname()[1]
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            if self._server is not None:
                # shutdown wakes the accept() blocked in the other thread; close alone would not.
                try:
                    self._server.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                self._server.close()
                self._server = None
            for c in self._conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
            self._conns.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.mark.postgres
def test_writes_wait_out_an_outage_and_a_long_one_fails_with_one_line(pg_url: str) -> None:
    url = make_url(pg_url)
    proxy = _Proxy(url.host or "127.0.0.1", url.port or 5432)
    proxy.start()
    via_proxy = url.set(port=proxy.port).render_as_string(False)
    try:
        with RunStore(via_proxy, retry_s=20) as store:
            run_id = open_run(store)
            store.record(run_id, outcome("dev-0"))
            proxy.stop()  # every connection drops; new ones are refused
            threading.Timer(1.0, proxy.start).start()  # back on the same port after a second
            t0 = time.monotonic()
            store.record(run_id, outcome("dev-1"))
            assert 0.9 < time.monotonic() - t0 < 15
            assert [t.task_id for t in store.load().tasks] == ["dev-0", "dev-1"]

        with RunStore(via_proxy, retry_s=1.5) as store:
            proxy.stop()
            t0 = time.monotonic()
            with pytest.raises(RunStoreUnavailableError) as info:
                store.record(run_id, outcome("dev-2"))
            assert 1.4 < time.monotonic() - t0 < 10
    finally:
        proxy.stop()
    message = str(info.value)
    assert "did not answer for 1.5 s" in message and "--resume" in message and "***" in message
    assert "\n" not in message and f":{password(pg_url)}@" not in message


@pytest.mark.postgres
def test_writes_survive_a_real_postgres_restart(pg_url: str, pg_cluster: tuple[str, str]) -> None:
    version, name = pg_cluster
    count = 60
    with RunStore(pg_url) as store:
        run_id = open_run(store)
        writer = _writer(pg_url, run_id, 0, count, "w", "--delay", "0.05")
        deadline = time.monotonic() + 60
        while len(store.load().tasks) < 15:  # restart in the middle of the writing
            assert writer.poll() is None and time.monotonic() < deadline, writer.communicate()
            time.sleep(0.05)
        restart = subprocess.run(["pg_ctlcluster", version, name, "restart"], capture_output=True, text=True)
        assert restart.returncode == 0, restart.stderr
        out, errors = writer.communicate(timeout=120)
        assert writer.returncode == 0 and out.strip() == f"recorded {count}", errors
        assert "retrying" in errors  # the writer did meet the restart
        attempts = _check_each_task_once(store, count, {"w"})
    assert set(attempts) == {1}  # no task was stored twice, none replaced by itself


# --- the command line ---------------------------------------------------------------------------------

PLUGIN = f"""
import sys
sys.path.insert(0, {str(FIXTURES)!r})
from agentloop.backends import FunctionBackend
import slow_text2sql_run

def gold(arg, options):
    return FunctionBackend(slow_text2sql_run.answer)
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A backend plugin ``gold`` that answers two questions right: what pip install leaves behind."""
    site = tmp_path / "site"
    info = site / "agentloop_gold-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "agentloop_gold.py").write_text(textwrap.dedent(PLUGIN))
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: agentloop-gold\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[agentloop.backends]\ngold = agentloop_gold:gold\n")
    return site


def cli(site: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in (STORE_ENV, "PGPASSWORD")}
    full = {
        **base,
        "PYTHONPATH": str(site),
        "HF_HUB_OFFLINE": "1",
        "PGPASSFILE": "/nonexistent",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "agentloop", *args], capture_output=True, text=True, env=full, timeout=300
    )


def ok_json(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.postgres
def test_cli_runs_reports_resumes_and_views_a_run_in_postgres(
    pg_url: str, site: Path, tmp_path: Path
) -> None:
    pg_plain = pg_url.replace("postgresql+psycopg://", "postgresql://")
    run_dir, local = tmp_path / "runs" / "pg-run", tmp_path / "runs" / "local-run"
    common = ("run", "text2sql", "--backend", "gold", "--graph", "greedy", "--limit", "3", "--json")
    data = ok_json(cli(site, *common, "--run-dir", str(run_dir), "--store", pg_plain))
    assert data["tasks"] == 3 and data["run_dir"] == str(run_dir)
    ok_json(cli(site, *common, "--run-dir", str(local)))

    env = {STORE_ENV: pg_plain}
    report = ok_json(cli(site, "report", str(run_dir), "--json", env=env))
    assert report["tasks"] == 3
    by_name = ok_json(cli(site, "report", "pg-run", "--store", pg_plain, "--json"))
    assert by_name["metrics"] == report["metrics"]
    compared = ok_json(cli(site, "report", str(local), "--compare", str(run_dir), "--json", env=env))
    assert [r["tasks"] for r in compared["runs"]] == [3, 3]
    # --store names where names are found; a SQLite run dir beside them is read as ever.
    by_store = ok_json(cli(site, "report", str(local), "--compare", "pg-run", "--store", pg_plain, "--json"))
    assert [r["tasks"] for r in by_store["runs"]] == [3, 3]
    listing = ok_json(cli(site, "report", "--store", pg_plain, "--json"))
    assert [r["name"] for r in listing["runs"]] == ["pg-run"] and "***" in listing["store"]

    resumed = ok_json(
        cli(site, *common[:-3], "--limit", "4", "--json", "--resume", "--run-dir", str(run_dir), env=env)
    )
    assert (resumed["tasks"], resumed["skipped"]) == (4, 3)
    html = tmp_path / "view.html"
    proc = cli(site, "view", str(run_dir), "--export", str(html), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "dev-3" in html.read_text()


def test_cli_store_errors_are_one_line_without_the_password(site: Path, tmp_path: Path) -> None:
    secret = "s3cr3t-pw"
    down = f"postgresql://agentloop:{secret}@127.0.0.1:1/agentloop"
    cases = [
        (
            ["run", "text2sql", "--store", down, "--run-dir", str(tmp_path / "a")],
            ["cannot open the run store", "***"],
        ),
        (["report", "some-run", "--store", down], ["cannot open the run store", "127.0.0.1:1"]),
        (["report", "x", "--store", f"sqlite:///{tmp_path}/nowhere/runs.sqlite"], ["does not exist"]),
        (
            ["run", "text2sql", "--store", "mysql://u:p@h/db", "--run-dir", str(tmp_path / "b")],
            ["PostgreSQL or SQLite"],
        ),
        (["report", str(tmp_path / "nothing")], ["no run found"]),
        (["report"], ["--store URL"]),
    ]
    (tmp_path / "shared.sqlite").touch()
    RunStore(tmp_path / "shared.sqlite").close()
    cases.append(
        (["report", "nosuch", "--store", str(tmp_path / "shared.sqlite")], ["no run named 'nosuch'"])
    )
    for args, needles in cases:
        proc = cli(site, *args)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, (
            args,
            proc.stderr,
        )
        assert secret not in proc.stderr + proc.stdout, args
        for needle in needles:
            assert needle in lines[0], (args, lines[0])
    assert not (tmp_path / "a").exists()  # a store that does not open leaves no run dir behind


@pytest.mark.postgres
def test_cli_wrong_password_is_one_line(site: Path, tmp_path: Path, pg_base_url: str) -> None:
    url = make_url(pg_base_url).set(password="wrong-pw").render_as_string(False)
    proc = cli(site, "run", "text2sql", "--store", url, "--run-dir", str(tmp_path / "w"))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "password authentication failed" in lines[0] and "wrong-pw" not in proc.stderr
