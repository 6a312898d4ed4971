"""Build the reports: papermill over each notebook with a profile's parameters, nbconvert to HTML,
a JSON record per notebook, and an index page.

    python -m labcore report --profile smoke --only 01_mlp_baseline

Every parameter file is read, merged over the notebook's own defaults and validated before any
notebook runs, so a typo fails in a second with a one-line error and no report is touched.
Metrics come from the executed notebook itself: it calls `publish`, which leaves a JSON output
(MIME type `application/vnd.labcore.result+json`) that this module reads back.
"""
from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from jupyter_client.manager import AsyncKernelManager
from traitlets import CaselessStrEnum

from labcore.core.config import ConfigError
from labcore.core.data import check
from labcore.exercises.exercise import PagePlan
from labcore.exercises.params import NOTEBOOKS
from labcore.files import Busy, locked, replacing
from labcore.machine import show_progress
from labcore.paths import PROJECT_ROOT, cache_dir, check_folders, reports_dir, runs_dir
from labcore.text import human_seconds, count
from labcore.report import render
from labcore.report.inputs import changed, page_inputs, where_computed
from labcore.report.publish import MIME, jsonable


# ---------------------------------------------------------------- execution

class IPCKernelManager(AsyncKernelManager):
    """Kernels that talk over Unix sockets: no TCP port is opened, so no other process or host can reach
    the kernel, and its 'running over TCP without encryption' warning never reaches the terminal. A kernel starts
    with `kernel_env` (kernel_env()), passed to it: this process's own environment is never edited."""

    transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)
    kernel_env: dict[str, str] | None = None

    async def _async_pre_start_kernel(self, **kw: Any) -> Any:
        kw.setdefault("env", self.kernel_env if self.kernel_env is not None else kernel_env(os.environ))
        return await super()._async_pre_start_kernel(**kw)


def kernel_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment a notebook kernel of this build gets: `environ`, with quiet progress bars, this interpreter's
    tools first on PATH, this very labcore importable first (the one that planned, trained and fingerprinted the
    runs, not another checkout's an editable install may point to: a page must show what this code computed), and
    an absolute data root (kernels run in notebooks/)."""
    env = dict(environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    if env.get("LABCORE_DATA"):
        env["LABCORE_DATA"] = str(Path(env["LABCORE_DATA"]).expanduser().resolve())
    env["LABCORE_HEADLESS"] = "1"
    return env


def _result_output(nb: Any) -> dict[str, Any] | None:
    """The payload that `publish` left in an executed notebook (the last one wins)."""
    found = None
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if MIME in out.get("data", {}):
                found = out["data"][MIME]
    return found


def _run_counts(provenance: dict[str, Any], built: set[str]) -> dict[str, int]:
    """How many runs a report shows (its provenance's run keys, a list or lists by study) and how many of them
    this build trained (`built`, the keys the training pass before the notebooks trained)."""
    keys = provenance.get("run_keys") or []
    flat = {k for ks in keys.values() for k in ks} if isinstance(keys, dict) else set(keys)
    return {"total": len(flat), "trained_by_build": len(flat & built)}


def reusable(stem: str, out_dir: Path, inputs: dict[str, str]) -> dict[str, Any] | None:
    """The record of the page built last time, if it can stand: built without error from exactly these `inputs`
    (labcore.report.inputs) and still whole on disk."""
    try:
        old = json.loads((out_dir / f"{stem}.json").read_text())
    except (OSError, ValueError):
        return None
    whole = (out_dir / f"{stem}.html").is_file() and (out_dir / f"{stem}.ipynb").is_file()
    return old if whole and old.get("status") == "ok" and old.get("inputs") == inputs else None


def reuse(stem: str, out_dir: Path, old: dict[str, Any]) -> dict[str, Any]:
    """Keep last build's page: its record says it was reused (and that this build trained none of its runs)."""
    record = {**old, "reused": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "runs": {**(old.get("runs") or {}), "trained_by_build": 0}}
    with replacing(out_dir / f"{stem}.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2))
    return record


def _run_notebook(stem: str, params: dict[str, Any], executed: Path, progress: dict[str, Any] | None,
                  source: Path | None = None, env: dict[str, str] | None = None) -> str | None:
    """Execute the notebook (or its `source`: the notebook without the sections the build leaves out) with papermill
    into `executed`; the error in one line, or None. `progress`: tqdm's settings for a bar of cells done (a
    terminal), or None (quiet: a log, the tests, CI)."""
    import papermill

    error = None
    try:
        papermill.execute_notebook(str(source or NOTEBOOKS / f"{stem}.ipynb"), str(executed), parameters=params,
                                   cwd=str(NOTEBOOKS), kernel_name="python3", progress_bar=progress or False,
                                   report_mode=False, request_save_on_cell_execute=True,
                                   kernel_manager_class=type("BuildKernelManager", (IPCKernelManager,),
                                                             {"kernel_env": env}))
    except Exception as exc:  # papermill's execution error, a dead kernel, ...
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
    if not executed.is_file():  # the kernel never started: nothing executed, keep the source for the record
        shutil.copy(NOTEBOOKS / f"{stem}.ipynb", executed)
    return error


def progress_bar(profile: str, stem: str, last: float | None) -> dict[str, Any]:
    """tqdm's settings for one notebook on a terminal: its name, cells done of all, the time spent, and the last
    build's time as the estimate (a notebook's cells take very different times, so a rate per cell would mislead)."""
    estimate = f", last build {human_seconds(last)}" if last else ""
    return {"desc": f"[labcore] {profile}/{stem}", "unit": "cell", "leave": False,
            "bar_format": "{desc}: {n_fmt}/{total_fmt} cells, {elapsed}" + estimate + " {bar:20}"}


def last_seconds(out_dir: Path, stem: str) -> float | None:
    """How long the notebook took when its page was last built here (the estimate for this build), if known."""
    try:
        old = json.loads((out_dir / f"{stem}.json").read_text())
    except (OSError, ValueError):
        return None
    return old.get("seconds") if old.get("status") == "ok" else None


def _sections(stem: str, present: tuple[str, ...], why: str, work: Path) -> tuple[Path, list[str]]:
    """The notebook to execute, written into `work`, without the sections about groups not `present` in its plan
    (labcore.report.sections; `why` says why in the page), and the headings left out."""
    from labcore.report.sections import leave_out

    nb, left = leave_out(json.loads((NOTEBOOKS / f"{stem}.ipynb").read_text()), set(present), why)
    source = work / f"source-{stem}.ipynb"
    source.write_text(json.dumps(nb))
    return source, left


def execute(stem: str, profile: str, page: PagePlan, out_dir: Path, built: set[str] | None = None,
            inputs: dict[str, str] | None = None, progress: dict[str, Any] | None = None,
            env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one notebook with papermill, with its `page` of the build plan (its parameters, and its run keys injected
    as `build_runs` for the kernel to check its own plan against); write <stem>.ipynb, .html, .json (and the summary
    figure's .png); return the JSON record. `built`: the run keys this build trained before the notebooks (counted
    per report); `progress`: see _run_notebook; `env`: the kernel's environment (default: kernel_env of this
    process's)."""
    import nbformat

    work = out_dir / f".work-{stem}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:  # a full disk or Ctrl-C here leaves no half-written staging folder behind
        executed = work / f"{stem}.ipynb"
        start = time.perf_counter()
        params = page.params
        why = (f"this build's STUDIES={','.join(params['selected'])} leaves out" if params.get("selected") is not None
               else f"profile {profile} does not plan")
        source, left = _sections(stem, page.present, why, work)
        injected = {**params, "build_runs": [p.key for p in page.runs]}
        error = _run_notebook(stem, injected, executed, progress, source, env)
        source.unlink()
        seconds = time.perf_counter() - start
        nb = nbformat.read(executed, as_version=4)
        payload = _result_output(nb)
        if error is None and payload is None:
            error = "the notebook finished without calling labcore.report.publish.publish(...)"
        record = _record(stem, profile, nb, payload or {}, params, seconds, error, built or set(), inputs)
        record["left_out"] = left
        if (payload or {}).get("figure_png"):
            (work / f"{stem}-summary.png").write_bytes(base64.b64decode(payload["figure_png"]))
        (work / f"{stem}.html").write_text(render.notebook_page(nb, record), encoding="utf-8")
        (work / f"{stem}.json").write_text(json.dumps(jsonable(record), indent=2))
        _install(work, out_dir, stem, keep_previous=record["status"] != "ok")
        return record
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _record(stem: str, profile: str, nb: Any, payload: dict[str, Any], params: dict[str, Any], seconds: float,
            error: str | None, built: set[str], inputs: dict[str, str] | None) -> dict[str, Any]:
    """A page's JSON record: what the notebook published, how it ran, and what the page is a function of."""
    from labcore.machine import pick_device
    from labcore.store.provenance import collect

    return {
        "notebook": stem,
        "title": render.exercise_title(nb),
        "profile": profile,
        "status": "ok" if error is None else "failed",
        "headline": payload.get("headline", []),
        "metrics": payload.get("metrics", {}),
        "parameters": params,
        "runs": _run_counts(payload.get("provenance") or {}, built),
        # A notebook that failed before publishing: this environment, the device it would have used.
        "provenance": payload.get("provenance") or collect(pick_device(str(params.get("device", "auto"))),
                                                           tracking=params.get("tracking"),
                                                           note="notebook failed before publishing"),
        "summary_figure": f"{stem}-summary.png" if payload.get("figure_png") else None,
        "seconds": round(seconds, 1),
        "error": error,
        "inputs": inputs,  # what the page is a function of (labcore.report.inputs): reused while they hold
    }


def _install(work: Path, out_dir: Path, stem: str, keep_previous: bool) -> None:
    """Move the new report files into place; a failed run first moves a previous good report to previous/."""
    old = out_dir / f"{stem}.json"
    if keep_previous and old.is_file() and json.loads(old.read_text()).get("status") == "ok":
        backup = out_dir / "previous"
        backup.mkdir(exist_ok=True)
        for ext in ("ipynb", "html", "json", "png"):
            name = f"{stem}-summary.png" if ext == "png" else f"{stem}.{ext}"
            if (out_dir / name).is_file():
                (out_dir / name).replace(backup / name)
    for f in work.iterdir():
        f.replace(out_dir / f.name)
    work.rmdir()


def write_runs(out_dir: Path, profile: str, records: list[dict[str, Any]]) -> Path:
    """runs.html: a row for every run the pages in `out_dir` used, read from the run store (labcore.report.runs_page)."""
    from labcore.report import runs_page
    from labcore.store.runs import RunStore

    out = out_dir / "runs.html"
    page = runs_page.page(profile, runs_page.rows(records, RunStore()), render.build_banner(profile, records))
    with replacing(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out


def write_index(out_dir: Path, profile: str) -> Path:
    """runs.html and index.html for every report in `out_dir`, in notebook order (see labcore.report.render.index)."""
    records = [json.loads(f.read_text()) for f in sorted(out_dir.glob("[0-9][0-9]_*.json"))]
    write_runs(out_dir, profile, records)
    index = out_dir / "index.html"
    with replacing(index) as tmp:
        tmp.write_text(render.index(out_dir, profile, records), encoding="utf-8")
    return index


@contextlib.contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """One build per reports folder at a time; a second one is refused at once, before touching anything. (Only the
    lock's own refusal is said so: a Busy from inside the block, from training, passes through unchanged.)"""
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(locked(out_dir / ".build.lock", wait=False))
        except Busy as busy:
            raise ConfigError(f"another build (pid {busy.holder}) is writing {out_dir}; wait for it, or build "
                              "elsewhere with LABCORE_REPORTS=<folder>") from None
        yield


def _why(stem: str, out_dir: Path, now: dict[str, str], force: bool) -> str:
    """Why a notebook runs: FORCE, no page yet, a failed one, or which of its inputs changed."""
    if force:
        return "FORCE=1"
    try:
        old = json.loads((out_dir / f"{stem}.json").read_text())
    except (OSError, ValueError):
        return "no page yet"
    if old.get("status") != "ok":
        return "its last page failed"
    if not old.get("inputs"):
        return "the last page was built before labcore recorded what a page depends on"
    parts = changed(old.get("inputs"), now)
    return ("changed since the last page: " + ", ".join(parts)) if parts else "its last page is incomplete"


def _pages(plan: Any, out_dir: Path, built: set[str], force: bool, env: dict[str, str]) -> list[dict[str, Any]]:
    """Execute each page of the build `plan` whose inputs changed (all with `force`), reuse the others; the records.
    `built`: the run keys this build trained. Each kernel gets its page's run keys (`build_runs`) to check its own
    plan against, and `env` as its environment (kernel_env)."""
    bars = show_progress()  # this process's terminal gets a bar per notebook
    profile, records, here = plan.profile, [], where_computed(env)
    for stem, page in plan.pages.items():
        now = page_inputs(stem, profile, page, here=here)
        old = None if force else reusable(stem, out_dir, now)
        if old is not None:
            records.append(reuse(stem, out_dir, old))
            print(f"[labcore] {profile}/{stem}: reused (its notebook, parameters, runs, code, data, packages and "
                  "machine are those of the page built last time; FORCE=1 runs it anyway)", flush=True)
            continue
        last = last_seconds(out_dir, stem)
        print(f"[labcore] {profile}/{stem}: running ({_why(stem, out_dir, now, force)})", flush=True)
        rec = execute(stem, profile, page, out_dir, built, now,
                      progress_bar(profile, stem, last) if bars else None, env)
        print(f"[labcore] {profile}/{stem}: {rec['status']} in {human_seconds(rec['seconds'])}"
              + (f" (last build {human_seconds(last)})" if last else "")
              + (f" ({rec['error']})" if rec["error"] else ""), flush=True)
        records.append(rec)
    return records


def build(profile: str, only: list[str] | None = None, out_root: Path | None = None, executor: str = "",
          address: str | None = None, cpus_per_run: int | None = None, gpus_per_run: float | None = None,
          deterministic: bool = False, fuse: str = "auto", force: bool = False,
          studies: list[str] | None = None) -> list[dict[str, Any]]:
    """Validate all parameters and data first, train the runs the notebooks need that are not stored yet
    (labcore.engine.executor: `make train` with the same plan, so shared runs get every checkpoint any notebook
    needs, and longest first), then execute each notebook whose page's inputs changed (all with `force`), which
    reads its runs, and reuse the other pages; returns the JSON records. `studies`: only those studies' runs and
    the pages' sections about them (a notebook with none of them is not built)."""
    from labcore.engine.executor import train
    from labcore.engine.plan import build_plan

    check_folders({"LABCORE_REPORTS": out_root or reports_dir(), "LABCORE_RUNS": runs_dir(), "LABCORE_CACHE": cache_dir()})
    # The kernels' environment is the one the build was started with: what training in this process leaves behind
    # (W&B's service address, which W&B sets for its child processes to share its service) is not theirs.
    env = kernel_env(os.environ)
    plan = build_plan(profile, only, studies)  # the one plan of this build: everything below reads it
    for name in sorted({d for page in plan.pages.values() for d in page.datasets}):
        check(name)  # every dataset a page reads, before anything is trained or written
    out_dir = (out_root or reports_dir()) / profile
    with _exclusive(out_dir):  # held from before training: a second build of this folder is refused at once
        tracking = os.environ.get("LABCORE_TRACKING") or next((page.params["tracking"] for page in
                                                               plan.pages.values() if "tracking" in page.params),
                                                              "offline")
        trained = train(plan, executor, address, tracking=tracking, cpus_per_run=cpus_per_run,
                        gpus_per_run=gpus_per_run, deterministic=deterministic, fuse=fuse)
        if trained.trained or trained.lost:
            print(f"[labcore] trained {count(len(trained.trained), 'run')} in {human_seconds(trained.seconds)} with "
                  f"the {trained.executor} executor; {len(trained.failed)} failed, {len(trained.lost)} lost (the "
                  "notebooks show failed runs; lost ones are trained in their kernel)", flush=True)
        with replacing(out_dir / "plan.json") as tmp:  # once trained: beside the pages built from it, for people, tools
            tmp.write_text(json.dumps(plan.to_json(), indent=1, default=str))
        records = _pages(plan, out_dir, {r.key for r in trained.trained}, force, env)
        index = write_index(out_dir, profile)
    print(f"[labcore] index: {index}", flush=True)
    return records
