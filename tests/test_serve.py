"""Tests for crl_uiqa.serving (`crl-uiqa serve`): the JSON API with FastAPI's test client.

Scans are made here (an H.264 video and a DICOM cine loop of a speckle fan whose
brightness follows a known curve, and still PNG images); picks are checked with a
brightness scorer (score = mean of the resized crop) so the expected frames are known
by construction, and one test serves a real run folder.
"""
from __future__ import annotations

import io
import math
import os
import threading
import time
import zipfile

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
try:  # Starlette's test client runs on httpx2 (Python >= 3.11), or on httpx, deprecated there, for 3.10
    import httpx2  # noqa: F401
except ModuleNotFoundError:
    pytest.importorskip("httpx")
av = pytest.importorskip("av")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from _helpers import MeanRuntime, fan_frames, tiny_run, write_dicom_cine, write_video  # noqa: E402
from crl_uiqa.cli import main  # noqa: E402
from crl_uiqa.errors import OutputError  # noqa: E402
from crl_uiqa.serving import ScanOptions, ServeSettings, create_app  # noqa: E402
from crl_uiqa.serving.jobs import JobQueue  # noqa: E402
from crl_uiqa.sniff import UnsupportedContent, sniff  # noqa: E402

torch.set_num_threads(1)

FPS = 20
TEST_HOSTS = ("testserver", "127.0.0.1", "localhost")


class GateRuntime(MeanRuntime):
    """A mean scorer that waits for ``gate`` before scoring (keeps a job running while a test looks)."""

    def __init__(self):
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def _run(self, batch):
        self.entered.set()
        self.gate.wait(60)
        return super()._run(batch)


def bump(i, center, width, height):
    return height * math.exp(-(((i - center) / width) ** 2))


def levels(n=60):
    """Bright stretch around frame 40, a smaller one at frame 8."""
    return [60 + bump(i, 40, 4, 60) + bump(i, 8, 2, 30) for i in range(n)]


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    d = tmp_path_factory.mktemp("scans")
    video = write_video(d / "sweep.mp4", fan_frames(levels()), fps=FPS, options={"movflags": "+faststart"},
                        stream_options={"crf": "12"})
    pytest.importorskip("pydicom")
    dicom = write_dicom_cine(d / "loop.dcm", fan_frames([60 + bump(i, 7, 2, 80) for i in range(12)], seed=3),
                             frame_time_ms=40.0, region=(20, 10, 107, 89))
    images = []
    for i, lv in enumerate([80, 150, 60, 120]):
        p = d / f"still_{i}.png"
        Image.fromarray(fan_frames([lv], seed=i)[0]).save(p)
        images.append(p)
    return {"video": video, "dicom": dicom, "images": images, "dir": d}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("run") / "tiny")


def make_client(models, **settings):
    settings.setdefault("allowed_hosts", TEST_HOSTS)
    app = create_app(models, settings=ServeSettings(**settings))
    return app, TestClient(app)


@pytest.fixture(scope="module")
def served(run_dir, tmp_path_factory):
    # a machine without SonoNet-16 weights (not even the packaged copy): the plane check is off
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("crl_uiqa.weights.PACKAGED_DIR", tmp_path_factory.mktemp("no-packaged-weights"))
        mp.delenv("CRL_UIQA_WEIGHTS_DIR", raising=False)
        mp.setenv("CRL_UIQA_CACHE", str(tmp_path_factory.mktemp("empty-cache")))
        app, client = make_client([("brightness", MeanRuntime()), run_dir], queue_size=8)
    yield app, client
    app.state.close()


def upload(client, paths, **options):
    files = [("files", (p.name, p.read_bytes())) for p in paths]
    return client.post("/api/scans", files=files, data={k: str(v) for k, v in options.items()})


def wait(client, job_id, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/api/scans/{job_id}").json()
        if body["status"] in ("done", "failed", "cancelled"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {body}")


def scored(client, paths, **options):
    r = upload(client, paths, **options)
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/api/scans/{r.json()['id']}"
    return wait(client, r.json()["id"])


# ----------------------------------------------------------------------------- sniffing


@pytest.mark.parametrize("head,kind,suffix", [
    (b"\x00\x00\x00\x20ftypisom" + b"\x00" * 20, "video", ".mp4"),
    (b"\x00\x00\x00\x14ftypqt  " + b"\x00" * 20, "video", ".mov"),
    (b"RIFF\x10\x00\x00\x00AVI LIST", "video", ".avi"),
    (b"\x00" * 128 + b"DICM", "dicom", ".dcm"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 8, "image", ".png"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 8, "image", ".jpg"),
    (b"II*\x00" + b"\x00" * 8, "image", ".tif"),
])
def test_sniff_recognises_content_not_names(head, kind, suffix):
    s = sniff(head)
    assert (s.kind, s.suffix) == (kind, suffix)


def test_sniff_refuses_other_content():
    for head in (b"hello world, this is text", b"%PDF-1.7\n", b"\x1aE\xdf\xa3 matroska", b"PK\x03\x04zip"):
        with pytest.raises(UnsupportedContent, match="not a supported scan"):
            sniff(head)
    with pytest.raises(UnsupportedContent, match="empty"):
        sniff(b"")


# ----------------------------------------------------------------------------- results


def test_video_upload_result_frames_and_downloads(served, scans):
    app, client = served
    body = scored(client, [scans["video"]], model="brightness", top_k=2, min_gap=1.0)
    assert body["status"] == "done", body
    assert body["progress"] == {"done": 60, "total": 60}
    res = body["result"]
    assert res["kind"] == "video" and res["scan"] == "sweep.mp4" and res["model"] == "brightness"
    assert res["frames_scored"] == 60 and res["frames"]["frame"] == list(range(60))
    np.testing.assert_allclose(res["frames"]["time"], np.arange(60) / FPS, atol=1e-6)
    assert res["region"]["method"] == "temporal-std"
    picks = res["picks"]
    assert [p["rank"] for p in picks] == [1, 2]
    assert abs(picks[0]["frame"] - 40) <= 1 and abs(picks[1]["frame"] - 8) <= 1
    q = np.array(res["frames"]["quality"])
    assert picks[0]["quality"] == pytest.approx(q.max(), rel=1e-6)

    jid = body["id"]
    top, left, h, w = res["region"]["box"]
    # a pick, at full resolution cut to the region
    r = client.get(picks[0]["image"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(r.content)) as im:
        assert im.size == (w, h)
    # any scored frame, decoded again and cut the same way; the pick's frame is the same image
    r = client.get(f"/api/scans/{jid}/frames/{picks[0]['frame']}.png")
    assert r.status_code == 200
    with Image.open(io.BytesIO(r.content)) as im, Image.open(io.BytesIO(client.get(picks[0]["image"]).content)) as pk:
        assert im.size == (w, h)
        np.testing.assert_allclose(np.asarray(im, float), np.asarray(pk, float), atol=1.0)
    assert client.get(f"/api/scans/{jid}/frames/3.png").status_code == 200
    assert client.get(f"/api/scans/{jid}/frames/60.png").status_code == 404
    assert client.get(f"/api/scans/{jid}/picks/3.png").status_code == 404

    # downloads: exactly the files the job produced
    assert set(res["downloads"]) >= {"frames.csv", "picks.zip", "report.html", "picks.csv"}
    r = client.get(res["downloads"]["frames.csv"])
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"] and "sweep_frames.csv" in r.headers["content-disposition"]
    lines = r.text.strip().splitlines()
    assert lines[0].split(",")[:3] == ["frame", "time", "plane"] and len(lines) == 61
    with zipfile.ZipFile(io.BytesIO(client.get(res["downloads"]["picks.zip"]).content)) as zf:
        names = sorted(zf.namelist())
    assert len(names) == 2 and names[0].startswith("best_01_frame")
    html = client.get(res["downloads"]["report.html"]).text
    assert "sweep.mp4" in html and "Selected frames" in html
    assert str(app.state.workdir) not in html  # no server path in what a user downloads
    for bad in ("../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "model.safetensors", "scan.mp4"):
        assert client.get(f"/api/scans/{jid}/files/{bad}").status_code == 404


def test_dicom_cine_uses_its_region_and_timing(served, scans):
    _, client = served
    body = scored(client, [scans["dicom"]], model="brightness", top_k=1)
    assert body["status"] == "done", body
    res = body["result"]
    assert res["kind"] == "dicom" and res["region"] == {"method": "dicom", "box": [10, 20, 80, 88]}
    np.testing.assert_allclose(res["frames"]["time"], np.arange(12) * 0.04, atol=1e-9)
    assert res["picks"][0]["frame"] == 7


def test_still_images_are_one_scan_in_upload_order(served, scans):
    _, client = served
    body = scored(client, scans["images"], model="brightness", top_k=2, min_gap=0)
    assert body["status"] == "done", body
    res = body["result"]
    assert res["kind"] == "images" and body["kind"] == "image"
    assert res["scan"].startswith("4 images (still_0.png")
    assert res["frames"]["frame"] == [0, 1, 2, 3] and res["frames"]["time"] == [0.0, 1.0, 2.0, 3.0]
    assert [p["frame"] for p in res["picks"]] == [1, 3]  # the brightest images, best first


def test_real_run_folder_and_models_menu(served, scans):
    _, client = served
    models = client.get("/api/models").json()
    assert [m["name"] for m in models] == ["brightness", "tiny"]
    assert models[0]["default"] and not models[1]["default"] and models[1]["image_size"] == [48, 64]
    body = scored(client, [scans["video"]], model="tiny", top_k=3, every=3, smooth=0.5)
    assert body["status"] == "done", body
    res = body["result"]
    assert res["model"] == "tiny" and res["runtime"] == "torch" and res["frames_scored"] == 20
    assert all(math.isfinite(v) for v in res["frames"]["quality"])
    assert res["smooth"] == 0.5 and len(res["picks"]) == 3
    cfg = client.get("/api/config").json()
    assert cfg["defaults"]["top_k"] == ScanOptions().top_k and cfg["limits"]["queue_size"] == 8
    assert "workdir" not in cfg["limits"]


# ----------------------------------------------------------------------------- errors


def test_upload_errors_are_one_clear_line(served, scans, tmp_path):
    _, client = served
    text = tmp_path / "notes.mp4"  # the name says video, the bytes do not
    text.write_bytes(b"just some text, not a video at all" * 10)
    r = upload(client, [text])
    assert r.status_code == 415 and r.json()["detail"].startswith("notes.mp4: the content is not a supported scan")
    r = upload(client, [scans["video"], scans["images"][0]])
    assert r.status_code == 400 and "still images" in r.json()["detail"]
    r = client.post("/api/scans", data={"top_k": "2"})
    assert r.status_code == 422 and "files" in r.json()["detail"]
    for opts, words in [({"top_k": 0}, "top_k must be >= 1"), ({"top_k": "many"}, "top_k"),
                        ({"min_gap": -1}, "min_gap"), ({"model": "nope"}, "unknown model"),
                        ({"plane": "4CH"}, "plane check is not available")]:
        r = upload(client, [scans["video"]], **opts)
        assert r.status_code == 422, (opts, r.text)
        assert words in r.json()["detail"] and "\n" not in r.json()["detail"]
    for jid in ("0" * 32, "not-an-id", "..%2F..%2Fetc"):
        assert client.get(f"/api/scans/{jid}").status_code == 404
        assert client.get(f"/api/scans/{jid}/files/frames.csv").status_code == 404
    assert client.delete("/api/scans/" + "f" * 32).status_code == 404


def test_still_images_of_different_sizes_are_refused_at_upload(served, scans, tmp_path):
    # they were queued, then the job failed naming `--region none`, an option the page does not have
    app, client = served
    small = tmp_path / "small.png"
    Image.fromarray(fan_frames([90], seed=5, h=64, w=80)[0]).save(small)
    before = set(app.state.workdir.iterdir())
    r = upload(client, [scans["images"][0], small, scans["images"][1]])
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert detail == ("small.png is 80x64 pixels but still_0.png is 128x96: the images of one sweep must all have "
                      "the same size")
    assert set(app.state.workdir.iterdir()) == before  # nothing of the refused upload is kept
    body = scored(client, scans["images"][:2], top_k=1)  # same-size stills still score
    assert body["status"] == "done"


def test_unreadable_scan_fails_with_its_name_not_a_server_path(served, scans, tmp_path):
    app, client = served
    bad = tmp_path / "broken.mp4"  # an MP4 header, then garbage
    bad.write_bytes(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(range(256)) * 40)
    body = scored(client, [bad], model="brightness")
    assert body["status"] == "failed"
    assert "broken.mp4" in body["message"] and str(app.state.workdir) not in body["message"]
    assert "result" not in body
    r = client.get(f"/api/scans/{body['id']}/files/frames.csv")
    assert r.status_code == 409 and "failed" in r.json()["detail"]
    cut = tmp_path / "cut.png"
    cut.write_bytes(scans["images"][0].read_bytes()[:60])
    body = scored(client, [cut], model="brightness")
    assert body["status"] == "failed" and "cut.png" in body["message"]


def test_size_and_frame_limits(run_dir, scans):
    app, client = make_client([("brightness", MeanRuntime())], max_upload_bytes=2000, max_frames=30)
    try:
        r = upload(client, [scans["video"]])
        assert r.status_code == 413 and "at most" in r.json()["detail"]
        def chunks():
            yield scans["images"][0].read_bytes()
        r = client.post("/api/scans", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
        assert r.status_code == 411 and "Content-Length" in r.json()["detail"]
    finally:
        app.state.close()
    app, client = make_client([("brightness", MeanRuntime())], max_frames=30)
    try:
        body = scored(client, [scans["video"]])
        assert body["status"] == "failed" and "60 frames" in body["message"] and "at most 30" in body["message"]
    finally:
        app.state.close()


def test_queue_full_busy_results_and_delete(scans):
    gate = GateRuntime()
    app, client = make_client([("gate", gate)], queue_size=1)
    try:
        first = upload(client, [scans["dicom"]]).json()
        assert gate.entered.wait(30)  # the worker is busy with the first upload
        second = upload(client, [scans["dicom"]])
        assert second.status_code == 202 and second.json()["position"] == 1
        third = upload(client, [scans["dicom"]])
        assert third.status_code == 429 and third.json()["detail"].startswith("1 upload is already waiting")
        assert third.headers["retry-after"]
        assert len(list(app.state.workdir.iterdir())) == 2  # the refused upload left nothing behind
        busy = client.get(f"/api/scans/{first['id']}").json()
        assert busy["status"] == "running" and busy["phase"] == "decoding and scoring frames"
        r = client.get(f"/api/scans/{first['id']}/files/frames.csv")
        assert r.status_code == 409 and "still being scored" in r.json()["detail"]
        # deleting the waiting job cancels it and removes its files
        sid = second.json()["id"]
        assert client.delete(f"/api/scans/{sid}").status_code == 204
        assert client.get(f"/api/scans/{sid}").status_code == 404
        assert not (app.state.workdir / sid).exists()
        gate.gate.set()
        assert wait(client, first["id"])["status"] == "done"
    finally:
        gate.gate.set()
        app.state.close()


def test_expiry_and_shutdown_delete_every_file(scans):
    app, client = make_client([("brightness", MeanRuntime())], job_ttl=60.0)
    workdir = app.state.workdir
    body = scored(client, [scans["dicom"]])
    jid = body["id"]
    assert (workdir / jid / "out" / "frames.csv").is_file()
    jobs: JobQueue = app.state.jobs
    assert jobs.expire(now=time.time() + 30) == 0 and (workdir / jid).exists()
    assert jobs.expire(now=time.time() + 120) == 1
    assert not (workdir / jid).exists() and client.get(f"/api/scans/{jid}").status_code == 404
    scored(client, [scans["dicom"]])
    app.state.close()
    assert not workdir.exists()
    # an upload after the stop is refused as such (it said "4 uploads are already waiting")
    r = upload(client, [scans["dicom"]])
    assert r.status_code == 429 and r.json()["detail"] == "the server is shutting down"


def test_only_the_newest_finished_jobs_are_kept(scans):
    app, client = make_client([("brightness", MeanRuntime())], max_jobs=2)
    try:
        ids = [scored(client, [scans["dicom"]])["id"] for _ in range(3)]
        app.state.jobs.expire()  # the worker may be expiring it at the same moment: wait for its files to go
        assert client.get(f"/api/scans/{ids[0]}").status_code == 404
        deadline = time.monotonic() + 30
        while (app.state.workdir / ids[0]).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not (app.state.workdir / ids[0]).exists()
        assert all(client.get(f"/api/scans/{i}").json()["status"] == "done" for i in ids[1:])
    finally:
        app.state.close()


@pytest.mark.parametrize("suffix,codec", [(".avi", "mjpeg"), (".mov", "libx264")])
def test_avi_and_mov_uploads(served, tmp_path, suffix, codec):
    _, client = served
    frames = fan_frames([60 + bump(i, 6, 2, 70) for i in range(12)], seed=5)
    pix = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    path = write_video(tmp_path / f"clip{suffix}", frames, fps=10, codec=codec, pix_fmt=pix)
    body = scored(client, [path], model="brightness", top_k=1)
    assert body["status"] == "done", body
    assert body["result"]["frames_scored"] == 12 and body["result"]["scan"] == f"clip{suffix}"
    assert abs(body["result"]["picks"][0]["frame"] - 6) <= 1


def test_page_assets_headers_and_openapi(served):
    _, client = served
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'src="/static/app.js"' in page.text and "http" not in page.text.replace('href="/openapi.json"', "")
    for asset in ("/static/app.js", "/static/style.css"):
        r = client.get(asset)
        assert r.status_code == 200 and "https://" not in r.text and "http://" not in r.text.replace(SVG_NS, "")
    schema = client.get("/openapi.json").json()
    paths = set(schema["paths"])
    assert {"/api/scans", "/api/scans/{job_id}", "/api/scans/{job_id}/frames/{frame}.png",
            "/api/scans/{job_id}/files/{name}", "/api/models", "/api/config"} <= paths
    assert client.get("/docs").status_code == 404  # Swagger UI would load scripts from a CDN
    # a page on another origin resolving to this machine (DNS rebinding) is refused
    assert client.get("/api/models", headers={"host": "evil.example"}).status_code == 400


SVG_NS = "http://www.w3.org/2000/svg"


def test_plane_check(sononet16_path, scans):
    from crl_uiqa.serving.models import PlaneChecker

    planes = PlaneChecker(sononet16_path)
    app = create_app([("brightness", MeanRuntime())], planes=planes,
                     settings=ServeSettings(allowed_hosts=TEST_HOSTS))
    client = TestClient(app)
    try:
        cfg = client.get("/api/config").json()
        assert cfg["planes"]["available"] and "4CH" in cfg["planes"]["names"]
        r = upload(client, [scans["dicom"]], plane="elbow")
        assert r.status_code == 422 and "unknown plane" in r.json()["detail"]
        body = scored(client, [scans["dicom"]], plane="4ch", plane_threshold=0.0, top_k=2, min_gap=0)
        res = body["result"]
        assert res["plane"] == "4CH" and res["plane_threshold"] == 0.0
        probs = res["frames"]["plane_probability"]
        assert len(probs) == 12 and all(0.0 <= p <= 1.0 for p in probs)
        assert all(res["frames"]["eligible"]) and res["picks"][0]["plane"] in cfg["planes"]["names"]
        body = scored(client, [scans["dicom"]], plane="4ch", plane_threshold=1.0)
        elig = body["result"]["frames"]["eligible"]
        probs = body["result"]["frames"]["plane_probability"]
        assert elig == [p >= 1.0 for p in probs]
        assert all(elig[p["frame"]] for p in body["result"]["picks"])
    finally:
        app.state.close()


# ----------------------------------------------------------------------------- command line


def test_cli_checks_settings_before_loading(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "missing"), "--port", "0"]) == 1
    assert "--port" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path / "missing")]) == 1
    assert "model not found" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path), "--queue", "0"]) == 1
    assert "--queue" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path), "--max-files", "5000"]) == 1
    assert "--max-files" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path), "--threads", str(2**31 - 1)]) == 1
    assert "threads (--threads) must be <= 1024" in capsys.readouterr().err
    # one --threads policy with the other commands (runtime.check_threads), but torch.set_num_threads takes no 0
    assert main(["serve", "--model", str(tmp_path), "--threads", "0"]) == 1
    assert capsys.readouterr().err.strip() == "crl-uiqa serve: error: threads (--threads) must be >= 1, got 0"
    # frames of a batch are held until it is full: --batch-size is bounded by what it holds, before any model loads
    assert main(["serve", "--model", str(tmp_path), "--batch-size", "100000000"]) == 1
    assert capsys.readouterr().err.strip() == ("crl-uiqa serve: error: batch_size (--batch-size) must be <= 4096, "
                                               "got 100000000")
    # a file as --workdir was "DIR: File exists", after the models were loaded (trial 4); in the API an OSError
    (tmp_path / "notes.txt").write_text("keep")
    assert main(["serve", "--model", str(tmp_path / "missing"), "--workdir", str(tmp_path / "notes.txt")]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.endswith("notes.txt: is a file, a folder is expected"), line
    with pytest.raises(OutputError, match="notes.txt/sub: .*notes.txt is a file, not a folder"):
        create_app([("brightness", MeanRuntime())], settings=ServeSettings(workdir=tmp_path / "notes.txt" / "sub"))
    assert (tmp_path / "notes.txt").read_text() == "keep"


def test_cli_starts_uvicorn_with_its_settings(run_dir, tmp_path, monkeypatch, capsys):
    import uvicorn

    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(app=app, **kw))
    port = _free_port()
    assert main(["serve", "--model", str(run_dir), "--port", str(port), "--max-upload-mb", "5", "--max-frames", "99",
                 "--queue", "2", "--keep-minutes", "1", "--workdir", str(tmp_path / "work")]) == 0
    assert started["host"] == "127.0.0.1" and started["port"] == port
    app = started["app"]
    try:
        cfg = TestClient(app, base_url=f"http://127.0.0.1:{port}").get("/api/config").json()
        assert cfg["limits"]["max_upload_bytes"] == 5 * 2**20 and cfg["limits"]["max_frames"] == 99
        assert cfg["limits"]["queue_size"] == 2 and cfg["limits"]["job_ttl"] == 60.0
        assert [m["name"] for m in cfg["models"]] == ["tiny"]
        assert app.state.workdir.parent == tmp_path / "work"
        assert f"open http://127.0.0.1:{port}/" in capsys.readouterr().out
        # a request under another host name is refused
        assert TestClient(app, base_url="http://evil.example").get("/api/config").status_code == 400
    finally:
        app.state.close()
    assert list((tmp_path / "work").iterdir()) == []


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_a_taken_port_or_unknown_host_is_one_line_before_serving(run_dir, tmp_path, monkeypatch, capsys):
    import socket

    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: pytest.fail("uvicorn must not start"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--model", str(run_dir), "--port", str(port), "--workdir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err and len(err.splitlines()) == 1
    assert main(["serve", "--model", str(run_dir), "--host", "no-such-host.invalid", "--workdir", str(tmp_path)]) == 1
    assert "--host no-such-host.invalid: not an address of this machine" in capsys.readouterr().err


def test_cli_models_menu_from_a_folder_of_runs(tmp_path):
    from crl_uiqa.serving.models import discover_models

    for name in ("b-run", "a-run"):
        tiny_run(tmp_path / "runs" / name)
    (tmp_path / "runs" / "notes").mkdir()
    found = discover_models([tmp_path / "runs", tmp_path / "runs" / "a-run"])
    assert [n for n, _ in found] == ["a-run", "b-run", "a-run-2"]
    with pytest.raises(FileNotFoundError, match="neither a run folder"):
        discover_models([tmp_path / "runs" / "notes"])


def test_cli_weights_option_has_the_common_name(capsys):
    """serve names the plane check's SonoNet weights --weights like every command; --plane-weights still parses."""
    from crl_uiqa.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["serve", "--model", "m", "--weights", "w.npz"]).weights == "w.npz"
    assert parser.parse_args(["serve", "--model", "m", "--plane-weights", "w.npz"]).weights == "w.npz"
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "--weights" in out and "--plane-weights" not in out


# ----------------------------------------------------------------------------- hostile requests (serve trial)


def _call_with_a_stalling_body(app, chunks, *, content_length=10_000, first_after=0.0, stall=True, on_stall=None):
    """Call the ASGI app with a POST whose body sends ``chunks`` and then stalls (a client trickling its upload):
    the status, the JSON body and the headers of the response. ``first_after``: seconds before the first chunk;
    ``stall=False``: the last chunk ends the body; ``on_stall()`` is called once when the body stalls."""
    import asyncio
    import concurrent.futures
    import json

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/api/scans", "raw_path": b"/api/scans", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), (b"content-length", str(content_length).encode()),
                         (b"content-type", b"multipart/form-data; boundary=x")],
             "client": ("127.0.0.1", 5000), "server": ("testserver", 80)}
    sent = []

    async def call():
        pending = [{"type": "http.request", "body": c, "more_body": stall or i < len(chunks) - 1}
                   for i, c in enumerate(chunks)]
        waited = []

        async def receive():
            if first_after and not waited:  # the request arrived; its body comes later
                waited.append(await asyncio.sleep(first_after))
            if pending:
                return pending.pop(0)
            if on_stall is not None:
                on_stall()
            await asyncio.Event().wait()  # the client sends nothing more and does not hang up

        async def send(message):
            sent.append(message)

        await asyncio.wait_for(app(scope, receive, send), 10)

    # in a thread of its own: the session's Playwright (browser tests) keeps an event loop running in this one
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: asyncio.run(call())).result(timeout=20)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body), {k.decode().lower(): v.decode() for k, v in start["headers"]}


def test_a_stalled_upload_body_is_ended_with_408(scans):
    # uvicorn has no body timeout: a client that sent part of its upload and then paused held its connection
    # (and the request) forever
    app, _ = make_client([("brightness", MeanRuntime())], body_timeout=0.05)
    try:
        status, body, headers = _call_with_a_stalling_body(app, [b"--x\r\n", b"Content-Disposition: form-da"])
        assert status == 408 and headers["connection"] == "close"
        assert body["detail"] == ("the upload paused more than 0.05 s (--body-timeout); send the request body "
                                  "without stalling")
        assert list(app.state.workdir.iterdir()) == []
    finally:
        app.state.close()
    # a body that keeps trickling is ended by the deadline of the whole body
    app, _ = make_client([("brightness", MeanRuntime())], body_timeout=5, body_deadline=0.05)
    try:
        status, body, _ = _call_with_a_stalling_body(app, [b"--x\r\n"])
        assert status == 408 and body["detail"].startswith("the upload took more than 0.05 s in all")
    finally:
        app.state.close()


def _multipart(*parts: tuple[str, bytes], last_complete: bool = True) -> bytes:
    """A multipart/form-data body (boundary ``x``) of file ``parts`` (name, content) in the field ``files``;
    ``last_complete=False`` stops in the middle of the last part's content."""
    body = b""
    for name, content in parts:
        body += (b"--x\r\nContent-Disposition: form-data; name=\"files\"; filename=\"" + name.encode()
                 + b"\"\r\nContent-Type: application/octet-stream\r\n\r\n" + content + b"\r\n")
    return body + b"--x--\r\n" if last_complete else body[:-2]


def test_the_whole_body_deadline_starts_at_its_first_chunk(scans):
    # a request whose body starts later than the request (the app reading it later, a client that sent its headers
    # first) had that wait counted in the hour; until the first chunk only the pause between chunks is timed
    app, _ = make_client([("brightness", MeanRuntime())], body_timeout=30, body_deadline=0.5)
    try:
        body = _multipart(("notes.txt", b"not a scan at all"))
        status, detail, _ = _call_with_a_stalling_body(app, [body[:20], body[20:]], content_length=len(body),
                                                       first_after=1.5, stall=False)
        assert status == 415 and "notes.txt" in detail["detail"]  # read to the end and refused for what it is
    finally:
        app.state.close()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="open files are listed in /proc/self/fd (Linux)")
def test_a_408_mid_upload_leaves_no_temporary_file(scans, tmp_path, monkeypatch):
    """The parts parsed before a 408 are spooled to temporary files (on disk above 1 MiB); they are closed, and so
    removed, when the request ends, not left to the garbage collector."""
    import gc
    import tempfile

    app, _ = make_client([("brightness", MeanRuntime())], body_timeout=0.2)
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))  # where Starlette's SpooledTemporaryFile rolls over to

    def files_held() -> list[str]:
        held = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:  # the listing's own descriptor, closed meanwhile
                continue
            if target.startswith(str(spool)):
                held.append(target)
        return held + [str(p) for p in spool.iterdir()]

    during = []
    body = _multipart(("a.png", bytes(3 * 2**20)), ("b.png", b"the second part, cut off"), last_complete=False)
    chunks = [body[i:i + 2**16] for i in range(0, len(body), 2**16)]
    gc.disable()  # what is left for the garbage collector stays there
    try:
        status, detail, headers = _call_with_a_stalling_body(app, chunks, content_length=len(body) + 100,
                                                             on_stall=lambda: during.extend(files_held()))
        assert status == 408 and headers["connection"] == "close"
        assert detail["detail"].startswith("the upload paused more than 0.2 s")
        assert during, "the 3 MiB part was not on disk while the body stalled: the check below would see nothing"
        assert files_held() == []
    finally:
        gc.enable()
        app.state.close()


def test_body_timeouts_are_validated_settings(run_dir, capsys):
    from crl_uiqa.errors import ConfigError

    for bad in (0, -1, float("nan"), "60"):
        with pytest.raises(ConfigError, match="body_timeout .--body-timeout. must be"):
            ServeSettings(body_timeout=bad)
    with pytest.raises(ConfigError, match="body_deadline must be"):
        ServeSettings(body_deadline=0)
    assert main(["serve", "--model", str(run_dir), "--body-timeout", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "crl-uiqa serve: error: body_timeout (--body-timeout) must be > 0, got 0"


def test_chunked_upload_with_a_content_length_is_refused_before_its_body_is_read(scans):
    # Transfer-Encoding wins over Content-Length (RFC 9112), so a small Content-Length in front of a chunked body
    # got past the size check and the whole body was read (spooled to disk) before _store refused it
    app, client = make_client([("brightness", MeanRuntime())], max_upload_bytes=200_000)
    sent = []

    def body():
        for _ in range(50):
            sent.append(1)
            yield b"\x00" * 10_000  # 500 kB in all

    try:
        r = client.post("/api/scans", content=body(), headers={
            "content-type": "multipart/form-data; boundary=x", "content-length": "100", "transfer-encoding": "chunked"})
        assert r.status_code == 411, r.text
        assert "Content-Length" in r.json()["detail"] and len(sent) <= 1
        assert list(app.state.workdir.iterdir()) == []
        assert scored(client, [scans["dicom"]])["status"] == "done"  # the next good upload still works
    finally:
        app.state.close()


def test_another_host_name_is_refused_with_a_json_line(served):
    # the refusal (DNS rebinding) was Starlette's plain text "Invalid host header", not {"detail": ...}
    _, client = served
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.nip.io", "", "[::1", "evil.example@testserver",
                 "testserver:http"):
        r = client.get("/api/config", headers={"host": host})
        assert r.status_code == 400, host
        detail = r.json()["detail"]
        assert "Host" in detail and "testserver" in detail and "\n" not in detail
    for host in ("localhost:8000", "TESTSERVER", "127.0.0.1"):
        assert client.get("/api/config", headers={"host": host}).status_code == 200


def test_scan_frames_above_the_pixel_limit_fail_before_decoding(served, scans, monkeypatch):
    # a still image above --max-pixels was refused from its header; a video or DICOM frame of any size was decoded
    # (an 8192x8192 H.264 of 0.8 MB took 3.4 GB, then a MemoryError in the region detection)
    app, client = served
    monkeypatch.setenv("CRL_UIQA_MAX_PIXELS", "5000")
    for scan, size in ((scans["video"], "128x96"), (scans["dicom"], "128x96")):
        body = scored(client, [scan], model="brightness")
        assert body["status"] == "failed", body
        assert body["message"].startswith(f"{scan.name}: ") and f"{size} = 0.0 megapixels" in body["message"]
        assert "--max-pixels" in body["message"] and str(app.state.workdir) not in body["message"]
    monkeypatch.delenv("CRL_UIQA_MAX_PIXELS")
    assert scored(client, [scans["dicom"]], model="brightness")["status"] == "done"


class OutOfMemoryRuntime(MeanRuntime):
    def _run(self, batch):
        raise MemoryError


def test_a_job_out_of_memory_is_a_clear_line_and_the_worker_goes_on(scans):
    # the job's message was "MemoryError"
    app, client = make_client([("oom", OutOfMemoryRuntime()), ("brightness", MeanRuntime())])
    try:
        body = scored(client, [scans["dicom"]], model="oom")
        assert body["status"] == "failed" and body["message"].startswith("out of memory while scoring loop.dcm")
        assert scored(client, [scans["dicom"]], model="brightness")["status"] == "done"
    finally:
        app.state.close()


def test_a_file_name_too_long_for_the_multipart_parser_is_a_clear_line(served, scans):
    # python-multipart refuses a part header longer than 4224 bytes; the client got "Invalid multipart data."
    limit = getattr(pytest.importorskip("python_multipart.multipart"), "DEFAULT_MAX_HEADER_SIZE", None)
    if limit is None:
        pytest.skip("this python-multipart has no limit on a part's header")
    _, client = served
    r = client.post("/api/scans", files=[("files", ("x" * 5000 + ".dcm", scans["dicom"].read_bytes()))])
    assert r.status_code == 400, r.text
    assert r.json()["detail"] == (f"files: a file name is too long (the header of a part, file name included, may be "
                                  f"at most {limit} bytes); rename the file")
    # other broken multipart bodies keep the parser's words
    r = client.post("/api/scans", content=b"--x\r\nnot a header line\r\n\r\n--x--\r\n",
                    headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 400 and "file name" not in r.json()["detail"]
    # a long name under the limit is taken, and shown cut
    body = wait(client, client.post("/api/scans", files=[("files", ("y" * 4000 + ".dcm", scans["dicom"].read_bytes()))],
                                    data={"model": "brightness"}).json()["id"])
    assert body["status"] == "done" and len(body["name"]) == 120


def test_hostile_names_and_parts_get_a_short_clear_line(served, scans):
    app, client = served
    done = scored(client, [scans["dicom"]], model="brightness", top_k=1)
    # a 5000-character file name was echoed whole in the 404 detail
    r = client.get(f"/api/scans/{done['id']}/files/" + "x" * 5000)
    assert r.status_code == 404 and len(r.json()["detail"]) <= 500 and r.json()["detail"].startswith("no file 'xxx")
    r = client.get(f"/api/scans/{done['id']}/frames/{'9' * 4000}.png")
    assert r.status_code == 404 and len(r.json()["detail"]) <= 500
    # a part without a file name (a plain form field) said "Expected UploadFile, received: <class 'str'>"
    for files in ([("files", ("", scans["dicom"].read_bytes()))], None):
        r = client.post("/api/scans", files=files, data=None if files else {"files": "hello"})
        assert r.status_code == 422, r.text
        assert r.json()["detail"] == ("files: each part must be a file with a file name (multipart/form-data, "
                                      "like curl -F files=@scan.mp4), not a plain form field")
    # names are shown, never used as paths, and the report escapes them
    name = '<img src=x onerror="alert(1)">../../x.dcm'
    body = wait(client, client.post("/api/scans", files=[("files", (name, scans["dicom"].read_bytes()))]).json()["id"])
    assert body["status"] == "done" and body["name"] == "x.dcm"
    name = "<img src=x onerror=alert(1)>.dcm"
    body = wait(client, client.post("/api/scans", files=[("files", (name, scans["dicom"].read_bytes()))]).json()["id"])
    assert body["status"] == "done" and body["name"] == name
    html = client.get(body["result"]["downloads"]["report.html"]).text
    assert "<img src=x" not in html and "&lt;img src=x" in html
