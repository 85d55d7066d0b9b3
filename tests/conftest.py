"""Shared fixtures. Keep them generic: several test modules use them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
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
