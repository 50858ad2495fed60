"""The layering of docs/architecture.md, checked on the source with ``ast``.

core (numpy / torch) <- io (files) <- pipeline (orchestration) <- cli, widgets. Every import
counts, including those inside functions (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = "napari_any2reg"
SOURCE = Path(__file__).resolve().parents[1] / "src" / PACKAGE


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """Absolute names ``from ... import ...`` refers to (modules or attributes of modules)."""
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    return [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    """``module -> names it imports`` for every module of the package (all scopes)."""
    graph: dict[str, set[str]] = {}
    for path in SOURCE.rglob("*.py"):
        module = _module_name(path)
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                imported.update(_resolve(module, path.name == "__init__.py", node))
        graph[module] = imported
    return graph


def _internal_edges(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Edges between package modules only (``from .x import name`` -> module ``x``)."""
    edges: dict[str, set[str]] = {}
    for module, names in graph.items():
        targets = set()
        for name in names:
            # the longest package module that the imported name starts with
            while name and name not in graph:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        edges[module] = targets
    return edges


def find_cycle(edges: dict[str, set[str]], within: str) -> list[str] | None:
    """One import cycle among the modules under ``within``, or ``None``."""
    nodes = {m for m in edges if m == within or m.startswith(within + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges[node] & nodes):
            # a package's __init__ importing its own submodules is not a cycle of concern
            if state.get(target) == 1 and not node.startswith(target + "."):
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(nodes):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


GRAPH = import_graph()


def _violations(layer: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for module, names in GRAPH.items():
        if module != f"{PACKAGE}.{layer}" and not module.startswith(f"{PACKAGE}.{layer}."):
            continue
        for name in names:
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{module} imports {name}")
    return sorted(bad)


def test_graph_sees_function_level_imports():
    # registration loads the engines inside a function; the graph must still have the edge
    edges = _internal_edges(GRAPH)
    assert f"{PACKAGE}.core.engines.groupwise" in edges[f"{PACKAGE}.core.registration"]


def test_cycle_finder_finds_a_cycle():
    edges = {"p.core.a": {"p.core.b"}, "p.core.b": {"p.core.c"}, "p.core.c": {"p.core.a"}}
    assert find_cycle(edges, "p.core") == ["p.core.a", "p.core.b", "p.core.c", "p.core.a"]
    assert find_cycle({"p.core.a": {"p.core.b"}, "p.core.b": set()}, "p.core") is None


def test_no_import_cycle_in_core():
    cycle = find_cycle(_internal_edges(GRAPH), f"{PACKAGE}.core")
    assert cycle is None, " -> ".join(cycle)


def test_engines_take_their_contract_from_engine_api():
    for module, names in GRAPH.items():
        if module.startswith(f"{PACKAGE}.core.engines."):
            assert not any(n.startswith(f"{PACKAGE}.core.registration") for n in names), module


@pytest.mark.parametrize(
    "layer, forbidden",
    [
        ("core", (f"{PACKAGE}.io", f"{PACKAGE}.pipeline", f"{PACKAGE}.widgets", f"{PACKAGE}.cli", "qtpy", "napari")),
        ("io", (f"{PACKAGE}.pipeline", f"{PACKAGE}.widgets", f"{PACKAGE}.cli", "qtpy", "napari")),
        ("pipeline", (f"{PACKAGE}.widgets", f"{PACKAGE}.cli", "qtpy", "napari")),
    ],
)
def test_imports_flow_downward(layer, forbidden):
    assert _violations(layer, forbidden) == []


def napari_names(source: str) -> list[str]:
    """Names in code (not strings, comments or docstrings) that speak of napari.

    Identifiers, attributes, definitions, arguments, keywords and import aliases, with the
    package's own name taken out: ``def napari_translate`` or ``layer.napari_scale`` count,
    ``import napari_any2reg.io`` and a docstring saying "napari axis 0 = frame" do not. A
    check on "layer" alone would be brittle (the network and the phantom have layers), so
    napari is the marker, plus conversions named ``to_layer...`` / ``from_layer``.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name):
            names = [node.id]
        elif isinstance(node, ast.Attribute):
            names = [node.attr]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = [node.name]
        elif isinstance(node, ast.arg):
            names = [node.arg]
        elif isinstance(node, ast.keyword):
            names = [node.arg or ""]
        elif isinstance(node, ast.alias):
            names = [node.name, node.asname or ""]
        else:
            continue
        found += [name for name in names
                  if "napari" in name.lower().replace(PACKAGE, "") or re.search(r"(^|_)(to|from)_layer", name)]
    return found


def test_napari_names_finds_napari_conventions_in_code_only():
    code = '''
"""A docstring may say napari."""
import napari_any2reg.io as io
from napari_any2reg.core import x  # a comment about napari

class Geometry:
    def napari_translate(self, napari_scale=None):
        return self.origin.napari_axis, dict(napari_units="mm"), "napari"

    def to_layer_metadata(self, layers=2):
        return self.from_layer(self.tissue_layers)
'''
    assert sorted(napari_names(code)) == ["from_layer", "napari_axis", "napari_scale", "napari_translate", "napari_units",
                                          "to_layer_metadata"]


def test_core_carries_no_napari_conventions():
    # layer metadata, translate and the like belong to widgets/_layers.py (issue 12)
    found = {
        str(path.relative_to(SOURCE)): names
        for path in sorted((SOURCE / "core").rglob("*.py"))
        if (names := napari_names(path.read_text(encoding="utf-8")))
    }
    assert found == {}


def test_training_never_sees_the_independent_validation_generator():
    """benchmarks/validation_generator.py chooses the shipped configuration (issue 22): no
    package code, training included, may import or read it."""
    root = Path(__file__).resolve().parents[1] / "src" / "napari_any2reg"
    users = [str(path.relative_to(root)) for path in root.rglob("*.py") if "validation_generator" in path.read_text()]
    assert users == []
    assert (root.parents[1] / "benchmarks" / "validation_generator.py").is_file()
