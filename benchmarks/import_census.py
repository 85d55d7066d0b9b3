"""Import census of an agentloop tree: import circles and imports of another package's private module.

    python benchmarks/import_census.py [ROOT]      # ROOT holds agentloop/ (default: .)

A circle counts every import, function-level ones too (a circle through a function is still a
circle in the design), except those under ``if TYPE_CHECKING:``. tests/test_layers.py checks
the module-level graph; this script is how the split's closing note counted before and after.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def modules(root: Path) -> dict[str, Path]:
    out = {}
    for path in sorted((root / "agentloop").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, mods: dict[str, Path]) -> set[str]:
    """The agentloop modules ``name`` imports anywhere but under TYPE_CHECKING."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".")
                if mods[name].name != "__init__.py":
                    package = package[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            targets = [f"{base}.{a.name}" for a in node.names]
            submodules = [t for t in targets if t in mods]
            found.update(submodules)
            if len(submodules) < len(targets):
                found.add(base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(mods[name].read_text(encoding="utf-8")))
    return {m for m in found if m in mods and m != name}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                group = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    group.append(w)
                    if w == v:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


def private_crossings(mods: dict[str, Path]) -> list[str]:
    out = []
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("agentloop."):
                parts = node.module.split(".")  # type: ignore[union-attr]
                if len(parts) >= 3 and parts[2].startswith("_") and parts[1] != name.split(".")[1]:
                    out.append(f"{name}:{node.lineno} imports {node.module}")
    return out


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    mods = modules(root)
    found = circles({m: imports(m, mods) for m in mods})
    print(f"circles: {len(found)}")
    for group in found:
        print("  ", " <-> ".join(group))
    crossings = private_crossings(mods)
    print(f"cross-package private imports: {len(crossings)}")
    for line in crossings:
        print("  ", line)


if __name__ == "__main__":
    main()
