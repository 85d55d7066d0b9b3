"""The transformers backend as it was before continuous batching, loaded from git for before/after runs.

``baseline_backend_class()`` reads ``agentloop/backends/transformers_backend.py`` at a git
revision (default: the parent of the commit that added ``_batcher.py``) and imports it as
a module of its own, so the old and the new backend run side by side in one process, with
no stash or checkout.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_FILE = "agentloop/backends/transformers_backend.py"


def default_baseline_rev() -> str:
    added = subprocess.run(
        ["git", "log", "--diff-filter=A", "--format=%H", "--", "agentloop/backends/_batcher.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return f"{added[-1]}^" if added else "HEAD"


def baseline_backend_class(rev: str | None = None) -> tuple[Any, str]:
    """The old ``TransformersBackend`` class, and the revision it came from."""
    rev = rev or default_baseline_rev()
    source = subprocess.run(
        ["git", "show", f"{rev}:{_FILE}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "baseline_transformers_backend.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("baseline_transformers_backend", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    module.asyncio = _SameThreadsAsyncio()  # type: ignore[attr-defined]
    return module.TransformersBackend, rev


class _SameThreadsAsyncio:
    """``asyncio`` for the old module, whose ``to_thread`` gives the worker the caller's torch thread count.

    OpenMP's thread count is a per-thread setting: without this, ``--threads 1`` would
    hold for the new backend's decode thread (which copies the caller's setting) but
    not for the old backend's executor threads.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def to_thread(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        import torch

        threads = torch.get_num_threads()

        def run() -> Any:
            torch.set_num_threads(threads)
            return fn(*args, **kwargs)

        return await asyncio.to_thread(run)


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads`` for this process's benchmark (None: torch's default).

    On a machine shared with other jobs, two OpenMP threads per process stall at every
    parallel region until both are scheduled; one thread per process measures steadily.
    """
    if threads:
        import torch

        torch.set_num_threads(threads)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class Clock:
    """Wall time and load average around a measured block."""

    def __enter__(self) -> Clock:
        self.load_before = load_average()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
        self.load_after = load_average()
