"""A real headless browser for tests of the HTML pages (reports, the web page of ``serve``).

Debian's ``chromium`` (``apt-get install chromium``; ``.ci/run`` installs it) driven by Python
Playwright (``pip install playwright``, in the ``test`` extra). Playwright's own browser download
(``playwright install``) is never used: tests stay offline and use the system browser. Where either
is missing, the ``browser`` fixture (tests/conftest.py) skips with a message saying which.

Use::

    def test_page(browser, tmp_path):
        page = open_page(browser, some_html_file)     # records every request
        check_page(page)                              # figures load, nothing online, no overflow
        page.screenshot(path=tmp_path / "page.png", full_page=True)

``check_page`` returns the collected problems as a list of one-line strings (empty = fine), so a
test asserts ``== []`` and the failure message lists everything wrong at once.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def find_chromium() -> str | None:
    """The system Chromium: ``$CRL_UIQA_CHROMIUM``, a Debian path, else ``chromium`` on PATH."""
    env = os.environ.get("CRL_UIQA_CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    for cand in CHROMIUM_CANDIDATES:
        if Path(cand).exists():
            return cand
    return shutil.which("chromium") or shutil.which("chromium-browser")


def missing_reason() -> str | None:
    """Why no browser test can run here, or None when one can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Python playwright is not installed (pip install playwright; it is in the test extra)"
    if find_chromium() is None:
        return ("no system Chromium (apt-get install chromium; .ci/run installs it; "
                "or set CRL_UIQA_CHROMIUM to its path)")
    return None


def launch(playwright):
    """Launch the system Chromium headless, offline-minded, without a sandbox (containers)."""
    return playwright.chromium.launch(executable_path=find_chromium(), headless=True,
                                      args=CHROMIUM_ARGS)


def open_page(browser, target, *, width: int = 1280, height: int = 900):
    """Open ``target`` (a file path or URL) in a fresh page; record every request it makes.

    The page gets ``page.requests`` (list of URLs) and ``page.console_errors`` (list of texts).
    Network is blocked for anything that is not ``file:``, ``data:``, ``blob:`` or, for a served
    page, the same origin as ``target``: a page that tries to reach the internet shows up in
    ``page.requests`` and fails to load it, instead of silently working only online.
    """
    url = Path(target).resolve().as_uri() if not str(target).startswith(("http:", "https:")) \
        else str(target)
    own_origin = "/".join(url.split("/")[:3]) if url.startswith("http") else None
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.requests = []
    page.console_errors = []
    page.on("request", lambda r: page.requests.append(r.url))
    page.on("console", lambda m: page.console_errors.append(m.text) if m.type == "error" else None)

    def _route(route):
        u = route.request.url
        if u.startswith(("file:", "data:", "blob:")) or (own_origin and u.startswith(own_origin)):
            route.continue_()
        else:
            route.abort()

    page.route("**/*", _route)
    page.goto(url, wait_until="load")
    return page


def external_requests(page, allowed_origin: str | None = None) -> list[str]:
    """Requests to anything but local files, inline data and ``allowed_origin``."""
    ok = ("file:", "data:", "blob:", "about:") + ((allowed_origin,) if allowed_origin else ())
    return [u for u in page.requests if not u.startswith(ok)]


_IMAGES_JS = """
() => Array.from(document.images).map(i => ({
    src: i.getAttribute('src').slice(0, 80), complete: i.complete, w: i.naturalWidth,
    shown: i.getBoundingClientRect().width}))
"""

# Elements whose text overflows their box horizontally (clipped or spilling out), and the page
# itself being wider than the window. Elements that scroll on purpose (overflow auto/scroll, e.g.
# a wide table in a scrolling wrapper) are allowed.
_OVERFLOW_JS = """
() => {
  const out = [];
  const doc = document.documentElement;
  if (doc.scrollWidth > doc.clientWidth + 1)
    out.push(`page is ${doc.scrollWidth}px wide in a ${doc.clientWidth}px window`);
  for (const el of document.body.querySelectorAll('*')) {
    if (!el.clientWidth) continue;
    const st = getComputedStyle(el);
    if (['auto', 'scroll'].includes(st.overflowX)) continue;
    let scrolls = false;
    for (let p = el.parentElement; p; p = p.parentElement) {
      if (['auto', 'scroll'].includes(getComputedStyle(p).overflowX)) { scrolls = true; break; }
    }
    if (scrolls) continue;
    if (el.scrollWidth > el.clientWidth + 1) {
      const text = (el.innerText || el.getAttribute('alt') || '').trim().slice(0, 60);
      out.push(`<${el.tagName.toLowerCase()}> ${el.scrollWidth}px content in ${el.clientWidth}px: ${text}`);
    }
  }
  return out;
}
"""


def broken_images(page) -> list[str]:
    """Images that did not load (naturalWidth 0) or are drawn zero-wide."""
    out = []
    for img in page.evaluate(_IMAGES_JS):
        if not img["complete"] or img["w"] == 0:
            out.append(f"image did not load: {img['src']}")
        elif img["shown"] == 0:
            out.append(f"image is drawn 0 px wide: {img['src']}")
    return out


def overflowing_text(page) -> list[str]:
    return page.evaluate(_OVERFLOW_JS)


def check_page(page, *, min_images: int = 0, allowed_origin: str | None = None) -> list[str]:
    """Everything wrong with a rendered page: images, network, overflow, console errors."""
    problems = broken_images(page)
    n = page.evaluate("() => document.images.length")
    if n < min_images:
        problems.append(f"{n} images on the page, expected at least {min_images}")
    problems += [f"fetched from the network: {u}" for u in external_requests(page, allowed_origin)]
    problems += overflowing_text(page)
    problems += [f"console error: {t}" for t in page.console_errors]
    return problems
