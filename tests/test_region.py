"""Tests for crl_uiqa.region: boxes, DICOM ultrasound regions, detection and drawing."""
from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from crl_uiqa.region import Region, RegionDetection, detect_region, draw_region, region_from_dicom

H, W = 120, 160


def fan_mask(h=H, w=W, apex=(8, 80), r0=12, r1=100, half_angle=40.0):
    """A curvilinear-probe sector: annulus r0..r1 around apex, +-half_angle from vertical."""
    y, x = np.mgrid[0:h, 0:w]
    dy, dx = y - apex[0], x - apex[1]
    r = np.hypot(dy, dx)
    ang = np.degrees(np.arctan2(dx, dy))
    return (r >= r0) & (r <= r1) & (np.abs(ang) <= half_angle)


def bbox(mask):
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return rows[0], cols[0], rows[-1] + 1, cols[-1] + 1


def capture(mask, n=12, seed=0):
    """Frames with fresh speckle inside `mask` plus static text blocks and a grey bar."""
    rng = np.random.default_rng(seed)
    text1 = rng.random((8, 40)) > 0.5
    text2 = rng.random((7, 50)) > 0.5
    bar = np.linspace(1.0, 0.0, 60)[:, None] * np.ones((1, 6))
    frames = []
    for _ in range(n):
        f = np.zeros(mask.shape, np.float32)
        f[mask] = np.clip(rng.rayleigh(0.25, mask.shape), 0, 1)[mask]
        f[2:10, 2:42] = text1 * 0.9  # vendor text, top left
        f[112:119, 100:150] = text2 * 0.8  # measurement text, bottom right
        f[20:80, 150:156] = bar  # grey bar, right edge
        frames.append(f)
    return np.stack(frames)


def test_region_basics():
    r = Region(10, 20, 30, 40)
    assert r.as_tuple() == (10, 20, 30, 40)
    assert (r.bottom, r.right, r.area) == (40, 60, 1200)
    img = np.arange(100 * 80, dtype=np.float32).reshape(100, 80)
    out = r.crop(img)
    assert out.shape == (30, 40)
    assert out[0, 0] == img[10, 20] and out[-1, -1] == img[39, 59]
    rgb = np.zeros((100, 80, 3))
    assert r.crop(rgb).shape == (30, 40, 3)
    assert Region.parse("10, 20, 30, 40") == r
    assert Region.parse("10 20 30 40") == r
    assert Region.coerce((10, 20, 30, 40)) == r
    assert Region.coerce([10.0, 20, 30, 40]) == r
    assert Region.from_bounds(10, 20, 40, 60) == r
    assert Region(90, 70, 20, 20).clip((100, 80)) == Region(90, 70, 10, 10)
    assert Region(1, 1, 10, 10).expand(3, (12, 100)) == Region(0, 0, 12, 14)


@pytest.mark.parametrize(
    "bad", [(-1, 0, 5, 5), (0, 0, 0, 5), (0, 0, 5, -2), (0, 0, 5), (0.5, 0, 5, 5), ("a", 0, 5, 5)]
)
def test_region_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        Region.coerce(bad)


def test_region_crop_out_of_bounds_and_parse_errors():
    with pytest.raises(ValueError, match="does not fit"):
        Region(50, 0, 60, 10).crop(np.zeros((100, 100)))
    with pytest.raises(ValueError, match="top,left,height,width"):
        Region.parse("1,2,3")
    with pytest.raises(ValueError, match="outside"):
        Region(200, 0, 5, 5).clip((100, 100))


def _us_region(x0, y0, x1, y1, data_type=1, spatial=1):
    item = Dataset()
    item.RegionSpatialFormat = spatial
    item.RegionDataType = data_type
    item.RegionLocationMinX0 = x0
    item.RegionLocationMinY0 = y0
    item.RegionLocationMaxX1 = x1
    item.RegionLocationMaxY1 = y1
    return item


def test_region_from_dicom_picks_largest_2d_tissue_region():
    ds = Dataset()
    ds.Rows, ds.Columns = 480, 640
    ds.SequenceOfUltrasoundRegions = DicomSequence(
        [
            _us_region(10, 10, 100, 60),  # small tissue region
            _us_region(0, 0, 639, 479, data_type=3),  # spectral doppler (not tissue)
            _us_region(0, 0, 639, 479, spatial=3),  # a spectral display (not 2D)
            _us_region(120, 50, 519, 429),  # the large tissue region
        ]
    )
    r = region_from_dicom(ds)
    # inclusive MaxX1/MaxY1 -> width = 519 - 120 + 1
    assert r == Region(top=50, left=120, height=380, width=400)


def test_region_from_dicom_clips_and_handles_absence():
    ds = Dataset()
    ds.Rows, ds.Columns = 100, 100
    assert region_from_dicom(ds) is None
    ds.SequenceOfUltrasoundRegions = DicomSequence([_us_region(0, 0, 10, 10, data_type=2)])
    assert region_from_dicom(ds) is None  # colour flow only, no tissue
    ds.SequenceOfUltrasoundRegions = DicomSequence([_us_region(20, 30, 150, 90)])
    assert region_from_dicom(ds) == Region(30, 20, 61, 80)  # right edge clipped to Columns


def test_detect_region_temporal_std_fan():
    mask = fan_mask()
    frames = capture(mask)
    det = detect_region(frames, margin=0)
    assert det.method == "temporal-std"
    top, left, bottom, right = bbox(mask)
    assert abs(det.box.top - top) <= 2 and abs(det.box.left - left) <= 2
    assert abs(det.box.bottom - bottom) <= 2 and abs(det.box.right - right) <= 2
    iou = (det.mask & mask).sum() / (det.mask | mask).sum()
    assert iou > 0.9
    # Static overlays are outside the region.
    assert not det.mask[2:10, 2:42].any()
    assert not det.mask[112:119, 100:150].any()
    assert not det.mask[20:80, 150:156].any()
    assert det.mask.dtype == bool and det.mask.shape == (H, W)


def test_detect_region_list_input_and_margin():
    mask = fan_mask()
    frames = list(capture(mask, n=6))
    det0 = detect_region(frames, margin=0)
    det5 = detect_region(frames, margin=5)
    b0, b5 = det0.box, det5.box
    assert b5.top == max(0, b0.top - 5) and b5.left == max(0, b0.left - 5)
    assert b5.bottom == min(H, b0.bottom + 5) and b5.right == min(W, b0.right + 5)


def test_detect_region_single_frame_and_frozen_loop():
    mask = fan_mask()
    frames = capture(mask, n=3)
    top, left, bottom, right = bbox(mask)
    for inp in (frames[0], np.repeat(frames[:1], 4, axis=0)):
        det = detect_region(inp, margin=0)
        assert det.method == "intensity"
        assert abs(det.box.top - top) <= 3 and abs(det.box.left - left) <= 3
        assert abs(det.box.bottom - bottom) <= 3 and abs(det.box.right - right) <= 3
        assert not det.mask[20:80, 150:156].any()


def test_detect_region_linear_probe_rectangle():
    mask = np.zeros((H, W), bool)
    mask[15:105, 30:130] = True
    det = detect_region(capture(mask, n=8, seed=3), margin=0)
    assert det.method == "temporal-std"
    assert abs(det.box.top - 15) <= 2 and abs(det.box.left - 30) <= 2
    assert abs(det.box.bottom - 105) <= 2 and abs(det.box.right - 130) <= 2


def test_detect_region_black_frames_give_full_frame():
    det = detect_region(np.zeros((3, 40, 50), np.float32))
    assert det.method == "full-frame"
    assert det.box == Region(0, 0, 40, 50)
    assert det.mask.all()


def test_detect_region_validates_input():
    with pytest.raises(ValueError, match="at least one frame"):
        detect_region([])
    with pytest.raises(ValueError, match="same shape"):
        detect_region([np.zeros((10, 10)), np.zeros((10, 12))])
    with pytest.raises(ValueError, match="gray"):
        detect_region([np.zeros((10, 10, 3))])
    with pytest.raises(ValueError, match="margin"):
        detect_region(np.zeros((10, 10)), margin=-1)


def test_draw_region():
    image = np.full((40, 50), 0.5, np.float32)
    mask = np.zeros((40, 50), bool)
    mask[10:30, 15:35] = True
    det = RegionDetection(box=Region(8, 13, 24, 24), mask=mask, method="manual")
    out = draw_region(image, det, mask_color=(0, 1, 0), box_color=(1, 0, 0), thickness=1)
    assert out.shape == (40, 50, 3) and out.dtype == np.float32
    # Box outline: the rectangle's edges are red.
    assert np.allclose(out[8, 13:37], [1, 0, 0]) and np.allclose(out[31, 13:37], [1, 0, 0])
    assert np.allclose(out[8:32, 13], [1, 0, 0]) and np.allclose(out[8:32, 36], [1, 0, 0])
    # Mask outline: the mask's border pixels are green, its interior untouched.
    assert np.allclose(out[10, 15:35], [0, 1, 0]) and np.allclose(out[29, 20], [0, 1, 0])
    assert np.allclose(out[20, 25], [0.5, 0.5, 0.5])
    # Outside both: untouched gray.
    assert np.allclose(out[0, 0], [0.5, 0.5, 0.5])
    # A bare Region draws the box only.
    out2 = draw_region(image, Region(8, 13, 24, 24), box_color=(0, 0, 1))
    assert np.allclose(out2[8, 20], [0, 0, 1]) and np.allclose(out2[10, 20], [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="mask has shape"):
        draw_region(np.zeros((10, 10)), det)


def test_detect_region_single_frame_dark_tissue_and_flat_panels():
    # A fan whose right half is very dark (low gain) but not black, beside
    # flat grey panels (a header bar and a corner box) that are not image.
    rng = np.random.default_rng(7)
    mask = fan_mask()
    _, x = np.mgrid[0:H, 0:W]
    sigma = np.where(x < 80, 0.25, 0.015)
    frame = np.where(mask, np.clip(rng.rayleigh(1.0, (H, W)) * sigma, 0, 1), 0.0).astype(np.float32)
    frame[0:6, :] = 0.2  # flat header bar
    frame[100:118, 0:20] = 0.35  # flat corner panel
    det = detect_region(frame, margin=0)
    assert det.method == "intensity"
    top, left, bottom, right = bbox(mask)
    got = (det.box.top, det.box.left, det.box.bottom, det.box.right)
    assert np.abs(np.subtract(got, (top, left, bottom, right))).max() <= 3, got
    assert not det.mask[0:6].any() and not det.mask[100:118, 0:20].any()


# ----------------------------------------------------------------------------- the one region policy


def test_region_policy_order():
    from crl_uiqa.video.framing import RegionPolicy

    dicom = Region(5, 6, 20, 30)
    manual = RegionPolicy.create((1, 2, 10, 20), "dicom")
    assert manual.known((64, 80), dicom, "s").method == "manual"  # a box wins over everything
    assert RegionPolicy.create(None, "auto").known((64, 80), dicom, "s").box == dicom
    assert RegionPolicy.create(None, "none").known((64, 80), dicom, "s").method == "none"
    assert RegionPolicy.create(None, "auto").known((64, 80), None, "s") is None  # to be detected
    with pytest.raises(ValueError, match="no DICOM Sequence"):
        RegionPolicy.create(None, "dicom").known((64, 80), None, "s")
    with pytest.raises(ValueError, match="does not fit"):
        manual.known((8, 8), None, "s")
    with pytest.raises(ValueError, match="region must be one of"):
        RegionPolicy.create(None, "fan")
    with pytest.raises(ValueError, match="region_frames"):
        RegionPolicy.create(None, "auto", 0)


def test_region_cutter_holds_frames_until_the_region_is_found():
    from crl_uiqa.video.framing import RegionCutter, RegionPolicy
    from crl_uiqa.video.scan import Frame

    rng = np.random.default_rng(0)

    def frame(i):
        img = np.zeros((60, 80), np.float32)
        img[10:50, 20:70] = rng.uniform(0.2, 0.8, (40, 50))  # speckle that changes frame to frame
        return Frame(i, i / 10, img)

    cutter = RegionCutter(RegionPolicy.create(None, "auto", 4, margin=0), "s")
    assert [cutter.push(frame(i)) for i in range(3)] == [[], [], []]
    ready = cutter.push(frame(3))
    assert [f.index for f in ready] == [0, 1, 2, 3]
    box = cutter.det.box
    assert np.abs(np.subtract(box.as_tuple(), (10, 20, 40, 50))).max() <= 2  # the speckle area, give or take
    assert ready[0].image.shape == (box.height, box.width)
    assert cutter.first_image.shape == (60, 80)
    assert [f.index for f in cutter.push(frame(4))] == [4] and cutter.flush() == []
    # a stream shorter than the detection window: flush settles the region on what came
    short = RegionCutter(RegionPolicy.create(None, "auto", 10, margin=0), "s")
    assert short.push(frame(0)) == [] and short.push(frame(1)) == []
    assert [f.index for f in short.flush()] == [0, 1] and short.det.box == box
    # a box known up front: nothing is held; the frame size comes from the first frame when not given
    boxed = RegionCutter(RegionPolicy.create((0, 0, 30, 30), "auto"), "camera 0")
    assert boxed.push(frame(0))[0].image.shape == (30, 30)


def test_region_none_takes_frames_of_any_size():
    """An image sequence whose frames differ in size was refused with 'frames of different sizes need --region none',
    and refused the same way with --region none: the whole frame is the region whatever its size."""
    from crl_uiqa.video.framing import RegionCutter, RegionPolicy
    from crl_uiqa.video.scan import Frame

    cutter = RegionCutter(RegionPolicy.create(None, "none"), "seq", shape=(60, 80))
    small = np.full((30, 40), 0.5, np.float32)
    for i, img in enumerate([np.zeros((60, 80), np.float32), small]):
        (out,) = cutter.push(Frame(i, i / 10, img))
        assert out.image is img
    auto = RegionCutter(RegionPolicy.create((0, 0, 20, 20), "auto"), "seq", shape=(60, 80))
    with pytest.raises(ValueError, match="frames of different sizes need --region none"):
        auto.push(Frame(0, 0.0, small[:10]))
