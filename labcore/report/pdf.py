"""The built pages as PDF, for handing in: one PDF per page and one for the whole build, index first.

    make pdf PROFILE=quick      # reports/quick/pdf/<page>.pdf and reports/quick/labcore-quick.pdf

Printed by the installed Chromium that `make check-report` drives (labcore.report.browse: Debian's package, never
a browser download), on A4. Before printing, each page is prepared for paper: folded code moves to an appendix at
the end of the page (each fold leaves a line naming its appendix entry, so no half-open fold is printed), other
folds (the banner's settings, W&B run names, the provenance) are opened, and a table wider than the paper is
scaled down to fit instead of being cut at the margin. The banner and the provenance stay as on screen. Figures are
the pages' own PNGs, rendered at twice the screen's resolution (about 280 dpi across A4's width).
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from labcore.core.config import ConfigError
from labcore.files import replacing

MARGIN_MM = 12
A4_PT = (595.28, 841.89)  # points (1/72 inch): A4's short and long side; no printed sheet may be larger
LANDSCAPE = frozenset({"runs.html"})  # one wide table of every run: A4 turned, so its columns stay legible
# CSS pixels across A4 less both margins (96 px per inch), less a few that Chromium's print layout rounds away:
# the width the page is prepared in, so that a table that fits here fits on paper, its right border included
PRINT_WIDTH_PX = int((210 - 2 * MARGIN_MM) / 25.4 * 96) - 6
LANDSCAPE_WIDTH_PX = int((297 - 2 * MARGIN_MM) / 25.4 * 96) - 6

PRINT_CSS = """
body.jp-Notebook, body.lc-index { max-width: none !important; margin: 0 !important; padding: 0 !important; }
pre, code { white-space: pre-wrap !important; overflow-wrap: break-word !important; word-break: normal !important; }
summary { list-style: none; } summary::-webkit-details-marker { display: none; }  /* no disclosure triangles */
.jp-OutputArea-output, .jp-RenderedHTMLCommon, .lc-prov pre { overflow: visible !important; }
img, svg, tr { break-inside: avoid; }
h1, h2, h3, h4 { break-after: avoid; }
.jp-OutputArea-child:has(table) { break-inside: auto !important; }  /* a long table flows on, no page left blank */
.jp-MarkdownCell:has(:is(h1, h2, h3, h4):last-child) { break-after: avoid; }  /* a heading stays with what follows */
.lc-screen-only { display: none; }
body.lc-index:not(.lc-runs) table { table-layout: fixed; width: 99%; }  /* the summary figures get a third of the width */
.lc-index td.lc-fig img { width: 100% !important; }
.lc-fold-ref { font: 11px system-ui, sans-serif; color: #57606a; margin: 0; }
#lc-appendix { break-before: page; }
#lc-appendix h3 { font: bold 13px system-ui, sans-serif; margin: 14px 0 4px; }
#lc-appendix h2 { font: bold 18px system-ui, sans-serif; }
p:has(#lc-filter), tr.lc-detail { display: none; }  /* the runs page: paper cannot filter or open a row */
.lc-runs .lc-scroll { overflow: visible !important; }
.lc-runs table { font-size: 10px !important; }
.lc-runs td, .lc-runs th { padding: 1px 3px !important; }
.lc-runs td.where, .lc-runs th { white-space: normal !important; }  /* wrap at spaces; labels and digests stay whole */
"""

# Run in the page before printing: folded code to an appendix, other folds opened, wide tables scaled to fit.
# Returns how many folds moved, which tables were scaled, and how far the page still overflows (0 when it fits).
_PREPARE = """(width) => {
  const appendix = [];
  document.querySelectorAll('details').forEach(d => {
    const code = d.classList.contains('lc-code') || d.classList.contains('lc-source');
    if (!code || d.open) { d.open = true; return; }
    const summary = d.querySelector('summary');
    const what = (summary ? summary.textContent : 'code').trim();
    const id = 'A' + (appendix.length + 1);
    const entry = document.createElement('div');
    const head = document.createElement('h3');
    head.textContent = id + ': ' + what;
    entry.appendChild(head);
    Array.from(d.childNodes).filter(n => n !== summary).forEach(n => entry.appendChild(n));
    const ref = document.createElement('p');
    ref.className = 'lc-fold-ref';
    ref.dataset.id = id;
    ref.textContent = what + ': printed in the appendix, ' + id;
    d.replaceWith(ref);
    appendix.push(entry);
  });
  // Cells that hold nothing but folded code, one after another, share one line: "code: ... A1, A2, A3".
  let run = null;
  document.querySelectorAll('.jp-Cell .lc-fold-ref').forEach(ref => {
    const cell = ref.closest('.jp-Cell');
    const bare = !cell.querySelector('.jp-OutputArea-output');
    if (bare && run && run.cell.nextElementSibling === cell) {
      run.ids.push(ref.dataset.id);
      run.ref.textContent = 'code: printed in the appendix, ' + run.ids.join(', ');
      cell.remove();
    } else {
      run = bare ? {ref: ref, cell: cell, ids: [ref.dataset.id]} : null;
    }
  });
  if (appendix.length) {
    const section = document.createElement('section');
    section.id = 'lc-appendix';
    const h = document.createElement('h2');
    h.textContent = 'Appendix: the code folded on this page';
    section.appendChild(h);
    appendix.forEach(e => section.appendChild(e));
    document.body.appendChild(section);
  }
  // A table wider than the paper is laid out in a box as wide as it needs, and the box is scaled to the paper.
  const scaled = [];
  document.querySelectorAll('table').forEach(t => {
    const left = t.getBoundingClientRect().left;
    const need = Math.max(t.scrollWidth, t.getBoundingClientRect().width);
    if (left + need <= width + 1) return;
    const box = document.createElement('div');
    t.replaceWith(box);
    box.appendChild(t);
    box.style.width = need + 'px';
    const target = width - 2;  // two pixels of slack: a zoomed box's width is rounded, up as often as down
    let zoom = (target - left) / need;
    for (let k = 0; k < 4; k++) {  // the box's own overflow, if any, measured and taken out
      box.style.zoom = String(zoom);
      const right = box.getBoundingClientRect().left + Math.max(box.scrollWidth, need) * zoom;
      if (right <= target) break;
      zoom *= (target - left) / (right - left);
    }
    scaled.push((t.innerText || '').slice(0, 40));
  });
  return {folds: appendix.length, scaled: scaled,
          overflow: Math.max(0, document.documentElement.scrollWidth - width)};
}"""


@dataclass
class PagePdf:
    """One printed page: its PDF, how many sheets, and what did not fit."""

    page: str
    pdf: Path
    sheets: int = 0
    folds: int = 0
    scaled: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def pages_of(out_dir: Path, profile: str) -> list[Path]:
    """The pages of a built profile in reading order: the index, the runs page, then the notebooks'."""
    pages = [out_dir / "index.html", out_dir / "runs.html", *sorted(out_dir.glob("[0-9][0-9]_*.html"))]
    if not pages[0].is_file():
        raise ConfigError(f"no reports in {out_dir}: build them first with `make report PROFILE={profile}`")
    return [p for p in pages if p.is_file()]


def print_page(browser, path: Path, pdf: Path, title: str) -> PagePdf:
    """Prepare one page for paper in `browser` (Playwright) and print it to `pdf`, A4, page numbers at the foot."""
    from pypdf import PdfReader

    done = PagePdf(path.name, pdf)
    landscape = path.name in LANDSCAPE
    width = LANDSCAPE_WIDTH_PX if landscape else PRINT_WIDTH_PX
    context = browser.new_context(viewport={"width": width, "height": 1100})
    page = context.new_page()
    page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(("file:", "data:", "about:")) else r.abort())
    page.goto(path.resolve().as_uri(), wait_until="load")
    page.emulate_media(media="print")
    page.add_style_tag(content=PRINT_CSS)
    seen = page.evaluate(_PREPARE, width)
    done.folds, done.scaled = seen["folds"], seen["scaled"]
    if seen["overflow"] > 0:
        done.problems.append(f"{seen['overflow']} px wider than A4 after scaling its tables")
    footer = (f"<div style='font: 8px sans-serif; color: #57606a; width: 100%; padding: 0 {MARGIN_MM}mm; "
              f"display: flex; justify-content: space-between'><span>{html.escape(title)}, printed "
              "<span class='date'></span></span>"
              "<span><span class='pageNumber'></span> / <span class='totalPages'></span></span></div>")
    pdf.parent.mkdir(parents=True, exist_ok=True)
    with replacing(pdf) as tmp:
        page.pdf(path=str(tmp), format="A4", landscape=landscape, print_background=True, display_header_footer=True,
                 header_template="<span></span>", footer_template=footer,
                 margin={"top": f"{MARGIN_MM}mm", "bottom": f"{MARGIN_MM + 4}mm", "left": f"{MARGIN_MM}mm",
                         "right": f"{MARGIN_MM}mm"})
    context.close()
    sheets = PdfReader(pdf).pages
    done.sheets = len(sheets)
    # Chromium rounds A4 to whole pixels (595.9 pt wide): a point of slack, no more
    wide = [i + 1 for i, s in enumerate(sheets) if not fits_a4(float(s.mediabox.width), float(s.mediabox.height))]
    if wide:
        done.problems.append(f"sheets wider than A4: {wide}")
    return done


def fits_a4(width: float, height: float) -> bool:
    """Whether a sheet of `width` x `height` points is no larger than A4, upright or turned (a point of slack:
    Chromium rounds A4 to whole pixels, 595.9 pt)."""
    short, long = sorted((width, height))
    return short <= A4_PT[0] + 1 and long <= A4_PT[1] + 1.5


def join(parts: list[PagePdf], titles: dict[str, str], out: Path, title: str = "") -> Path:
    """One PDF of all `parts` in order, with a bookmark per page (its title), and the document's own title and date."""
    import time

    from pypdf import PdfWriter

    writer = PdfWriter()
    for part in parts:
        writer.append(str(part.pdf), outline_item=titles.get(part.page, part.page))
    writer.add_metadata({"/Title": title or out.stem, "/CreationDate": time.strftime("D:%Y%m%d%H%M%S+00'00'", time.gmtime())})
    with replacing(out) as tmp, open(tmp, "wb") as f:
        writer.write(f)
    return out


def write_pdfs(out_dir: Path, profile: str) -> tuple[list[PagePdf], Path]:
    """Every built page of `profile` as its own PDF under <out_dir>/pdf/, and all of them joined into
    <out_dir>/labcore-<profile>.pdf (index first)."""
    from labcore.report.browse import chromium, playwright

    pages = pages_of(out_dir, profile)
    for old in (out_dir / "pdf").glob("*.pdf"):  # a page no longer built leaves no PDF behind
        if old.stem not in {p.stem for p in pages}:
            old.unlink()
    parts, titles = [], {}
    sync_playwright = playwright()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"])
        try:
            for path in pages:
                title = _title(path)
                titles[path.name] = title
                parts.append(print_page(browser, path, out_dir / "pdf" / f"{path.stem}.pdf", title))
        finally:
            browser.close()
    return parts, join(parts, titles, out_dir / f"labcore-{profile}.pdf", f"labcore reports, {profile} profile")


def _title(path: Path) -> str:
    """A page's <title>, read from its HTML (without a browser), or its file name."""
    import re

    found = re.search(r"<title>(.*?)</title>", path.read_text(encoding="utf-8", errors="replace"), re.S)
    return html.unescape(found.group(1).strip()) if found else path.stem
