"""The package's shape: its folders are layers, a lower layer never imports a higher one, no import cycles, few
modules at the top level, and each shared helper has one home."""
from __future__ import annotations

import pytest

from labcore.store import identity

from .conftest import ROOT

# Lowest first. The package's base modules (paths, files, faults, machine, text) serve every layer; the command
# line (labcore/__main__.py) sits on top of them all.
LAYERS = ("base", "core", "store", "analysis", "exercises", "engine", "report", "cli")
BASE = {"labcore.paths", "labcore.files", "labcore.faults", "labcore.machine", "labcore.text"}


def layer_of(module: str) -> str:
    """'labcore.core.data' -> 'core'; the base modules -> 'base'; labcore/__main__.py -> 'cli'."""
    if module in BASE:
        return "base"
    if module in ("labcore.__main__", "labcore.cli"):
        return "cli"
    parts = module.split(".")
    assert len(parts) >= 3 and parts[1] in LAYERS, f"{module} is in no layer: move it into one of {LAYERS[1:-1]}"
    return parts[1]


def import_graph() -> dict[str, set[str]]:
    """{module: the labcore modules it imports} for every module of the package."""
    graph = {}
    for path in sorted((ROOT / "labcore").rglob("*.py")):
        package = ".".join(path.relative_to(ROOT).parent.parts)
        name = package if path.stem == "__init__" else f"{package}.{path.stem}"
        graph[name] = identity.imports_of(name)
    return graph


def _no_package_faces(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph without the package faces (`labcore`, `labcore.core`, ...): their docstrings hold no code paths."""
    faces = {m for m in graph if (ROOT / m.replace(".", "/") / "__init__.py").is_file()}
    return {m: {i for i in imps if i not in faces} for m, imps in graph.items() if m not in faces}


def test_a_lower_layer_never_imports_a_higher_one():
    wrong = []
    for module, imported in _no_package_faces(import_graph()).items():
        rank = LAYERS.index(layer_of(module))
        wrong += [f"{module} ({layer_of(module)}) imports {i} ({layer_of(i)})" for i in sorted(imported)
                  if LAYERS.index(layer_of(i)) > rank]
    assert not wrong, "imports that run back up the layers:\n" + "\n".join(wrong)


def test_the_lab_itself_imports_only_the_base_modules():
    graph = _no_package_faces(import_graph())
    outside = {m: sorted(i for i in imps if layer_of(i) not in ("base", "core"))
               for m, imps in graph.items() if layer_of(m) == "core"}
    assert not any(outside.values()), f"labcore/core/ must stay the lab alone: {outside}"
    assert all(not imps for m, imps in graph.items() if m in BASE), "the base modules import nothing of labcore"


def test_the_package_has_no_import_cycles():
    graph = import_graph()
    done, stack = set(), []

    def visit(node):
        if node in stack:
            pytest.fail("import cycle: " + " -> ".join(stack[stack.index(node):] + [node]))
        if node in done:
            return
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            visit(nxt)
        stack.pop()
        done.add(node)

    for name in graph:
        visit(name)


def test_at_most_eight_modules_at_the_top_level():
    top = sorted(p.name for p in (ROOT / "labcore").glob("*.py"))
    assert len(top) <= 8, f"labcore/ holds {len(top)} modules at its top level ({', '.join(top)}); move some into a layer"


def test_each_shared_helper_has_one_home():
    for name in ("human_seconds", "init_model", "build_model", "sha256"):
        homes = [str(p.relative_to(ROOT)) for p in (ROOT / "labcore").rglob("*.py")
                 if f"\ndef {name}(" in p.read_text()]
        assert len(homes) == 1, f"{name} is defined in {homes}"


MAX_FUNCTION_LINES = 60  # a function a reader holds in view at once
MAX_MODULE_LINES = 400  # a module read top to bottom in one sitting


def test_functions_and_modules_stay_short():
    """No function over 60 lines and no module over 400: one job each, readable top to bottom."""
    import ast

    long_functions, long_modules = [], []
    for path in sorted((ROOT / "labcore").rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(f"{path.relative_to(ROOT)} ({len(text.splitlines())} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: split them: {long_functions}"
    assert not long_modules, f"modules over {MAX_MODULE_LINES} lines: split them by job: {long_modules}"
