"""make pdf: the smoke build's pages printed to A4 PDFs, one per page and one for the whole build, index first;
each holds its page's title and headline numbers, no sheet is wider than A4, and folded code is in an appendix."""
import json
import re

import pytest

from labcore import cli
from labcore.report import pdf

from .test_browser import _chromium


def _text(path) -> str:
    """A PDF's text, with runs of whitespace (line breaks in the middle of a sentence) made one space."""
    from pypdf import PdfReader

    import unicodedata

    text = " ".join(page.extract_text() for page in PdfReader(path).pages)
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text))  # the font's "ﬁ" ligature -> "fi"


@pytest.fixture(scope="module")
def printed(smoke_reports):
    """`make pdf PROFILE=smoke` on the session's smoke build: (exit status, reports/smoke)."""
    _chromium()
    status = cli.main(["pdf", "--profile", "smoke", "--out", str(smoke_reports.parent)])
    return status, smoke_reports


@pytest.mark.slow
def test_every_page_becomes_an_a4_pdf_holding_its_title_and_headline_numbers(printed):
    from pypdf import PdfReader

    status, reports = printed
    assert status == 0, "a page did not fit A4 (see the command's output)"
    for rec in (json.loads(f.read_text()) for f in sorted(reports.glob("[0-9][0-9]_*.json"))):
        part = reports / "pdf" / f"{rec['notebook']}.pdf"
        text = _text(part)
        assert rec["title"] in text, f"{part.name}: no title"
        for _, value in rec["headline"]:
            number = re.search(r"\d+(\.\d+)?", value)
            if number:
                assert number.group(0) in text, f"{part.name}: headline {value!r} not printed"
        assert "Provenance" in text and "Profile smoke" in text, f"{part.name}: banner or provenance lost"
        assert "Appendix: the code folded on this page" in text and "printed in the appendix, A1" in text
        for sheet in PdfReader(part).pages:
            assert pdf.fits_a4(float(sheet.mediabox.width), float(sheet.mediabox.height))


@pytest.mark.slow
def test_the_whole_build_is_one_pdf_index_first_with_a_bookmark_per_page(printed):
    from pypdf import PdfReader

    _, reports = printed
    whole = PdfReader(reports / "labcore-smoke.pdf")
    parts = [PdfReader(p) for p in sorted((reports / "pdf").glob("*.pdf"))]
    assert len(whole.pages) == sum(len(p.pages) for p in parts)
    assert "labcore reports: smoke" in whole.pages[0].extract_text()
    titles = [item.title for item in whole.outline]
    assert titles[0] == "labcore reports (smoke profile)" and titles[1] == "labcore runs (smoke profile)"
    assert len(titles) == 2 + len(list(reports.glob("[0-9][0-9]_*.html")))


def test_a_wide_table_is_scaled_to_the_paper_and_a_fold_moves_to_the_appendix(tmp_path):
    """What would be cut at the margin is scaled instead; a closed code fold leaves a line naming its entry."""
    _chromium()
    cells = "".join(f"<td>column {i} with some words</td>" for i in range(40))
    (tmp_path / "index.html").write_text(
        "<!doctype html><html><head><title>wide (smoke profile)</title></head><body class='lc-index'>"
        f"<h1>Wide</h1><table><tr>{cells}</tr></table>"
        "<details class='lc-source'><summary>the model's code</summary><pre>class MLP: pass</pre></details>"
        "<details><summary>run names</summary><ul><li>mlp-d2</li></ul></details></body></html>")
    parts, whole = pdf.write_pdfs(tmp_path, "smoke")
    assert parts[0].scaled and not parts[0].problems and parts[0].folds == 1
    text = _text(whole)
    assert "column 39" in text, "the last column is printed, not cut"
    assert "the model's code: printed in the appendix, A1" in text and "A1: the model's code" in text
    assert "class MLP: pass" in text and "mlp-d2" in text, "the fold's code in the appendix; other folds opened"


def test_no_build_is_one_line(tmp_path, capsys):
    assert cli.main(["pdf", "--profile", "quick", "--out", str(tmp_path)]) == 2
    assert "build them first with `make report PROFILE=quick`" in capsys.readouterr().err
