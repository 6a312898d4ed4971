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
import contextlib
import datetime as dt
import fcntl
import html
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .config import ConfigError
from .data import DataNotFoundError, check_available
from .params import NOTEBOOKS, PROFILES, check_selection, datasets_needed, notebook_stems, parse_only, resolve_parameters
from .paths import reports_dir
from .publish import MIME, format_metric, jsonable


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
    (work / f"{stem}.json").write_text(json.dumps(jsonable(record), indent=2))
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
        metrics = ", ".join(f"{k}={format_metric(v)}" for k, v in rec.get("metrics", {}).items()
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


@contextlib.contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """One build per reports folder at a time; a second one is refused at once, before touching anything."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".build.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another build is writing {out_dir}; wait for it, or build elsewhere "
                              "with LABCORE_REPORTS=<folder>") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build(profile: str, only: list[str] | None = None, out_root: Path | None = None) -> list[dict[str, Any]]:
    """Validate all parameters and data first, then execute each notebook; returns the JSON records.

    The plan's one-line summary comes first: what is stored, and what this build still has to train."""
    check_selection(profile, only)
    plan = [(stem, resolve_parameters(stem, profile)) for stem in (only or notebook_stems())]
    for name in sorted(set().union(*(datasets_needed(p) for _, p in plan))):
        check_available(name)
    from .plan import describe

    d = describe(profile, only, resolved=dict(plan))
    waiting = d["table"].state.isin(["pending", "damaged"]).any()
    print(d["summary"] + ("; this build trains them one after another (`make train` can spread them over Ray)"
                          if waiting else ""), flush=True)
    # Kernels inherit the environment: quiet progress bars, and this interpreter's tools first on PATH
    # (the 'python3' kernel is started by name), and an absolute data root (kernels run in notebooks/).
    os.environ["LABCORE_HEADLESS"] = "1"
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    if os.environ.get("LABCORE_DATA"):
        os.environ["LABCORE_DATA"] = str(Path(os.environ["LABCORE_DATA"]).expanduser().resolve())
    out_dir = (out_root or reports_dir()) / profile
    records = []
    with _exclusive(out_dir):
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
    parser.add_argument("--profile", default="", help=f"one of {', '.join(PROFILES)} (default: full with a CUDA GPU "
                        "or a Ray cluster, quick otherwise)")
    parser.add_argument("--only", default="", help="comma-separated notebook stems, e.g. 01_mlp_baseline")
    parser.add_argument("--out", type=Path, default=None, help="reports folder (default: $LABCORE_REPORTS or reports/)")
    args = parser.parse_args(argv)
    only = parse_only(args.only)
    try:
        from .plan import choose_profile

        profile, first = choose_profile(args.profile)
        if first:
            print(first, flush=True)
        records = build(profile, only, args.out)
    except (ConfigError, DataNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if all(r["status"] == "ok" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
