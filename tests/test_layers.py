"""The layers stay honest: imports flow one way (store ← auth ← models ← pipeline ← ops ← training ←
{core/cli, ui, app.py}), only entry points parse arguments or build a UI, and no two modules import
each other (function-level imports count: they run too, only later).

Read from the source with `ast`: nothing is imported, so the test is quick and needs no models.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "training", "ui")

# layer → module prefixes it must never import
FORBIDDEN = {
    "core.store": ("core.auth", "core.models", "core.pipeline", "core.ops", "core.cli", "training", "ui"),
    "core.auth": ("core.models", "core.pipeline", "core.ops", "core.cli", "training", "ui"),
    "core.models": ("core.pipeline", "core.ops", "core.cli", "training", "ui"),
    "core.pipeline": ("core.ops", "core.cli", "training", "ui"),
    "core.ops": ("core.cli", "training", "ui"),
    "training": ("core.cli", "ui"),
}
ENTRY_ONLY = ("argparse", "gradio")     # only core/cli, ui, app.py and __main__ files import these


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")] + [ROOT / "app.py"]
    return {_module_name(p): p for p in sorted(files)}


SOURCES = _sources()


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of import nodes under `if TYPE_CHECKING:` (annotations only: never run)."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """(module imported, line) for every import in the file, at any depth; `from pkg import mod` names
    the submodule when there is one; relative imports are resolved."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_only(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            subs = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in SOURCES]
            found += [(s, node.lineno) for s in subs] or [(base, node.lineno)]
    return found


IMPORTS = {name: _imports(name, path) for name, path in SOURCES.items()}


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _where(name: str, line: int) -> str:
    return f"{SOURCES[name].relative_to(ROOT)}:{line}"


def _is_entry(name: str) -> bool:
    return (_within(name, "core.cli") or _within(name, "ui") or name == "app"
            or name.endswith("__main__"))


def test_the_sources_are_found():
    assert {"core.store.catalog", "core.pipeline.search", "training.train", "app"} <= set(SOURCES)


@pytest.mark.parametrize("layer", list(FORBIDDEN))
def test_layers_import_only_downwards(layer):
    bad = []
    for name, imports in IMPORTS.items():
        if not _within(name, layer) or (layer == "training" and name.endswith("__main__")):
            continue
        bad += [f"{_where(name, line)} imports {target}" for target, line in imports
                if any(_within(target, f) for f in FORBIDDEN[layer])]
    assert not bad, f"{layer} must not import {', '.join(FORBIDDEN[layer])}:\n" + "\n".join(bad)


def test_only_entry_points_parse_arguments_or_build_a_ui():
    bad = [f"{_where(name, line)} imports {target}"
           for name, imports in IMPORTS.items() if not _is_entry(name)
           for target, line in imports if any(_within(target, e) for e in ENTRY_ONLY)]
    assert not bad, "only core/cli, ui, app.py and __main__ files import argparse or gradio:\n" + "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycles_finds_a_loop_and_nothing_else():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph: dict[str, set[str]] = defaultdict(set)
    lines: dict[tuple[str, str], int] = {}
    for name, imports in IMPORTS.items():
        graph[name]
        for target, line in imports:
            if target in SOURCES and target != name:
                graph[name].add(target)
                lines.setdefault((name, target), line)
    cycles = _cycles(graph)
    report = []
    for component in cycles:
        members = set(component)
        edges = [f"  {_where(a, lines[a, b])} imports {b}" for a in component for b in sorted(graph[a] & members)]
        report.append(" ↔ ".join(component) + "\n" + "\n".join(edges))
    assert not cycles, "import cycles:\n" + "\n".join(report)
