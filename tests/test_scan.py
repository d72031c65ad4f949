"""Tests for crl_uiqa.scan: videos, DICOM cine loops and image sequences as frame streams.

Every input is built here: videos written with PyAV from synthetic frames
whose mean intensity encodes the frame index (so decoded order and sampling
can be checked through lossy compression), DICOM files written with pydicom,
PNG sequences written with Pillow, and truncated copies of each.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")
pydicom = pytest.importorskip("pydicom")

from PIL import Image  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.sequence import Sequence as DicomSequence  # noqa: E402
from pydicom.uid import (  # noqa: E402
    MPEG4HP41,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

import _helpers  # noqa: E402
from _helpers import us_dicom_dataset, us_region  # noqa: E402
from crl_uiqa.io import read_gray  # noqa: E402
from crl_uiqa.region import Region  # noqa: E402
from crl_uiqa.scan import (  # noqa: E402
    DEFAULT_FRAME_RATE,
    FrameSampler,
    ScanReadError,
    natural_key,
    open_scan,
    read_image_file,
    scan_kind,
)

H, W = 120, 160
N = 20
FPS = 10


def level(i: int) -> int:
    """Mean gray level encoding frame i."""
    return 10 + 10 * i


def noisy_frames(n=N, h=H, w=W, seed=0):
    rng = np.random.default_rng(seed)
    return [np.clip(level(i) + rng.normal(0, 20, (h, w)), 0, 255).astype(np.uint8) for i in range(n)]


def write_video(path, frames, *, fps=FPS, **kw):
    return _helpers.write_video(path, frames, fps=fps, **kw)


def truncate(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def frame_means(scan):
    return [(f.index, f.image.mean() * 255) for f in scan]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    frames = noisy_frames()
    return {
        "mp4": write_video(d / "scan.mp4", frames, options={"movflags": "+faststart"}),
        "mp4_moov_at_end": write_video(d / "late.mp4", frames),
        "avi": write_video(d / "scan.avi", frames, codec="mpeg4"),
        "avi_h264": write_video(d / "h264.avi", frames),
        "mov": write_video(d / "scan.mov", frames, options={"movflags": "+faststart"}),
    }


# ----------------------------------------------------------------------------- sampler


def test_frame_sampler_every_and_fps():
    s = FrameSampler(every=3)
    assert [i for i in range(10) if s.keep(i, i / 10)] == [0, 3, 6, 9]
    # 10 fps source resampled to 4 fps: first frame of each 0.25 s slot.
    s = FrameSampler(fps=4)
    assert [i for i in range(20) if s.keep(i, i / 10)] == [0, 3, 5, 8, 10, 13, 15, 18]
    # every first, then fps: frames 0,2,4.. (0.2 s apart) at <= 2 fps -> 0.0, 0.6, 1.0, 1.6
    s = FrameSampler(every=2, fps=2)
    assert [i for i in range(20) if s.keep(i, i / 10)] == [0, 6, 10, 16]
    for bad in (dict(every=0), dict(every=1.5), dict(fps=0), dict(fps=-2), dict(fps="x")):
        with pytest.raises(ValueError):
            FrameSampler(**bad)


# ----------------------------------------------------------------------------- video


@pytest.mark.parametrize("kind", ["mp4", "avi", "mov"])
def test_video_decodes_all_frames_in_order(videos, kind):
    scan = open_scan(videos[kind])
    assert scan.kind == "video"
    assert scan.name == "scan"
    assert scan.n_frames == N and scan.fps == pytest.approx(FPS)
    assert scan.shape == (H, W)
    frames = list(scan)
    assert [f.index for f in frames] == list(range(N))
    assert [f.time for f in frames] == pytest.approx([i / FPS for i in range(N)])
    for f in frames:
        assert f.image.dtype == np.float32 and f.image.shape == (H, W)
        assert 0.0 <= f.image.min() and f.image.max() <= 1.0
        # Clipping the noise at 0 lifts the mean of the darkest frames a little.
        assert f.image.mean() * 255 == pytest.approx(level(f.index), abs=6)
    assert scan.timing == ("constant-rate" if kind == "avi" else "pts")


def test_video_every_fps_and_crop(videos):
    assert [f.index for f in open_scan(videos["mp4"], every=3)] == [0, 3, 6, 9, 12, 15, 18]
    got = frame_means(open_scan(videos["mp4"], fps=4))
    assert [i for i, _ in got] == [0, 3, 5, 8, 10, 13, 15, 18]
    assert all(m == pytest.approx(level(i), abs=6) for i, m in got)
    frames = list(open_scan(videos["mp4"], every=5, crop=(10, 20, 50, 60)))
    assert [f.index for f in frames] == [0, 5, 10, 15]
    assert all(f.image.shape == (50, 60) for f in frames)
    with pytest.raises(ValueError, match="does not fit"):
        open_scan(videos["mp4"], crop=(100, 0, 50, 10))


def test_video_is_reiterable_and_streams(videos):
    scan = open_scan(videos["mp4"])
    it = iter(scan)
    first = next(it)
    it.close()  # stopping early closes the container
    assert first.index == 0
    assert len(list(scan)) == N


def test_lossless_video_exact_values(tmp_path):
    # FFV1 is lossless: 8-bit gray decodes to exactly v/255, 16-bit to v/65535.
    rng = np.random.default_rng(1)
    f8 = [rng.integers(0, 256, (24, 32), dtype=np.uint8) for _ in range(3)]
    p8 = write_video(tmp_path / "g8.avi", f8, codec="ffv1", pix_fmt="gray")
    for frame, ref in zip(open_scan(p8), f8):
        np.testing.assert_allclose(frame.image, ref / 255.0, atol=1e-6)
    f16 = [rng.integers(0, 65536, (24, 32), dtype=np.uint16) for _ in range(3)]
    p16 = write_video(tmp_path / "g16.mkv", f16, codec="ffv1", pix_fmt="gray16le", in_format="gray16le")
    scan16 = open_scan(p16)
    assert scan16.n_frames is None  # Matroska does not store a frame count
    frames = list(scan16)
    assert len(frames) == 3
    for frame, ref in zip(frames, f16):
        np.testing.assert_allclose(frame.image, ref / 65535.0, atol=1e-6)


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_video_with_a_display_rotation_is_read_upright(tmp_path, rotation):
    """A phone records portrait video as landscape frames with a display rotation; players show it turned, and
    so must every reader (the region, the thumbnails, the scores). The decoded frame is turned counter-clockwise
    by the rotation (FFmpeg's autorotate; PyAV's ``VideoFrame.rotation``), and the header's shape is the turned
    one."""
    import av

    if not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
        pytest.skip("this PyAV cannot write a display rotation")
    frame = np.full((48, 64), 20, np.uint8)
    frame[:16, :16] = 235  # a bright block in the stored frame's top-left corner
    path = write_video(tmp_path / "phone.mp4", [frame] * 3, rotation=rotation, stream_options={"crf": "0"})
    scan = open_scan(path)
    frames = list(scan)
    expected = np.rot90(frame, rotation // 90) / 255.0  # rot90 turns counter-clockwise for a positive k
    assert scan.shape == expected.shape == frames[0].image.shape
    np.testing.assert_allclose(frames[0].image, expected, atol=0.03)
    # where the corner went, said in words: 90 counter-clockwise puts the top-left at the bottom-left
    corner = {90: (slice(-16, None), slice(None, 16)), -90: (slice(None, 16), slice(-16, None)),
              180: (slice(-16, None), slice(-16, None))}[rotation]
    assert frames[0].image[corner].mean() > 0.85


def _matrix(a: int, b: int, c: int, d: int) -> list[int]:
    """A display matrix in FFmpeg's layout (libavutil/display.h): ``[a b 0; c d 0; 0 0 1]``, 16.16 fixed point and
    2.30 in the last column; a stored pixel (p, q) is shown at (a p + c q, b p + d q)."""
    return [a << 16, b << 16, 0, c << 16, d << 16, 0, 0, 0, 1 << 30]


def _shown(stored: np.ndarray, m) -> np.ndarray:
    """``stored`` as the display matrix ``m`` shows it: each pixel moved to (a p + c q, b p + d q), the result
    shifted to start at (0, 0). Worked from the matrix's definition, not from any decoder's table."""
    a, b, c, d = (int(np.sign(v)) for v in (m[0], m[1], m[3], m[4]))  # a quarter turn or mirror, at any scale
    q, p = np.mgrid[0:stored.shape[0], 0:stored.shape[1]]
    x, y = a * p + c * q, b * p + d * q
    out = np.empty((stored.shape[1], stored.shape[0]) if a == 0 else stored.shape, stored.dtype)
    out[y - y.min(), x - x.min()] = stored
    return out


# the 8 orientations: 4 turns (determinant +1) and 4 mirrors (determinant -1)
ORIENTATIONS = {"none": (1, 0, 0, 1), "ccw90": (0, -1, 1, 0), "180": (-1, 0, 0, -1), "cw90": (0, 1, -1, 0),
                "hflip": (-1, 0, 0, 1), "vflip": (1, 0, 0, -1), "transpose": (0, 1, 1, 0),
                "antitranspose": (0, -1, -1, 0)}


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_every_display_matrix_orientation_is_shown_as_the_matrix_says(name):
    """A turn or a mirror (a flip: negative determinant) read as FFmpeg's autorotate reads it, which agrees with the
    matrix's own meaning for all eight orientations; a scaled matrix (the scale cancels) reads the same."""
    from crl_uiqa.video.scan import _upright_transform

    stored = np.arange(12).reshape(3, 4)
    for m in (_matrix(*ORIENTATIONS[name]), [v * 3 if i < 8 else v for i, v in enumerate(_matrix(*ORIENTATIONS[name]))]):
        k, mirror = _upright_transform(m, 0.0)
        shown = np.rot90(stored, k)
        np.testing.assert_array_equal(shown[:, ::-1] if mirror else shown, _shown(stored, m))


def test_a_degenerate_or_odd_angle_display_matrix_is_not_turned():
    from crl_uiqa.video.scan import _upright_transform

    assert _upright_transform([0] * 8 + [1 << 30], 0.0) == (0, False)  # NaN rotation: FFmpeg inserts nothing
    s = int(65536 * 2 ** -0.5)
    assert _upright_transform([s, -s, 0, s, s, 0, 0, 0, 1 << 30], 45.0) == (0, False)  # FFmpeg rotates; not here
    assert _upright_transform(None, 90.0) == (1, False)  # no matrix from PyAV: the rotation's quarter turns


@pytest.mark.parametrize("name", ["hflip", "vflip", "transpose", "antitranspose"])
def test_a_mirrored_video_is_read_as_a_player_shows_it(tmp_path, name):
    """A display matrix can mirror the frames (a front camera's recording); the mirror was ignored, and a pure
    left-right mirror, whose rotation reads as 180 degrees, was turned upside down instead. Now the frames and the
    header's shape are as the matrix shows them."""
    import av

    if not hasattr(av.video.stream.VideoStream, "set_display_matrix"):
        pytest.skip("this PyAV cannot write a display matrix")
    frame = np.full((48, 64), 20, np.uint8)
    frame[:16, :24] = 235  # a bright block in the stored frame's top-left corner, wider than high
    m = _matrix(*ORIENTATIONS[name])
    path = write_video(tmp_path / f"{name}.mp4", [frame] * 3, display_matrix=m, stream_options={"crf": "0"})
    scan = open_scan(path)
    frames = list(scan)
    expected = _shown(frame, m) / 255.0
    assert scan.shape == expected.shape == frames[0].image.shape
    np.testing.assert_allclose(frames[0].image, expected, atol=0.03)


@pytest.mark.parametrize("name", ["ccw90", "180", "cw90", "hflip", "transpose"])
def test_a_display_matrix_is_honoured_by_the_installed_pyav(tmp_path, name):
    """The two tests above skip on a PyAV that cannot write a display matrix (av 12 is one), so the reading
    path of such a PyAV went untested: av 11 (built on FFmpeg 5.1) hands frames over without the matrix and read
    these videos as stored, silently. Here the matrix is written into the MP4's track header (``tkhd``, the nine
    big-endian int32 values FFmpeg's muxer writes there) of a plain video, so every PyAV is held to it."""
    import struct

    frame = np.full((48, 64), 20, np.uint8)
    frame[:16, :24] = 235
    path = write_video(tmp_path / f"{name}.mp4", [frame] * 3, stream_options={"crf": "0"})
    data = bytearray(path.read_bytes())
    identity = struct.pack(">9i", *_matrix(1, 0, 0, 1))
    at = data.index(identity, data.index(b"tkhd"))  # the track's matrix, not the movie header's before it
    m = _matrix(*ORIENTATIONS[name])
    data[at:at + 36] = struct.pack(">9i", *m)
    path.write_bytes(bytes(data))
    scan = open_scan(path)
    frames = list(scan)
    expected = _shown(frame, m) / 255.0
    assert scan.shape == expected.shape == frames[0].image.shape
    np.testing.assert_allclose(frames[0].image, expected, atol=0.03)


def test_unrotated_video_keeps_its_shape(videos):
    scan = open_scan(videos["mp4"])
    assert scan.shape == (H, W) and next(iter(scan)).image.shape == (H, W)


@pytest.mark.parametrize("kind", ["mp4", "avi", "avi_h264"])
def test_truncated_video_yields_frames_before_the_fault(videos, tmp_path, kind):
    src = videos[kind]
    bad = truncate(src, tmp_path / f"cut{src.suffix}", 0.6)
    scan = open_scan(bad)
    got = []
    with pytest.raises(ScanReadError) as info:
        for frame in scan:
            got.append(frame)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.path == bad and err.frame_index == len(got)
    assert str(bad) in str(err) and f"frame {len(got)}" in str(err)
    assert 2 <= len(got) < N
    assert [f.index for f in got] == list(range(len(got)))
    for f in got:  # frames handed out before the fault are intact
        assert f.image.mean() * 255 == pytest.approx(level(f.index), abs=6)


def test_truncated_video_without_index_fails_at_open(videos, tmp_path):
    # moov atom at the end of the MP4: nothing is decodable after the cut.
    bad = truncate(videos["mp4_moov_at_end"], tmp_path / "cut.mp4", 0.6)
    with pytest.raises(ScanReadError, match="cut.mp4: cannot read header") as info:
        open_scan(bad)
    assert info.value.frame_index is None


def test_auto_crop_on_a_compressed_capture(tmp_path):
    # A fan of fresh speckle with static text and a grey bar, through H.264.
    rng = np.random.default_rng(2)
    y, x = np.mgrid[0:H, 0:W]
    r, ang = np.hypot(y - 8, x - 80), np.degrees(np.arctan2(x - 80, y - 8))
    fan = (r >= 12) & (r <= 100) & (np.abs(ang) <= 40)
    text = (rng.random((8, 40)) > 0.5) * 230
    frames = []
    for _ in range(12):
        f = np.zeros((H, W), np.uint8)
        f[fan] = np.clip(rng.rayleigh(60, (H, W)), 0, 255).astype(np.uint8)[fan]
        f[2:10, 2:42] = text
        f[20:80, 150:156] = np.linspace(255, 0, 60)[:, None]
        frames.append(f)
    path = write_video(tmp_path / "capture.mp4", frames, fps=2)  # 0.5 s apart: all sampled
    scan = open_scan(path, crop="auto")
    det = scan.find_region(margin=0)
    assert det.method == "temporal-std"
    rows, cols = np.flatnonzero(fan.any(1)), np.flatnonzero(fan.any(0))
    expected = (rows[0], cols[0], rows[-1] + 1, cols[-1] + 1)
    got = (det.box.top, det.box.left, det.box.bottom, det.box.right)
    assert np.abs(np.subtract(got, expected)).max() <= 3, (got, expected)
    box = scan.crop  # resolved with the default margin of 2 pixels
    assert box == det.box.expand(2, (H, W))
    frame = next(iter(scan))
    assert frame.image.shape == (box.height, box.width)
    # A manual crop overrides detection.
    manual = open_scan(path, crop=(0, 0, 40, 40))
    assert manual.find_region().method == "manual" and manual.crop == Region(0, 0, 40, 40)


# ----------------------------------------------------------------------------- DICOM


def write_dicom(
    path, frames, *, photometric="MONOCHROME2", bits_stored=None, ts=ExplicitVRLittleEndian, preamble=True, **elements
):
    """Write a multi-frame ultrasound DICOM from uint8/uint16 frames (N, H, W[, 3])."""
    frames = np.asarray(frames)
    n, h, w = frames.shape[:3]
    ds = us_dicom_dataset(ExplicitVRLittleEndian, h, w, n if n > 1 else None)
    ds.SamplesPerPixel = 3 if frames.ndim == 4 else 1
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    bits = frames.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.PixelData = frames.tobytes()
    if ts == RLELossless:
        ds.compress(RLELossless, frames)
    elif ts != ExplicitVRLittleEndian:
        raise ValueError(ts)
    ds.save_as(str(path), enforce_file_format=preamble)
    return Path(path)


def encapsulated_dicom(path, fragments, *, ts, rows, cols, n, photometric, samples, **elements):
    """A DICOM with encapsulated (compressed) pixel data given as per-frame fragments."""
    ds = us_dicom_dataset(ts, rows, cols, n)
    ds.SamplesPerPixel = samples
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.PixelData = encapsulate(fragments)
    ds["PixelData"].VR = "OB"
    ds.save_as(str(path), enforce_file_format=True)
    return Path(path)


@pytest.fixture(scope="module")
def cine8(tmp_path_factory):
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (10, 48, 64), dtype=np.uint8)
    path = write_dicom(
        tmp_path_factory.mktemp("dcm") / "cine.dcm",
        frames,
        FrameTime=50.0,
        SequenceOfUltrasoundRegions=DicomSequence([us_region(8, 4, 55, 43)]),
    )
    return path, frames


def test_dicom_monochrome2_8bit(cine8):
    path, ref = cine8
    scan = open_scan(path)
    assert scan.kind == "dicom" and scan.name == "cine"
    assert scan.n_frames == 10 and scan.fps == pytest.approx(20.0) and scan.timing == "FrameTime"
    assert scan.shape == (48, 64)
    assert scan.region == Region(top=4, left=8, height=40, width=48)
    frames = list(scan)
    assert [f.index for f in frames] == list(range(10))
    assert [f.time for f in frames] == pytest.approx([0.05 * i for i in range(10)])
    for f in frames:
        assert f.image.dtype == np.float32
        np.testing.assert_allclose(f.image, ref[f.index] / 255.0, atol=1e-6)


def test_frames_above_the_pixel_limit_are_refused_from_the_header(cine8, videos, monkeypatch):
    """A still image above --max-pixels was refused from its header; a video's or DICOM's frames of any size were
    decoded (the serve trial: an 8192x8192 H.264 of 0.8 MB took 3.4 GB). open_scan refuses them before decoding,
    for select, live and export as for serve."""
    from crl_uiqa.errors import ScanError

    for path in (cine8[0], videos["mp4"]):
        rows, cols = open_scan(path).shape
        monkeypatch.setenv("CRL_UIQA_MAX_PIXELS", str(rows * cols))  # at the limit: still read
        assert open_scan(path).shape == (rows, cols)
        monkeypatch.setenv("CRL_UIQA_MAX_PIXELS", str(rows * cols - 1))
        with pytest.raises(ScanError, match=rf"image too large: {cols}x{rows} = .*--max-pixels") as info:
            open_scan(path)
        assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
        monkeypatch.delenv("CRL_UIQA_MAX_PIXELS")


def test_dicom_sampling_and_crops(cine8):
    path, ref = cine8
    assert [f.index for f in open_scan(path, every=4)] == [0, 4, 8]
    # 20 fps resampled to 8 fps: first frame of each 0.125 s slot.
    assert [f.index for f in open_scan(path, fps=8)] == [0, 3, 5, 8]
    auto = open_scan(path, crop="auto")
    assert auto.find_region().method == "dicom"
    frames = list(auto)
    np.testing.assert_allclose(frames[2].image, ref[2, 4:44, 8:56] / 255.0, atol=1e-6)
    manual = list(open_scan(path, crop="1,2,10,20", every=9))
    assert [f.index for f in manual] == [0, 9]
    np.testing.assert_allclose(manual[1].image, ref[9, 1:11, 2:22] / 255.0, atol=1e-6)


def test_dicom_16bit_monochrome1_rgb(tmp_path):
    rng = np.random.default_rng(4)
    f12 = rng.integers(0, 4096, (3, 20, 30), dtype=np.uint16)
    scan = open_scan(write_dicom(tmp_path / "a.dcm", f12, bits_stored=12, CineRate=25))
    assert scan.timing == "CineRate" and scan.fps == 25
    for f in scan:
        np.testing.assert_allclose(f.image, f12[f.index] / 4095.0, atol=1e-6)
    assert [f.time for f in scan] == pytest.approx([0, 0.04, 0.08])

    f16 = rng.integers(0, 65536, (2, 20, 30), dtype=np.uint16)
    for f in open_scan(write_dicom(tmp_path / "b.dcm", f16)):
        np.testing.assert_allclose(f.image, f16[f.index] / 65535.0, atol=1e-6)

    m1 = rng.integers(0, 256, (2, 20, 30), dtype=np.uint8)
    for f in open_scan(write_dicom(tmp_path / "c.dcm", m1, photometric="MONOCHROME1")):
        np.testing.assert_allclose(f.image, 1.0 - m1[f.index] / 255.0, atol=1e-6)

    rgb = rng.integers(0, 256, (2, 20, 30, 3), dtype=np.uint8)
    luma = rgb @ np.array([0.299, 0.587, 0.114]) / 255.0
    for f in open_scan(write_dicom(tmp_path / "d.dcm", rgb, photometric="RGB")):
        np.testing.assert_allclose(f.image, luma[f.index], atol=1e-5)
        # the same colour frame saved as a PNG reads the same (one luma rule, in float; PIL's "L" rounded it)
        Image.fromarray(rgb[f.index]).save(tmp_path / f"d{f.index}.png")
        np.testing.assert_allclose(read_gray(tmp_path / f"d{f.index}.png"), f.image, atol=1e-6)


def test_dicom_window_is_applied_as_a_viewer_shows_it(tmp_path):
    """A monochrome DICOM with a VOI window is read as displayed (PS3.3 C.11.2.1.2, LINEAR), hand-computed: a 12-bit
    frame with centre 2048 and width 1024 maps x <= 1536 to 0, x > 2559 to 1 and ((x - 2047.5) / 1023 + 0.5) between."""
    x = np.array([[0, 1536, 1537, 2047, 2048, 2559, 2560, 4095]], dtype=np.uint16)
    scan = open_scan(write_dicom(tmp_path / "w.dcm", x[None], bits_stored=12, WindowCenter=2048, WindowWidth=1024))
    expected = np.clip((x - 2047.5) / 1023 + 0.5, 0, 1)
    expected[x <= 1536], expected[x > 2559] = 0.0, 1.0
    np.testing.assert_allclose(next(iter(scan)).image, expected, atol=1e-6)
    assert expected[0, 3] == pytest.approx(0.49951124, abs=1e-8)  # (2047 - 2047.5) / 1023 + 0.5

    # the window an 8-bit ultrasound file usually carries (centre 128, width 256) changes nothing: x / 255
    v = np.arange(256, dtype=np.uint8).reshape(16, 16)
    plain = open_scan(write_dicom(tmp_path / "p.dcm", v[None], WindowCenter=128, WindowWidth=256))
    np.testing.assert_allclose(next(iter(plain)).image, v / 255.0, atol=1e-6)

    # MONOCHROME1 is windowed, then inverted
    m1 = open_scan(write_dicom(tmp_path / "m1.dcm", x[None], bits_stored=12, photometric="MONOCHROME1",
                               WindowCenter=2048, WindowWidth=1024))
    np.testing.assert_allclose(next(iter(m1)).image, 1.0 - expected, atol=1e-6)

    # a window that cannot be applied is one line naming the file, not a traceback from pydicom
    from crl_uiqa.errors import ScanError

    bad = write_dicom(tmp_path / "bad.dcm", x[None], bits_stored=12, WindowCenter=2048, WindowWidth=0)
    with pytest.raises(ScanError, match=r"bad\.dcm: the DICOM VOI \(window\) cannot be applied"):
        open_scan(bad)  # refused at open, before any frame


def test_dicom_rescale_then_window_and_voi_lut(tmp_path):
    """The modality transform comes first: stored 1000 + intercept -1000 = 0 is the centre of a window at 0 of
    width 101 (LINEAR: -0.5 centre, 100 width), so it reads (0 + 0.5) / 100 + 0.5 = 0.505. A VOI LUT maps through
    its table, scaled by the table's own range."""
    x = np.array([[0, 949, 950, 1000, 1049, 1050, 4095]], dtype=np.uint16)
    scan = open_scan(write_dicom(tmp_path / "r.dcm", x[None], bits_stored=12, RescaleSlope=1, RescaleIntercept=-1000,
                                 WindowCenter=0, WindowWidth=101))
    got = next(iter(scan)).image[0]
    # -51 <= -50.5 is below the window; -50: (-50 + 0.5) / 100 + 0.5 = 0.005; 49: 0.995; 50 > 49.5 is above it
    np.testing.assert_allclose(got, [0.0, 0.0, 0.005, 0.505, 0.995, 1.0, 1.0], atol=1e-6)

    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSeq

    lut = Dataset()
    lut.LUTDescriptor = [4, 0, 8]  # 4 entries, first stored value 0, 8-bit output
    lut.LUTData = [0, 50, 200, 255]
    lut["LUTData"].VR = "US"
    v = np.array([[0, 1, 2, 3, 9]], dtype=np.uint8)
    voi = open_scan(write_dicom(tmp_path / "l.dcm", v[None], VOILUTSequence=DicomSeq([lut])))
    np.testing.assert_allclose(next(iter(voi)).image[0], [0, 50 / 255, 200 / 255, 1.0, 1.0], atol=1e-6)


def test_dicom_jpeg_baseline_ybr_full_422(tmp_path):
    # The usual ultrasound export: JPEG baseline, YBR_FULL_422, decoded by Pillow.
    y, x = np.mgrid[0:32, 0:48]
    rgb = np.stack(
        [np.stack([(x * 5 + 20 * i) % 256, y * 7 % 256, np.full_like(x, 60 + 30 * i)], axis=-1) for i in range(3)]
    ).astype(np.uint8)
    fragments = []
    for img in rgb:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=95, subsampling=1)  # 4:2:2
        fragments.append(buf.getvalue())
    path = encapsulated_dicom(
        tmp_path / "jpeg.dcm", fragments, ts=JPEGBaseline8Bit, rows=32, cols=48, n=3,
        photometric="YBR_FULL_422", samples=3, FrameTime=40.0,
    )
    luma = rgb @ np.array([0.299, 0.587, 0.114]) / 255.0
    frames = list(open_scan(path))
    assert len(frames) == 3
    for f in frames:
        assert np.abs(f.image - luma[f.index]).mean() < 0.01


def test_dicom_frame_time_vector_and_default_rate(tmp_path):
    frames = np.zeros((4, 8, 8), np.uint8)
    scan = open_scan(write_dicom(tmp_path / "v.dcm", frames, FrameTimeVector=[0, 40, 60, 40]))
    assert scan.timing == "FrameTimeVector"
    assert [f.time for f in scan] == pytest.approx([0.0, 0.04, 0.10, 0.14])
    plain = write_dicom(tmp_path / "p.dcm", frames)
    scan = open_scan(plain)
    assert scan.timing == "default" and scan.fps == DEFAULT_FRAME_RATE
    assert [f.time for f in scan] == pytest.approx([i / DEFAULT_FRAME_RATE for i in range(4)])
    scan = open_scan(plain, frame_rate=5)
    assert scan.timing == "frame_rate" and [f.time for f in scan] == pytest.approx([0, 0.2, 0.4, 0.6])
    single = open_scan(write_dicom(tmp_path / "s.dcm", frames[:1]))
    assert single.n_frames == 1 and single.timing == "single-frame"
    assert [(f.index, f.time) for f in single] == [(0, 0.0)]


def test_dicom_detected_by_preamble_without_extension(cine8, tmp_path):
    path, _ = cine8
    bare = tmp_path / "IM0001"
    bare.write_bytes(path.read_bytes())
    assert scan_kind(bare) == "dicom"
    assert open_scan(bare).n_frames == 10


@pytest.mark.parametrize("implicit", [True, False])
def test_dicom_without_file_meta_decodes(cine8, tmp_path, implicit):
    """A bare dataset (no preamble, no file meta: old scanners and PACS exports) is read with the encoding its
    header was read with; the pixel decoder used to refuse it at frame 0 as 'damaged or truncated'."""
    path, ref = cine8
    ds = pydicom.dcmread(str(path))
    del ds.file_meta
    ds.preamble = None
    bare = tmp_path / "bare.dcm"
    ds.save_as(str(bare), implicit_vr=implicit, little_endian=True)
    assert bare.read_bytes()[128:132] != b"DICM"
    frames = list(open_scan(bare))
    assert [f.index for f in frames] == list(range(10))
    for f in frames:
        np.testing.assert_allclose(f.image, ref[f.index] / 255.0, atol=1e-6)


def test_a_file_named_dcm_that_is_not_dicom_says_so(tmp_path):
    """A PNG named .dcm is not 'a DICOM file with no image': the error says what its content is."""
    fake = tmp_path / "frame.dcm"
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, format="PNG")
    fake.write_bytes(buf.getvalue())
    with pytest.raises(ScanReadError, match=r"not a DICOM file: its content is image data \(PNG\).*rename it \.png"):
        open_scan(fake)
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    with pytest.raises(ScanReadError, match="empty.dcm: cannot read header: empty file"):
        open_scan(empty)


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, RLELossless])
def test_truncated_dicom_yields_frames_before_the_fault(tmp_path, ts):
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, (10, 40, 50), dtype=np.uint8)
    good = write_dicom(tmp_path / "good.dcm", frames, ts=ts, FrameTime=33.3)
    bad = truncate(good, tmp_path / "bad.dcm", 0.55)
    got = []
    with pytest.raises(ScanReadError) as info:
        for f in open_scan(bad):
            got.append(f)
    err = info.value
    assert err.path == bad and err.frame_index == len(got)
    assert "bad.dcm" in str(err) and f"frame {len(got)}" in str(err)
    assert 3 <= len(got) <= 6
    for f in got:
        np.testing.assert_allclose(f.image, frames[f.index] / 255.0, atol=1e-6)


def test_dicom_missing_decoder_names_syntax_and_plugins(tmp_path):
    from pydicom.pixels import get_decoder

    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed")
    path = encapsulated_dicom(
        tmp_path / "jls.dcm", [b"\xff\xd8\xff\xd9"], ts=JPEGLSLossless, rows=8, cols=8, n=1,
        photometric="MONOCHROME2", samples=1,
    )
    with pytest.raises(ValueError, match="JPEG-LS Lossless") as info:
        open_scan(path)
    assert "jls.dcm" in str(info.value) and "pylibjpeg" in str(info.value)


def test_dicom_h264_video_transfer_syntax(tmp_path):
    # MPEG-4 AVC in DICOM: the encapsulated H.264 stream is decoded with PyAV.
    raw = io.BytesIO()
    container = av.open(raw, "w", format="h264")
    stream = container.add_stream("libx264", rate=30)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    imgs = noisy_frames(n=6, h=48, w=64)
    for img in imgs:
        for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="gray")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    path = encapsulated_dicom(
        tmp_path / "h264.dcm", [raw.getvalue()], ts=MPEG4HP41, rows=48, cols=64, n=6,
        photometric="YBR_PARTIAL_420", samples=3, FrameTime=40.0,
    )
    frames = list(open_scan(path, every=2))
    assert [f.index for f in frames] == [0, 2, 4]
    assert [f.time for f in frames] == pytest.approx([0.0, 0.08, 0.16])
    for f in frames:
        assert f.image.shape == (48, 64)
        assert f.image.mean() * 255 == pytest.approx(level(f.index), abs=6)


# ----------------------------------------------------------------------------- image sequences


def test_image_sequence_natural_order_and_timing(tmp_path):
    folder = tmp_path / "seq"
    folder.mkdir()
    values = {}
    for i in [1, 2, 10, 3, 11]:
        values[i] = 20 * i
        Image.fromarray(np.full((12, 16), 20 * i, np.uint8)).save(folder / f"frame{i}.png")
    (folder / "notes.txt").write_text("not an image")
    scan = open_scan(folder)
    assert scan.kind == "images" and scan.n_frames == 5 and scan.name == "seq"
    assert scan.timing == "default" and scan.fps == DEFAULT_FRAME_RATE
    frames = list(scan)
    assert [round(f.image.mean() * 255) for f in frames] == [20, 40, 60, 200, 220]  # 1, 2, 3, 10, 11
    assert [f.time for f in frames] == pytest.approx([i / 30 for i in range(5)])
    globbed = list(open_scan(str(folder / "frame1*.png"), frame_rate=2))
    assert [round(f.image.mean() * 255) for f in globbed] == [20, 200, 220]
    assert [f.time for f in globbed] == [0.0, 0.5, 1.0]
    assert [f.index for f in open_scan(folder, every=2)] == [0, 2, 4]


def test_read_image_file_depths_and_colour(tmp_path):
    g16 = np.array([[0, 1000], [40000, 65535]], np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    np.testing.assert_allclose(read_image_file(tmp_path / "g16.png"), g16 / 65535.0, atol=1e-6)
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 20, 30]]], np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    luma = rgb @ np.array([0.299, 0.587, 0.114]) / 255.0
    np.testing.assert_allclose(read_image_file(tmp_path / "rgb.png"), luma, atol=0.5 / 255 + 1e-6)
    single = open_scan(tmp_path / "rgb.png")
    assert single.n_frames == 1 and len(list(single)) == 1


def test_image_sequence_with_a_broken_file(tmp_path):
    for i in range(4):
        Image.fromarray(np.full((6, 8), 10 * i, np.uint8)).save(tmp_path / f"f{i}.png")
    broken = tmp_path / "f2.png"
    broken.write_bytes(broken.read_bytes()[:30])
    got = []
    with pytest.raises(ScanReadError) as info:
        for f in open_scan(tmp_path):
            got.append(f.index)
    assert got == [0, 1]
    assert info.value.path == broken and info.value.frame_index == 2
    assert "f2.png: cannot read frame 2" in str(info.value)


def test_natural_key():
    names = ["f10.png", "f2.png", "F1.png", "f1b.png"]
    assert sorted(names, key=natural_key) == ["F1.png", "f1b.png", "f2.png", "f10.png"]


# ----------------------------------------------------------------------------- errors


def test_open_scan_errors(tmp_path, videos):
    with pytest.raises(FileNotFoundError, match="nothere.mp4"):
        open_scan(tmp_path / "nothere.mp4")
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with pytest.raises(ValueError, match="unsupported scan file type '.txt'"):
        open_scan(txt)
    with pytest.raises(FileNotFoundError, match="no image files"):
        open_scan(str(tmp_path / "*.png"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no image files"):
        open_scan(empty)
    with pytest.raises(ValueError, match="every"):
        open_scan(videos["mp4"], every=0)
    with pytest.raises(ValueError, match="fps"):
        open_scan(videos["mp4"], fps=-1)
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(ScanReadError, match="junk.avi"):
        open_scan(junk)
    fake = tmp_path / "fake.dcm"
    fake.write_bytes(b"\x00" * 10)
    with pytest.raises(ScanReadError, match="fake.dcm"):
        open_scan(fake)


# ----------------------------------------------------------------------------- more DICOM and sampling


def test_dicom_signed_and_palette_colour(tmp_path):
    signed = np.array([[[-32768, 0], [100, 32767]]], np.int16)
    scan = open_scan(write_dicom(tmp_path / "s.dcm", signed, PixelRepresentation=1))
    np.testing.assert_allclose(next(iter(scan)).image, (signed[0] + 32768.0) / 65535.0, atol=1e-6)

    # PALETTE COLOR: 8-bit indices into 16-bit red/green/blue tables.
    idx = np.array([[[0, 1], [2, 3]]], np.uint8)
    lut = {  # entries for indices 0..3, the rest zero
        "Red": [0, 65535, 0, 0],
        "Green": [0, 0, 65535, 0],
        "Blue": [0, 0, 0, 65535],
    }
    elements = {}
    for colour, values in lut.items():
        table = np.zeros(256, np.uint16)
        table[: len(values)] = values
        elements[f"{colour}PaletteColorLookupTableDescriptor"] = [256, 0, 16]
        elements[f"{colour}PaletteColorLookupTableData"] = table.tobytes()
    scan = open_scan(write_dicom(tmp_path / "p.dcm", idx, photometric="PALETTE COLOR", **elements))
    np.testing.assert_allclose(next(iter(scan)).image, [[0.0, 0.299], [0.587, 0.114]], atol=1e-4)
    # PALETTE COLOR without its tables: pydicom's ValueError was exit 3 at the first frame (trial 8); refused at open
    from crl_uiqa.errors import ScanError

    with pytest.raises(ScanError, match="q.dcm: its PALETTE COLOR lookup table cannot be applied"):
        open_scan(write_dicom(tmp_path / "q.dcm", idx, photometric="PALETTE COLOR"))


def test_sample_frames(cine8, videos):
    path, ref = cine8
    sample = open_scan(path, every=3, crop=(0, 0, 5, 5)).sample_frames(4)
    # Spread over the whole loop, full frames, regardless of every/crop.
    assert sample.shape == (4, 48, 64)
    np.testing.assert_allclose(sample, ref[[0, 3, 6, 9]] / 255.0, atol=1e-6)
    # Videos: from the start, about min_interval apart (10 fps video, 0.5 s -> every 5th frame).
    vid = open_scan(videos["mp4"]).sample_frames(3, min_interval=0.5)
    assert vid.shape == (3, H, W)
    assert [round(m) for m in vid.mean(axis=(1, 2)) * 255 / 10] == [round(level(i) / 10) for i in (0, 5, 10)]
    with pytest.raises(ValueError, match="n must be"):
        open_scan(path).sample_frames(0)


def test_frame_sampler_indices():
    s = FrameSampler(every=2, indices=[0, 1, 4, 7])
    assert [i for i in range(10) if s.keep(i, i / 10)] == [0, 4]


def test_sequence_of_single_frame_dicoms(tmp_path, cine8):
    folder = tmp_path / "dcmseq"
    folder.mkdir()
    for i in range(3):
        write_dicom(folder / f"IM{i}.dcm", np.full((1, 6, 8), 50 * i, np.uint8))
    frames = list(open_scan(folder))
    assert [round(f.image.mean() * 255) for f in frames] == [0, 50, 100]
    # Extension-less DICOM files (IM0, IM1...) are found by a glob, other files skipped.
    for i in range(3):
        (folder / f"IM{i}.dcm").rename(folder / f"IM{i}")
    (folder / "Thumbs.db").write_bytes(b"junk")
    frames = list(open_scan(str(folder / "*")))
    assert [round(f.image.mean() * 255) for f in frames] == [0, 50, 100]
    with pytest.raises(ValueError, match="multi-frame DICOM"):
        read_image_file(cine8[0])


def test_a_cine_inside_an_image_sequence_stops_it_as_a_damaged_frame(tmp_path, cine8):
    """A multi-frame DICOM (or one no decoder reads) among a folder's frames was a plain ScanError: select dropped the
    frames scored before it. It is a ScanReadError at its frame, like any unreadable frame file, so they are kept."""
    folder = tmp_path / "seq"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((6, 8), 40 * i, np.uint8)).save(folder / f"f{i}.png")
    (folder / "f2.dcm").write_bytes(cine8[0].read_bytes())
    got = []
    with pytest.raises(ScanReadError, match="f2.dcm: cannot read frame 2: a multi-frame DICOM .10 frames.") as info:
        for frame in open_scan(folder):
            got.append(frame.index)
    assert got == [0, 1] and info.value.frame_index == 2


def test_sources_and_errors_pickle(cine8, videos):
    import pickle

    for path in (cine8[0], videos["mp4"]):
        scan = pickle.loads(pickle.dumps(open_scan(path, every=4)))
        assert [f.index for f in scan][:2] == [0, 4]
    err = pickle.loads(pickle.dumps(ScanReadError("a.mp4", 3, "broken")))
    assert (str(err.path), err.frame_index, err.message) == ("a.mp4", 3, "broken")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_named_pipe_is_refused_not_waited_on(tmp_path):
    """select or live on a named pipe (pipe.mp4) waited for ever for a writer while reading its header (trial 8);
    it is refused as score refuses one."""
    from crl_uiqa.errors import ScanError

    for name in ("pipe.mp4", "pipe.dcm", "pipe"):
        os.mkfifo(tmp_path / name)
        with pytest.raises(ScanError, match=f"{name}: not a regular file or folder \\(a pipe or a device\\?\\)"):
            open_scan(tmp_path / name)
