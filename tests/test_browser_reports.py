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


def test_score_report_in_browser(browser, tmp_path, rng):
    root = _frames_folder(tmp_path / "data", rng)
    out = tmp_path / "report.html"
    assert main(["report", "--scores", str(root / "scores.csv"), "--top", "3", "--out", str(out)]) == 0
    page = open_page(browser, out)
    assert check_page(page, min_images=3) == []
    _shot(page, tmp_path, "report")


def test_select_report_in_browser(browser, tmp_path, rng):
    from PIL import Image

    from crl_uiqa.model import ModelConfig, build_model
    from crl_uiqa.training import save_model

    run = tmp_path / "run"
    torch.manual_seed(0)
    save_model(build_model(ModelConfig(image_size=(48, 64)), pretrained=False), run)
    scan = tmp_path / "a_scan_with_a_rather_long_folder_name_to_test_wrapping_of_names"
    scan.mkdir()
    for f in range(12):
        arr = (rng.random((72, 96)) * (80 + 10 * f)).astype(np.uint8)
        Image.fromarray(arr).save(scan / f"frame_{f:03d}.png")
    out = tmp_path / "picks"
    assert main(["select", "--model", str(run), "--input", str(scan), "--out", str(out), "--top", "2",
                 "--quiet"]) == 0
    reports = sorted(out.rglob("report.html"))
    assert reports
    for i, rep in enumerate(reports):
        page = open_page(browser, rep)
        assert check_page(page, min_images=2) == []
        _shot(page, tmp_path, f"select_{i}")


def test_demo_report_in_browser(browser, quick_demo, tmp_path):
    page = open_page(browser, quick_demo / "report.html")
    assert check_page(page, min_images=5) == []
    _shot(page, tmp_path, "demo")


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
