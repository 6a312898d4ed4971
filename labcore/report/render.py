"""Report pages a reader can trust on their own: one self-contained HTML page per executed notebook
(title, profile banner, contents, folded code, provenance) and an index per profile.

Nothing is loaded from the network: nbconvert's lab template is used without its require.js, MathJax,
mermaid and widget scripts (the notebooks use none of them), figures are embedded as data URIs, and the
only stylesheet is inlined. A page mailed as an attachment, or opened offline, looks the same.
"""
from __future__ import annotations

import base64
import copy
import datetime as dt
import html
import json
import re
from pathlib import Path
from typing import Any

import yaml

from labcore.exercises.params import against_full
from labcore.report.publish import DASH, cell, format_metric
from labcore.text import count

# What each profile's numbers mean; the banner says it on every page and on the index.
PROFILE_NOTES = {
    "smoke": "pipeline check: tiny data and a few steps, so every number here is meaningless; it only shows that "
             "each step of the exercise runs",
    "quick": "reduced settings for a laptop CPU: the lab's findings should show, but the numbers are not the lab's",
    "lab": "the lab notebook's own runs at its own settings (lab-reference.md), three seeds, in bfloat16 autocast "
           "where the CPU or GPU computes it natively; full adds the other write-ups (depth sweeps of every family, "
           "VGG and ResNet rankings, He et al.'s networks, deep gradient probes)",
    "full": "the lab's settings (lab-reference.md)",
}

# nbconvert's lab template without anything fetched from a CDN, code folded into <details>, no In/Out prompts.
_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}<style type="text/css">{{ resources.labcore_css }}</style>{%- endblock extra_css -%}
{% block input_group -%}
<details class="lc-code"><summary>code</summary>
{{ super() }}
</details>
{%- endblock input_group %}
"""

CSS = """
body.jp-Notebook, body.lc-index { max-width: 1100px; margin: 0 auto; padding: 0 16px 48px; }
body.lc-index { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; font-size: 15px; line-height: 1.5; }
img { max-width: 100%; height: auto; }
.jp-OutputArea-output, .jp-RenderedHTMLCommon { overflow-x: auto; }
.lc-banner { margin: 16px 0; padding: 12px 16px; border-left: 6px solid #0969da; background: #f0f6ff;
  font-family: system-ui, sans-serif; font-size: 14px; }
.lc-banner.lc-smoke { border-color: #bf8700; background: #fff8e5; }
.lc-banner.lc-dirty .lc-commit { color: #cf222e; font-weight: bold; }
.lc-banner p { margin: 4px 0; }
.lc-toc { font-family: system-ui, sans-serif; font-size: 14px; margin: 8px 0 16px; }
.lc-toc ul { margin: 4px 0; padding-left: 0; list-style: none; columns: 2; }  /* no markers: some headings carry their own numbers */
details.lc-code > summary { font-size: 12px; color: #57606a; cursor: pointer; padding: 2px 0; }
.lc-prov { font-family: system-ui, sans-serif; font-size: 14px; border-top: 1px solid #d0d7de; margin-top: 32px; }
.lc-prov table, .lc-index table { border-collapse: collapse; }
.lc-prov td, .lc-prov th, .lc-index td, .lc-index th { border: 1px solid #d0d7de; padding: 4px 8px;
  text-align: left; vertical-align: top; }
.lc-prov pre { background: #f6f8fa; padding: 8px; overflow-x: auto; font-size: 13px; }
.lc-ok { color: #1a7f37; font-weight: bold; } .lc-failed { color: #cf222e; font-weight: bold; }
.lc-index td.lc-fig img { width: 320px; }
.lc-index ul { margin: 0; padding-left: 18px; }
"""


def utc(stamp: str | None = None) -> str:
    """An ISO time (any offset) or now, as 'YYYY-MM-DD HH:MM UTC': the one clock reports use."""
    try:
        when = dt.datetime.fromisoformat(stamp) if stamp else dt.datetime.now(dt.timezone.utc)
    except ValueError:  # not a time we wrote (a hand-made or older record): show it as it is
        return str(stamp)
    if when.tzinfo is None:
        when = when.astimezone()  # a naive stamp is local time
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _origin(total: int, trained: int) -> str:
    """Where a page's runs came from, naming only what there is: 'all trained by this build', 'all read from the
    run store', or '2 trained by this build, 4 read from the run store'."""
    if trained == total:
        return "all trained by this build"
    if trained == 0:
        return "all read from the run store"
    return f"{trained} trained by this build, {total - trained} read from the run store"


def _commit(git: dict[str, Any] | None) -> tuple[str, bool]:
    """'abc1234567 (dirty)' and whether the tree had changes."""
    git = git or {}
    dirty = bool(git.get("dirty"))
    commit = (git.get("commit") or "unknown")[:10]
    return commit + (" (dirty: uncommitted changes)" if dirty else ""), dirty


FIRST = ("train.lr", "train.", "model.")  # the banner names these reduced settings first, the data's sizes last


def banner(profile: str, when: str | None, git: dict[str, Any] | None, device: str | None,
           reduced: list[str] | None = None, notes: list[str] | None = None) -> str:
    """The box at the top of every page: profile and what it means, date (UTC), commit, device, and `notes` (the
    precision its runs trained in, sections left out)."""
    commit, dirty = _commit(git)
    classes = " ".join(c for c in ("lc-banner", f"lc-{profile}", "lc-dirty" if dirty else "") if c)
    lines = [f"<p><strong>Profile <code>{html.escape(profile)}</code></strong>: "
             f"{html.escape(PROFILE_NOTES.get(profile, 'a custom profile'))}.</p>",
             f"<p>Run {html.escape(utc(when))} · commit <code class='lc-commit'>{html.escape(commit)}</code>"
             + (f" · {html.escape(device)}" if device else "") + "</p>"]
    if reduced:  # what changes how a network learns first (smoke's 10x learning rate), the sizes of the data after
        reduced = sorted(reduced, key=lambda r: next((i for i, p in enumerate(FIRST) if r.startswith(p)),
                                                     len(FIRST) + r.startswith("data.")))
        shown = "; ".join(html.escape(r) for r in reduced[:4])
        more = "".join(f"<li>{html.escape(r)}</li>" for r in reduced[4:])
        lines.append(f"<p>Reduced against <code>full</code> ({count(len(reduced), 'setting')}): {shown}"
                     + (f"</p><details><summary>{len(reduced) - 4} more</summary><ul>{more}</ul></details>" if more else "</p>"))
    lines += [f"<p>{html.escape(n)}</p>" for n in notes or []]
    return f"<div class='{classes}' id='lc-banner'>{''.join(lines)}</div>"


def banner_notes(record: dict[str, Any]) -> list[str]:
    """The page's lines about how its runs were computed and what it leaves out: the precision of its runs (and
    whether this machine computes bfloat16 natively), the sections this build left out."""
    prov = record.get("provenance") or {}
    counts: dict[str, int] = {}
    for row in prov.get("regimes") or []:
        name = {"bf16": "bfloat16 autocast"}.get(row.get("precision"), row.get("precision") or "fp32")
        counts[name] = counts.get(name, 0) + int(row.get("runs", 0))
    out = []
    if len(counts) > 1 or "bfloat16 autocast" in counts:
        out.append("Precision: " + ", ".join(f"{n} run{'s' if n != 1 else ''} in {k}" for k, n in counts.items())
                   + " (each run records its own; weights and optimiser always in fp32).")
    if prov.get("bf16_here"):
        out.append(prov["bf16_here"])
    if record.get("left_out"):
        out.append("Left out of this build: " + "; ".join(record["left_out"])
                   + (f" (STUDIES={','.join(record['parameters']['selected'])})"
                      if (record.get("parameters") or {}).get("selected") else
                      f" (profile {record.get('profile')} plans no runs for them)") + ".")
    return out


def _value(v: Any, column: str) -> str:
    """One provenance cell through the pages' one formatter (publish.cell): yes/no, counts with separators, a dash
    for what was not recorded; text escaped, a list as its items."""
    if isinstance(v, (list, tuple)):
        return ", ".join(_value(x, column) for x in v)
    return html.escape(v) if isinstance(v, str) else cell(v, column)


def _dash_note(body: str) -> str:
    """The dash explained once under a table that shows one (as publish.table captions its own)."""
    return (f"<p style='font-size: 0.85em; color: #555'>{DASH} not recorded for these runs</p>"
            if f">{DASH}<" in body else "")


def _table(rows: dict[str, Any]) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_value(v, str(k))}</td></tr>"
                   for k, v in rows.items() if v not in (None, "", {}))
    return f"<table>{body}</table>"


def _rows(rows: list[dict] | None, caption: str) -> str:
    """A list of same-keyed dicts as one captioned table (empty without rows)."""
    if not rows:
        return ""
    cols = [c for c in rows[0] if any(r.get(c) not in (None, "") for r in rows)]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_value(r.get(c), c)}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<h3>{html.escape(caption)}</h3><table><tr>{head}</tr>{body}</table>" + _dash_note(body)


def provenance_section(record: dict[str, Any]) -> str:
    """What produced the page, readable in the page itself: parameters, packages, device, data, store, time."""
    prov = record.get("provenance") or {}
    commit, _ = _commit(prov.get("git"))
    run = {"notebook": record.get("notebook"), "profile": record.get("profile"), "status": record.get("status"),
           "run at": utc(prov["time"]) if prov.get("time") else None, "wall time": f"{record.get('seconds', '?')} s",
           "commit": commit, "device": prov.get("device"), "trained on": ", ".join(prov.get("trained_on") or []),
           "platform": prov.get("platform"), "run store version": prov.get("run_store_version"),
           "W&B tracking": prov.get("tracking"), "seeds": prov.get("seeds"),
           "trained with their seeds fused": (f"{prov['fused_runs']} of the runs (one batched model per config; each "
                                              "stored as its own run)") if prov.get("fused_runs") else None}
    data = "".join(f"<tr><th>{html.escape(name)}</th><td>{html.escape(str(d.get('source')))}</td>"
                   f"<td>{d.get('train', '?'):,} train + {d.get('test', '?'):,} test</td>"
                   f"<td><code>sha256 {html.escape(str(d.get('sha256', ''))[:16])}…</code></td></tr>"
                   for name, d in (prov.get("data") or {}).items())
    params = yaml.safe_dump(record.get("parameters") or {}, sort_keys=False, default_flow_style=None, width=100)
    computed = _rows(prov.get("trained_with"), "What computed its runs: the fingerprint of the code that trained "
                     "them (labcore/store/identity.py), of the data they saw, and the commit")
    how = _rows(prov.get("regimes"), "How its runs were computed (numbers can differ in their last bits between "
                "these, never in what they measure)")
    return (f"<section class='lc-prov' id='provenance'><h2>Provenance</h2>{_table(run)}"
            + (f"<h3>Data (checksum of the decoded images and labels)</h3><table>{data}</table>" if data else
               f"<p>Data: {html.escape(str(prov.get('data_source') or 'not recorded'))}</p>")
            + computed + how + _wandb(prov)
            + f"<h3>Parameters</h3><pre>{html.escape(params)}</pre>"
            + f"<h3>Packages</h3>{_table(prov.get('packages') or {})}</section>")


def _wandb(prov: dict[str, Any]) -> str:
    """The report's runs as W&B names them, and the folder their offline files are in (to `wandb sync` them)."""
    names = prov.get("wandb_runs") or []
    if not names:
        return ""
    listed = "".join(f"<li><code>{html.escape(n)}</code></li>" for n in names)
    return (f"<h3>Weights &amp; Biases</h3><p>{count(len(names), 'run')}, {html.escape(str(prov.get('tracking')))}, in "
            f"<code>{html.escape(str(prov.get('wandb_folder')))}</code> (a run trained before this report was "
            f"logged where and when it trained).</p><details><summary>run names</summary><ul>{listed}</ul></details>")


_HEADING = re.compile(r'<h([12]) id="([^"]+)"[^>]*>(.*?)</h\1>', re.S)


def contents(body: str) -> str:
    """A table of contents from the page's h1/h2 headings (nbconvert gives each an id)."""
    items = []
    for level, anchor, text in _HEADING.findall(body):
        label = html.unescape(re.sub(r"<[^>]+>", "", text)).rstrip("¶").strip()
        if level == "2":
            items.append(f"<li><a href='#{html.escape(anchor, quote=True)}'>{html.escape(label)}</a></li>")
    items.append("<li><a href='#provenance'>Provenance</a></li>")
    return (f"<nav class='lc-toc' id='contents'><a href='index.html'>&larr; all reports</a> · "
            f"<strong>Contents</strong><ul>{''.join(items)}</ul></nav>")


def exercise_title(nb: Any) -> str:
    """The notebook's first '# ' heading, e.g. 'Exercise 1.1: an MLP baseline on MNIST'."""
    for c in nb.cells:
        if c.cell_type == "markdown":
            for line in c.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return "labcore report"


def parameters_once(nb: Any) -> Any:
    """The notebook with the parameters that actually ran in its `parameters` cell, and papermill's injected cell
    removed: one code fold shows them, instead of the notebook's defaults followed by what replaced them."""
    nb = copy.deepcopy(nb)
    tags = [set(c.get("metadata", {}).get("tags", [])) for c in nb.cells]
    injected = [i for i, t in enumerate(tags) if "injected-parameters" in t]
    params = [i for i, t in enumerate(tags) if "parameters" in t]
    if injected and params:
        ran = nb.cells[injected[0]].source.replace("# Parameters\n", "", 1)
        nb.cells[params[0]].source = ("# The parameters this report ran with (the notebook's defaults, overridden by "
                                      "its profile's parameter file)\n" + ran)
        del nb.cells[injected[0]]
    return nb


NO_ALT = "No description has been provided for this image"  # what nbconvert writes for an image without one


def figure_alts(nb: Any) -> list[str]:
    """A text for each figure of `nb`, in order, for readers who cannot see it: the section it belongs to (the last
    heading before it) and which of that section's figures it is."""
    out, section, nth = [], exercise_title(nb), 0
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            heads = [line.lstrip("#").strip() for line in cell.source.splitlines() if line.startswith("#")]
            section, nth = (heads[-1], 0) if heads else (section, nth)
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if "image/png" in output.get("data", {}):
                nth += 1
                out.append(f"Figure {nth} of the section “{section}”")
    return out


def notebook_page(nb: Any, record: dict[str, Any]) -> str:
    """One executed notebook as a self-contained HTML page with banner (naming how its parameters differ from full's),
    contents and provenance."""
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    nb = parameters_once(nb)
    nb.metadata["title"] = f"{exercise_title(nb)} ({record['profile']} profile)"
    exporter = HTMLExporter(template_name="lab", extra_loaders=[DictLoader({"labcore.html.j2": _TEMPLATE})],
                            template_file="labcore.html.j2", exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb, resources={"labcore_css": CSS})
    alts = figure_alts(nb)  # nbconvert's placeholder, in the order the figures come: each named by its section
    for alt in alts if body.count(f'alt="{NO_ALT}"') == len(alts) else []:  # else an <img> we did not count: as is
        body = body.replace(f'alt="{NO_ALT}"', f'alt="{html.escape(alt)}"', 1)
    prov = record.get("provenance") or {}
    top = banner(record["profile"], prov.get("time"), prov.get("git"), prov.get("device"),
                 against_full(record["notebook"], record["profile"], record.get("parameters") or {}),
                 banner_notes(record))
    if record.get("status") != "ok":
        top += f"<div class='lc-banner lc-smoke'><p class='lc-failed'>This notebook failed: {html.escape(record.get('error') or '')}</p></div>"
    body = body.replace("<main>", "<main>" + top + contents(body), 1)
    head, sep, tail = body.rpartition("</main>")
    assert sep, "nbconvert's lab template has a <main> element"
    return head + provenance_section(record) + sep + tail


def _figure(out_dir: Path, name: str | None) -> str:
    """An image file of the reports folder as an embedded <img> (the index stays one self-contained file)."""
    if not name or not (out_dir / name).is_file():
        return ""
    data = base64.b64encode((out_dir / name).read_bytes()).decode()
    return (f"<a href='{name}' title='the figure at full size'><img src='data:image/png;base64,{data}' "
            "alt='summary figure'></a>")


def _headline(rec: dict[str, Any]) -> str:
    if rec.get("status") != "ok":
        return f"<span class='lc-failed'>{html.escape(rec.get('error') or 'failed')}</span>"
    pairs = rec.get("headline") or [[k, format_metric(v)] for k, v in (rec.get("metrics") or {}).items()
                                     if isinstance(v, (int, float, str)) and not isinstance(v, bool)]
    return "<ul>" + "".join(f"<li>{html.escape(str(k))}: <strong>{html.escape(str(v))}</strong></li>"
                            for k, v in pairs) + "</ul>"


def build_banner(profile: str, records: list[dict[str, Any]]) -> str:
    """The banner of a page about the whole build (the index, the runs page): its newest report's time and commit,
    marked dirty if any report's was, and every device its reports ran on."""
    provs = [r.get("provenance") or {} for r in records]
    newest = max(provs, key=lambda p: p.get("time") or "", default={})
    devices = sorted({p["device"] for p in provs if p.get("device")})
    git = {**(newest.get("git") or {}), "dirty": any((p.get("git") or {}).get("dirty") for p in provs)}
    return banner(profile, newest.get("time"), git, "; ".join(devices) or None)


def index(out_dir: Path, profile: str, records: list[dict[str, Any]]) -> str:
    """The profile's index page: banner, then per notebook its status, headline, summary figure and files."""
    rows = []
    for rec in records:
        stem = rec["notebook"]
        files = " · ".join(f"<a href='{stem}.{ext}'>.{ext}</a>" for ext in ("html", "json", "ipynb")
                           if (out_dir / f"{stem}.{ext}").is_file())
        if rec["status"] != "ok" and (out_dir / "previous" / f"{stem}.html").is_file():
            files += f" · <a href='previous/{stem}.html'>the last good report</a>"
        runs = rec.get("runs") or {}
        counted = f", {count(runs['total'], 'run')} ({_origin(runs['total'], runs['trained_by_build'])})" \
            if runs.get("total") else ""
        made = (rec.get("provenance") or {}).get("time")
        counted += f", computed {html.escape(utc(made))}" if made else ""
        if rec.get("reused"):
            counted += (f"; reused by the build of {html.escape(utc(rec['reused']))}: nothing it depends on "
                        "had changed")
        title = html.escape(rec.get("title") or stem)
        rows.append(f"<tr><td><a href='{stem}.html'><strong>{title}</strong></a><br><small>{files}</small><br>"
                    f"<span class='lc-{rec['status']}'>{rec['status']}</span> in {rec.get('seconds', '?')} s{counted}"
                    f"</td><td>{_headline(rec)}</td><td class='lc-fig'>{_figure(out_dir, rec.get('summary_figure'))}</td></tr>")
    verified = _verified(out_dir, profile)
    previous = " The last good report of a notebook that failed is kept in <a href='previous/'>previous/</a>." \
        if any(r["status"] != "ok" for r in records) and (out_dir / "previous").is_dir() else ""
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>labcore reports ({html.escape(profile)} profile)</title><style>{CSS}</style></head>
<body class="lc-index"><h1>labcore reports: <code>{html.escape(profile)}</code></h1>
{build_banner(profile, records)}{verified}
<p>Do deeper networks train better, and why do residual connections help? One report per exercise; every number
is computed by the notebook from runs it trained or loaded from the run store. Index written {utc()}.{previous}</p>
<table><tr><th>exercise</th><th>headline</th><th>summary</th></tr>{''.join(rows)}</table>{_runs_link(out_dir)}</body></html>"""


def _verified(out_dir: Path, profile: str) -> str:
    """The index's line about the last `make verify`: its verdict while the store holds the runs it checked, else
    that it checked an earlier store (a verdict says nothing about runs trained or kept since)."""
    from labcore.report.verify import changed_since

    if not (out_dir / "verify.json").is_file():
        return ""
    v = json.loads((out_dir / "verify.json").read_text())
    said = f"make verify ({html.escape(utc(v.get('time')))}): {html.escape(v.get('summary', ''))}"
    moved = changed_since(v.get("checked"))
    if moved == 0:
        return f"<p class='lc-{'ok' if v.get('ok') else 'failed'}'>{said}</p>"
    since = (f"{moved} of {count(len(v['checked']), 'run')} it checked changed since" if moved else
             "which runs it checked was not recorded")
    return (f"<p>{said}. <em>That verdict is about the store as it was then ({since}): <code>make verify "
            f"PROFILE={html.escape(profile)}</code> checks today's.</em></p>")


def _runs_link(out_dir: Path) -> str:
    """The line under the index's table that leads to the page of every run (when it was written)."""
    if not (out_dir / "runs.html").is_file():
        return ""
    return ("<p><a href='runs.html'><strong>Every run of this build</strong></a>: one row per run the pages used, with "
            "its settings, status, final metrics, time against the estimate, where it trained and what code and data "
            "it was trained with; sort, filter, and click a run for its curves.</p>")
