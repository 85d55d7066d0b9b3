"""The sandbox for model code: hostile programs fail only themselves, at every isolation level here.

``bwrap`` tests run where the bwrap binary works; AGENTLOOP_REQUIRE_BWRAP=1 (CI installs it)
makes a missing one fail instead of skip. The seccomp filter is Linux x86_64/aarch64.
"""

from __future__ import annotations

import asyncio
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agentloop.tools.sandbox import Sandbox, SandboxError, SandboxLimits, resolve_isolation

BWRAP = resolve_isolation("auto") == "bwrap"
if os.environ.get("AGENTLOOP_REQUIRE_BWRAP") == "1" and not BWRAP:
    raise RuntimeError("AGENTLOOP_REQUIRE_BWRAP=1 but bwrap isolation does not start here")
SECCOMP = sys.platform.startswith("linux") and platform.machine() in ("x86_64", "aarch64")
LEVELS = [
    "process",
    pytest.param("bwrap", marks=pytest.mark.skipif(not BWRAP, reason="bwrap does not work here")),
]
needs_seccomp = pytest.mark.skipif(not SECCOMP, reason="the seccomp filter is Linux x86_64/aarch64 only")
LIMITS = SandboxLimits(timeout_s=2.0, startup_s=8.0)


@pytest.fixture(params=LEVELS)
def box(request: pytest.FixtureRequest) -> Sandbox:
    return Sandbox(LIMITS, isolation=request.param)


def run(box: Sandbox, code: str, **kw: float) -> object:
    return box.run_sync(code, **kw)


def test_a_plain_program_passes_and_reports_its_result_and_output(box: Sandbox) -> None:
    r = box.run_sync("print('hello')\n__result__ = {'sum': sum(range(10)), 'xs': (1, 2)}")
    assert r.passed and r.result == {"sum": 45, "xs": [1, 2]}
    assert r.output.strip() == "hello" and r.isolation == box.isolation


def test_exceptions_and_syntax_errors_fail_with_their_line(box: Sandbox) -> None:
    r = box.run_sync("def f(:\n  pass")
    assert r.status == "failed" and r.error is not None and r.error.startswith("SyntaxError")
    r = box.run_sync("assert 1 == 2, 'one is not two'")
    assert r.status == "failed" and r.error == "AssertionError: one is not two"


def test_the_environment_is_empty(box: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("AGENTLOOP_HOME", "/somewhere")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_URL", "http://collector")
    r = box.run_sync("import os\n__result__ = dict(os.environ)")
    assert r.passed and isinstance(r.result, dict)
    leaked = [k for k in r.result if "KEY" in k or k.startswith("AGENTLOOP_") or k.endswith("_URL")]
    assert leaked == []
    assert "sk-secret" not in str(r.result)


def test_secret_looking_variables_are_refused() -> None:
    for name in ("OPENAI_API_KEY", "AGENTLOOP_HOME", "DATABASE_URL", "GH_TOKEN"):
        with pytest.raises(SandboxError, match=name):
            Sandbox(LIMITS, isolation="process", env={name: "x"})


def test_os_system_and_subprocesses_fail(box: Sandbox, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    for code in (
        f"import os\nos.system('touch {marker}')",
        f"import subprocess\nsubprocess.run(['touch', '{marker}'])",
    ):
        assert box.run_sync(code).status == "failed"
    if SECCOMP:  # past the guard: the raw calls meet the seccomp filter
        r = box.run_sync(f"import posix\nposix.execv('/usr/bin/touch', ['touch', '{marker}'])")
        assert r.status == "failed" and "Operation not permitted" in (r.error or "")
    assert not marker.exists()


@needs_seccomp
def test_a_fork_bomb_fails_at_once(box: Sandbox) -> None:
    start = time.perf_counter()
    r = box.run_sync("import posix\nwhile True:\n    posix.fork()")
    assert r.status == "failed" and "Operation not permitted" in (r.error or "")
    assert time.perf_counter() - start < 10


def test_an_infinite_loop_times_out(box: Sandbox) -> None:
    start = time.perf_counter()
    r = box.run_sync("while True:\n    pass", timeout_s=1.0)
    assert r.status == "timeout" and not r.passed
    assert time.perf_counter() - start < 1.0 + LIMITS.startup_s


def test_a_loop_that_swallows_the_timer_is_killed_from_outside(box: Sandbox) -> None:
    code = "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass"
    r = box.run_sync(code, timeout_s=1.0)
    assert r.status == "timeout"


def test_a_huge_allocation_fails(box: Sandbox) -> None:
    r = box.run_sync("x = bytearray(16 << 30)")
    assert r.status == "failed" and r.error == "MemoryError"


def test_sys_exit_fails_and_os_exit_crashes(box: Sandbox) -> None:
    assert box.run_sync("import sys\nsys.exit(0)").status == "failed"
    r = box.run_sync("import os\nos._exit(0)")
    assert r.status == "crashed" and not r.passed


def test_a_big_file_is_cut_by_the_size_limit(box: Sandbox) -> None:
    r = box.run_sync("open('big', 'wb').write(b'x' * (64 << 20))")
    assert not r.passed


def test_output_is_kept_up_to_its_limit(box: Sandbox) -> None:
    r = box.run_sync("print('y' * 1_000_000)\n__result__ = 1")
    assert r.passed and r.result == 1
    assert len(r.output) < LIMITS.output_chars + 100 and "more characters dropped" in r.output


def test_a_socket_reaches_nothing(box: Sandbox) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    try:
        r = box.run_sync(
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).send(b'hi')"
        )
        assert r.status == "failed"
        with pytest.raises(TimeoutError):
            server.accept()
    finally:
        server.close()


def test_other_processes_cannot_be_killed(box: Sandbox) -> None:
    victim = subprocess.Popen(["sleep", "30"])
    try:
        code = (
            "import posix, signal\n"
            f"for pid in ({victim.pid}, {os.getpid()}, posix.getppid()):\n"
            "    try:\n        posix.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n"
        )
        box.run_sync(code)
        time.sleep(0.2)
        assert victim.poll() is None  # still running, and so is this test process
    finally:
        victim.kill()
        victim.wait()


@pytest.mark.skipif(not BWRAP, reason="bwrap does not work here")
def test_bwrap_keeps_the_file_system_read_only_and_the_home_hidden(tmp_path: Path) -> None:
    box = Sandbox(LIMITS, isolation="bwrap")
    secret = tmp_path / "id_rsa"
    secret.write_text("PRIVATE KEY")
    outside = tmp_path / "written"
    r = box.run_sync(f"open({str(outside)!r}, 'w').write('x')")
    assert r.status == "failed" and not outside.exists()
    r = box.run_sync(f"print(open({str(secret)!r}).read())")
    assert r.status == "failed" and "PRIVATE KEY" not in r.output
    home = Path.home()
    r = box.run_sync(f"import os\n__result__ = os.listdir({str(home)!r})")
    assert r.passed and ".ssh" not in (r.result or [])
    # Inside, the temporary directory is writable ($HOME and $TMPDIR point at it), and it is gone afterwards.
    r = box.run_sync(
        "import os\np = os.path.join(os.environ['HOME'], 'scratch')\nopen(p, 'w').write('x')\n__result__ = p"
    )
    assert r.passed and str(r.result).endswith("scratch") and not Path(str(r.result)).exists()


def test_hostile_programs_fail_only_themselves_when_run_together(box: Sandbox) -> None:
    hostile = [
        "while True:\n    pass",
        "import posix\nwhile True:\n    posix.fork()",
        "x = bytearray(16 << 30)",
        "import os\nos._exit(3)",
        "import sys\nsys.exit(1)",
        "import os\nos.system('yes > /dev/null')",
    ]
    good = "__result__ = sum(i * i for i in range(1000))"

    async def main() -> list:
        return list(await asyncio.gather(*(box.run(c, timeout_s=1.0) for c in [*hostile, good, good])))

    results = asyncio.run(main())
    assert [r.passed for r in results] == [False] * len(hostile) + [True, True]
    assert results[-1].result == 332833500


def test_runs_are_bounded_by_the_concurrency() -> None:
    box = Sandbox(LIMITS, isolation="process", concurrency=2)
    running, peak = 0, 0
    lock = threading.Lock()
    original = box._run

    async def counted(*args: object) -> object:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            return await original(*args)  # type: ignore[arg-type]
        finally:
            with lock:
                running -= 1

    box._run = counted  # type: ignore[method-assign]

    async def main() -> None:
        await asyncio.gather(*(box.run("__result__ = 1") for _ in range(5)))

    asyncio.run(main())
    assert peak == 2


def test_describe_says_which_isolation_is_in_force() -> None:
    assert Sandbox(LIMITS, isolation="process").describe().startswith("sandbox: process")
    if BWRAP:
        assert "no network" in Sandbox(LIMITS, isolation="bwrap").describe()
    with pytest.raises(SandboxError, match="unknown sandbox isolation"):
        Sandbox(LIMITS, isolation="docker")
