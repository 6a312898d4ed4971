"""A page of every run a build used, `reports/<profile>/runs.html`: one row per run (shared runs once), sortable,
filterable, with each run's curves drawn in the page from its epoch history.

The rows come from the build's per-notebook records (their `provenance.run_keys`) and the run store; the page is
one self-contained file (inline CSS and script, nothing fetched), like every other page of a report.
"""
from __future__ import annotations

import html
import json
import math
from typing import Any, Callable

from labcore.core.datasets import SIZES
from labcore.core.config import RunConfig
from labcore.engine.jobs import distinct_labels
from labcore.engine.raypass import executor_of
from labcore.report.render import CSS
from labcore.store.provenance import regimes, trained_with
from labcore.store.runs import RunStore
from labcore.store.tracking import run_name
from labcore.text import human_seconds

HISTORY = ("epoch", "train_loss", "val_loss", "val_acc", "train_acc")  # what the curves read of each epoch


def _finite(v: Any) -> float | None:
    """A number JSON and sorting can take: NaN and infinities (a diverged run) become None."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def used_keys(records: list[dict]) -> dict[str, list[str]]:
    """{run key: the notebooks whose records name it}, keys in the order the records first name them."""
    used: dict[str, list[str]] = {}
    for rec in records:
        keys = (rec.get("provenance") or {}).get("run_keys") or []
        flat = [k for ks in keys.values() for k in ks] if isinstance(keys, dict) else list(keys)
        for key in flat:
            notebooks = used.setdefault(key, [])
            if rec["notebook"] not in notebooks:
                notebooks.append(rec["notebook"])
    return used


def _lost(key: str, notebooks: list[str]) -> dict:
    """The row of a key a page recorded that the store cannot read: no config, so nothing but the key is known."""
    return {"key": key, "label": key, "wandb": None, "notebooks": notebooks, "status": "lost",
            "note": "a page recorded this run, but the run store has no readable result for it", "history": []}


def _row(key: str, notebooks: list[str], cfg: RunConfig | None, label: str, store: RunStore) -> dict:
    """One run's row: its config (None: unreadable), its state in the store, and what its stored result says (when
    it has one); `label`: its W&B name and whatever tells it apart from runs that would read alike."""
    if cfg is None:
        return _lost(key, notebooks)
    state, result = store.state(cfg), store.get(cfg)
    m, t, d, name = cfg.model, cfg.train, cfg.data, run_name(cfg.label(), key)
    row = {"key": key, "label": label, "wandb": name, "precision": t.precision,
           "notebooks": notebooks, "family": m.family, "depth": m.depth, "width": m.width,
           "variant": "residual" if m.residual else "plain", "seed": cfg.seed, "epochs": t.epochs, "lr": t.lr,
           "optimizer": t.optimizer, "dataset": d.name, "train_size": "subset" if d.subset else "full",
           "n_train": d.subset or SIZES[d.name][0] - d.val_size, "executor": None,
           "status": {"stored": "ok"}.get(state, state), "note": None, "history": []}
    if result is None:  # damaged: the config is readable, its result is not
        return {**row, "note": store.damage(cfg)}
    summary, how = result.summary(), regimes([result])[0]
    stale = store.staleness(cfg)  # said in the note; the status says "stale" only of a run that finished
    notes = [result.error] + ([stale if result.ok else f"stale: {stale}"] if stale else [])
    row.update(status="failed" if not result.ok else row["status"], test_acc=_finite(summary["test_acc"]),
               val_acc=_finite(summary["val_acc"]), train_acc=_finite(summary["train_acc"]),
               train_loss=_finite(summary["train_loss"]),
               seconds=_finite(result.seconds), estimate_seconds=_finite(result.estimate_seconds),
               device=result.device, node=result.node, executor=executor_of(result.node), fused=how["fused"],
               compiled=how["compiled"],
               note="; ".join(n for n in notes if n) or None,
               history=[{k: _finite(e.get(k)) for k in HISTORY} for e in result.history])
    row["ratio"] = (row["seconds"] / row["estimate_seconds"]
                    if row["seconds"] is not None and row["estimate_seconds"] else None)
    # The code and data fingerprints exactly as a page's provenance table shows them (one function makes both).
    made = trained_with([result])[0]
    row.update(code=made["code"], data=made["data"], commit=made["commit"])
    return row


def rows(records: list[dict], store: RunStore) -> list[dict]:
    """One row per run the build's records name (a run several notebooks use is one row listing them all), in
    notebook order, then by label; runs that share a label say every setting they differ in (jobs.distinct_labels,
    as the training log does)."""
    rank = {rec["notebook"]: i for i, rec in enumerate(records)}
    used = used_keys(records)
    cfgs = {key: store.config_at(key) for key in used}
    labels = distinct_labels([c for c in cfgs.values() if c is not None], lambda c: run_name(c.label(), c.key()))
    out = [_row(key, notebooks, cfgs[key], labels.get(key, key), store) for key, notebooks in used.items()]
    return sorted(out, key=lambda r: (rank[r["notebooks"][0]], r["label"]))


def _secs(s: float) -> str:
    """Short runs keep a decimal (human_seconds rounds to whole seconds below 90 s), and runs under a second two
    significant digits (a smoke run's 0.043 s, not '0.0 s' beside a ratio that reads it)."""
    return f"{s:.2g} s" if s < 1 else f"{s:.1f} s" if s < 90 else human_seconds(s)


def _fmt(spec: str) -> Callable[[Any], str]:
    return lambda v: format(v, spec)


def _where(r: dict) -> str:
    """Device on node, fused or alone, compiled or eager (and the executor, where one is recorded)."""
    if not r.get("device"):
        return ""
    parts = [r["device"] + (f" on {r['node']}" if r.get("node") else ""), "fused seeds" if r.get("fused") else
             "alone", "compiled" if r.get("compiled") else "eager"]
    return ", ".join(parts + ([f"executor {r['executor']}"] if r.get("executor") else []))


# (header, row key, numeric, text of the value), left to right: what a reader compares first (status, metrics, time)
# before the config columns the label already names, so a laptop window shows them without scrolling sideways.
COLUMNS: list[tuple[str, str, bool, Callable[[Any], str]]] = [
    ("run (W&B name)", "label", False, str), ("notebook(s)", "notebooks", False, ", ".join),
    ("status", "status", False, str), ("test acc", "test_acc", True, _fmt(".3f")),
    ("final val acc", "val_acc", True, _fmt(".3f")), ("final train acc", "train_acc", True, _fmt(".3f")),
    ("final train loss", "train_loss", True, _fmt(".3f")),
    ("seconds", "seconds", True, _secs), ("estimate", "estimate_seconds", True, _secs),
    ("ratio", "ratio", True, lambda v: f"{v:.2f}×"),
    ("family", "family", False, str), ("depth", "depth", True, _fmt("d")), ("width", "width", True, _fmt("d")),
    ("variant", "variant", False, str), ("seed", "seed", True, _fmt("d")), ("epochs", "epochs", True, _fmt("d")),
    ("lr", "lr", True, _fmt("g")), ("optimizer", "optimizer", False, str), ("dataset", "dataset", False, str),
    ("train images", "n_train", True, _fmt(",")), ("where it trained", "where", False, str),
    ("code", "code", False, str), ("data", "data", False, str),
]


# The columns a plain word of the filter looks in (a field's own column: `notebook:03`, `family:vgg`, `status:failed`).
PLAIN = ("label", "family", "variant", "status", "dataset")


def _cell(r: dict, key: str, numeric: bool, text: Callable[[Any], str]) -> str:
    value = _where(r) if key == "where" else r.get(key)
    shown = "" if value is None else text(value)
    if key == "n_train" and value is not None:
        shown += f" ({r['train_size']})"
    sort = f" data-v='{value}'" if numeric and value is not None else ""
    tip = f" title='{html.escape(r['note'], quote=True)}'" if key == "status" and r.get("note") else ""
    return f"<td class='{'n' if numeric else key}'{sort}{tip}>{html.escape(shown)}</td>"


def _tr(i: int, r: dict) -> str:
    cells = "".join(_cell(r, key, numeric, text) for _, key, numeric, text in COLUMNS)
    return f"<tr class='lc-run lc-s-{html.escape(r['status'], quote=True)}' data-i='{i}' tabindex='0'>{cells}</tr>"


def _json(value: Any) -> str:
    """JSON safe inside <script>: no '<' (so no '</script>' or '<!--'), '>' or '&' reaches the HTML parser."""
    return json.dumps(value, allow_nan=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


PAGE_CSS = """
body.lc-index.lc-runs { max-width: 1900px; }
.lc-runs .lc-scroll { overflow-x: auto; }
.lc-runs table { font-size: 13px; } .lc-runs td, .lc-runs th { padding: 3px 6px; }
.lc-runs th { cursor: pointer; white-space: nowrap; background: #f6f8fa; user-select: none; }
.lc-runs th:hover { background: #eaeef2; } .lc-arrow { color: #0969da; }
.lc-runs td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.lc-runs td.label, .lc-runs td.code, .lc-runs td.data { font-family: ui-monospace, monospace; white-space: nowrap; }
.lc-runs td.where { min-width: 14em; } .lc-runs td.notebooks { min-width: 9em; }
tr.lc-run { cursor: pointer; }
tr.lc-run:hover td { box-shadow: inset 0 0 0 99em rgba(9, 105, 218, .07); }  /* a tint over its status colour */
.lc-s-failed td, .lc-key .lc-s-failed { background: #ffebe9; }
.lc-s-lost td, .lc-key .lc-s-lost { background: #eaeef2; color: #57606a; }
.lc-s-stale td, .lc-key .lc-s-stale { background: #fff8c5; }
.lc-s-damaged td, .lc-key .lc-s-damaged { background: #fbefff; }
td.status { font-weight: bold; } .lc-s-ok td.status { color: #1a7f37; } .lc-s-failed td.status { color: #cf222e; }
tr.lc-open td { font-weight: 600; border-top: 2px solid #0969da; }  /* keeps its status colour */
.lc-key span { padding: 1px 6px; border: 1px solid #d0d7de; } .lc-key .lc-zero { color: #57606a; }
#lc-filter { font-size: 15px; padding: 4px 8px; width: 24em; } #lc-count { margin-left: 12px; color: #57606a; }
tr.lc-detail > td { background: #fff; padding: 8px 12px 12px; } .lc-detail p { margin: 4px 0; max-width: 940px; }
.lc-curves { position: sticky; left: 12px; width: max-content; }  /* in view however far the table is scrolled */
"""

SCRIPT = r"""(() => {
  const $ = id => document.getElementById(id), table = $('lc-runs'), body = table.tBodies[0];
  const heads = Array.from(table.tHead.rows[0].cells), all = Array.from(body.rows), count = $('lc-count');
  const box = $('lc-filter'), runs = JSON.parse($('lc-data').textContent);
  const detail = document.createElement('tr');
  detail.className = 'lc-detail';
  let open = null, col = -1, dir = 1;
  const esc = s => String(s).replace(/[&<>"']/g, c => '&#' + c.charCodeAt(0) + ';');
  function sortBy(i) {
    dir = col === i ? -dir : 1; col = i;
    const num = heads[i].dataset.type === 'n';
    const val = tr => { const td = tr.cells[i]; return num ? (td.dataset.v === undefined ? null : +td.dataset.v)
                                                           : (td.textContent.trim().toLowerCase() || null); };
    const order = (a, b) => {  // empty cells last in both directions; ties keep the page's own order
      const x = val(a), y = val(b);
      if (x === null || y === null) return (x === null) - (y === null) || a.dataset.i - b.dataset.i;
      return dir * (num ? x - y : x.localeCompare(y, undefined, {numeric: true})) || a.dataset.i - b.dataset.i;
    };
    all.slice().sort(order).forEach(tr => body.appendChild(tr));
    if (open) open.after(detail);
    heads.forEach((h, j) => {
      h.querySelector('.lc-arrow').textContent = j === i ? (dir > 0 ? ' \u25b2' : ' \u25bc') : '';
      h.setAttribute('aria-sort', j === i ? (dir > 0 ? 'ascending' : 'descending') : 'none');
    });
  }
  const fields = heads.map(h => h.dataset.f), plain = heads.map(h => h.dataset.plain === '1');
  const tokens = text => text.toLowerCase().split(/[^a-z0-9.]+/).filter(Boolean);
  function matches(tr, term) {  // 'field:value' looks in that column; a plain word is a whole word of the run's
    const cut = term.indexOf(':');  // name, family, variant, status or dataset (never of a notebook's name)
    if (cut > 0) {
      const f = term.slice(0, cut), v = term.slice(cut + 1);
      return fields.some((name, i) => name.startsWith(f) && tr.cells[i].textContent.toLowerCase().includes(v));
    }
    return plain.some((yes, i) => yes && tokens(tr.cells[i].textContent).some(t => t === term || t.startsWith(term)));
  }
  function filter() {
    const terms = box.value.toLowerCase().split(/\s+/).filter(Boolean);
    let shown = 0;
    for (const tr of all) {  // every term typed must match
      tr.hidden = !terms.every(t => matches(tr, t));
      shown += !tr.hidden;
    }
    detail.hidden = !open || open.hidden;
    count.textContent = `${shown} of ${all.length} runs shown`;
  }
  function ticks(lo, hi, minStep) {  // round steps covering [lo, hi]: about 5 of them
    if (!(hi > lo)) { lo -= minStep || 0.05; hi += minStep || 0.05; }
    const raw = (hi - lo) / 5, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = Math.max(minStep || 0, [1, 2, 2.5, 5, 10].map(m => m * mag).find(s => s >= raw));
    const out = [];
    for (let t = Math.floor(lo / step + 1e-9) * step; t < hi + step - 1e-9; t += step) out.push(+t.toFixed(10));
    return out.length > 1 ? out : [out[0], out[0] + step];
  }
  function chart(ox, name, ylabel, epochs, series) {
    const w = 470, h = 290, l = 58, r = 96, t = 44, b = 46, pw = w - l - r, ph = h - t - b;
    const ys = series.flatMap(s => s.v).filter(v => v !== null);
    if (!ys.length) return `<text x="${ox + l}" y="${t + 20}">no ${esc(ylabel)} recorded</text>`;
    const xt = ticks(Math.min(...epochs), Math.max(...epochs), 1), yt = ticks(Math.min(...ys), Math.max(...ys));
    const [x0, x1, y0, y1] = [xt[0], xt[xt.length - 1], yt[0], yt[yt.length - 1]];
    const X = e => ox + l + (e - x0) / (x1 - x0) * pw, Y = v => t + ph - (v - y0) / (y1 - y0) * ph;
    const fmt = v => +v.toFixed(4);
    let s = `<text class="lc-sub" x="${ox + l}" y="${t - 12}">${esc(name)}</text>`;
    s += yt.map(v => `<line x1="${ox + l}" x2="${ox + l + pw}" y1="${Y(v)}" y2="${Y(v)}" stroke="#eaeef2"/>` +
      `<text x="${ox + l - 6}" y="${Y(v) + 4}" text-anchor="end">${fmt(v)}</text>`).join('');
    s += xt.map(e => `<text x="${X(e)}" y="${t + ph + 16}" text-anchor="middle">${e}</text>`).join('');
    s += `<path d="M${ox + l},${t}V${t + ph}H${ox + l + pw}" fill="none" stroke="#57606a"/>`;
    s += `<text x="${ox + l + pw / 2}" y="${h - 8}" text-anchor="middle">epoch</text>`;
    s += `<text transform="translate(${ox + 14},${t + ph / 2}) rotate(-90)" text-anchor="middle">${esc(ylabel)}</text>`;
    const ends = [];
    for (const sr of series) {
      const pts = epochs.map((e, k) => [e, sr.v[k]]).filter(p => p[1] !== null);
      if (!pts.length) continue;
      const d = pts.map((p, k) => (k ? 'L' : 'M') + X(p[0]).toFixed(1) + ',' + Y(p[1]).toFixed(1)).join('');
      const dash = sr.dash ? ' stroke-dasharray="5 3"' : '';
      s += `<path class="lc-line" d="${d}" fill="none" stroke="${sr.c}" stroke-width="2"${dash}/>`;
      s += pts.map(p => `<circle cx="${X(p[0])}" cy="${Y(p[1])}" r="2.5" fill="${sr.c}"/>`).join('');
      ends.push({y: Y(pts[pts.length - 1][1]) + 4, x: X(pts[pts.length - 1][0]) + 6, n: sr.n, c: sr.c});
    }
    ends.sort((a, b) => a.y - b.y).forEach((e, k) => { if (k && e.y - ends[k - 1].y < 13) e.y = ends[k - 1].y + 13; });
    return s + ends.map(e => `<text x="${e.x}" y="${e.y}" fill="${e.c}" font-weight="600">${esc(e.n)}</text>`).join('');
  }
  function curves(run) {
    const hs = run.history, ep = hs.map(e => e.epoch), of = k => hs.map(e => e[k]);
    const title = `${run.label}: ${hs.length} ${hs.length === 1 ? "epoch" : "epochs"}, ${run.notebooks.join(', ')}`;
    const note = run.note ? `<p><strong>${esc(run.status)}</strong>: ${esc(run.note)}</p>` : '';
    if (!hs.length) return `<p><strong>${esc(run.label)}</strong>: no epoch history to draw.</p>` + note;
    // The same style for the same split in both charts: training solid blue, validation dashed orange.
    const loss = [{n: 'train loss', v: of('train_loss'), c: '#0969da'},
                  {n: 'val loss', v: of('val_loss'), c: '#bc4c00', dash: 1}];
    const acc = [{n: 'train acc', v: of('train_acc'), c: '#0969da'},
                 {n: 'val acc', v: of('val_acc'), c: '#bc4c00', dash: 1}];
    return '<svg xmlns="http://www.w3.org/2000/svg" width="940" height="300" font-size="12" font-family="system-ui">' +
      `<title>${esc(title)}</title><text class="lc-title" x="58" y="16" font-size="14" font-weight="700">` +
      `${esc(title)}</text>` + chart(0, 'loss per epoch', 'cross-entropy loss', ep, loss) +
      chart(470, 'accuracy per epoch', 'accuracy', ep, acc) + '</svg>' + note;
  }
  function show(tr) {
    if (open) open.classList.remove('lc-open');
    if (open === tr) { open = null; detail.remove(); return; }
    open = tr; tr.classList.add('lc-open');
    const run = runs[tr.dataset.i];
    detail.innerHTML = `<td colspan="${tr.cells.length}"><div class="lc-curves">${curves(run)}</div></td>`;
    detail.hidden = false; tr.after(detail);
  }
  heads.forEach((h, i) => { h.addEventListener('click', () => sortBy(i));
                            h.addEventListener('keydown', e => { if (e.key === 'Enter') sortBy(i); }); });
  body.addEventListener('click', e => { const tr = e.target.closest('tr.lc-run'); if (tr) show(tr); });
  body.addEventListener('keydown', e => {
    const tr = e.target.closest('tr.lc-run'); if (tr && e.key === 'Enter') show(tr);
  });
  box.addEventListener('input', filter);
  filter();
})();"""


def _intro(rows: list[dict]) -> str:
    """The paragraph that says what the page shows, and the key to its colours."""
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "failed", "lost", "stale", "damaged")}
    key = " ".join(f"<span class='{f'lc-s-{s}' if n else 'lc-zero'}'>{s}: {n}</span>" for s, n in counts.items()
                   if n or s in ("ok", "failed"))  # a zero count in grey: nothing to look at
    return ("<p>Each row is one run (one config, one seed) that this build's pages used, read from the run store; a "
            "run several notebooks share is one row naming them all. Its label is its Weights &amp; Biases name: the "
            "config's family, depth, width, variant and seed, then the first 8 characters of its run-store key. "
            "<em>Seconds</em> is how long the run trained, <em>estimate</em> what the plan expected it to take (the "
            "plan's calibrated estimate of the run's seconds, <code>make plan</code>) and <em>ratio</em> the one over "
            "the other. Failed runs (training stopped: hover the status for why), lost runs (a page recorded the key, "
            "the store has no readable result for it), stale runs (trained by other code or data than today's) and "
            "damaged ones are shown in their own colour. <em>Where it trained</em> names the device and machine, "
            "whether the run's seeds were trained as one fused model, whether the step was compiled, and the executor "
            "(local or Ray). <em>Code</em> and <em>data</em> are short fingerprints of the labcore code and the "
            "decoded dataset that computed the run: a run whose fingerprints differ from today's is stale. "
            "<span class='lc-screen-only'>Click a column header to sort (again to reverse), type in the filter to "
            "keep the rows that match every term (a plain word looks in the run's name, family, variant, status and "
            "dataset; <code>field:value</code> in one column, e.g. <code>notebook:03 family:vgg</code>), click a row "
            "to draw its curves under it.</span></p>"
            f"<p class='lc-key'>{key}</p>")


def page(profile: str, rows: list[dict], banner_html: str = "") -> str:
    """The runs page of a profile: the rows as a sortable, filterable table, each row's curves on a click."""
    heads = "".join(f"<th tabindex='0'{' data-type=n' if numeric else ''} data-f='{key}'"
                    f"{' data-plain=1' if key in PLAIN else ''} aria-sort='none'>{html.escape(h)}"
                    "<span class='lc-arrow'></span></th>" for h, key, numeric, _ in COLUMNS)
    data = [{k: r.get(k) for k in ("label", "notebooks", "status", "note", "history")} for r in rows]
    p = html.escape(profile)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>labcore runs ({p} profile)</title><style>{CSS}{PAGE_CSS}</style></head>
<body class="lc-index lc-runs"><nav class='lc-toc'><a href='index.html'>&larr; all reports</a></nav>
<h1>Every run of <code>{p}</code></h1>
{banner_html}{_intro(rows)}
<p><label>Filter: <input id="lc-filter" type="search" placeholder="e.g. vgg residual, or notebook:03 status:failed"></label>
<span id="lc-count" aria-live="polite">{len(rows)} of {len(rows)} runs shown</span></p>
<div class="lc-scroll"><table id="lc-runs"><thead><tr>{heads}</tr></thead>
<tbody>{''.join(_tr(i, r) for i, r in enumerate(rows))}</tbody></table></div>
<script type="application/json" id="lc-data">{_json(data)}</script>
<script>{SCRIPT}</script></body></html>"""
