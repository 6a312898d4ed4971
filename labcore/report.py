"""Build the reports: papermill over each notebook with a profile's parameters, nbconvert to HTML,
a JSON record per notebook, and an index page.

    python -m labcore.report --profile smoke --only 01_mlp_baseline

Every parameter file is read, merged over the notebook's own defaults and validated before any
notebook runs, so a typo fails in a second with a one-line error and no report is touched.
Metrics come from the executed notebook itself: it calls `publish`, which leaves a JSON output
(MIME type `application/vnd.labcore.result+json`) that this module reads back.
"""
from __future__ import annotations

import argparse
import ast
import datetime as dt
import html
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from .config import SECTIONS, ConfigError, from_dict, load_yaml, validate_params
from .data import DataNotFoundError, check_available
from .paths import PROJECT_ROOT, reports_dir
from .tracking import check_mode

NOTEBOOKS = PROJECT_ROOT / "notebooks"
PARAMETERS = PROJECT_ROOT / "parameters"
PROFILES = ("smoke", "quick", "full")
MIME = "application/vnd.labcore.result+json"


# ---------------------------------------------------------------- notebook side

def _jsonable(value: Any) -> Any:
    """Plain JSON: NaN/inf become None, tuples lists, numpy/torch scalars floats."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def publish(metrics: dict[str, Any], provenance: dict[str, Any]) -> None:
    """Show the notebook's headline metrics as a table and leave them machine-readable for the report."""
    from IPython.display import display

    payload = _jsonable({"metrics": metrics, "provenance": provenance})
    rows = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>"
                   for k, v in payload["metrics"].items() if not isinstance(v, (dict, list)))
    display({MIME: payload, "text/html": f"<table>{rows}</table>",
             "text/plain": json.dumps(payload["metrics"], indent=1)[:2000]}, raw=True)


def _fmt(v: Any) -> str:
    """A metric as plain text (callers escape it for HTML)."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# ---------------------------------------------------------------- parameters

def notebook_stems() -> list[str]:
    """All exercise notebooks, in order."""
    return sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def notebook_defaults(stem: str) -> dict[str, Any]:
    """The values of the notebook's `parameters` cell."""
    import papermill

    info = papermill.inspect_notebook(str(NOTEBOOKS / f"{stem}.ipynb"))
    if not info:
        raise ConfigError(f"notebooks/{stem}.ipynb has no cell tagged 'parameters'")
    return {name: ast.literal_eval(p["default"]) for name, p in info.items()}


def _merge(base: Any, override: Any) -> Any:
    """Deep merge: mappings merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in override.items()}}
    return override


def _shown(path: Path) -> str:
    """A path as the user knows it: relative to the project where possible."""
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)


def _load_with_includes(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A parameter file, merged over the file its `include:` names (same folder), recursively.

    Lets exercise 03 reuse exercise 02's studies verbatim, so their runs share store keys.
    """
    if path in seen:
        raise ConfigError(f"{_shown(path)}: include cycle through {', '.join(p.name for p in seen)}")
    given = load_yaml(path)
    include = given.pop("include", None)
    if include is None:
        return given
    if not isinstance(include, str):
        raise ConfigError(f"{_shown(path)}: include must be a file name, got {include!r}")
    return _merge(_load_with_includes(path.parent / include, (*seen, path)), given)


def resolve_parameters(stem: str, profile: str) -> dict[str, Any]:
    """Notebook defaults overridden by parameters/<profile>/<stem>.yaml, validated."""
    path = PARAMETERS / profile / f"{stem}.yaml"
    if not path.is_file():
        raise ConfigError(f"no parameter file {_shown(path)} for notebook {stem} "
                          f"in profile {profile}; create it (copy another profile's)")
    defaults = notebook_defaults(stem)
    given = _load_with_includes(path)
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(f"{_shown(path)}: unknown parameter {unknown[0]!r} for {stem}; "
                          f"valid: {', '.join(defaults)}")
    params = _merge(defaults, given)
    try:
        validate_params(params)
        if "studies" in params:
            from .sweep import expand  # builds every model on the meta device: catches impossible shapes
            expand(params["studies"], params.get("data", {}), params.get("train", {}),
                   params.get("seeds", [0]), params.get("residual", [False]))
        for name, value in params.items():
            suffix = name.rsplit("_", 1)[-1]
            if name not in SECTIONS and suffix in SECTIONS and isinstance(value, dict):
                from_dict(SECTIONS[suffix], value, name)  # e.g. mlp_model, mlp_train
            if suffix == "model" and isinstance(value, dict):
                _check_buildable(name, value, params.get(name[: -len("model")] + "data") or params.get("data") or {})
        if "tracking" in params:
            check_mode(params["tracking"])
    except ConfigError as exc:
        raise ConfigError(f"{_shown(path)}: {exc}") from None
    return params


def _check_buildable(name: str, model: dict[str, Any], data: dict[str, Any]) -> None:
    """Check that the model a `*model` section describes can be built for its dataset (see models.check_buildable)."""
    from .data import CLASSES, SHAPES
    from .models import check_buildable

    dataset = from_dict(SECTIONS["data"], data, "data").name
    check_buildable(from_dict(SECTIONS["model"], model, name), SHAPES[dataset], len(CLASSES[dataset]), name)


def datasets_needed(params: dict[str, Any]) -> set[str]:
    """Dataset names in the parameters' data sections (`data`, `*_data`)."""
    return {v.get("name", "mnist") for k, v in params.items()
            if (k == "data" or k.endswith("_data")) and isinstance(v, dict)}


# ---------------------------------------------------------------- execution

def _result_output(nb: Any) -> dict[str, Any] | None:
    """The payload that `publish` left in an executed notebook (the last one wins)."""
    found = None
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if MIME in out.get("data", {}):
                found = out["data"][MIME]
    return found


def render_html(nb: Any, target: Path) -> None:
    """Self-contained HTML: figures are embedded as data URIs, nothing else is needed to view it."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    target.write_text(body, encoding="utf-8")


def execute(stem: str, profile: str, params: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Run one notebook with papermill; write <stem>.ipynb, .html and .json; return the JSON record."""
    import nbformat
    import papermill
    from .provenance import collect

    work = out_dir / f".work-{stem}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    executed = work / f"{stem}.ipynb"
    start = time.perf_counter()
    error = None
    try:
        papermill.execute_notebook(str(NOTEBOOKS / f"{stem}.ipynb"), str(executed), parameters=params,
                                   cwd=str(NOTEBOOKS), kernel_name="python3", progress_bar=False,
                                   report_mode=False, request_save_on_cell_execute=True)
    except Exception as exc:  # papermill's execution error, a dead kernel, ...
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
    seconds = time.perf_counter() - start
    if not executed.is_file():  # the kernel never started: nothing executed, keep the source for the record
        shutil.copy(NOTEBOOKS / f"{stem}.ipynb", executed)
    nb = nbformat.read(executed, as_version=4)
    payload = _result_output(nb)
    if error is None and payload is None:
        error = "the notebook finished without calling labcore.report.publish(...)"
    record = {
        "notebook": stem,
        "profile": profile,
        "status": "ok" if error is None else "failed",
        "metrics": (payload or {}).get("metrics", {}),
        "parameters": params,
        "provenance": (payload or {}).get("provenance") or collect("cpu", note="notebook failed before publishing"),
        "seconds": round(seconds, 1),
        "error": error,
    }
    render_html(nb, work / f"{stem}.html")
    (work / f"{stem}.json").write_text(json.dumps(_jsonable(record), indent=2))
    _install(work, out_dir, stem, keep_previous=record["status"] != "ok")
    return record


def _install(work: Path, out_dir: Path, stem: str, keep_previous: bool) -> None:
    """Move the new report files into place; a failed run first moves a previous good report to previous/."""
    old = out_dir / f"{stem}.json"
    if keep_previous and old.is_file() and json.loads(old.read_text()).get("status") == "ok":
        backup = out_dir / "previous"
        backup.mkdir(exist_ok=True)
        for ext in ("ipynb", "html", "json"):
            if (out_dir / f"{stem}.{ext}").is_file():
                (out_dir / f"{stem}.{ext}").replace(backup / f"{stem}.{ext}")
    for f in work.iterdir():
        f.replace(out_dir / f.name)
    work.rmdir()


def write_index(out_dir: Path, profile: str) -> Path:
    """index.html linking every report in `out_dir`, with its status and headline metrics."""
    rows = []
    for f in sorted(out_dir.glob("[0-9][0-9]_*.json")):
        rec = json.loads(f.read_text())
        metrics = ", ".join(f"{k}={_fmt(v)}" for k, v in rec.get("metrics", {}).items()
                            if isinstance(v, (int, float, str)) and not isinstance(v, bool))
        color = "#1a7f37" if rec["status"] == "ok" else "#cf222e"
        when = rec.get("provenance", {}).get("time", "")
        commit = (rec.get("provenance", {}).get("git", {}) or {}).get("commit") or ""
        rows.append(f"<tr><td><a href='{rec['notebook']}.html'>{rec['notebook']}</a></td>"
                    f"<td style='color:{color};font-weight:bold'>{rec['status']}</td>"
                    f"<td>{html.escape(metrics) or html.escape(rec.get('error') or '')}</td>"
                    f"<td>{rec.get('seconds', '')}</td><td>{html.escape(when)}</td><td><code>{commit[:10]}</code></td></tr>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>labcore reports ({profile})</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.4em .8em;text-align:left;vertical-align:top}}</style></head><body>
<h1>labcore reports: profile <code>{profile}</code></h1>
<p>Do deeper networks train better, and why do residual connections help? Generated
{dt.datetime.now().isoformat(timespec="seconds")}.</p>
<table><tr><th>notebook</th><th>status</th><th>headline metrics</th><th>seconds</th><th>run at</th><th>commit</th></tr>
{''.join(rows)}</table></body></html>"""
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def build(profile: str, only: list[str] | None = None, out_root: Path | None = None) -> list[dict[str, Any]]:
    """Validate all parameters and data first, then execute each notebook; returns the JSON records."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    stems = notebook_stems()
    for name in only or []:
        if name not in stems:
            raise ConfigError(f"no notebook named {name!r}; available: {', '.join(stems)}")
    plan = [(stem, resolve_parameters(stem, profile)) for stem in (only or stems)]
    for name in sorted(set().union(*(datasets_needed(p) for _, p in plan))):
        check_available(name)
    # Kernels inherit the environment: quiet progress bars, and this interpreter's tools first on PATH
    # (the 'python3' kernel is started by name), and an absolute data root (kernels run in notebooks/).
    os.environ["LABCORE_HEADLESS"] = "1"
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    if os.environ.get("LABCORE_DATA"):
        os.environ["LABCORE_DATA"] = str(Path(os.environ["LABCORE_DATA"]).expanduser().resolve())
    out_dir = (out_root or reports_dir()) / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for stem, params in plan:
        print(f"[labcore] {profile}/{stem}: running", flush=True)
        rec = execute(stem, profile, params, out_dir)
        print(f"[labcore] {profile}/{stem}: {rec['status']} in {rec['seconds']} s"
              + (f" ({rec['error']})" if rec["error"] else ""), flush=True)
        records.append(rec)
    index = write_index(out_dir, profile)
    print(f"[labcore] index: {index}", flush=True)
    return records


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (`make report` calls this)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="full", help=f"one of {', '.join(PROFILES)} (default: full)")
    parser.add_argument("--only", default="", help="comma-separated notebook stems, e.g. 01_mlp_baseline")
    parser.add_argument("--out", type=Path, default=None, help="reports folder (default: $LABCORE_REPORTS or reports/)")
    args = parser.parse_args(argv)
    only = [s.strip().removesuffix(".ipynb") for s in args.only.split(",") if s.strip()] or None
    try:
        records = build(args.profile, only, args.out)
    except (ConfigError, DataNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if all(r["status"] == "ok" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
