"""What a result is a function of besides its config: the code that computes it and the content of its data.

A run's key is its config's hash (labcore.core.config), so a result trained on a GPU serves a laptop that renders
from the same store. Its record also keeps the fingerprints of the code that trained it and of the dataset it saw;
the store serves it only while both match today's, and calls it stale otherwise (labcore.store.runs), naming what
changed. How it was computed (device, TF32, determinism, fused or alone, compiled or eager) is recorded beside
them (`numerics`, `fused`, `compiled`) and shown, never part of the identity.

The code is every labcore module that training a run imports, followed through their imports (statically, inside
functions too), minus the few that cannot change a number (NOT_COMPUTING, each with its reason). Each module is
fingerprinted by its syntax tree without docstrings, so comments, formatting and docstrings change nothing while
any change to what runs does. Code that only reads results (analysis, reports, diff, verify) is never followed.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parents[1]  # labcore/

# What trains a run: alone, or with its other seeds fused (the same driver and loop, labcore.store.training; kept
# apart so that records name how they trained).
ROOTS = {"alone": ("labcore.store.training",), "fused": ("labcore.store.training",)}
# The module whose code is fingerprinted per model family: a change to one family's classes leaves the others' runs.
MODELS = "labcore.core.models"
# Modules that training imports but that cannot change what it computes.
NOT_COMPUTING = {
    "labcore.paths": "where files live",
    "labcore.files": "atomic writes, locks and checksums of files, and tensors written to them",
    "labcore.faults": "names the machine's faults; a run that meets one is never stored",
    "labcore.text": "formats durations",
    "labcore.store.tracking": "W&B logging: reads losses and gradients, changes none",
    "labcore.store.result": "the record's shape; its methods only read results",
}


def module_path(module: str) -> Path:
    """labcore/a/b.py (or labcore/a/b/__init__.py) of module 'labcore.a.b'."""
    base = PACKAGE.parent.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    """The tree without the docstrings of its module, classes and functions (they never run as code)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:]
    return tree


def module_digest(source: str) -> str:
    """A fingerprint of what a module's code does: its syntax tree, without comments, formatting or docstrings."""
    return hashlib.sha256(ast.dump(_strip_docstrings(ast.parse(source))).encode()).hexdigest()[:16]


def family_digest(source: str, family: str) -> str:
    """The fingerprint of the model code one family runs (MODELS): the module's statements outside any definition,
    plus the definitions reachable by name from `build_model` and the family's entry in `_BUILDERS`; other
    families' classes are left out. The whole module's digest where that shape is not found."""
    tree = _strip_docstrings(ast.parse(source))
    defs: dict[str, ast.stmt] = {}
    rest: list[ast.stmt] = []
    for node in tree.body:
        names = [node.name] if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else \
            [t.id for t in getattr(node, "targets", [getattr(node, "target", None)]) if isinstance(t, ast.Name)]
        defs.update({n: node for n in names}) if names else rest.append(node)
    table = defs.get("_BUILDERS")
    entry = [v for k, v in zip(getattr(table, "value", ast.Dict()).keys, getattr(table, "value", ast.Dict()).values)
             if isinstance(k, ast.Constant) and k.value == family] if table is not None else []
    if not entry or "build_model" not in defs:
        return module_digest(source)
    reached, todo = set(), [entry[0], defs["build_model"]]
    while todo:  # every module-level name the family's code uses, followed through the definitions it reaches
        for name in {n.id for n in ast.walk(todo.pop()) if isinstance(n, ast.Name)} - reached - {"_BUILDERS"}:
            if name in defs:
                reached.add(name)
                todo.append(defs[name])
    parts = rest + [entry[0]] + [defs[n] for n in sorted(reached)]
    return hashlib.sha256("\n".join(ast.dump(p) for p in parts).encode()).hexdigest()[:16]


def imports_of(module: str) -> set[str]:
    """The labcore modules `module` imports, at its top or inside functions."""
    path = module_path(module)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("labcore.")}
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            target = (".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                      if node.level else node.module or "")
            if target.startswith("labcore"):  # `from labcore.core import data` imports the module labcore.core.data
                found |= {f"{target}.{a.name}" if module_path(f"{target}.{a.name}").is_file() else target
                          for a in node.names}
    return found - {"labcore", module}


def closure(roots: tuple[str, ...]) -> list[str]:
    """`roots` and every labcore module they import, directly or not, sorted; package faces included."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += sorted(imports_of(m) - seen)
    return sorted(seen)


@functools.lru_cache(maxsize=None)
def code_fingerprint(kind: str = "alone", family: str | None = None) -> dict[str, str]:
    """{module: digest} of the code that trains a run of `kind` ('alone' or 'fused'), as the files are now; with
    `family`, the model module's digest covers that family's code alone (family_digest)."""
    out = {m: module_digest(module_path(m).read_text()) for m in closure(ROOTS[kind]) if m not in NOT_COMPUTING}
    if family and MODELS in out:
        out[MODELS] = family_digest(module_path(MODELS).read_text(), family)
    return out


def kind_of(fused: tuple[int, ...] | list[int] | None) -> str:
    """'fused' for a run trained with its other seeds fused, else 'alone'."""
    return "fused" if fused else "alone"


def changed_code(recorded: dict[str, str], kind: str, family: str | None = None) -> list[str]:
    """The files whose code differs between a record's fingerprint and today's (for `family`'s model code):
    labcore/... paths, sorted."""
    now = code_fingerprint(kind, family)
    modules = sorted(m for m in set(now) | set(recorded) if now.get(m) != recorded.get(m))
    return [str(module_path(m).relative_to(PACKAGE.parent)) for m in modules]


def digest_of(code: dict[str, str]) -> str:
    """One short fingerprint for a whole {module: digest} record (what a page shows)."""
    return hashlib.sha256(json.dumps(code, sort_keys=True).encode()).hexdigest()[:12]


@functools.lru_cache(maxsize=1)
def git_state() -> dict[str, Any]:
    """Commit hash of the checkout and whether it has uncommitted changes (None outside git)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=PACKAGE.parent, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=normal")  # a new, uncommitted file changes results too
    return {"commit": commit, "dirty": bool(status) if status is not None else None}
