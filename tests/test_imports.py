"""The module graph: no import cycles at import time, and no import the wrong way between layers.

Read from the source (``ast``), so it costs no interpreter per module: an edge is a module-level
``import`` of another cnnkit module (its parent packages included, which Python runs first);
imports inside functions (and under ``TYPE_CHECKING``) run later or never and cannot form an
import-time cycle, but the layer rules count them too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "cnnkit"


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.AST, module: str, is_pkg: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_pkg else 0)]
            stem = ".".join(base + ([node.module] if node.module else []))
        else:
            stem = node.module or ""
        return [stem] + [f"{stem}.{a.name}" for a in node.names]
    return []


def _type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(module-level imports, all imports) of cnnkit modules in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module, is_pkg = _module(path), path.name == "__init__.py"
    top: set[str] = set()
    every: set[str] = set()

    def visit(nodes: list[ast.stmt], at_top: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _type_checking(node):
                visit(node.body, False)  # for type checkers only: no import-time edge, but a layer edge
                continue
            for name in _targets(node, module, is_pkg):
                if name.startswith("cnnkit"):
                    every.add(name)
                    if at_top:
                        top.add(name)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(list(ast.walk(node))[1:], False)  # type: ignore[arg-type]
            elif isinstance(node, ast.ClassDef):
                visit(node.body, at_top)
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                visit([n for n in ast.iter_child_nodes(node) if isinstance(n, ast.stmt)], at_top)

    visit(tree.body, True)
    return top, every


def graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    files = {_module(p): p for p in ROOT.rglob("*.py")}
    known = set(files)

    def resolve(names: set[str]) -> set[str]:
        out = set()
        for name in names:
            while name and name not in known:  # `from pkg import func` names pkg
                name = name.rpartition(".")[0]
            parts = name.split(".")
            out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))  # parents run first
        return out

    top, every = {}, {}
    for mod, path in files.items():
        t, e = _imports(path)
        top[mod] = resolve(t) - {mod}
        every[mod] = resolve(e) - {mod}
    return top, every


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return found


def _parents_removed(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """Edges from a package's ``__init__`` to its own submodules are how packages re-export; a child
    importing its parent package is what Python does anyway. Neither is a layering cycle."""
    return {m: {t for t in ts if not t.startswith(m + ".") and not m.startswith(t + ".")} for m, ts in edges.items()}


def test_no_import_cycles():
    top, _ = graph()
    assert _cycles(_parents_removed(top)) == []


def test_layers_import_the_right_way():
    _, every = graph()

    def offenders(prefix: str, forbidden: str) -> list[str]:
        return sorted(
            f"{m} -> {t}"
            for m, ts in every.items()
            if m == prefix or m.startswith(prefix + ".")
            for t in ts
            if t == forbidden or t.startswith(forbidden + ".")
        )

    # the spine (engine, records, results, I/O, COCO scoring) knows no task
    for low in ("cnnkit.engine", "cnnkit.records", "cnnkit.results", "cnnkit.io", "cnnkit.eval"):
        assert offenders(low, "cnnkit.tasks") == [], low
    # a predictor needs no training code
    for task in ("classify", "detect", "segment", "instance"):
        assert offenders(f"cnnkit.tasks.{task}.predict", "cnnkit.train") == [], task
    assert offenders("cnnkit.engine", "cnnkit.cli") == []


def test_the_graph_sees_imports():
    """The checks above would pass on an empty graph: make sure they read real edges."""
    top, every = graph()
    assert "cnnkit.engine" in top["cnnkit.tasks.classify.predict"]
    assert "cnnkit.io.pictures" in top["cnnkit.engine"]
    assert "cnnkit.results" in every["cnnkit.tasks.instance.post"]
