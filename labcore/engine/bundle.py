"""What an offline GPU node lacks, carried to it: `make bundle` writes .gpu-bundle/ (git-ignored) for a node that
has PyTorch but no package registry, as many cluster nodes do.

    make bundle                          # for the lent H200 machine (labcore/engine/nodes/nvidia-h200.txt)
    make bundle HAVE=node.txt            # for your node: what it has, as `pip freeze` there wrote it

What the node has is an input: a `pip freeze` of its Python, plus one line naming that Python's version, made on
the node with

    { echo "# python $(python3 -c 'import platform; print(platform.python_version())')"; python3 -m pip freeze; } > node.txt

The bundle holds wheels of the notebook stack (papermill, nbconvert, ipykernel and what they need on that Python,
less what the node has) and subsets of MNIST and CIFAR-10 as compressed uint8 arrays (labcore's `arrays` data
layout; reports built from them say so). `make gpu-check` on the node installs the wheels into a temporary folder,
never into the node's Python (labcore.engine.gpucheck).
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from labcore.core.config import ConfigError
from labcore.paths import PROJECT_ROOT

BUNDLE = PROJECT_ROOT / ".gpu-bundle"
LENT_NODE = Path(__file__).parent / "nodes" / "nvidia-h200.txt"
# What the check runs on the node: the notebook stack, labcore's own requirements (pyproject.toml) and pytest; less
# what it needs no wheel of: PyTorch (the node's own), and Ray and W&B (the check trains in-process, untracked).
STACK = ("papermill", "nbconvert", "nbformat", "nbclient", "ipykernel", "jupyter-client", "pytest")
NOT_CARRIED = frozenset({"torch", "torchvision", "ray", "wandb", "jupyterlab", "ipywidgets", "labcore"})
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
DATA_SUBSETS = {"mnist": (6000, 1000), "cifar10": (2000, 1000)}  # (train, test) images: enough for the smoke profile


@dataclasses.dataclass(frozen=True)
class Node:
    """An offline node: its Python's version (for wheels and environment markers), the packages it has (with
    their versions where the file gives them), and at most how much may travel to it."""

    python: str  # e.g. "3.12.3"
    has: dict[str, str | None]  # normalised distribution name -> version (None: unknown)
    source: str  # where this was read from, for messages
    max_mib: float | None = None  # the bundle's limit: the lent machine takes 64 MiB with the code


def norm(name: str) -> str:
    """A distribution's name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _package(line: str) -> tuple[str, str | None]:
    """'Name==1.2' -> ('name', '1.2'); 'name @ file://...', 'name>=1' or 'name' -> (name, None)."""
    name = re.split(r"\s*(?:===|==|@|>=|<=|~=|!=|>|<|\[|;|\s)", line.strip(), maxsplit=1)[0]
    pinned = re.match(r"^[A-Za-z0-9._-]+\s*===?\s*([^\s;]+)", line.strip())
    return norm(name), pinned.group(1) if pinned else None


def read_node(path: Path, python: str | None = None) -> Node:
    """The node described by a `pip freeze` file with a '# python X.Y.Z' line (`python` overrides it) and,
    optionally, a '# max N MiB' line (what may travel to it)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"HAVE={path}: cannot read it ({exc.strerror}); write it on the node with `pip freeze` "
                          "(labcore/engine/bundle.py says how)") from None
    stated = next((m.group(1) for ln in lines if (m := re.match(r"#\s*python\s+(\d+\.\d+(\.\d+)?)\s*$", ln))), None)
    version = python or stated
    if not version or not re.fullmatch(r"\d+\.\d+(\.\d+)?", version):
        raise ConfigError(f"{path} names no Python version: add a line '# python 3.12.3' (the node's `python3 "
                          "--version`), or give it: --python 3.12.3 (make bundle PYTHON_VERSION=3.12.3)")
    limit = next((float(m.group(1)) for ln in lines if (m := re.match(r"#\s*max\s+([\d.]+)\s*MiB", ln))), None)
    has = dict(_package(ln) for ln in lines if ln.strip() and not ln.lstrip().startswith(("#", "-")))
    return Node(version, has, str(path), limit)


def markers(node: Node) -> dict[str, str]:
    """The node's interpreter as PEP 508 environment markers (a Linux x86-64 CPython, as the wheels' platforms)."""
    full = node.python if node.python.count(".") == 2 else node.python + ".0"
    return {"python_version": ".".join(full.split(".")[:2]), "python_full_version": full, "sys_platform": "linux",
            "platform_system": "Linux", "os_name": "posix", "implementation_name": "cpython",
            "platform_python_implementation": "CPython", "platform_machine": "x86_64", "extra": ""}


def roots() -> list[str]:
    """What the check needs on the node: the notebook stack, pytest, and labcore's own requirements less
    NOT_CARRIED (each as a requirement string, so a version the node has that labcore refuses is carried)."""
    from packaging.requirements import Requirement

    own = [r for r in metadata.requires("labcore") or [] if "extra ==" not in r]
    return list(STACK) + [r for r in own if norm(Requirement(r).name) not in NOT_CARRIED]


def _needed(req, node: Node) -> bool:
    """Whether a requirement needs a wheel: the node lacks it, or has a version the requirement refuses."""
    name = norm(req.name)
    if name in NOT_CARRIED:
        return False
    if name not in node.has:
        return True
    have = node.has[name]
    return have is not None and bool(req.specifier) and not req.specifier.contains(have, prereleases=True)


def closure(wanted: list[str], node: Node) -> list[tuple[str, str]]:
    """(name, version) of the `wanted` requirements and everything they require on the node's Python (no extras),
    with the versions installed here, less what the node has in a version they accept."""
    from packaging.requirements import Requirement

    env = markers(node)
    seen: dict[str, str] = {}
    todo = [Requirement(w) for w in wanted]
    while todo:
        req = todo.pop()
        name = norm(req.name)
        if name in seen or not _needed(req, node):
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise ConfigError(f"the node needs {name}, which is not installed here; pip install it (the version "
                              "the node should get) and run `make bundle` again") from None
        seen[name] = dist.version
        todo += [r for r in map(Requirement, dist.requires or []) if r.marker is None or r.marker.evaluate(env)]
    return sorted(seen.items())


def _data_subsets(out: Path, data_root: Path | None) -> None:
    """DATA_SUBSETS of each dataset, drawn with a fixed seed, as partial `arrays` files."""
    import torch

    from labcore.core import data

    (out / "data").mkdir(parents=True, exist_ok=True)
    for name, (n_train, n_test) in DATA_SUBSETS.items():
        raw = data.load_raw(name, data_root)
        g = torch.Generator().manual_seed(0)
        tr = torch.randperm(len(raw.y_train), generator=g)[:n_train]
        te = torch.randperm(len(raw.y_test), generator=g)[:n_test]
        data.save_arrays(data.Raw(raw.x_train[tr], raw.y_train[tr], raw.x_test[te], raw.y_test[te], raw.source),
                         out / "data" / f"{name}.npz", partial=True)


def _pip(cmd: list[str], failed: str) -> None:
    """Run pip; its failure is one line saying what to do, not a traceback."""
    if subprocess.run(cmd).returncode != 0:
        raise ConfigError(failed)


def bundle(node: Node, out: Path = BUNDLE, data_root: Path | None = None) -> dict[str, Any]:
    """Write the bundle for `node`: the notebook stack's wheels for its Python, and the data subsets."""
    wanted = closure(roots(), node)
    wheels = out / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)  # a bundle for another node or Python leaves none of its wheels here
    wheels.mkdir(parents=True)
    version = "".join(markers(node)["python_version"].split("."))  # "3.12" -> "312", as pip's --python-version
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           version, "--implementation", "cp", *[a for p in PLATFORMS for a in ("--platform", p)], "-d", str(wheels),
           *[f"{n}=={v}" for n, v in wanted]]
    _pip(cmd, "pip could not download the wheels: make bundle needs the package registry (its output is above)")
    _data_subsets(out, data_root)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    if node.max_mib is not None and size > node.max_mib * 2**20:
        raise ConfigError(f"{out} holds {size / 2**20:.1f} MiB, over the {node.max_mib:g} MiB that {node.source} "
                          "says may travel to the node; drop a package or shrink DATA_SUBSETS")
    return {"node": node.source, "python": node.python, "wheels": len(wanted), "mib": round(size / 2**20, 1),
            "folder": str(out)}


def install(site: Path, folder: Path = BUNDLE) -> dict[str, str]:
    """Install the bundle's wheels into `site` (not the node's Python) when the notebook stack is missing here;
    returns what a child process's environment needs to use them ({} when the stack is here). This process's own
    environment and import path are left as they are: the children get theirs passed explicitly."""
    try:
        import papermill  # noqa: F401 - only whether it imports
        return {}
    except ImportError:
        pass
    wheels = sorted((folder / "wheels").glob("*.whl"))
    if not wheels:
        raise ConfigError(f"papermill is not installed and {folder}/wheels is empty; run `make bundle` on a machine "
                          "with the package registry, and carry .gpu-bundle")
    _pip([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
          "--target", str(site), *map(str, wheels)],
         f"pip could not install {folder}/wheels here (its output is above): make the bundle again with HAVE= this "
         "node's `pip freeze`")
    # Its python3 kernel spec would start `python`, which the node may lack: without it, jupyter_client starts
    # ipykernel with this very interpreter (its native kernel).
    shutil.rmtree(site / "share" / "jupyter" / "kernels", ignore_errors=True)
    # --target puts nbconvert's templates (and ipykernel's kernel spec) under <site>/share/jupyter, off Jupyter's
    # default search path: without JUPYTER_PATH every page would fail to render for want of its template.
    return {"PYTHONPATH": _paths(site, PROJECT_ROOT, os.environ.get("PYTHONPATH")),
            "JUPYTER_PATH": _paths(site / "share" / "jupyter", os.environ.get("JUPYTER_PATH"))}


def _paths(*parts: Path | str | None) -> str:
    """A search path of the parts given (an unset one left out)."""
    return os.pathsep.join(str(p) for p in parts if p)
