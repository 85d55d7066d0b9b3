"""Import rules between agentloop's packages, checked statically (ast), so that they stay true.

Data flows CLI -> run -> suite -> graph -> node -> backend, with memory and the run records
beside it: the core never imports the CLI, suites never import runs or records, records never
import suites, graphs or backends, and the viewer reads records and the public types only.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

import agentloop

PACKAGE = Path(agentloop.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The modules (and ``package.name`` targets) an import statement names, absolute."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = node.module or ""
    if node.level:
        package = module.split(".")
        if MODULES[module].name != "__init__.py":
            package = package[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join([*package, base] if base else package)
    yield base
    yield from (f"{base}.{alias.name}" for alias in node.names)


def all_imports(module: str) -> Iterator[tuple[int, str]]:
    """Every import in ``module``, at any depth (functions and TYPE_CHECKING blocks too)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield from ((node.lineno, name) for name in imported(module, node))


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def offences(modules: Iterable[str], forbidden: list[str]) -> list[str]:
    """``module:line imports name`` for each import of a ``forbidden`` package by ``modules``."""
    return [
        f"{module}:{line} imports {name}"
        for module in modules
        for line, name in all_imports(module)
        if any(within(name, f) for f in forbidden)
    ]


def test_the_scan_sees_the_package() -> None:
    assert {"agentloop.cli", "agentloop.cli._common", "agentloop.webshop._env"} <= set(MODULES)
    assert ("agentloop.cli._common", "agentloop.errors.AgentloopError") in {
        (m, n) for m in ["agentloop.cli._common"] for _, n in all_imports(m)
    }


def test_the_core_never_imports_the_cli() -> None:
    # ``python -m agentloop`` is the command line's own entry point.
    core = [m for m in MODULES if not within(m, "agentloop.cli") and m != "agentloop.__main__"]
    assert offences(core, ["agentloop.cli"]) == []


def test_the_webshop_world_knows_no_agent() -> None:
    """The world (catalog, search, pages, reward) never imports an agent, a graph, memory or the screen.

    The WebShop agent (task, prompts, policies, verifiers) is in ``agentloop.suites.webshop``.
    """
    world = [m for m in MODULES if within(m, "agentloop.webshop")]
    assert "agentloop.webshop._env" in world
    agent_side = [
        "agentloop.graphs",
        "agentloop.suites",
        "agentloop.runs",
        "agentloop.records",
        "agentloop.evals",
        "agentloop.memory",
        "agentloop.cli",
        "agentloop.backends",
    ]
    assert offences(world, agent_side) == []


def rooms(*names: str) -> list[str]:
    return [m for m in MODULES if any(within(m, f"agentloop.{n}") for n in names)]


def test_suites_never_import_runs_or_records() -> None:
    assert "agentloop.suites.text2sql.task" in rooms("suites")
    assert (
        offences(rooms("suites"), ["agentloop.runs", "agentloop.records", "agentloop.evals", "agentloop.cli"])
        == []
    )


def test_records_never_import_suites_graphs_or_backends() -> None:
    """A run reports and opens in the viewer from what its store recorded, with no suite, graph or engine."""
    assert "agentloop.records.report" in rooms("records")
    forbidden = [
        "agentloop.suites",
        "agentloop.graphs",
        "agentloop.backends",
        "agentloop.runs",
        "agentloop.evals",
    ]
    assert offences(rooms("records"), forbidden) == []


def test_the_viewer_imports_only_records_and_the_public_types() -> None:
    allowed = ("agentloop.view", "agentloop.records", "agentloop.types", "agentloop.errors")
    imports = [
        f"{module}:{line} imports {name}"
        for module in rooms("view")
        for line, name in all_imports(module)
        if name.startswith("agentloop") and name != "agentloop" and not any(within(name, a) for a in allowed)
    ]
    assert imports == []


def test_runs_import_only_what_they_run() -> None:
    """Runs may import suites, graphs, backends, memory and records; never the CLI or the viewer."""
    assert offences(rooms("runs"), ["agentloop.cli", "agentloop.view", "agentloop.evals"]) == []


def test_backends_know_no_loop_task_or_memory() -> None:
    forbidden = [
        "agentloop.graphs",
        "agentloop.suites",
        "agentloop.runs",
        "agentloop.records",
        "agentloop.memory",
    ]
    assert offences(rooms("backends"), forbidden) == []


def test_no_package_imports_another_packages_private_module() -> None:
    """Shared names are public (agentloop.types, a package's __init__); privates stay in their room."""
    crossings = [
        f"{module}:{line} imports {name}"
        for module in MODULES
        for line, name in all_imports(module)
        if name.startswith("agentloop.")
        and len(name.split(".")) >= 3
        and name.split(".")[2].startswith("_")
        and name.split(".")[1] != module.split(".")[1]
    ]
    assert crossings == []


def test_the_deprecated_evals_paths_only_re_export() -> None:
    """``agentloop.evals`` holds nothing but the re-exports of the moved names, for one release."""
    for module in rooms("evals"):
        names = {name for _, name in all_imports(module) if name.startswith("agentloop")}
        assert names <= {"agentloop.evals", "agentloop.evals.redirect"}, module


def module_level_imports(module: str) -> Iterator[str]:
    """The agentloop modules ``module`` imports when it loads: not in functions, not under TYPE_CHECKING."""

    def statements(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
        for node in body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                yield node
            elif isinstance(node, ast.If):
                test = ast.unparse(node.test)
                if test not in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                    yield from statements(node.body)
                yield from statements(node.orelse)
            elif isinstance(node, ast.Try):
                for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                    yield from statements(block)

    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node in statements(tree.body):
        names = list(imported(module, node))
        if isinstance(node, ast.Import):
            yield from (n for n in names if n in MODULES)
            continue
        # ``from package import name`` loads package.name when that is a module, else the package
        # (a package's own __init__ is not counted as a step, or every package would be a cycle).
        base, *targets = names
        submodules = [n for n in targets if n in MODULES]
        yield from submodules
        if len(submodules) < len(targets) and base in MODULES:
            yield base


def import_cycles() -> list[list[str]]:
    """Strongly connected groups of more than one module in the module-level import graph (Tarjan)."""
    edges = {m: sorted(set(module_level_imports(m)) - {m}) for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in edges:
        if v not in index:
            visit(v)
    return cycles


def test_the_cycle_check_finds_a_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself: the report importing the runner at module level would close a circle."""
    real = module_level_imports

    def with_cycle(module: str) -> Iterator[str]:
        yield from real(module)
        if module == "agentloop.records.report":
            yield "agentloop.runs.runner"

    monkeypatch.setattr(f"{__name__}.module_level_imports", with_cycle)
    assert ["agentloop.records.report", "agentloop.runs.runner"] in import_cycles()


def test_no_import_cycles_at_module_level() -> None:
    """No module needs itself to load: the runner, report and suites in particular (run_spec holds
    what they share), and the suite registry and the suites in their own modules (_suite_base)."""
    assert {"agentloop.runs.runner", "agentloop.records.report", "agentloop.suites._registry"} <= set(MODULES)
    assert import_cycles() == []


def test_one_did_you_mean_helper() -> None:
    """Unknown names get their hint from agentloop.errors (close_match, did_you_mean), never a copy."""
    copies = [
        f"{module}:{node.lineno}"
        for module, path in MODULES.items()
        if module != "agentloop.errors"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if (isinstance(node, ast.Attribute) and node.attr == "get_close_matches")
        or (isinstance(node, ast.alias) and node.name == "get_close_matches")
    ]
    assert copies == []
