"""Open a profile's reports in a real browser (headless Chromium through Playwright) and check what a reader gets:

    python -m labcore check-report --profile smoke        (make check-report PROFILE=smoke)

Per page: no console error, no request that leaves the file (every resource is embedded or local), every
image decoded, a title naming the profile, the banner, every table-of-contents link landing on its section,
and nothing wider than the window. A full-page screenshot of each lands in reports/<profile>/screenshots/.
Playwright's own browser download is never used: it drives an installed Chromium ($LABCORE_CHROMIUM, or
`chromium` on PATH; Debian: apt-get install chromium).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from labcore.core.config import ConfigError

WIDTH, HEIGHT = 1280, 900  # a laptop window, CSS pixels
SCALE = 2  # device pixels per CSS pixel: screenshots as a high-DPI screen shows the page


def chromium() -> str:
    """Path of an installed Chromium, or a ConfigError saying how to get one."""
    for candidate in (os.environ.get("LABCORE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        found = candidate and shutil.which(candidate)
        if found:
            return found
    raise ConfigError("no Chromium found: install one (Debian: apt-get install -y chromium) or set "
                      "LABCORE_CHROMIUM to its executable")


def playwright():
    """Playwright's sync_playwright, or a ConfigError saying how to get it (it is in the `dev` extra)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise ConfigError("Playwright is not installed: `make venv` installs it (pip install -e '.[dev]')") from None
    return sync_playwright


@dataclass
class PageCheck:
    """What the browser saw on one page."""

    page: str
    title: str = ""
    problems: list[str] = field(default_factory=list)
    screenshot: Path | None = None


_IN_PAGE = """() => {
  const imgs = Array.from(document.images);
  const toc = Array.from(document.querySelectorAll('nav.lc-toc a[href^="#"]')).map(a => a.getAttribute('href'));
  return {
    images: imgs.length,
    broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => (i.alt || i.src).slice(0, 60)),
    banner: !!document.getElementById('lc-banner'),
    toc: toc,
    dangling: toc.filter(h => !document.getElementById(decodeURIComponent(h.slice(1)))),
    overflow: document.documentElement.scrollWidth - window.innerWidth,
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'))
             .filter(h => !h.startsWith('#') && !h.startsWith('http')),
  };
}"""


def check_page(browser, path: Path, profile: str, shots: Path) -> PageCheck:
    """Load one page from disk with every network request refused, and collect what a reader would hit."""
    result = PageCheck(path.name)
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT}, device_scale_factor=SCALE)
    page = context.new_page()
    outside: list[str] = []

    def route(r) -> None:
        url = r.request.url
        if url.startswith(("file:", "data:", "about:")):
            r.continue_()
        else:
            outside.append(url)
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: result.problems.append(f"console {m.type}: {m.text[:200]}")
            if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: result.problems.append(f"script error: {e}"))
    page.goto(path.resolve().as_uri(), wait_until="load")
    seen = page.evaluate(_IN_PAGE)
    result.title = page.title()
    result.problems += [f"request leaving the file: {u}" for u in outside]
    result.problems += [f"image not decoded: {b}" for b in seen["broken"]]
    result.problems += [f"contents link without a target: {h}" for h in seen["dangling"]]
    result.problems += [f"missing local link target: {h}" for h in seen["links"]
                        if not (path.parent / h.split("#")[0]).exists()]
    if profile not in result.title:
        result.problems.append(f"title {result.title!r} does not name the profile {profile!r}")
    if not seen["banner"]:
        result.problems.append("no profile banner")
    if path.name not in ("index.html", "runs.html") and not seen["toc"]:  # one table each: nothing to list
        result.problems.append("no table of contents")
    if seen["overflow"] > 0:
        result.problems.append(f"page is {seen['overflow']} px wider than a {WIDTH} px window")
    shots.mkdir(parents=True, exist_ok=True)
    result.screenshot = shots / f"{path.stem}.png"
    page.screenshot(path=str(result.screenshot), full_page=True)
    context.close()
    return result


def check_reports(out_dir: Path, profile: str) -> list[PageCheck]:
    """Every page of a built profile (index first), checked in one headless browser session."""
    sync_playwright = playwright()
    pages = [out_dir / "index.html", out_dir / "runs.html", *sorted(out_dir.glob("[0-9][0-9]_*.html"))]
    pages = [p for p in pages if p.is_file() or p.name == "index.html"]
    if not pages[0].is_file():
        raise ConfigError(f"no reports in {out_dir}: build them first with `make report PROFILE={profile}`")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"])
        try:
            return [check_page(browser, p, profile, out_dir / "screenshots") for p in pages]
        finally:
            browser.close()
