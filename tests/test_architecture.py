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
    # the one import by name: core.registration imports every module of core/engines on first
    # use (pkgutil, so a new engine is only a new module); the graph keeps those edges
    engines = SOURCE / "core" / "engines"
    graph[f"{PACKAGE}.core.registration"] |= {
        f"{PACKAGE}.core.engines.{path.stem if path.is_file() else path.name}"
        for path in engines.iterdir() if not path.name.startswith("_") and (path.suffix == ".py" or path.is_dir())}
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
    # fit_t1 imports the outlier rules inside a function; registration imports the engines by
    # name: the graph must still have both edges
    edges = _internal_edges(GRAPH)
    assert f"{PACKAGE}.core.qc.outliers" in edges[f"{PACKAGE}.core.mapping.fitting"]
    assert {f"{PACKAGE}.core.engines.groupwise", f"{PACKAGE}.core.engines.any2reg"} <= edges[f"{PACKAGE}.core.registration"]


def test_cycle_finder_finds_a_cycle():
    edges = {"p.core.a": {"p.core.b"}, "p.core.b": {"p.core.c"}, "p.core.c": {"p.core.a"}}
    assert find_cycle(edges, "p.core") == ["p.core.a", "p.core.b", "p.core.c", "p.core.a"]
    assert find_cycle({"p.core.a": {"p.core.b"}, "p.core.b": set()}, "p.core") is None


@pytest.mark.parametrize("layer", ["core", "io", "pipeline", "widgets", "cli"])
def test_no_import_cycle_in_a_layer(layer):
    # every scope counts (module level, functions, typing-only imports): a cycle hidden in a
    # function still ties two modules together for whoever reads or changes them
    cycle = find_cycle(_internal_edges(GRAPH), f"{PACKAGE}.{layer}")
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


# ---------------------------------------------------------------- widgets talk through narrow interfaces
#: ``(widgets module, reach)`` pairs allowed, with why. Keep it short: a section that needs
#: something of its dock gets it through its host protocol (widgets/_hosts.py).
_PRIVATE_REACHES_ALLOWED = {
    # the Review dock's own double-click callback: a module-level closure holding a weak
    # reference to the dock (``target`` is the dock itself, not another object)
    ("review.py", "target._on_double_click"),
}

_ATTRIBUTE_FUNCTIONS = {"getattr", "setattr", "hasattr", "delattr"}


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_own(node: ast.expr) -> bool:
    """``self``, ``cls`` or ``super()``: an object reaching into its own attributes."""
    if isinstance(node, ast.Name):
        return node.id in ("self", "cls")
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"


def private_reaches(source: str) -> list[str]:
    """Where ``source`` touches a private attribute of another object than ``self``.

    ``self.dock._name``, ``self._dock._name``, ``parent._name``, ``widget._name()`` and
    ``getattr(dock, "_name")`` count; ``self._name``, ``cls._name``, ``super()._name`` and
    dunders (``obj.__class__``) do not.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and _is_private(node.attr) and not _is_own(node.value):
            found.append(ast.unparse(node))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _ATTRIBUTE_FUNCTIONS
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
              and isinstance(node.args[1].value, str) and _is_private(node.args[1].value)
              and not _is_own(node.args[0])):
            found.append(ast.unparse(node))
    return found


def test_private_reach_finder_finds_reaches_into_other_objects():
    code = '''
class Section:
    def __init__(self, dock, parent=None):
        self._own = dock._state
        self.dock._refresh()
        self._dock._busy = True
        parent._layout.addWidget(self._own)
        getattr(dock, "_hidden", None)
        super()._setup(); self._private(); cls_name = self.__class__.__name__; getattr(self, "_x", 0)
        getattr(dock, "public"); dock.public()
'''
    assert sorted(private_reaches(code)) == sorted(["dock._state", "self.dock._refresh", "self._dock._busy",
                                                    "parent._layout", "getattr(dock, '_hidden', None)"])


def test_widgets_reach_into_no_other_objects_private_attributes():
    """A dock section receives what it needs from its dock (a host protocol, widgets/_hosts.py)
    and never calls its dock's private methods; no widget reaches into another object's privates."""
    found = {(str(path.relative_to(SOURCE / "widgets")), reach)
             for path in sorted((SOURCE / "widgets").rglob("*.py"))
             for reach in private_reaches(path.read_text(encoding="utf-8"))}
    assert found - _PRIVATE_REACHES_ALLOWED == set()


def _protocols(trees: dict[str, ast.Module]) -> dict[str, set[str]]:
    """``protocol name -> members`` (methods and annotated attributes, inherited ones included)
    of the ``typing.Protocol`` classes defined in ``trees``."""
    bases: dict[str, list[str]] = {}
    own: dict[str, set[str]] = {}
    for tree in trees.values():
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            names = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]
            bases[node.name] = names
            own[node.name] = {item.name for item in node.body if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))}
            own[node.name] |= {item.target.id for item in node.body
                               if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)}

    def is_protocol(name: str, seen: tuple[str, ...] = ()) -> bool:
        return name == "Protocol" or (name in bases and name not in seen
                                      and any(is_protocol(b, seen + (name,)) for b in bases[name]))

    def members(name: str) -> set[str]:
        return own.get(name, set()).union(*(members(b) for b in bases.get(name, ()) if b != "Protocol"))

    return {name: members(name) for name in bases if name != "Protocol" and is_protocol(name)}


def _annotation_name(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.strip("'\"")
    return None


def host_uses(trees: dict[str, ast.Module]) -> list[tuple[str, str, str, set[str]]]:
    """``(module, class, host protocol, names used as self.host.<name>)`` of every class whose
    ``__init__`` takes ``host`` annotated with a protocol."""
    protocols = _protocols(trees)
    uses = []
    for module, tree in trees.items():
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            init = next((f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
            host = next((a for a in (init.args.args + init.args.kwonlyargs if init else []) if a.arg == "host"), None)
            if host is None:
                continue
            protocol = _annotation_name(host.annotation)
            assert protocol in protocols, f"{module}: {cls.name}(host: {protocol}) is not a Protocol of widgets/"
            used = {node.attr for node in ast.walk(cls)
                    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                    and node.value.attr == "host" and _is_own(node.value.value)}
            used |= {node.attr for node in ast.walk(cls)  # ``host.x`` in the constructor itself
                     if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "host"}
            uses.append((module, cls.name, protocol, used - protocols[protocol]))
    return uses


def test_host_check_finds_a_member_outside_the_protocol():
    code = '''
from typing import Protocol
class BaseHost(Protocol):
    viewer: object
    def set_status(self, text): ...
class ToolsHost(BaseHost, Protocol):
    def table(self): ...
class Tools:
    def __init__(self, host: "ToolsHost"):
        self.host = host
        self.viewer = host.viewer
    def run(self):
        self.host.set_status(str(self.host.table())); self.host.tabs.setCurrentIndex(1)
'''
    assert host_uses({"m": ast.parse(code)}) == [("m", "Tools", "ToolsHost", {"tabs"})]


def test_sections_use_only_what_their_host_protocol_declares():
    trees = {str(path.relative_to(SOURCE / "widgets")): ast.parse(path.read_text(encoding="utf-8"))
             for path in sorted((SOURCE / "widgets").rglob("*.py"))}
    uses = host_uses(trees)
    sections = {cls for _, cls, _, _ in uses}
    # the sections of the Landmarks, Mapping and Review docks take their dock as a host protocol
    assert {"RegistrationTools", "LandmarkNames", "EcvSection", "SegmentsSection", "OverlaySection"} <= sections
    assert [(module, cls, protocol, extra) for module, cls, protocol, extra in uses if extra] == []


def test_tests_mirror_the_source_tree():
    """Issue 25 item 8: ``tests/<layer>/`` for each layer of ``src/napari_any2reg``; only the
    tests of the whole package stay at the top."""
    tests = Path(__file__).resolve().parent
    layers = {"core", "io", "pipeline", "widgets", "cli"}
    assert layers <= {p.name for p in SOURCE.iterdir() if p.is_dir()}
    top = {p.name for p in tests.glob("test_*.py")}
    assert top == {"test_architecture.py", "test_packaging.py", "test_screenshot_scripts.py", "test_guided_tour.py"}, top
    for folder in tests.iterdir():
        if folder.is_dir() and folder.name not in {"__pycache__"}:
            assert folder.name in layers, f"tests/{folder.name} does not mirror a layer of the package"
            assert any(folder.glob("test_*.py")), f"tests/{folder.name} holds no test"
    names = [p.name for p in tests.rglob("test_*.py")]
    assert len(names) == len(set(names)), "test file names must stay unique (pytest imports them by name)"
