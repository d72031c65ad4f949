"""Tests for crl_uiqa.select and `crl-uiqa select`: region, scoring, plane check, smoothing, picks, outputs.

Inputs are built here: short H.264 videos of a speckle fan (with a static
text overlay outside it) whose brightness follows a known curve, a DICOM cine
loop with a Sequence of Ultrasound Regions, and an image sequence of the
SonoNet example planes. Selection logic is checked with a brightness scorer
(a :class:`Runtime` whose score is the mean of the resized crop), so the
expected picks are known by construction; one test runs a real model.
"""
from __future__ import annotations

import math
import re
import shutil

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")

import _helpers  # noqa: E402
from _helpers import MeanRuntime, fan_frames, fan_mask, us_dicom_dataset, us_region  # noqa: E402
from crl_uiqa.cli import main  # noqa: E402
from crl_uiqa.files import read_csv  # noqa: E402
from crl_uiqa.scan import ScanReadError  # noqa: E402
from crl_uiqa.select import (  # noqa: E402
    FRAME_COLUMNS,
    SUMMARY_COLUMNS,
    select_frames,
    smooth_scores,
    temporal_nms,
    write_selection,
)
from crl_uiqa.video.temporal import CandidatePool as _CandidatePool  # noqa: E402

torch.set_num_threads(1)

H, W = 96, 128
FPS = 20


def capture_frames(levels, seed=0, h=H, w=W):
    """uint8 frames: speckle fan of mean ~level, static text block top-left, black elsewhere."""
    return fan_frames(levels, seed=seed, h=h, w=w)


def write_video(path, frames, fps=FPS):
    # +faststart puts the index first: cut files stay readable
    return _helpers.write_video(path, frames, fps=fps, options={"movflags": "+faststart"},
                                stream_options={"crf": "12"})


def bump(i, center, width, height):
    return height * math.exp(-(((i - center) / width) ** 2))


@pytest.fixture(scope="module")
def spike_video(tmp_path_factory):
    """60 frames at 20 fps: a lone bright frame at 25, a broad bright stretch around 48, a smaller one at 3."""
    levels = [60 + bump(i, 48, 4, 50) + bump(i, 3, 2, 25) + (90 if i == 25 else 0) for i in range(60)]
    return write_video(tmp_path_factory.mktemp("v") / "spike.mp4", capture_frames(levels))


# ----------------------------------------------------------------------------- temporal helpers


def test_smooth_scores_hand_values():
    t = [0.0, 1.0, 2.0, 3.0]
    s = [0.0, 0.0, 3.0, 0.0]
    e = math.exp(-2.0)  # neighbour weight: dt = 1 s, sigma = 0.5 s
    out = smooth_scores(t, s, 1.0)
    np.testing.assert_allclose(out, [0.0, 3 * e / (1 + 2 * e), 3 / (1 + 2 * e), 3 * e / (1 + e)], rtol=1e-12)
    np.testing.assert_array_equal(smooth_scores(t, s, 0.0), s)
    # a range of the output equals the same range of the full computation
    np.testing.assert_allclose(smooth_scores(t, s, 1.0, start=1, stop=3), out[1:3], rtol=0, atol=0)
    # a non-finite score gets weight 0
    out = smooth_scores(t, [1.0, np.nan, 3.0, 0.0], 1.0)
    assert out[1] == pytest.approx((e * 1.0 + e * 3.0) / (2 * e))
    with pytest.raises(ValueError, match="seconds >= 0"):
        smooth_scores(t, s, -1.0)


def test_smooth_scores_in_blocks_is_the_whole_computation(monkeypatch):
    """A window as long as the scan is computed a few rows at a time (``SMOOTH_BLOCK``): the same values as in one
    block, on irregular times with a missing score, and a frames x frames matrix is never made."""
    import crl_uiqa.video.temporal as temporal

    rng = np.random.default_rng(0)
    t = np.cumsum(rng.uniform(0.01, 0.1, 300))
    s = rng.random(300)
    s[17] = np.nan
    whole = [smooth_scores(t, s, sec) for sec in (0.2, 1.0, 1e9)]
    monkeypatch.setattr(temporal, "SMOOTH_BLOCK", 7)  # 7 window entries at a time: a row or two per block
    for sec, expected in zip((0.2, 1.0, 1e9), whole):
        np.testing.assert_allclose(smooth_scores(t, s, sec), expected, rtol=1e-12, atol=0)
        np.testing.assert_allclose(smooth_scores(t, s, sec, start=50, stop=61), expected[50:61], rtol=1e-12, atol=0)
    # a window longer than the scan: every frame's smoothed score is the weighted mean of all finite scores
    np.testing.assert_allclose(whole[2], np.full(300, np.nanmean(s)), rtol=1e-9)


def test_temporal_nms_distinct_moments():
    t = np.arange(10.0)
    s = [1, 2, 9, 8.5, 3, 2, 7, 6.9, 1, 0]
    # 3 is 1 s from the peak at 2 (suppressed), 7 is 1 s from 6; 4 is exactly 2 s away (kept)
    assert temporal_nms(t, s, 3, 2.0) == [2, 6, 4]
    assert temporal_nms(t, s, 3, 0.0) == [2, 3, 6]
    assert temporal_nms(t, s, None, 5.0) == [2, 7]
    eligible = np.ones(10, bool)
    eligible[2] = False
    assert temporal_nms(t, s, 2, 2.0, eligible) == [3, 6]
    assert temporal_nms(t, [1, 1, 1, np.nan, 0, 0, 0, 0, 0, 0], 2, 0.5) == [0, 1]  # ties: earlier first
    with pytest.raises(ValueError, match="k must be"):
        temporal_nms(t, s, 0, 1.0)


@pytest.mark.parametrize("k,gap", [(1, 0.0), (2, 0.3), (3, 1.0), (4, 1.5)])
def test_candidate_pool_keeps_every_pick_and_stays_small(k, gap):
    rng = np.random.default_rng(k)
    for trial in range(6):
        n = 3000  # 2 minutes at ~25 fps
        times = np.cumsum(rng.uniform(0.02, 0.06, n))
        # slow waves plus noise, sometimes long plateaus (ties)
        scores = np.round(np.sin(times * rng.uniform(0.5, 3)) + 0.3 * rng.standard_normal(n), 1 + trial % 2)
        pool = _CandidatePool(k, gap)
        for p in range(n):
            pool.offer(p, float(scores[p]), p, times, scores)
        picks = temporal_nms(times, scores, k, gap)
        assert set(picks) <= set(pool.images), (picks, sorted(pool.images)[:20])
        assert len(pool.images) < n / 4


# ----------------------------------------------------------------------------- selection


def test_select_region_picks_and_smoothing(spike_video, tmp_path):
    rt = MeanRuntime()
    raw = select_frames(rt, spike_video, top_k=3, min_gap=1.0)
    assert raw.error is None and raw.n_scored == 60
    assert list(raw.frames) == list(range(60))
    np.testing.assert_allclose(raw.times, np.arange(60) / FPS, atol=1e-6)
    # region: the fan's bounding box (text overlay excluded), found on the first frames
    fan = fan_mask()
    rows, cols = np.flatnonzero(fan.any(1)), np.flatnonzero(fan.any(0))
    box = raw.region.box
    assert raw.region.method == "temporal-std"
    assert abs(box.top - rows[0]) <= 4 and abs(box.bottom - rows[-1] - 1) <= 4
    assert abs(box.left - cols[0]) <= 4 and abs(box.right - cols[-1] - 1) <= 4
    assert box.top > 8 or box.left > 30  # the text block (rows 2-8, cols 2-30) is cut away
    # raw scores: the lone spike wins; the other picks are at distinct moments
    frames = [p.frame for p in raw.picks]
    assert frames[0] == 25
    assert abs(frames[1] - 48) <= 1 and abs(frames[2] - 3) <= 1
    assert all(p.image.shape == (box.height, box.width) for p in raw.picks)
    assert np.array_equal(raw.quality, raw.quality_smoothed)
    # smoothing over +-0.5 s: the steady bright stretch beats the lone spike
    smooth = select_frames(rt, spike_video, top_k=1, smooth=0.5)
    assert abs(smooth.best.frame - 48) <= 1
    expected = smooth_scores(smooth.times, smooth.quality, 0.5)
    np.testing.assert_allclose(smooth.quality_smoothed, expected, rtol=1e-12)

    files = write_selection(raw, tmp_path / "out")
    rows_csv = read_csv(files["frames_csv"])
    assert list(rows_csv[0]) == FRAME_COLUMNS and len(rows_csv) == 60
    assert rows_csv[25]["frame"] == "25" and float(rows_csv[25]["quality"]) == pytest.approx(raw.quality[25])
    assert all(r["eligible"] == "1" and r["plane"] == "" for r in rows_csv)
    for name in ("plot", "region", "report", "picks_csv", "json"):
        assert files[name].is_file()
    assert files["pick_1"].name == "best_01_frame0025.png"
    from PIL import Image

    with Image.open(files["pick_1"]) as im:
        assert im.size == (box.width, box.height)
        np.testing.assert_allclose(np.asarray(im) / 255.0, raw.picks[0].image, atol=0.5 / 255 + 1e-6)
    html = files["report"].read_text()
    assert "Selected frames" in html and "spike.mp4" in html


def test_select_sampling_and_manual_crop(spike_video):
    res = select_frames(MeanRuntime(), spike_video, every=2, fps=5, crop=(20, 30, 40, 60), top_k=2, min_gap=0.0)
    # every 2nd frame (0, 2, 4...), then at most 5 per second: one kept frame per 0.2 s slot
    assert list(res.frames) == list(range(0, 60, 4))
    assert res.region.method == "manual" and res.region.box.as_tuple() == (20, 30, 40, 60)
    assert all(p.image.shape == (40, 60) for p in res.picks)
    with pytest.raises(ValueError, match="does not fit"):
        select_frames(MeanRuntime(), spike_video, crop=(0, 0, H + 1, 10))
    with pytest.raises(ValueError, match="no DICOM Sequence of Ultrasound Regions"):
        select_frames(MeanRuntime(), spike_video, region="dicom")
    with pytest.raises(ValueError, match="region must be one of"):
        select_frames(MeanRuntime(), spike_video, region="fan")
    whole = select_frames(MeanRuntime(), spike_video, region="none", every=10)
    assert whole.region.method == "none" and whole.picks[0].image.shape == (H, W)


def test_truncated_video_keeps_frames_before_the_fault(spike_video, tmp_path):
    data = spike_video.read_bytes()
    bad = tmp_path / "cut.mp4"
    bad.write_bytes(data[: int(len(data) * 0.6)])
    res = select_frames(MeanRuntime(), bad, top_k=2, min_gap=1.0)
    assert isinstance(res.error, ScanReadError)
    assert str(bad) in str(res.error) and f"frame {res.error.frame_index}" in str(res.error)
    assert 5 <= res.n_scored < 60 and list(res.frames) == list(range(res.n_scored))
    assert res.picks and res.picks[0].frame == 25  # the spike is in the first 60 %
    # the CLI writes everything, reports the error and exits non-zero
    out = tmp_path / "out"
    rc = main(["select", "--model", str(_tiny_run(tmp_path)), "--input", str(bad), "--out", str(out), "--quiet",
               "--top", "2"])
    assert rc == 1
    assert (out / "frames.csv").is_file() and (out / "report.html").is_file()
    assert len(read_csv(out / "frames.csv")) == res.n_scored
    assert "cut.mp4" in read_csv(out / "summary.csv")[0]["error"]


def test_dicom_region_and_timing(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import ExplicitVRLittleEndian

    levels = [60 + bump(i, 7, 2, 80) for i in range(12)]
    frames = np.stack(capture_frames(levels, seed=3))
    ds = us_dicom_dataset(ExplicitVRLittleEndian, H, W, len(frames))
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.FrameTime = 40.0  # ms: 25 fps
    ds.SequenceOfUltrasoundRegions = DicomSequence([us_region(20, 10, 107, 89)])
    ds.PixelData = frames.tobytes()
    path = tmp_path / "loop.dcm"
    ds.save_as(str(path), enforce_file_format=True)
    assert pydicom.dcmread(str(path)).NumberOfFrames == 12

    res = select_frames(MeanRuntime(), path, top_k=1)
    assert res.kind == "dicom" and res.region.method == "dicom"
    assert res.region.box.as_tuple() == (10, 20, 80, 88)
    np.testing.assert_allclose(res.times, np.arange(12) * 0.04, atol=1e-9)
    assert res.best.frame == 7 and res.best.time == pytest.approx(0.28)
    assert res.best.image.shape == (80, 88)


def test_plane_check_restricts_to_standard_planes(examples_dir, sononet16_path, tmp_path):
    from PIL import Image

    def load(name, gain):
        with Image.open(examples_dir / f"{name}.png") as im:
            a = np.asarray(im.convert("L"), dtype=np.float32)
        return Image.fromarray(np.clip(a * gain, 0, 255).astype(np.uint8))

    # brighter abdominal frames would win without the plane check
    seq = [("ABDOMINAL", 1.4), ("4CH", 1.0), ("ABDOMINAL", 1.3), ("4CH", 0.6), ("3VV", 1.5), ("4CH", 0.8)]
    folder = tmp_path / "seq"
    folder.mkdir()
    for i, (name, gain) in enumerate(seq):
        load(name, gain).save(folder / f"f{i}.png")
    kw = dict(crop=(115, 81, 620, 794), frame_rate=2.0, top_k=2, min_gap=0.0)
    free = select_frames(MeanRuntime(), folder, **kw)
    assert free.best.frame in (0, 4) and free.plane is None
    res = select_frames(MeanRuntime(), folder, plane="4ch", plane_weights=sononet16_path, plane_threshold=0.5, **kw)
    assert res.plane == "4CH"
    assert [n.upper() for n in res.plane_predicted] == [name for name, _ in seq]
    assert list(res.eligible) == [name == "4CH" for name, _ in seq]
    assert all(res.plane_probability[res.eligible] >= 0.5) and all(res.plane_probability[~res.eligible] < 0.5)
    assert [p.frame for p in res.picks] == [1, 5]  # the two brightest 4CH frames, best first
    assert res.picks[0].plane_probability == pytest.approx(res.plane_probability[1])
    files = write_selection(res, tmp_path / "out")
    rows = read_csv(files["frames_csv"])
    assert [r["plane"] for r in rows] == res.plane_predicted
    assert [r["eligible"] for r in rows] == ["0", "1", "0", "1", "0", "1"]
    with pytest.raises(ValueError, match="unknown plane"):
        select_frames(MeanRuntime(), folder, plane="elbow", plane_weights=sononet16_path, **kw)


# ----------------------------------------------------------------------------- CLI


def _tiny_run(tmp_path):
    from crl_uiqa.model import ModelConfig, build_model
    from crl_uiqa.training import save_model

    run = tmp_path / "run"
    if not (run / "model.safetensors").exists():
        torch.manual_seed(0)
        save_model(build_model(ModelConfig(image_size=(48, 64)), pretrained=False), run)
    return run


def test_cli_several_scans_summary(spike_video, tmp_path, capsys):
    other = tmp_path / "spike.mp4"  # same file name in another folder: its own output folder
    shutil.copy(spike_video, other)
    out = tmp_path / "out"
    rc = main(["select", "--model", str(_tiny_run(tmp_path)), "--input", str(spike_video), str(other),
               str(tmp_path / "missing.mp4"), "--out", str(out), "--top", "2", "--every", "3", "--quiet"])
    assert rc == 1  # one scan could not be opened
    printed = capsys.readouterr()
    assert "missing.mp4" in printed.err
    rows = read_csv(out / "summary.csv")
    assert list(rows[0]) == SUMMARY_COLUMNS and len(rows) == 3
    assert [r["frames_scored"] for r in rows] == ["20", "20", "0"]
    assert rows[0]["best_frame"] != "" and rows[0]["best_frame"] == rows[1]["best_frame"]
    # the terminal table: readable headings with units, numbers right-aligned under them (the CSV keeps its names)
    lines = printed.out.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("scan "))
    assert "best_frame" not in lines[head] and "frames_scored" not in lines[head]
    for words in ("frames scored", "best frame", "time (s)", "score", "error"):
        assert words in lines[head], words
    assert "eligible" not in lines[head]  # no plane check: every scored frame was eligible
    assert set(lines[head + 1]) == {"-", " "}
    body = lines[head + 2:head + 5]
    for ln, scan in zip(body, (spike_video, other, tmp_path / "missing.mp4")):  # a long path keeps its end
        cell = ln.split()[0]
        assert cell == str(scan) or (cell.startswith("...") and str(scan).endswith(cell[3:])), (cell, scan)
    score_end = re.search(r"\bscore\b", lines[head]).end()
    assert body[0][:score_end].endswith(f"{float(rows[0]['score']):.4f}")  # right-aligned under its heading
    assert body[2].rstrip().endswith("could not be opened")
    for folder in ("spike", "spike-2"):
        picks = read_csv(out / folder / "picks.csv")
        assert len(picks) == 2 and (out / folder / picks[0]["file"]).is_file()
        frames = read_csv(out / folder / "frames.csv")
        assert len(frames) == 20 and all(math.isfinite(float(r["quality"])) for r in frames)
    assert (out / "report.html").is_file()


def test_cli_summary_table_shows_eligible_frames_only_when_a_plane_check_left_out_some(capsys):
    from crl_uiqa.commands.select import _print_table
    from crl_uiqa.video.select import SUMMARY_COLUMNS

    row = {"scan": "a.mp4", "frames_scored": 120, "eligible": 120, "best_frame": 7, "time": 0.25, "score": 0.5,
           "error": ""}
    _print_table([row], SUMMARY_COLUMNS)
    head, rule, body = capsys.readouterr().out.splitlines()
    assert re.split(r"\s{2,}", head.strip()) == ["scan", "frames scored", "best frame", "time (s)", "score"]
    assert body.split() == ["a.mp4", "120", "7", "0.25", "0.5000"] and len(body) == len(head) == len(rule)
    _print_table([row, {**row, "scan": "b.mp4", "eligible": 3, "score": -1.23456}], SUMMARY_COLUMNS)
    head, _, a, b = capsys.readouterr().out.splitlines()
    assert "eligible frames" in head and b.split() == ["b.mp4", "120", "3", "7", "0.25", "-1.2346"]
    assert a.index("120") + 3 == head.index("frames scored") + len("frames scored")  # numbers right-aligned


# ----------------------------------------------------------------------------- streaming parts, without a video


def test_score_track_matches_the_batch_computation():
    """Frames fed in uneven batches: smoothed scores and picks equal the whole-array computation."""
    from crl_uiqa.video.temporal import ScoreTrack, TrackedFrame

    rng = np.random.default_rng(3)
    n = 500
    times = np.cumsum(rng.uniform(0.02, 0.08, n))
    quality = rng.normal(size=n)
    eligible = rng.uniform(size=n) > 0.3
    track = ScoreTrack(top_k=3, min_gap=0.5, smooth=0.4)
    start = 0
    while start < n:
        stop = min(n, start + int(rng.integers(1, 40)))
        track.add([TrackedFrame(i, float(times[i]), float(quality[i]), bool(eligible[i]), np.full((2, 2), i))
                   for i in range(start, stop)])
        start = stop
    track.finish()
    smoothed = smooth_scores(times, quality, 0.4)
    np.testing.assert_allclose(track.smoothed, smoothed, rtol=1e-12, atol=1e-12)
    expected = temporal_nms(times, smoothed, 3, 0.5, eligible)
    assert track.picks() == expected
    assert [int(track.image(p)[0, 0]) for p in expected] == expected  # the held images are the picked frames
    assert len(track.pool.images) < n // 4  # most images were released on the way


class _ConstantPlanes(torch.nn.Module):
    """A plane classifier that calls every frame Background (p = 0.77) and 4CH (p = 0.23)."""

    embedding_layers = ("probs",)
    class_names = ("Background", "4CH")
    input_size = (32, 32)

    def embed(self, x, layer):
        return torch.tensor([[0.77, 0.23]]).repeat(x.shape[0], 1)


def test_no_eligible_frame_says_why_and_marks_no_best(spike_video, tmp_path):
    res = select_frames(MeanRuntime(), spike_video, every=3, top_k=2, plane="4ch", plane_model=_ConstantPlanes())
    assert res.picks == [] and res.best is None
    assert res.plane_census() == "all 20 frames classified Background; highest 4CH probability 0.23 (threshold 0.5)"
    assert res.shortfall() == ("0 of the 2 frames asked for: no frame was eligible (all 20 frames classified "
                               "Background; highest 4CH probability 0.23 (threshold 0.5))")
    from crl_uiqa.reporting.selection import quality_figure

    fig = quality_figure(res)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert not any("best" in lab for lab in labels) and len(fig.axes) == 1  # no star, no thumbnail
    html = (write_selection(res, tmp_path / "out")["report"]).read_text()
    assert "all 20 frames classified Background" in html


def test_fewer_picks_than_asked_say_why(spike_video):
    res = select_frames(MeanRuntime(), spike_video, top_k=5, min_gap=1.5)
    assert len(res.picks) == 2  # a 3 s scan holds two moments 1.5 s apart
    assert res.shortfall() == "2 of the 5 frames asked for: the other 58 eligible frames are within 1.5 s " \
                              "(--min-gap) of a pick"
    assert select_frames(MeanRuntime(), spike_video, every=30, top_k=3, min_gap=0).shortfall() == \
        "2 of the 3 frames asked for: only 2 of 2 scored frames were eligible"
    assert select_frames(MeanRuntime(), spike_video, top_k=1).shortfall() is None


def test_cli_scan_names_stay_inside_out(spike_video, tmp_path, capsys):
    """Scans called ``...mp4`` and ``..mp4`` (names ``..`` and ``.``) get folders inside --out."""
    inputs = []
    for sub, name in (("a", "...mp4"), ("b", "..mp4"), ("c", "spike.mp4")):
        (tmp_path / sub).mkdir()
        inputs.append(shutil.copy(spike_video, tmp_path / sub / name))
    run = _tiny_run(tmp_path)
    out = tmp_path / "deep" / "out"
    before = sorted(p.name for p in tmp_path.iterdir())
    rc = main(["select", "--model", str(run), "--input", *map(str, inputs), "--out", str(out),
               "--every", "10", "--quiet", "--no-report"])
    assert rc == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "deep"])  # nothing beside --out
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["out"]
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(folders) == 3 and "spike" in folders
    assert all((out / f / "frames.csv").is_file() for f in folders)


def test_cli_weights_option_has_one_name(spike_video, tmp_path, capsys):
    """select takes the P(.) weights as --weights like every command; --plane-weights still works, unlisted."""
    from crl_uiqa.cli import build_parser

    sub = build_parser()
    args = sub.parse_args(["select", "--model", "m", "--input", "s", "--out", "o", "--weights", "w.npz"])
    assert args.weights == "w.npz"
    args = sub.parse_args(["select", "--model", "m", "--input", "s", "--out", "o", "--plane-weights", "w.npz"])
    assert args.weights == "w.npz"
    with pytest.raises(SystemExit):
        main(["select", "--help"])
    assert "--plane-weights" not in capsys.readouterr().out


def test_select_takes_frames_in_memory_as_their_image_sequence(tmp_path):
    """Frames a pipeline holds (an (N, H, W) uint8 array) select as the same frames saved as a PNG sequence:
    same scores, times and picks; a frame that cannot be converted is named by its index."""
    from PIL import Image

    from crl_uiqa.scan import ArrayScan

    levels = [60 + bump(i, 12, 3, 60) + (80 if i == 5 else 0) for i in range(24)]
    frames = np.stack(capture_frames(levels))
    (tmp_path / "seq").mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / "seq" / f"f{i:02d}.png")
    kw = dict(top_k=2, min_gap=0.2, smooth=0.1, frame_rate=12.0)
    mem = select_frames(MeanRuntime(), frames, **kw)
    disk = select_frames(MeanRuntime(), tmp_path / "seq", **kw)
    assert mem.error is None and mem.n_scored == 24 and mem.kind == "array" and mem.name == "frames"
    np.testing.assert_allclose(mem.quality, disk.quality, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(mem.times, np.arange(24) / 12.0, atol=1e-9)
    assert [p.frame for p in mem.picks] == [p.frame for p in disk.picks]
    # a list of frames, every other one
    half = select_frames(MeanRuntime(), list(frames), every=2, top_k=1)
    assert half.n_scored == 12 and list(half.frames) == list(range(0, 24, 2))
    # a bad frame stops the scan there, the frames before it kept (as a damaged file)
    bad = list(frames[:3]) + [frames[3].astype(np.float32)]  # 0-255 data as float: refused, not clipped
    res = select_frames(MeanRuntime(), bad, top_k=1)
    assert res.n_scored == 3 and res.error is not None and "frame 3" in str(res.error)
    with pytest.raises(ScanReadError, match="no frames"):
        ArrayScan([])


def test_a_crop_below_the_smallest_image_side_is_refused_before_any_work(tmp_path, capsys):
    # `--crop 0 0 2 2` scored every frame as a 2x2 image blown up to the model's size and wrote a report of it;
    # images below 4 pixels a side are refused everywhere else
    frames = np.stack(fan_frames([60, 120, 90]))
    with pytest.raises(ValueError, match=r"is 2x2 pixels, below the model pipeline's minimum of 4 per side"):
        select_frames(MeanRuntime(), frames, frame_rate=10, crop=(0, 0, 2, 2))
    res = select_frames(MeanRuntime(), frames, frame_rate=10, crop=(0, 0, 4, 4))  # the minimum itself is fine
    assert res.n_scored == 3 and res.picks[0].image.shape == (4, 4)
    run = _helpers.tiny_run(tmp_path / "run")
    rc = main(["select", "--model", str(run), "--input", str(tmp_path / "nothing-read.mp4"), "--crop", "0", "0",
               "3", "200", "--out", str(tmp_path / "picks"), "--quiet"])
    assert rc == 1 and "is 3x200 pixels" in capsys.readouterr().err and not (tmp_path / "picks").exists()


def test_plane_threshold_out_of_range_is_refused_without_a_plane_too(tmp_path, capsys):
    # --plane-threshold 1.5 without --plane was silently ignored
    frames = np.stack(fan_frames([60, 120, 90]))
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="plane_threshold"):
            select_frames(MeanRuntime(), frames, frame_rate=10, plane_threshold=bad)
    assert select_frames(MeanRuntime(), frames, frame_rate=10, plane_threshold=1.0).n_scored == 3
    run = _helpers.tiny_run(tmp_path / "run")
    rc = main(["select", "--model", str(run), "--input", str(tmp_path / "nothing-read.mp4"), "--plane-threshold",
               "1.5", "--plane", "abdominal", "--out", str(tmp_path / "picks"), "--quiet"])
    assert rc == 1 and "--plane-threshold) must be <= 1, got 1.5" in capsys.readouterr().err
    # a valid threshold without --plane checked nothing, silently (trial 8): refused before any work
    rc = main(["select", "--model", str(run), "--input", str(tmp_path / "nothing-read.mp4"), "--plane-threshold",
               "0.8", "--out", str(tmp_path / "picks"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and "--plane-threshold needs --plane" in err and not (tmp_path / "picks").exists()


def test_frames_that_are_neither_a_path_nor_in_memory_get_one_clear_line():
    # a generator of frames failed deep in pathlib: "TypeError: expected str, bytes or os.PathLike object"
    from crl_uiqa.errors import ConfigError

    frames = fan_frames([60, 120, 90])
    with pytest.raises(ConfigError, match=r"frames in memory .*list\(frames\)\); got generator"):
        select_frames(MeanRuntime(), (f for f in frames), frame_rate=10)
    with pytest.raises(ConfigError, match="got an empty list"):
        select_frames(MeanRuntime(), [], frame_rate=10)
    assert select_frames(MeanRuntime(), list(frames), frame_rate=10).best.frame == 1


def test_why_picked_says_the_rule_and_where_each_pick_stands(spike_video, tmp_path):
    """The report's "Why these frames": the rule that picked each frame, and its score against the scan's."""
    from crl_uiqa.reporting.selection import why_picked

    res = select_frames(MeanRuntime(), spike_video, top_k=6, min_gap=0.5)
    text = why_picked(res)
    q = res.quality_smoothed
    assert text.startswith("Each of the 60 scored frames got a quality score (higher = better).")
    assert f"run from {q.min():.3f} to {q.max():.3f} (median {np.median(q):.3f})" in text
    lines = text.split("\n\n")[1].splitlines()
    assert len(lines) == len(res.picks) == 6
    assert lines[0] == f"- **#1: frame 25 at 1.25 s**, score {q[25]:.3f}: the highest of the 60 eligible frames."
    for p, line in zip(res.picks[1:], lines[1:]):
        pct = f"{100 * np.mean(q < p.quality_smoothed):.0f} %"
        assert line.startswith(f"- **#{p.rank}: frame {p.frame} at {p.time:.2f} s**, score "
                               f"{p.quality_smoothed:.3f}, better than {pct} of this scan's frames")
        # a pick below the scan's median is called weak, and why it was picked anyway
        assert ("weak frame, picked only because 6 picks at least 0.5 s apart were asked for" in line) == \
            (p.quality_smoothed < np.median(q))
    smooth = why_picked(select_frames(MeanRuntime(), spike_video, top_k=1, smooth=0.5))
    assert "averaged over \u00b10.5 s" in smooth and "further pick" not in smooth
    html = write_selection(res, tmp_path / "out")["report"].read_text()
    assert ">Why these frames</h2>" in html and "How to read the scores" in html
    # no eligible frame: said in the why section too
    none = select_frames(MeanRuntime(), spike_video, every=3, top_k=2, plane="4ch", plane_model=_ConstantPlanes())
    assert "- No frame was picked: no frame reached the 4CH probability 0.5." in why_picked(none)
    assert "Only frames that SonoNet-16 takes for the 4CH plane (probability at least 0.5) could be picked: " \
           "0 of 20" in why_picked(none)


def test_a_one_frame_scan_is_explained_and_drawn_plainly(tmp_path):
    from crl_uiqa.reporting.selection import quality_figure, why_picked

    frames = np.stack(capture_frames([120]))
    res = select_frames(MeanRuntime(), frames, region="none")
    assert res.n_scored == 1 and res.best.frame == 0
    text = why_picked(res)
    assert text == (f"The scan has one scored frame; its quality score (higher = better) is {res.quality[0]:.3f}."
                    "\n\n- **#1: frame 0**: the only frame.")
    ax = quality_figure(res).axes[0]
    assert ax.get_xlim() == (-1.0, 1.0)  # not an axis of +-1e-17 around the one frame


def test_frames_below_the_smallest_side_are_refused_as_images_are(tmp_path, capsys):
    """A 2x2 video was scored (a 2x2 image is skipped as too small); now one line naming the scan (trial 4)."""
    from crl_uiqa.errors import ScanError

    with pytest.raises(ScanError, match=r"frames: its frames are 2x6 pixels, below the model pipeline's minimum of 4"):
        select_frames(MeanRuntime(), np.zeros((5, 2, 6), np.uint8), frame_rate=10)
    video = _helpers.write_video(tmp_path / "tiny.mp4", [np.full((2, 2), v, np.uint8) for v in range(0, 200, 20)],
                                 fps=10)
    for argv in (["live", "--input", str(video), "--no-realtime"], ["select", "--input", str(video), "--out",
                                                                      str(tmp_path / "out"), "--region", "none"]):
        assert main([*argv, "--model", str(_helpers.tiny_run(tmp_path / "run")), "--quiet"]) == 1
        (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert line.endswith(f"{video}: its frames are 2x2 pixels, below the model pipeline's minimum of 4 per side")


def test_a_folder_with_videos_says_it_skips_them(spike_video, tmp_path, capsys, caplog):
    """A folder is one scan of its image frames: videos in it were skipped without a word (select and live); now a
    warning naming how many and how to score one, and an error when the folder holds only videos."""
    from crl_uiqa.io import write_gray_png

    run = _tiny_run(tmp_path)
    only = tmp_path / "only"
    only.mkdir()
    shutil.copy(spike_video, only / "a.mp4")
    for command in (["select", "--out", str(tmp_path / "o1")], ["live", "--no-realtime"]):
        rc = main([command[0], "--model", str(run), "--input", str(only), *command[1:], "--quiet"])
        err = capsys.readouterr().err
        assert rc == 1
        assert f"{only}: holds 1 video file(s) and no image frames" in err and f"--input {only / 'a.mp4'}" in err
        assert len(err.strip().splitlines()) == 1
    mixed = tmp_path / "mixed"
    shutil.copytree(only, mixed)
    for i in range(3):
        write_gray_png(mixed / f"{i:02d}.png", np.full((H, W), 0.2 + 0.1 * i))
    for command in (["select", "--out", str(tmp_path / "o2")], ["live", "--no-realtime"]):
        caplog.clear()
        with caplog.at_level("WARNING"):
            rc = main([command[0], "--model", str(run), "--input", str(mixed), *command[1:], "--quiet"])
        assert rc == 0
        said = [r.getMessage() for r in caplog.records if "video file(s)" in r.getMessage()]
        assert len(said) == 1 and said[0].startswith(f"{mixed}: 1 video file(s) in the folder skipped")
        assert f"--input {mixed / 'a.mp4'}" in said[0]
    # a quoted glob of videos is read as one scan of image frames too: it said only "no image files match" (trial 8)
    rc = main(["select", "--model", str(run), "--input", str(only / "*.mp4"), "--out", str(tmp_path / "o3"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert f"{only / '*.mp4'}: matches 1 video file(s) and no image frames; a glob pattern is read" in err
    assert f"--input {only / 'a.mp4'}" in err
