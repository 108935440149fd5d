"""No import circle inside attn_tutorial: the graph of every import statement in the package,
read from the source (function-level imports included, since a late import inside a function
is still a circle, only a hidden one), has no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import attn_tutorial

ROOT = Path(attn_tutorial.__file__).parent
PACKAGE = "attn_tutorial"


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join((PACKAGE,) + parts)] = path
    return found


def _type_checking_blocks(tree: ast.AST) -> set[int]:
    """The nodes under ``if TYPE_CHECKING:``: imports there never run, so they make no circle."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING",
                                                                    "typing.TYPE_CHECKING"):
            inside.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    return inside


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports, each with the packages above it that the
    import runs (except the ones ``name`` itself lives in)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    type_checking = _type_checking_blocks(tree)
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = base + ("." + node.module if node.module else "")
            else:
                base = node.module or ""
            for alias in node.names:  # `from x import y`: y is a module or a name in x
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    edges = set()
    for target in targets:
        if target not in modules:
            continue
        parts = target.split(".")
        for i in range(2, len(parts) + 1):  # the package __init__s the import runs on the way
            ancestor = ".".join(parts[:i])
            if ancestor != name and not (name + ".").startswith(ancestor + "."):
                edges.add(ancestor)
    return edges


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_the_graph_is_read_correctly():
    graph = _graph()
    # known edges, one of each kind: absolute, relative, relative two levels up, late (inside a
    # function), and a dotted import that runs a package __init__ on the way
    assert "attn_tutorial.data" in graph["attn_tutorial.zoo"]
    assert "attn_tutorial.networks.resnets" in graph["attn_tutorial.networks"]
    assert "attn_tutorial._validate" in graph["attn_tutorial.networks.resnets"]
    assert "attn_tutorial.zoo" in graph["attn_tutorial.compare"]
    assert {"attn_tutorial.networks", "attn_tutorial.networks.loaders"} <= \
        graph["attn_tutorial.official"]
    # an import only type checkers run is not an edge: _mistakes names _core's Checker in hints
    assert "attn_tutorial.checks._mistakes" in graph["attn_tutorial.checks._core"]
    assert "attn_tutorial.checks._core" not in graph["attn_tutorial.checks._mistakes"]
    assert _type_checking_blocks(ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a.b\nimport c"))
    # and the cycle finder finds a planted circle
    planted = {k: set(v) for k, v in graph.items()}
    planted["attn_tutorial.networks.loaders"].add("attn_tutorial.official")
    assert any("attn_tutorial.official" in c and "attn_tutorial.networks" in c
               for c in _cycles(planted))


def test_no_import_circle_in_the_package():
    assert _cycles(_graph()) == []
