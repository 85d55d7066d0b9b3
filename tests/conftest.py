"""Shared fixtures. Keep them generic: several test modules use them."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    """The converted embedded model (pulled on first use)."""
    from agentloop.models import ensure_embedded_model

    return ensure_embedded_model()


@pytest.fixture(scope="session")
def transformers_server(embedded_model_dir: Path) -> Iterator[str]:
    """Base URL (``http://127.0.0.1:PORT/v1``) of a real ``transformers serve`` of the embedded model.

    The model path is passed as FORCE_MODEL, so requests must name exactly
    ``str(embedded_model_dir)`` as their model.
    """
    port = _free_port()
    # `python -m transformers.cli.transformers` is the `transformers` console script,
    # pinned to the interpreter running the tests.
    cmd = [
        sys.executable, "-m", "transformers.cli.transformers", "serve",
        "--host", "127.0.0.1", "--port", str(port), str(embedded_model_dir),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    # stderr goes to a file, not a pipe: a chatty server would block on a full pipe.
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            base_url = f"http://127.0.0.1:{port}/v1"
            _wait_until_up(proc, f"{base_url}/models", log, timeout_s=120)
            yield base_url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_until_up(proc: subprocess.Popen, url: str, log, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"transformers serve exited with code {proc.returncode}:\n{_tail(log)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"transformers serve did not answer {url} within {timeout_s:g} s:\n{_tail(log)}")


def _tail(log, lines: int = 30) -> str:
    log.seek(0)
    return "\n".join(log.read().splitlines()[-lines:])


@pytest.fixture
def pg_base_url() -> str:
    """The test PostgreSQL database's URL, with the psycopg 3 driver.

    PostgreSQL runs when ``AGENTLOOP_TEST_POSTGRES_URL`` is set; CI also sets
    ``AGENTLOOP_REQUIRE_POSTGRES`` so that a missing server fails instead of skipping.
    """
    from sqlalchemy.engine import make_url

    url = os.environ.get("AGENTLOOP_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("AGENTLOOP_REQUIRE_POSTGRES"):
            pytest.fail("AGENTLOOP_REQUIRE_POSTGRES is set but AGENTLOOP_TEST_POSTGRES_URL is not")
        pytest.skip("PostgreSQL: set AGENTLOOP_TEST_POSTGRES_URL=postgresql://USER:PASS@HOST/DB")
    return make_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


@pytest.fixture
def pg_url(pg_base_url: str) -> Iterator[str]:
    """An empty schema of the test PostgreSQL database (dropped afterwards), as a URL with its password."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_base_url, pool_pre_ping=True)  # pre-ping: restart tests drop connections
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(pg_base_url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def pg_cluster(pg_base_url: str) -> tuple[str, str]:
    """The (version, name) of the local PostgreSQL cluster that serves the test database, for pg_ctlcluster.

    Restart tests skip where there is none they may restart.
    """
    from sqlalchemy.engine import make_url

    port = make_url(pg_base_url).port or 5432
    if shutil.which("pg_ctlcluster") is None or shutil.which("pg_lsclusters") is None:
        pytest.skip("pg_ctlcluster is not installed: the restart test needs a local Debian PostgreSQL")
    if os.geteuid() != 0:
        pytest.skip("restarting PostgreSQL needs root (the tests run as root in CI)")
    listed = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True).stdout
    for line in listed.splitlines():
        version, name, cluster_port, *_ = line.split()
        if int(cluster_port) == port:
            return version, name
    pytest.skip(f"no local cluster listens on port {port}")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def memory_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty memory database: a temp SQLite file, or a fresh schema in the test PostgreSQL (``pg_url``)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'memory.sqlite'}"
    else:
        yield request.getfixturevalue("pg_url")
