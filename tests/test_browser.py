"""The smoke build's pages in a real browser (headless Chromium via Playwright): what a reader gets."""
import os

import pytest

from labcore.report import browse
from labcore.core.config import ConfigError


def _chromium():
    try:
        return browse.chromium()
    except ConfigError as exc:
        if os.environ.get("LABCORE_REQUIRE_BROWSER") == "1":  # CI installs it: a missing browser is a failure there
            raise
        pytest.skip(str(exc))


@pytest.mark.slow
def test_every_smoke_page_works_offline_in_a_real_browser(smoke_reports):
    _chromium()
    checks = browse.check_reports(smoke_reports, "smoke")
    pages = {c.page for c in checks}
    assert pages == {"index.html", "runs.html", "01_mlp_baseline.html", "02_cnn_depth.html", "03_residual.html",
                     "04_gradient_flow.html"}
    for c in checks:
        assert not c.problems, f"{c.page}: {c.problems}"
        assert "smoke" in c.title and c.screenshot.stat().st_size > 10_000
        assert c.screenshot.parent == smoke_reports / "screenshots"


def test_the_checker_catches_what_a_reader_would_hit(tmp_path):
    """A page that loads from a CDN, has a broken image, a dangling contents link and no banner."""
    _chromium()
    (tmp_path / "index.html").write_text(
        "<!doctype html><html><head><title>Notebook</title><script src='https://cdn.example.org/x.js'></script>"
        "</head><body><nav class='lc-toc'><a href='#nowhere'>x</a></nav><img src='missing.png' alt='fig'>"
        "<div style='width:5000px'>wide</div></body></html>")
    [check] = browse.check_reports(tmp_path, "smoke")
    found = "\n".join(check.problems)
    for expected in ("request leaving the file: https://cdn.example.org/x.js", "image not decoded", "#nowhere",
                     "does not name the profile", "no profile banner", "wider than"):
        assert expected in found, f"{expected!r} not in {found}"
