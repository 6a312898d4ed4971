"""`make diff A=<reports folder> B=<reports folder>`: two builds of one profile compared number by number.

    python -m labcore diff reports/smoke /elsewhere/reports/smoke

Two commits of labcore, two machines, or a student's build against the course's reference: what differs in the
settings, the code, the packages, the device and the data comes first, since it explains the rest; then every
published metric with both values and a verdict that takes the spread over seeds into account (labcore.analysis.claims);
then the headlines whose words changed. Writes reports/diff-<a>-<b>.html and prints one line; exits 0 when
nothing differs beyond seed noise and nothing in the settings, 1 otherwise.
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

from labcore.analysis import claims
from labcore.report import publish, render
from labcore.core.config import ConfigError
from labcore.exercises.params import differences
from labcore.files import replacing
from labcore.paths import reports_dir
from labcore.text import count


def load_build(folder: Path) -> dict[str, dict[str, Any]]:
    """The JSON records of a reports folder (reports/<profile>), by notebook."""
    records = {f.stem: json.loads(f.read_text()) for f in sorted(Path(folder).glob("[0-9][0-9]_*.json"))}
    if not records:
        raise ConfigError(f"{folder} holds no report records (NN_name.json); give a reports/<profile> folder that "
                          "`make report` wrote")
    return records


def precisions(prov: dict[str, Any]) -> str:
    """'6 runs bf16, 3 runs fp32': the precision a page's runs trained in (records from before it was recorded: fp32)."""
    counts: dict[str, int] = {}
    for row in prov.get("regimes") or []:
        counts[row.get("precision") or "fp32"] = counts.get(row.get("precision") or "fp32", 0) + int(row.get("runs", 0))
    return ", ".join(f"{n} run{'s' if n != 1 else ''} {k}" for k, n in sorted(counts.items())) or "no runs"


def settings(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """What differs between two records of one notebook in what produced them: parameters, commit, packages,
    device, the precision its runs trained in, data (checksums of the decoded images)."""
    out = differences(a.get("parameters") or {}, b.get("parameters") or {}, other="B", none="not set")
    pa, pb = a.get("provenance") or {}, b.get("provenance") or {}
    ca, cb = (pa.get("git") or {}).get("commit"), (pb.get("git") or {}).get("commit")
    if ca != cb:
        out.append(f"commit: {str(ca)[:10]} (B: {str(cb)[:10]})")
    for name in sorted(set(pa.get("packages") or {}) | set(pb.get("packages") or {})):
        va, vb = (pa.get("packages") or {}).get(name), (pb.get("packages") or {}).get(name)
        if va != vb:
            out.append(f"package {name}: {va} (B: {vb})")
    if pa.get("device") != pb.get("device"):
        out.append(f"device: {pa.get('device')} (B: {pb.get('device')})")
    if precisions(pa) != precisions(pb):  # e.g. train.precision auto: bf16 on one machine, fp32 on the other
        out.append(f"precision of its runs: {precisions(pa)} (B: {precisions(pb)})")
    for name in sorted(set(pa.get("data") or {}) | set(pb.get("data") or {})):
        da, db = (pa.get("data") or {}).get(name) or {}, (pb.get("data") or {}).get(name) or {}
        if da.get("sha256") != db.get("sha256"):
            out.append(f"data {name}: {da.get('source')} (B: {db.get('source')}), other images or labels")
    return out


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    """A record's metrics as flat name -> value: scalars as they are, each run of a runs list (01) as '<metric> of
    run <label>', each per-configuration row of an aggregate table (02, 03) as '<metric> of <study> depth <d>
    <variant>' with its spread over seeds."""
    out: dict[str, Any] = {}
    for name, value in metrics.items():
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            out[name] = value
        elif name == "runs" and isinstance(value, list):  # 01: one summary per run
            for run in value:
                where = (f"{run.get('family')}-d{run.get('depth')}-w{run.get('width')}-"
                         f"{'res' if run.get('residual') else 'plain'}-s{run.get('seed')}")
                for key in ("train_loss", "val_acc", "test_acc"):
                    if key in run:
                        out[f"{key} of run {where}"] = run[key]
        elif name == "results" and isinstance(value, list):
            for row in value:
                where = f"{row['study']} depth {row['depth']} {'residual' if row['residual'] else 'plain'}"
                for key in row:
                    if key.endswith("_mean"):
                        base = key.removesuffix("_mean")
                        out[f"{base} of {where}"] = (row[key], row.get(f"{base}_std"), row.get("seeds"))
    return out


def _timing(name: str) -> bool:
    """Whether a published metric is a wall time (seconds_per_epoch, training_seconds), never a verdict on results."""
    return "seconds" in name.split(" of ")[0]


def metric_rows(a: dict[str, Any], b: dict[str, Any], changed: list[str]) -> list[dict[str, Any]]:
    """Every published metric of one notebook in both builds, with its verdict."""
    sa, sb = _scalars(a.get("metrics") or {}), _scalars(b.get("metrics") or {})
    rows = []
    for name in [*sa, *(k for k in sb if k not in sa)]:
        va, vb = sa.get(name), sb.get(name)
        if isinstance(va, tuple) and isinstance(vb, tuple):
            verdict = claims.same_within_noise(*va, *vb)
            va, vb = va[0], vb[0]
        else:
            verdict = "identical" if va == vb else "only in one build" if va is None or vb is None else "differs"
        if verdict == "differs" and _timing(name):  # a wall time moves with the machine and its load, not the result
            verdict = "a time: not a result"
        elif verdict not in ("identical", "only in one build") and changed:
            verdict = f"not comparable: settings differ in {changed[0].split(':')[0]}"
        delta = vb - va if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and va is not None \
            and vb is not None else None
        rows.append({"metric": name, "A": va, "B": vb, "difference": delta, "verdict": verdict})
    return rows


def headlines(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(label, A's words, B's words) for every headline whose words changed (an order that flipped, a verdict)."""
    ha, hb = dict(map(tuple, a.get("headline") or [])), dict(map(tuple, b.get("headline") or []))
    return [(k, ha.get(k, "-"), hb.get(k, "-")) for k in dict.fromkeys([*ha, *hb]) if ha.get(k) != hb.get(k)]


def diff(a: Path, b: Path) -> dict[str, Any]:
    """Compare two builds (see the module); returns per notebook its settings, metric rows and headline changes."""
    ra, rb = load_build(a), load_build(b)
    pa = {r.get("profile") for r in ra.values()} | {r.get("profile") for r in rb.values()}
    if len(pa) != 1:
        raise ConfigError(f"{a} and {b} are builds of different profiles ({', '.join(sorted(map(str, pa)))}); "
                          "compare two builds of one profile")
    out = {}
    for stem in dict.fromkeys([*ra, *rb]):
        if stem not in ra or stem not in rb:
            out[stem] = {"only_in": "A" if stem in ra else "B", "settings": [], "metrics": [], "headlines": []}
            continue
        changed = settings(ra[stem], rb[stem])
        out[stem] = {"settings": changed, "metrics": metric_rows(ra[stem], rb[stem], changed),
                     "headlines": headlines(ra[stem], rb[stem])}
    return out


def summary_line(result: dict[str, Any]) -> tuple[str, bool]:
    """One line, and whether the builds agree (nothing beyond seed noise, nothing in the settings)."""
    settings_n = sum(bool(r["settings"]) for r in result.values())
    alone = {side: sum(r.get("only_in") == side for r in result.values()) for side in "AB"}
    rows = [m for r in result.values() for m in r["metrics"]]
    beyond = [m for m in rows if m["verdict"] not in ("identical", "within seed noise", "a time: not a result")]
    words = sum(len(r["headlines"]) for r in result.values())
    times = sum(m["verdict"] == "a time: not a result" for m in rows)
    if not settings_n and not beyond and not words and not any(alone.values()):
        aside = f" ({count(times, 'wall time')} {'differs' if times == 1 else 'differ'}, as times do)" if times else ""
        return (f"no differences: {count(len(rows) - times, 'metric')} in {count(len(result), 'report')} identical or "
                f"within seed noise{aside}"), True
    only = "".join(f"{count(n, 'report')} only in {side}; " for side, n in alone.items() if n)
    return (f"{only}{count(settings_n, 'report')} with other settings; metrics beyond seed noise or not "
            f"comparable: {len(beyond)} of {len(rows) - times}; {count(words, 'headline')} changed their words"), False


def settings_lines(result: dict[str, Any]) -> list[str]:
    """Per report whose settings differ, one line naming each setting with both values (A's, then B's)."""
    return [f"  {stem}: " + (f"only in {r['only_in']}" if r.get("only_in") else "; ".join(r["settings"]))
            for stem, r in result.items() if r["settings"] or r.get("only_in")]


def page(a: Path, b: Path, result: dict[str, Any], line: str) -> str:
    """The comparison as a self-contained page in the reports' style."""
    def cell(v: Any) -> str:  # the pages' one formatter (publish.cell); text escaped
        return html.escape(v) if isinstance(v, str) else publish.cell(v)

    parts = []
    for stem, r in result.items():
        parts.append(f"<h2>{html.escape(stem)}</h2>")
        if r.get("only_in"):
            parts.append(f"<p>Only in {r['only_in']}: the other build has no page of this notebook.</p>")
            continue
        parts.append("<p><strong>Settings that differ</strong>: " + (
            "<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in r["settings"]) + "</ul>" if r["settings"]
            else "none.") + "</p>")
        if r["headlines"]:
            parts.append("<table><tr><th>headline</th><th>A</th><th>B</th></tr>" + "".join(
                f"<tr><td>{html.escape(k)}</td><td>{html.escape(x)}</td><td>{html.escape(y)}</td></tr>"
                for k, x, y in r["headlines"]) + "</table>")
        shown = [m for m in r["metrics"] if m["verdict"] != "identical"]
        parts.append(f"<p>Identical metrics: {len(r['metrics']) - len(shown)} of {len(r['metrics'])}"
                     + ("." if not shown else "; the others:</p><table><tr><th>metric</th><th>A</th><th>B</th>"
                        "<th>B - A</th><th>verdict</th></tr>" + "".join(
                            f"<tr><td>{html.escape(m['metric'])}</td><td>{cell(m['A'])}</td><td>{cell(m['B'])}</td>"
                            f"<td>{cell(m['difference'])}</td><td>{html.escape(m['verdict'])}</td></tr>"
                            for m in shown) + "</table><p>") + "</p>")
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>labcore diff</title>"
            f"<style>{render.CSS}</style></head><body class='lc-index'><h1>labcore diff</h1>"
            f"<div class='lc-banner'><p>A: <code>{html.escape(str(a))}</code></p><p>B: <code>{html.escape(str(b))}"
            f"</code></p><p><strong>{html.escape(line)}</strong></p></div>{''.join(parts)}</body></html>")


def _slugs(a: Path, b: Path) -> tuple[str, str]:
    """Each build folder by its last few path parts, as many as tell the two apart (reports/smoke of two checkouts:
    main-reports-smoke, other-reports-smoke)."""
    pa, pb = Path(a).resolve().parts, Path(b).resolve().parts
    n = next((n for n in range(2, max(len(pa), len(pb)) + 1) if pa[-n:] != pb[-n:]), 2)
    return tuple(re.sub(r"[^A-Za-z0-9]+", "-", "-".join(p[-n:])).strip("-") for p in (pa, pb))


def write(a: Path, b: Path, out: Path | None = None) -> tuple[Path, list[str], str, bool]:
    """`make diff A=... B=...`: compare the builds and write the page; returns (the page, the settings that differ
    per report as lines, the summary line, whether they agree)."""
    result = diff(a, b)
    line, same = summary_line(result)
    out = out or reports_dir() / "diff-{}-{}.html".format(*_slugs(a, b))
    with replacing(out) as tmp:
        tmp.write_text(page(a, b, result, line), encoding="utf-8")
    return out, settings_lines(result), line, same
