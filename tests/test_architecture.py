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


# ---------------------------------------------------------------- no file access in core
#: Calls that read or write files (or list folders): only io and pipeline make them.
_FILE_FUNCTIONS = {"open"}
_FILE_MODULE_CALLS = {
    "torch": {"save", "load"},
    "np": {"save", "savez", "savez_compressed", "load", "loadtxt", "savetxt", "fromfile", "genfromtxt"},
    "numpy": {"save", "savez", "savez_compressed", "load", "loadtxt", "savetxt", "fromfile", "genfromtxt"},
    "json": {"dump", "load"},
    "os": {"replace", "remove", "rename", "unlink", "makedirs", "mkdir", "listdir", "scandir", "rmdir"},
    "shutil": {"copy", "copy2", "copyfile", "copytree", "move", "rmtree"},
    "pickle": {"dump", "load"},
}
_FILE_METHODS = {"write_text", "write_bytes", "read_text", "read_bytes", "mkdir", "unlink", "iterdir", "glob", "rglob",
                 "exists", "is_file", "is_dir", "touch", "rmdir", "tofile", "open"}
#: (module file, call) pairs allowed in core, with why.
_CORE_FILE_ACCESS_ALLOWED = {
    # the machine's run queue (threads to use), not a data file; os.getloadavg is the fallback
    ("core/device.py", "open"),
}


def file_access_calls(source: str) -> list[str]:
    """The calls in ``source`` that touch files: ``open(...)``, ``torch.save/load``,
    ``np.save/load``, ``json.dump/load``, ``os.replace`` and the like, and path methods such as
    ``.write_text``, ``.read_bytes``, ``.exists``, ``.mkdir``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in _FILE_FUNCTIONS:
            found.append(func.id)
        elif isinstance(func, ast.Attribute):
            owner = func.value.id if isinstance(func.value, ast.Name) else None
            if owner in _FILE_MODULE_CALLS:
                if func.attr in _FILE_MODULE_CALLS[owner]:
                    found.append(f"{owner}.{func.attr}")
            elif func.attr in _FILE_METHODS:
                found.append(f".{func.attr}")
    return found


def test_file_access_finder_finds_reads_and_writes():
    code = '''
import json, os, torch
import numpy as np
from pathlib import Path

def f(path, obj):
    torch.save(obj, path); torch.load(path, weights_only=True); np.save(path, obj); np.load(path)
    with open(path) as fh:
        json.dump(obj, fh)
    Path(path).write_text("x"); Path(path).read_bytes(); os.replace(path, path)
    if Path(path).exists():
        pass
    return json.dumps(obj), np.asarray(obj), obj.load_state_dict({}), "a".replace("a", "b")
'''
    assert sorted(file_access_calls(code)) == sorted(["torch.save", "torch.load", "np.save", "np.load", "open", "json.dump",
                                                      ".write_text", ".read_bytes", "os.replace", ".exists"])


def test_core_reads_and_writes_no_file():
    """core receives arrays and objects and returns arrays, figures or bytes: files are io's
    (and pipeline's, through io). The model files are read in io/model_io.py."""
    found = set()
    for path in sorted((SOURCE / "core").rglob("*.py")):
        for call in file_access_calls(path.read_text(encoding="utf-8")):
            found.add((str(path.relative_to(SOURCE)), call.lstrip(".")))
    assert found - _CORE_FILE_ACCESS_ALLOWED == set()
    assert _CORE_FILE_ACCESS_ALLOWED <= found, "an allowed exception is gone: drop it from the list"


def test_one_torch_load_in_the_package():
    sites = [str(path.relative_to(SOURCE)) for path in sorted(SOURCE.rglob("*.py"))
             for call in file_access_calls(path.read_text(encoding="utf-8")) if call == "torch.load"]
    assert sites == ["io/model_io.py"]


# ---------------------------------------------------------------- no import cycle anywhere
def _module_level_imports(tree: ast.Module):
    """The import statements that run when the module is imported: the module body, its
    if / try / with blocks and class bodies; not function bodies, not ``if TYPE_CHECKING:``."""
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            test = node.test
            if not (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"
                    or isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
                pending += node.body
            pending += node.orelse
        elif isinstance(node, ast.Try):
            pending += node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]
        elif isinstance(node, (ast.With, ast.ClassDef)):
            pending += node.body


def module_level_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in SOURCE.rglob("*.py"):
        module = _module_name(path)
        imported: set[str] = set()
        for node in _module_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            else:
                imported.update(_resolve(module, path.name == "__init__.py", node))
        graph[module] = imported
    return graph


def test_module_level_graph_skips_function_bodies():
    edges = _internal_edges(module_level_graph())
    assert f"{PACKAGE}.core.engines.groupwise" not in edges[f"{PACKAGE}.core.registration"]
    assert f"{PACKAGE}.core.training.config" in edges[f"{PACKAGE}.core.training.data"]


def test_no_import_cycle_anywhere_in_the_package():
    cycle = find_cycle(_internal_edges(module_level_graph()), PACKAGE)
    assert cycle is None, " -> ".join(cycle)
