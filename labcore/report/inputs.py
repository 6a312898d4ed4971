"""What a page is a function of, so that `make report` executes a notebook again exactly when one of them changed:
the notebook itself, its parameters (and how they differ from full's, which its banner names), the stored runs it
reads (upstream ones too), the labcore code it runs, the data, the packages and the machine (the device it
computes on, W&B's mode and folder). Otherwise the page built last time
is reused, and the build says so.

Unlike a run's identity (labcore.store.identity), the code here is every byte of the modules the notebook imports,
followed through their imports, and of the code that renders pages: a page shows labcore's own source, so even a
comment or a docstring can change what it shows.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

from labcore.exercises import params as notebook_params
from labcore.machine import device_info, pick_device
from labcore.exercises.exercise import PagePlan
from labcore.store import identity, training
from labcore.store.provenance import package_versions
from labcore.store.runs import RunStore
from labcore.store.tracking import wandb_dirs

RENDERING = ("labcore.report.build", "labcore.report.render")  # what turns an executed notebook into its page
# The build imports these to write pages of its own (runs.html, rewritten by every build), not a notebook's page.
OTHER_PAGES = frozenset({"labcore.report.runs_page"})


def _sha(text: str | bytes) -> str:
    return hashlib.sha256(text if isinstance(text, bytes) else text.encode()).hexdigest()[:16]


def notebook_source(stem: str) -> tuple[str, list[str]]:
    """The notebook's cells as they run (sources and cell types; outputs and counts left out), and the labcore
    modules its code cells import."""
    nb = json.loads((notebook_params.NOTEBOOKS / f"{stem}.ipynb").read_text())
    cells = [(c["cell_type"], "".join(c["source"]) if isinstance(c["source"], list) else c["source"],
              c.get("metadata", {}).get("tags", [])) for c in nb["cells"]]
    modules: set[str] = set()
    for kind, src, _ in cells:
        if kind != "code":
            continue
        try:
            tree = ast.parse(src)
        except SyntaxError:  # a cell with IPython magics: every labcore module, to be safe
            return json.dumps(cells), sorted(identity.closure(("labcore.report.build",)))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("labcore"):
                modules |= {f"{node.module}.{a.name}" if identity.module_path(f"{node.module}.{a.name}").is_file()
                            else node.module for a in node.names}
            elif isinstance(node, ast.Import):
                modules |= {a.name for a in node.names if a.name.startswith("labcore")}
    return json.dumps(cells), sorted(modules)


def where_computed(env: Mapping[str, str]) -> dict[str, str | None]:
    """What a kernel started with `env` computes on and names, beyond its parameters: the device "auto" picks
    here (04's probes compute their gradients on it; every page's provenance names it), and W&B's mode and folder
    its banner names (LABCORE_TRACKING wins over the parameter)."""
    return {"device": device_info(pick_device("auto")), "tracking": env.get("LABCORE_TRACKING"),
            "wandb": env.get("WANDB_DIR") or str(wandb_dirs()["WANDB_DIR"])}


def page_inputs(stem: str, profile: str, page: PagePlan, store: RunStore | None = None,
                here: dict[str, str | None] | None = None) -> dict[str, str]:
    """{part: fingerprint} of everything that determines notebook `stem`'s page in `profile`: its `page` of the build
    plan gives its parameters, runs and data (a page is never planned again here); `here`: the kernels'
    `where_computed` (default: this process's)."""
    store = store or RunStore()
    cells, imported = notebook_source(stem)
    code = {m: _sha(identity.module_path(m).read_bytes()) for m in identity.closure(tuple(imported) + RENDERING)
            if m not in OTHER_PAGES}
    runs = {p.key: _stored(store, p) for p in page.runs}
    # The banner names how the parameters differ from full's: an edit of full's file changes the page too.
    full = notebook_params.against_full(stem, profile, page.params)
    return {"notebook": _sha(cells), "parameters": _sha(json.dumps(page.params, sort_keys=True, default=str)),
            "full_parameters": _sha(json.dumps(full, default=str)), "profile": profile,
            "runs": _sha(json.dumps(runs, sort_keys=True)),
            "code": _sha(json.dumps(code, sort_keys=True)),
            "data": _sha(json.dumps({d: training.data_content(d) for d in page.datasets})),
            "packages": _sha(json.dumps(package_versions(), sort_keys=True)),
            "machine": _sha(json.dumps(here if here is not None else where_computed(os.environ), sort_keys=True))}


def _stored(store: RunStore, planned: Any) -> str:
    """What the store holds for a planned run, as a fingerprint: its checksums (record, weights, checkpoints), or
    its state where it has none to serve."""
    state = store.state(planned.cfg, planned.checkpoints)
    sums = store.path(planned.cfg) / "checksums.json"
    return f"{state}:{_sha(sums.read_bytes())}" if state in ("stored", "failed") and sums.is_file() else state


def changed(before: dict[str, str] | None, now: dict[str, str]) -> list[str]:
    """The parts that differ (every part when nothing was recorded)."""
    before = before or {}
    return [k for k in now if before.get(k) != now[k]]
