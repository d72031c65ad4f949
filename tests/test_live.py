"""Tests for crl_uiqa.live and `crl-uiqa live`: real-time pacing, frame dropping, end of stream."""
from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")

import _helpers  # noqa: E402
from crl_uiqa.cli import main  # noqa: E402
from crl_uiqa.export import load_runtime  # noqa: E402
from crl_uiqa.files import read_csv  # noqa: E402
from crl_uiqa.live import LatestFrameSlot, is_camera, open_camera, run_live  # noqa: E402

torch.set_num_threads(1)

N, FPS = 40, 20  # a 2-second clip
H, W = 48, 64


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("live") / "clip.mp4"
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
    rng = np.random.default_rng(0)
    for i in range(N):
        img = np.clip(rng.normal(40 + 4 * i, 10, (H, W)), 0, 255).astype(np.uint8)  # brighter and brighter
        for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="gray")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


@pytest.fixture(scope="module")
def model_runtime(tmp_path_factory):
    from crl_uiqa.model import ModelConfig, build_model

    torch.manual_seed(0)
    return load_runtime(build_model(ModelConfig(image_size=(32, 48)), pretrained=False), "torch")


def MeanRuntime(delay=0.0):  # noqa: N802 - reads like the class it builds
    """Score = mean intensity at 32x48, optionally slowed down by ``delay`` seconds per call."""
    return _helpers.MeanRuntime((32, 48), delay)


def test_latest_frame_slot_overwrites_and_counts():
    slot = LatestFrameSlot()
    for i in range(3):
        slot.put(i)
    assert slot.dropped == 2 and slot.get(timeout=0) == 2
    assert slot.get(timeout=0.01) is None and not slot.closed
    slot.put(3)
    slot.close()
    slot.put(4)  # ignored once closed
    assert slot.get() == 3 and slot.get() is None and slot.closed and slot.dropped == 2


def test_latest_frame_slot_blocking_mode_keeps_everything():
    slot = LatestFrameSlot(overwrite=False)
    got = []

    def consume():
        while (item := slot.get()) is not None:
            got.append(item)
            time.sleep(0.002)

    t = threading.Thread(target=consume)
    t.start()
    for i in range(30):
        slot.put(i)
    slot.close()
    t.join(5)
    assert got == list(range(30)) and slot.dropped == 0


def test_slow_scorer_drops_frames_and_ends_with_the_stream(clip):
    rt = MeanRuntime(delay=0.15)  # ~6 frames/s against a 20 fps stream
    statuses = []
    t0 = time.perf_counter()
    res = run_live(rt, clip, region="none", on_status=statuses.append, status_interval=0.0)
    wall = time.perf_counter() - t0
    assert res.received == N
    assert res.dropped > N / 3 and res.scored + res.dropped == res.received
    assert 3 <= res.scored <= 20
    assert rt.calls == res.scored
    # the scorer always took the newest frame, and the last frame of the stream was scored
    assert np.all(np.diff(res.frames) > 0) and res.frames[-1] == N - 1
    # real-time pacing: the clip lasts (N - 1) / FPS seconds; the run ends with it
    assert (N - 1) / FPS - 0.05 <= wall <= (N - 1) / FPS + 1.0
    np.testing.assert_allclose(res.times, res.frames / FPS, atol=1e-6)
    # frames get brighter: the best one is the last scored
    assert res.best_frame == N - 1 and res.best_quality == pytest.approx(res.scores.max())
    assert statuses and statuses[-1].scored == res.scored and statuses[-1].dropped == res.dropped
    assert "dropped" in statuses[-1].line() and "best" in res.summary()


def test_no_realtime_scores_every_frame(clip, model_runtime):
    res = run_live(model_runtime, clip, realtime=False, region="none")
    assert res.received == N and res.scored == N and res.dropped == 0
    assert list(res.frames) == list(range(N)) and np.isfinite(res.scores).all()
    assert res.best_image is not None and res.best_image.shape == (H, W)


def test_region_detection_frames_are_scored_too(clip):
    res = run_live(MeanRuntime(), clip, realtime=False, region="auto", region_frames=10)
    assert res.region is not None and res.scored == N
    res = run_live(MeanRuntime(), clip, realtime=False, crop=(4, 8, 30, 40))
    assert res.region.method == "manual" and res.best_image.shape == (30, 40)


def test_no_realtime_live_scores_as_select_with_the_same_region_frames(clip, model_runtime):
    """The README's promise: with select's region frames (or a crop, or --region none), live --no-realtime scores
    every frame as select does; by default live finds the region on fewer frames, so its region may differ."""
    from crl_uiqa.select import REGION_FRAMES, select_frames

    for kw in ({"region_frames": REGION_FRAMES}, {"region": "none"}, {"crop": (4, 8, 30, 40)}):
        live = run_live(model_runtime, clip, realtime=False, **kw)
        sel = select_frames(model_runtime, clip, **kw)
        assert list(live.frames) == list(sel.frames)
        np.testing.assert_allclose(live.scores, sel.quality, rtol=1e-5, atol=1e-6)
        assert live.best_frame == sel.frames[int(np.argmax(sel.quality))]


def test_camera_errors():
    assert is_camera(0) and is_camera("1") and not is_camera("clip.mp4") and not is_camera(True)
    with pytest.raises(ValueError, match="cannot open camera 97"):
        open_camera(97)
    with pytest.raises(ValueError, match="applies to files only"):
        run_live(MeanRuntime(), 97, realtime=False)


def test_cli_live(clip, tmp_path, capsys):
    from crl_uiqa.model import ModelConfig, build_model
    from crl_uiqa.training import save_model

    torch.manual_seed(0)
    save_model(build_model(ModelConfig(image_size=(32, 48)), pretrained=False), tmp_path / "run")
    rc = main(["live", "--model", str(tmp_path / "run"), "--input", str(clip), "--no-realtime", "--region", "none",
               "--plot", str(tmp_path / "live.png"), "--best", str(tmp_path / "best.png"),
               "--csv", str(tmp_path / "live.csv")])
    assert rc == 0
    out = capsys.readouterr().out
    assert f"received {N} frames, scored {N}, dropped 0" in out
    assert (tmp_path / "live.png").is_file() and (tmp_path / "best.png").is_file()
    assert len(read_csv(tmp_path / "live.csv")) == N


def test_live_track_running_mean_and_best_without_a_stream():
    from crl_uiqa.live import LiveTrack
    from crl_uiqa.scan import Frame

    track = LiveTrack()
    img = np.zeros((2, 2), np.float32)
    for i, (t, q) in enumerate([(0.0, 1.0), (1.0, 3.0), (1.5, float("nan")), (3.0, 2.0)]):
        track.add(Frame(i, t, img + i), q)
    a1 = 1 - math.exp(-1.0)  # 1 s after the first frame, time constant 1 s
    r1 = 1.0 + a1 * (3.0 - 1.0)
    a2 = 1 - math.exp(-2.0)  # the NaN frame neither moves the mean nor its clock
    assert track.running == pytest.approx(r1 + a2 * (2.0 - r1), rel=1e-12)
    assert (track.best_frame, track.best_time, track.best_quality) == (1, 1.0, 3.0)
    assert float(track.best_image[0, 0]) == 1.0
    st = track.status(received=6, dropped=2, elapsed=0.5)
    assert (st.scored, st.received, st.dropped, st.quality, st.time) == (4, 6, 2, 2.0, 3.0)


class _CtrlCRuntime(_helpers.MeanRuntime):
    """The mean-intensity scorer, with Ctrl-C arriving while it scores its ``at``-th frame."""

    def __init__(self, at: int):
        super().__init__((32, 48))
        self.at = at

    def _run(self, batch):
        if self.calls + 1 == self.at:
            self.calls += 1
            raise KeyboardInterrupt
        return super()._run(batch)


def test_ctrl_c_ends_the_session_and_keeps_what_was_scored(clip):
    # Ctrl-C is how a camera stream is stopped: it used to propagate and lose every score
    try:
        res = run_live(_CtrlCRuntime(at=4), clip, realtime=False, region="none", batch_size=1)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped run_live: the frames scored before it were lost")
    assert res.interrupted and res.error is None
    assert list(res.frames) == [0, 1, 2] and res.scored == 3
    assert res.best_frame == 2 and res.best_image is not None  # the clip gets brighter
    assert res.summary().endswith("; interrupted")
    full = run_live(MeanRuntime(), clip, realtime=False, region="none")
    assert not full.interrupted
    np.testing.assert_allclose(res.scores, full.scores[:3], rtol=1e-6)


def test_cli_live_ctrl_c_writes_the_frames_scored_so_far(clip, tmp_path, capsys, monkeypatch):
    from crl_uiqa.video.live import LiveTrack

    add = LiveTrack.add

    def add_then_ctrl_c(self, frame, score):  # Ctrl-C right after the 5th frame is scored
        add(self, frame, score)
        if len(self.scores) == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(LiveTrack, "add", add_then_ctrl_c)
    run = _helpers.tiny_run(tmp_path / "run", image_size=(32, 48))
    rc = main(["live", "--model", str(run), "--input", str(clip), "--no-realtime", "--region", "none", "--quiet",
               "--plot", str(tmp_path / "live.png"), "--best", str(tmp_path / "best.png"),
               "--csv", str(tmp_path / "live.csv")])
    out, err = capsys.readouterr()
    assert rc == 130 and "interrupted" in err and "scored 5" in out
    assert [r["frame"] for r in read_csv(tmp_path / "live.csv")] == ["0", "1", "2", "3", "4"]
    assert (tmp_path / "live.png").is_file() and (tmp_path / "best.png").is_file()


def test_cli_live_checks_its_output_files_before_the_stream(clip, tmp_path, capsys):
    # a --csv that cannot be written failed only after the whole stream was scored, losing it
    run = _helpers.tiny_run(tmp_path / "run", image_size=(32, 48))
    (tmp_path / "afile").write_text("x")
    rc = main(["live", "--model", str(run), "--input", str(clip), "--no-realtime", "--region", "none", "--quiet",
               "--best", str(tmp_path / "new" / "deeper" / "best.png"), "--csv", str(tmp_path / "afile" / "x.csv")])
    out, err = capsys.readouterr()
    assert rc == 1 and "afile" in err and "received" not in out
    assert not (tmp_path / "new").exists()  # the refused run leaves no folder of its outputs behind


def test_cli_live_says_when_nothing_was_scored_for_plot_and_best(clip, tmp_path, capsys):
    # a session that scored nothing wrote an empty --csv and exited 0, silently leaving an earlier session's
    # --best and --plot in place as if they were this one's
    run = _helpers.tiny_run(tmp_path / "run", image_size=(32, 48))
    old = tmp_path / "best.png"
    old.write_bytes(b"an earlier session's picture")
    rc = main(["live", "--model", str(run), "--input", str(clip), "--region", "none", "--quiet",
               "--duration", "1e-9", "--best", str(old), "--plot", str(tmp_path / "plot.png"),
               "--csv", str(tmp_path / "live.csv")])
    out, err = capsys.readouterr()
    assert "scored 0" in out and rc == 1
    assert err.strip().splitlines()[-1] == (f"crl-uiqa live: error: no frame was scored, so --plot "
                                            f"{tmp_path / 'plot.png'} and --best {old} were not written")
    assert read_csv(tmp_path / "live.csv") == [] and not (tmp_path / "plot.png").exists()


def test_cli_live_refuses_two_outputs_that_are_one_file(clip, tmp_path, capsys, monkeypatch):
    # --csv out --best ./out: the CSV replaced the best frame, and both were reported written
    run = _helpers.tiny_run(tmp_path / "run", image_size=(32, 48))
    monkeypatch.chdir(tmp_path)
    rc = main(["live", "--model", str(run), "--input", str(clip), "--no-realtime", "--region", "none", "--quiet",
               "--best", "./out", "--csv", "out", "--plot", "plot.png"])
    out, err = capsys.readouterr()
    assert rc == 1 and "received" not in out
    assert err.strip() == "crl-uiqa live: error: --best ./out and --csv out are the same file: each output needs its own path"
    assert not (tmp_path / "out").exists() and not (tmp_path / "plot.png").exists()


# ----------------------------------------------------------------------------- --no-realtime in batches


def _prefix_state(scores, frames, times, k):
    """(quality, running quality, best frame, best quality) after the first ``k`` scores, as LiveTrack adds them."""
    from crl_uiqa.live import LiveTrack
    from crl_uiqa.scan import Frame

    track = LiveTrack()
    for f, t, q in zip(frames[:k], times[:k], scores[:k]):
        track.add(Frame(int(f), float(t), np.zeros((1, 1), np.float32)), q)
    return track.scores[-1], track.running, track.best_frame, track.best_quality


def test_no_realtime_batches_score_as_select_and_as_one_frame_per_pass(clip, model_runtime):
    from crl_uiqa.select import REGION_FRAMES, select_frames

    for kw in ({"region_frames": REGION_FRAMES}, {"region": "none"}):
        one = run_live(model_runtime, clip, realtime=False, batch_size=1, **kw)
        for bs in (7, 32):  # 7: the region frames (30) end mid-batch and the last batch is short
            statuses = []
            live = run_live(model_runtime, clip, realtime=False, batch_size=bs, on_status=statuses.append,
                            status_interval=0.0, **kw)
            sel = select_frames(model_runtime, clip, batch_size=bs, **kw)
            assert list(live.frames) == list(sel.frames) == list(one.frames) == list(range(N))
            np.testing.assert_allclose(live.scores, sel.quality, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(live.scores, one.scores, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(live.times, one.times, atol=1e-9)
            assert (live.received, live.scored, live.dropped) == (N, N, 0)
            assert live.best_frame == one.best_frame == sel.frames[int(np.argmax(sel.quality))]
            assert live.best_time == one.best_time and live.best_quality == pytest.approx(one.best_quality, abs=1e-6)
            np.testing.assert_array_equal(live.best_image, one.best_image)
            # one status per forward pass (the interval is 0), each the state after that many frames
            assert [st.scored for st in statuses[:-1]] == [min(k, N) for k in range(bs, N + bs, bs)]
            assert statuses[-1].scored == N
            for st in statuses:
                q, running, best, best_q = _prefix_state(one.scores, one.frames, one.times, st.scored)
                assert st.quality == pytest.approx(q, abs=1e-6)
                assert st.running_quality == pytest.approx(running, abs=1e-6)
                assert st.best_frame == best and st.best_quality == pytest.approx(best_q, abs=1e-6)


def test_no_realtime_batches_count_forward_passes_and_real_time_does_not_batch(clip):
    rt = MeanRuntime()
    res = run_live(rt, clip, realtime=False, region="none", batch_size=7)
    assert rt.calls == math.ceil(N / 7) and res.scored == N
    rt = MeanRuntime()  # region frames held (15), then batches of 7 from the stream: as select cuts them
    res = run_live(rt, clip, realtime=False, region_frames=15, batch_size=7)
    assert rt.calls == math.ceil(N / 7) and res.scored == N
    rt = MeanRuntime()  # a stream shorter than one batch: one pass at its end
    res = run_live(rt, clip, realtime=False, region="none", batch_size=4 * N)
    assert rt.calls == 1 and list(res.frames) == list(range(N))
    rt = MeanRuntime()  # ... and shorter than the region frames too
    res = run_live(rt, clip, realtime=False, region_frames=N + 5, batch_size=4 * N)
    assert rt.calls == 1 and res.scored == N and res.region is not None
    one = run_live(MeanRuntime(), clip, realtime=False, region_frames=N + 5, batch_size=1)
    np.testing.assert_allclose(res.scores, one.scores, rtol=1e-6)
    rt = MeanRuntime(delay=0.05)  # real time: one frame per pass whatever batch_size says
    res = run_live(rt, clip, region="none", batch_size=8)
    assert rt.calls == res.scored


def test_batch_size_is_checked_before_any_work(clip, tmp_path, capsys):
    from crl_uiqa.errors import ConfigError

    # a batch's frames are held until it is full: 10**8 held every frame of a long video (validate.MAX_BATCH)
    for bad in (0, -3, 2.5, True, 4097, 10**8):
        with pytest.raises(ConfigError, match=r"^batch_size \(--batch-size\) must be"):
            run_live(MeanRuntime(), clip, realtime=False, batch_size=bad)
    run = _helpers.tiny_run(tmp_path / "run", image_size=(32, 48))
    for bad, why in (("0", ">= 1, got 0"), ("100000000", "<= 4096, got 100000000")):
        for cmd in (["live", "--no-realtime"], ["select", "--out", str(tmp_path / "sel")]):
            rc = main([*cmd, "--model", str(run), "--input", str(clip), "--batch-size", bad, "--quiet"])
            out, err = capsys.readouterr()
            assert rc == 1 and "received" not in out
            assert err.strip() == f"crl-uiqa {cmd[0]}: error: batch_size (--batch-size) must be {why}"
    assert not (tmp_path / "sel").exists()


def test_counts_that_hold_frames_are_bounded_before_any_work(clip, tmp_path, capsys):
    """--top holds the images of twice as many candidates and --region-frames the frames detection looks at, at the
    source resolution, until the scan ends or the region is found: each has a bound set by what it holds."""
    from crl_uiqa.errors import ConfigError
    from crl_uiqa.video.framing import MAX_REGION_FRAMES, RegionPolicy
    from crl_uiqa.video.select import MAX_TOP_K, SelectionSettings

    assert RegionPolicy.create(frames=MAX_REGION_FRAMES).frames == MAX_REGION_FRAMES
    assert SelectionSettings.create(top_k=MAX_TOP_K).top_k == MAX_TOP_K
    with pytest.raises(ConfigError, match=r"^region_frames \(--region-frames\) must be >= 1, got 0$"):
        RegionPolicy.create(frames=0)
    run = _helpers.tiny_run(tmp_path / "run", image_size=(32, 48))
    for cmd, line in ((["live", "--region-frames", "301"], "region_frames (--region-frames) must be <= 300, got 301"),
                      (["select", "--top", "1001", "--out", str(tmp_path / "sel")], "top_k (--top) must be <= 1000, "
                       "got 1001")):
        assert main([*cmd, "--model", str(run), "--input", str(clip), "--quiet"]) == 1
        out, err = capsys.readouterr()
        assert "received" not in out and err.strip() == f"crl-uiqa {cmd[0]}: error: {line}"
    assert not (tmp_path / "sel").exists()


def test_ctrl_c_mid_batch_keeps_the_batches_scored_before_it(clip):
    res = run_live(_CtrlCRuntime(at=3), clip, realtime=False, region="none", batch_size=8)
    assert res.interrupted and res.error is None
    assert list(res.frames) == list(range(16)) and res.scored == 16  # two batches; the third was cut short
    full = run_live(MeanRuntime(), clip, realtime=False, region="none", batch_size=1)
    np.testing.assert_allclose(res.scores, full.scores[:16], rtol=1e-6)
    assert res.best_frame == 15 and res.best_image is not None


def test_read_error_mid_batch_keeps_every_frame_read_before_it(tmp_path):
    from crl_uiqa.scan import ScanReadError
    from crl_uiqa.select import select_frames

    rng = np.random.default_rng(0)  # the clip's frames, with the index first so that a cut file keeps it
    frames = [np.clip(rng.normal(40 + 4 * i, 10, (H, W)), 0, 255).astype(np.uint8) for i in range(N)]
    data = _helpers.write_video(tmp_path / "clip.mp4", frames, fps=FPS, options={"movflags": "+faststart"}).read_bytes()
    bad = tmp_path / "cut.mp4"
    bad.write_bytes(data[: int(len(data) * 0.6)])
    one = run_live(MeanRuntime(), bad, realtime=False, region="none", batch_size=1)
    assert isinstance(one.error, ScanReadError) and 8 < one.scored < N
    bs = 8 if one.scored % 8 else 7  # the fault comes in the middle of a batch
    res = run_live(MeanRuntime(), bad, realtime=False, region="none", batch_size=bs)
    sel = select_frames(MeanRuntime(), bad, region="none", batch_size=bs)
    assert isinstance(res.error, ScanReadError) and str(res.error) == str(one.error)
    assert list(res.frames) == list(one.frames) == list(sel.frames) == list(range(one.scored))
    np.testing.assert_allclose(res.scores, one.scores, rtol=1e-6)
    np.testing.assert_allclose(res.scores, sel.quality, rtol=1e-6)
    assert res.best_frame == one.best_frame


def test_no_realtime_stop_event_ends_the_session_after_the_batch_in_hand(clip):
    stop = threading.Event()
    res = run_live(MeanRuntime(), clip, realtime=False, region="none", batch_size=8, stop_event=stop,
                   on_status=lambda st: stop.set(), status_interval=0.0)
    assert not res.interrupted and res.error is None
    assert list(res.frames) == list(range(8)) and res.received == 8
