"""The page of `crl-uiqa serve` driven in a real headless browser (system Chromium via Playwright).

A real uvicorn server runs in a thread on 127.0.0.1 (a free port) with two models: a
brightness scorer (so the picks are known by construction) and a tiny run folder. The tests
drop a video and a DICOM cine on the page, wait for the result, check the curve, the picks,
clicking the curve and the downloads; an unreadable file must show its error on the page; two
uploads at once must both finish. Skips where Chromium or Playwright is absent (tests/_browser.py).
"""
from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("av")
pytest.importorskip("pydicom")

from _browser import check_page, open_page  # noqa: E402
from _helpers import fan_frames, tiny_run, write_dicom_cine, write_video  # noqa: E402
from crl_uiqa.serving import ServeSettings, create_app  # noqa: E402
from test_serve import MeanRuntime, bump, levels  # noqa: E402

TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    d = tmp_path_factory.mktemp("scans")
    video = write_video(d / "sweep.mp4", fan_frames(levels()), fps=20, options={"movflags": "+faststart"},
                        stream_options={"crf": "12"})
    dicom = write_dicom_cine(d / "loop.dcm", fan_frames([60 + bump(i, 7, 2, 80) for i in range(12)], seed=3),
                             frame_time_ms=40.0, region=(20, 10, 107, 89))
    text = d / "notes.mp4"
    text.write_text("not a video\n" * 20)
    broken = d / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(range(256)) * 40)
    return {"video": video, "dicom": dicom, "text": text, "broken": broken}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """uvicorn serving the app in a thread on 127.0.0.1 (free port); stopped and cleaned at the end."""
    run = tiny_run(tmp_path_factory.mktemp("models") / "tiny")
    app = create_app([("brightness", MeanRuntime()), run], settings=ServeSettings(queue_size=4))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", app
    srv.should_exit = True
    thread.join(30)
    sock.close()
    assert not app.state.workdir.exists()  # shutdown removed every upload and result


def _shot(page, tmp_path: Path, name: str) -> None:
    folder = Path(os.environ.get("CRL_UIQA_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def _open(browser, url):
    page = open_page(browser, url + "/")
    page.wait_for_selector("#limits:not(:empty)", timeout=TIMEOUT_MS)  # the config arrived
    return page


def _wait_done(page, job_id=None):
    sel = f'#result[data-status=done][data-id="{job_id}"]' if job_id else "#result[data-status=done]"
    page.wait_for_selector(sel, timeout=TIMEOUT_MS)
    return page.get_attribute("#result", "data-id")


def test_video_and_dicom_on_the_page(browser, server, scans, tmp_path):
    url, _ = server
    page = _open(browser, url)
    assert page.is_visible("#model")  # two models: the menu shows
    page.select_option("#model", "brightness")
    page.fill("#top-k", "3")
    page.fill("#min-gap", "0.5")
    page.set_input_files("#file-input", str(scans["video"]))
    job = _wait_done(page)
    # the curve: one point per frame, the picks marked
    assert page.locator("#curve path.line").count() == 1
    d = page.get_attribute("#curve path.line", "d")
    assert d.count("L") == 59  # 60 frames
    assert page.locator("#curve circle.pick").count() == 3
    ranks = page.eval_on_selector_all("#curve circle.pick", "els => els.map(e => +e.dataset.rank)")
    assert ranks == [1, 2, 3]
    picks = page.eval_on_selector_all("#picks figure", "els => els.map(e => +e.dataset.frame)")
    assert len(picks) == 3 and abs(picks[0] - 40) <= 1 and abs(picks[1] - 8) <= 1
    # thumbnails and the shown frame are real images
    page.wait_for_function("() => [...document.querySelectorAll('#picks img, #viewer img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)", timeout=TIMEOUT_MS)
    assert page.get_attribute("#viewer img", "data-frame") == str(picks[0])
    # clicking the curve near its start shows an early frame
    box = page.locator("#curve").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.07, box["y"] + box["height"] * 0.5)
    page.wait_for_function("() => { const i = document.querySelector('#viewer img');"
                           " return +i.dataset.frame < 10 && i.complete && i.naturalWidth > 0; }",
                           timeout=TIMEOUT_MS)
    assert "frame" in page.text_content("#viewer-caption")
    # downloads
    with page.expect_download() as dl:
        page.click('#downloads a[data-name="frames.csv"]')
    csv_path = tmp_path / "frames.csv"
    dl.value.save_as(csv_path)
    assert dl.value.suggested_filename == "sweep_frames.csv"
    lines = csv_path.read_text().strip().splitlines()
    assert lines[0].startswith("frame,time") and len(lines) == 61
    for name in ("picks.zip", "report.html"):
        with page.expect_download() as dl:
            page.click(f'#downloads a[data-name="{name}"]')
        assert dl.value.suggested_filename == f"sweep_{name}"
        dl.value.save_as(tmp_path / name)
        assert (tmp_path / name).stat().st_size > 0
    assert check_page(page, allowed_origin=url) == []
    _shot(page, tmp_path, "serve_video")

    # a DICOM cine: the newest upload is shown when it is done
    page.set_input_files("#file-input", str(scans["dicom"]))
    page.wait_for_function(f"() => document.querySelector('#result').dataset.id !== '{job}'"
                           " && document.querySelector('#result').dataset.status === 'done'", timeout=TIMEOUT_MS)
    assert "dicom region" in page.text_content("#result .summary")
    assert page.get_attribute("#picks figure", "data-frame") == "7"
    assert page.locator("#jobs li[data-status=done]").count() == 2
    # selecting the first upload again shows its result
    page.click(f'#jobs li[data-id="{job}"]')
    assert page.get_attribute("#result", "data-id") == job
    assert page.locator("#curve circle.pick").count() == 3
    assert check_page(page, allowed_origin=url) == []


def test_unreadable_files_show_their_error(browser, server, scans):
    url, _ = server
    page = _open(browser, url)
    page.set_input_files("#file-input", str(scans["text"]))
    page.wait_for_selector("#message:not([hidden])", timeout=TIMEOUT_MS)
    msg = page.text_content("#message")
    assert "notes.mp4" in msg and "not a supported scan" in msg
    assert page.locator("#jobs li[data-status=rejected]").count() == 1
    assert "not a supported scan" in page.text_content("#result .error")
    # valid header, unreadable content: accepted, then fails in the worker with a message
    page.set_input_files("#file-input", str(scans["broken"]))
    page.wait_for_selector("#jobs li[data-status=failed]", timeout=TIMEOUT_MS)
    page.wait_for_function("() => document.querySelector('#message').textContent.includes('broken.mp4')",
                           timeout=TIMEOUT_MS)
    assert "broken.mp4" in page.text_content("#result .error")
    assert "/tmp" not in page.text_content("#result")


def test_two_uploads_at_once_both_finish(browser, server, scans):
    url, _ = server
    page = _open(browser, url)
    page.select_option("#model", "tiny")
    page.set_input_files("#file-input", [str(scans["video"]), str(scans["dicom"])])
    page.wait_for_function("() => document.querySelectorAll('#jobs li[data-status=done]').length === 2",
                           timeout=TIMEOUT_MS)
    names = page.eval_on_selector_all("#jobs li .name", "els => els.map(e => e.textContent)")
    assert sorted(names) == ["loop.dcm", "sweep.mp4"]
    _wait_done(page)
    assert page.locator("#curve circle.pick").count() >= 1
    scores = page.eval_on_selector_all("#picks figcaption", "els => els.map(e => e.textContent)")
    assert scores and all("score" in s and "n/a" not in s for s in scores)
