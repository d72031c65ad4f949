"""Shared test fixtures.

Data and weights that are not part of the project (``../shared`` beside the
checkout, or the folder named by ``CRL_UIQA_SHARED``) are found here; tests that
need them skip with a clear message when they are absent.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CRL_UIQA_SHARED", ROOT.parent / "shared"))
SONONET_DIR = SHARED / "weights" / "sononet"
SONONET16 = SONONET_DIR / "SonoNet16.npz"
HC18_DIR = SHARED / "data" / "hc18"
EXAMPLES_DIR = SHARED / "data" / "sononet_examples"


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (set CRL_UIQA_SHARED to the shared/ folder)")
    return path


@pytest.fixture(scope="session")
def sononet16_path() -> Path:
    return _need(SONONET16, "SonoNet-16 weights")


@pytest.fixture(scope="session")
def hc18_dir() -> Path:
    return _need(HC18_DIR / "images", "HC18 images").parent


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return _need(EXAMPLES_DIR, "SonoNet example planes")


#: Fixtures that need ../shared: a test using one gets the ``shared`` marker (``-m "not shared"`` skips them).
SHARED_FIXTURES = frozenset({"sononet16_path", "hc18_dir", "examples_dir"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SHARED_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.shared)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _no_download(monkeypatch, tmp_path_factory):
    """Tests never download: point the weight cache at an empty place and forbid network."""
    monkeypatch.setenv("CRL_UIQA_NO_DOWNLOAD", "1")
    monkeypatch.setenv("CRL_UIQA_CACHE", str(tmp_path_factory.mktemp("empty-cache")))


@pytest.fixture(scope="session")
def browser():
    """A headless system Chromium driven by Playwright (see tests/_browser.py); skips if absent."""
    import _browser

    reason = _browser.missing_reason()
    if reason:
        pytest.skip(f"no headless browser: {reason}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = _browser.launch(pw)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory) -> Path:
    """``crl-uiqa demo --quick`` once per session, with the packaged SonoNet-16 weights (offline)."""
    from crl_uiqa.cli import main

    out = tmp_path_factory.mktemp("demo") / "demo"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("CRL_UIQA_WEIGHTS_DIR", raising=False)
        mp.setenv("CRL_UIQA_NO_DOWNLOAD", "1")
        mp.setenv("CRL_UIQA_CACHE", str(tmp_path_factory.mktemp("empty-cache")))
        assert main(["demo", "--quick", "--out", str(out), "--quiet"]) == 0
    return out
