"""The HTML reports rendered by a real headless browser (system Chromium via Playwright).

Each report is opened from disk as a user would open it; the page must show every figure
(``naturalWidth > 0``), fetch nothing from the network and have no text wider than its box.
Screenshots go to the test's tmp folder (``CRL_UIQA_SCREENSHOTS=DIR`` keeps them in DIR, to look at).
Skips with a message where Chromium or Playwright is absent (tests/_browser.py).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from _browser import check_page, open_page
from crl_uiqa.cli import main


def _shot(page, tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get("CRL_UIQA_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 0
    return path


def _frames_folder(root: Path, rng, n_sweeps=2, n_frames=6) -> Path:
    from PIL import Image

    rows = ["path,score,frame,true_quality"]
    for s in range(n_sweeps):
        (root / f"sweep{s}").mkdir(parents=True)
        for f in range(n_frames):
            arr = (rng.random((60, 80)) * 255).astype(np.uint8)
            Image.fromarray(arr).save(root / f"sweep{s}" / f"frame_{f:03d}.png")
            q = 0.1 * s + 0.05 * f
            rows.append(f"sweep{s}/frame_{f:03d}.png,{q:.4f},{f},{2 * q:.4f}")
    (root / "scores.csv").write_text("\n".join(rows) + "\n")
    return root


def _thumbnails(page) -> list[dict]:
    """Where each thumbnail of the best and worst images is drawn: its box and its caption."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('.thumbs figure')).map(f => {
        const r = f.getBoundingClientRect(), img = f.querySelector('img');
        return {left: r.left, right: r.right, top: Math.round(r.top), width: r.width,
                imgWidth: img ? img.getBoundingClientRect().width : 0, caption: f.innerText}; })""")


def test_score_report_in_browser(browser, tmp_path, rng):
    """The best and worst images are thumbnails that wrap: several per row on a desktop, two per row on a phone,
    each big enough to judge (>= 150 px at 390 px) with its score and file; nothing is wider than the screen."""
    root = _frames_folder(tmp_path / "data", rng)
    out = tmp_path / "report.html"
    assert main(["report", "--scores", str(root / "scores.csv"), "--top", "3", "--out", str(out)]) == 0
    for width, per_row in ((1280, 3), (390, 2)):
        page = open_page(browser, out, width=width)
        assert check_page(page, min_images=3) == []
        _shot(page, tmp_path, f"report_{width}")
        thumbs = _thumbnails(page)
        assert len(thumbs) == 6  # the 3 best and the 3 worst of 12
        assert all(t["imgWidth"] >= (150 if width == 390 else 200) for t in thumbs), thumbs
        assert all(0 <= t["left"] and t["right"] <= width for t in thumbs), thumbs
        rows = [sum(1 for t in thumbs[k:k + 3] if t["top"] == thumbs[k]["top"]) for k in (0, 3)]
        assert rows == [per_row, per_row], rows  # each strip of 3: all in one row, or 2 then 1 on a phone
        assert page.evaluate("() => document.documentElement.scrollWidth") <= width
        assert thumbs[0]["caption"].splitlines()[:2] == ["#1 · score 0.350", "sweep1/frame_005.png"]
        assert thumbs[-1]["caption"].splitlines() == ["#12 · score 0.000", "sweep0/frame_000.png",
                                                      "true quality 0.000"]


def test_select_report_in_browser(browser, tmp_path, rng):
    from PIL import Image

    from crl_uiqa.model import ModelConfig, build_model
    from crl_uiqa.training import save_model

    run = tmp_path / "run"
    torch.manual_seed(0)
    save_model(build_model(ModelConfig(image_size=(48, 64)), pretrained=False), run)
    scans = []
    for name in ("a_scan_with_a_rather_long_folder_name_to_test_wrapping_of_names", "scan B #2 (été)"):
        scan = tmp_path / name
        scan.mkdir()
        for f in range(12):
            arr = (rng.random((72, 96)) * (80 + 10 * f)).astype(np.uint8)
            Image.fromarray(arr).save(scan / f"frame_{f:03d}.png")
        scans.append(str(scan))
    out = tmp_path / "picks"
    assert main(["select", "--model", str(run), "--input", *scans, "--out", str(out), "--top", "2",
                 "--quiet"]) == 0
    reports = sorted(out.rglob("report.html"))
    assert len(reports) == 3  # one per scan and the page of both
    for i, rep in enumerate(reports):
        for width in (1280, 390):
            page = open_page(browser, rep, width=width)
            problems = check_page(page, min_images=2)
            assert problems == [], (rep, width, problems)
            _shot(page, tmp_path, f"select_{i}_{width}")
        if rep.parent != out:
            headings = page.evaluate("() => Array.from(document.querySelectorAll('h2')).map(h => h.innerText)")
            assert "Why these frames" in headings
            assert "#1: frame" in page.inner_text("body")
    # the page of both scans links to each scan's report (names with spaces, '#' and accents included)
    page = open_page(browser, out / "report.html")
    links = page.evaluate("() => Array.from(document.querySelectorAll('a[href$=\"report.html\"]'))"
                          ".map(a => [a.innerText, a.href])")
    assert [text for text, _ in links] == scans
    for _, href in links:
        target = page.context.new_page()
        target.goto(href)
        assert target.title().startswith("Best frames of "), href
        target.close()


def test_score_report_fits_a_phone_and_keeps_odd_names(browser, tmp_path, rng):
    """Long names, spaces, HTML characters: shown exactly, wrapped, never pushing the numbers off a phone."""
    from PIL import Image

    names = ["a_very_long_file_name_from_the_scanner_export_PATIENT_ANON_20261203_series_0004_image_0001.png",
             "with   three spaces.png", "a&b <script>alert(1)<script> <img src=x onerror=alert(2)>.png",
             "quote \"x\" 'y' $x$.png", "été ünïcödé.png"]
    folder = tmp_path / "odd names"
    folder.mkdir()
    rows = ["path,score"]
    for i, name in enumerate(names):
        Image.fromarray((rng.random((60, 80)) * 255).astype(np.uint8)).save(folder / name)
        quoted = '"' + f"odd names/{name}".replace('"', '""') + '"'
        rows.append(f"{quoted},{0.2 * i - 0.1:.4f}")
    (tmp_path / "scores.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "report.html"
    assert main(["report", "--scores", str(tmp_path / "scores.csv"), "--root", str(tmp_path), "--out", str(out)]) == 0
    page = open_page(browser, out, width=390)
    assert check_page(page, min_images=2) == []
    _shot(page, tmp_path, "odd_names_390")
    thumbs = _thumbnails(page)  # all 5 images, the long names wrapped inside their thumbnail's box
    assert len(thumbs) == 5 and all(t["imgWidth"] >= 150 and t["right"] <= 390 for t in thumbs), thumbs
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    assert page.evaluate("() => document.scripts.length") == 0  # the names stayed text
    # no table scrolls sideways on a phone: every number is on screen
    wide = page.evaluate("() => Array.from(document.querySelectorAll('.table-wrap'))"
                         ".filter(w => w.scrollWidth > w.clientWidth + 1).map(w => w.innerText.slice(0, 60))")
    assert wide == []
    text = page.inner_text("body")
    for name in names:
        assert f"odd names/{name}" in text.replace("\n", ""), name
    assert "How to read the scores." in text and "below 0 or above 1" in text
    page.emulate_media(media="print")
    pdf = page.pdf(path=str(tmp_path / "report.pdf"))
    assert pdf[:4] == b"%PDF"


def test_demo_report_in_browser(browser, quick_demo, tmp_path):
    """On a desktop and a phone: the ranked frames as thumbnails big enough to see, nothing wider than the screen,
    the developer details collapsed until opened."""
    for width in (1280, 390):
        page = open_page(browser, quick_demo / "report.html", width=width)
        assert check_page(page, min_images=5) == []
        _shot(page, tmp_path, f"demo_{width}")
        thumbs = _thumbnails(page)
        assert len(thumbs) == 8 and all(t["imgWidth"] >= 150 and t["right"] <= width for t in thumbs), thumbs
        assert page.evaluate("() => document.documentElement.scrollWidth") <= width
        assert not page.is_visible("text=Files in this folder")
        page.click("details.more > summary")
        assert page.is_visible("text=Files in this folder") and page.is_visible("th:text('CPU time')")
        assert page.evaluate("() => document.documentElement.scrollWidth") <= width
        _shot(page, tmp_path, f"demo_{width}_details")


def test_page_checks_catch_broken_pages(browser, tmp_path):
    """The checks themselves: a page with a missing image, an online image and overflowing text."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><body style='margin:0'>"
        "<img src='missing.png'><img src='https://example.invalid/x.png'>"
        "<div style='width:100px;white-space:nowrap;overflow:hidden'>"
        "a_very_long_unbreakable_file_name_that_does_not_fit_in_its_box.png</div>"
        "<div style='width:100px;overflow-x:auto'><table><tr><td>"
        "a_wide_table_cell_in_a_scrolling_wrapper_is_fine_and_not_reported</td></tr></table></div>"
        "</body></html>")
    problems = check_page(open_page(browser, bad), min_images=3)
    assert any("did not load: missing.png" in p for p in problems)
    assert any("fetched from the network: https://example.invalid/x.png" in p for p in problems)
    assert any("a_very_long_unbreakable" in p for p in problems)
    assert not any("scrolling_wrapper" in p for p in problems)
    assert any("2 images on the page, expected at least 3" in p for p in problems)
