"""Tests of image input (crl_uiqa.io): listing, manifests, decoding, batching."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crl_uiqa.io import (
    ImageReadError,
    ReadFailure,
    apply_crop,
    gray_array,
    iter_batches,
    list_images,
    read_gray,
    read_manifest,
    write_gray_png,
)

torch.set_num_threads(1)


def _png8(path: Path, values) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(values, dtype=np.uint8), mode="L").save(path)
    return path


def _luma601(r: int, g: int, b: int) -> float:
    """ITU-R 601 luma, as an 8-bit value (PIL rounds to an integer)."""
    return (299 * r + 587 * g + 114 * b) / 1000.0


# --------------------------------------------------------------------------- listing
def test_list_folder_recursive_and_sorted(tmp_path):
    for rel in ("b.png", "a.PNG", "sub/c.tif", "sub/deeper/d.jpg", "notes.txt", "sub/e.csvx"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    got = list_images(tmp_path)
    want = sorted(str(tmp_path / r) for r in ("b.png", "a.PNG", "sub/c.tif", "sub/deeper/d.jpg"))
    assert got == want


def test_list_folder_leaves_out_hidden_files_and_folders(tmp_path):
    """macOS '._x.png' resource forks (a Mac-written USB drive) and '.thumbnails' copies are not images to score or
    references; they stopped a pseudo-label run (references are strict) or counted a reference twice. A scan's folder
    and a glob already left them out; a hidden folder given itself, or a hidden file given by name, is read."""
    root = tmp_path / ".data"  # the given folder may itself be hidden
    for rel in ("a.png", "._a.png", ".thumbnails/a.png", "sub/.b.png", "sub/b.png"):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    assert list_images(root) == [str(root / "a.png"), str(root / "sub/b.png")]
    assert list_images(root / "._a.png") == [str(root / "._a.png")]


def test_list_glob_single_file_and_list(tmp_path):
    for rel in ("x1.png", "x2.png", "y.png", "sub/x3.png"):
        _png8(tmp_path / rel, [[0]])
    assert list_images(str(tmp_path / "x*.png")) == [str(tmp_path / "x1.png"), str(tmp_path / "x2.png")]
    assert list_images(str(tmp_path / "**" / "x*.png")) == sorted(
        str(tmp_path / r) for r in ("x1.png", "x2.png", "sub/x3.png")
    )
    assert list_images(tmp_path / "y.png") == [str(tmp_path / "y.png")]
    assert list_images([tmp_path / "y.png", str(tmp_path / "x1.png")]) == [
        str(tmp_path / "y.png"), str(tmp_path / "x1.png")]


def test_list_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        list_images(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        list_images(tmp_path / "empty")
    with pytest.raises(ValueError, match="matches no image"):
        list_images(str(tmp_path / "*.png"))


def test_manifest_with_header_relative_and_absolute(tmp_path):
    sub = tmp_path / "lists"
    sub.mkdir()
    absolute = tmp_path / "elsewhere" / "z.png"
    (sub / "m.csv").write_text(f"path,label,site\nimgs/a.png,good,1\n{absolute},bad,2\n")
    m = read_manifest(sub / "m.csv")
    assert m.paths == [str(sub / "imgs" / "a.png"), str(absolute)]
    assert m.labels == ["good", "bad"]
    assert m.columns["site"] == ["1", "2"]
    # list_images accepts a manifest too
    assert list_images(sub / "m.csv") == m.paths


def test_a_txt_path_list_is_one_path_per_line(tmp_path):
    """A .txt list (as dev_protocol.py writes): one path per line, comments and blank lines skipped, relative
    paths from the list's folder; a list of nothing, or not text, is a clear error."""
    sub = tmp_path / "lists"
    sub.mkdir()
    absolute = tmp_path / "elsewhere" / "z, with comma.png"
    (sub / "pool.txt").write_text(f"# the pool\nimgs/a.png\n\n  {absolute}  \n")
    assert list_images(sub / "pool.txt") == [str(sub / "imgs" / "a.png"), str(absolute)]
    (sub / "none.txt").write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="lists no image"):
        list_images(sub / "none.txt")
    (sub / "binary.txt").write_bytes(b"\xff\xfe\x00\x89PNG")
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        list_images(sub / "binary.txt")


def test_manifest_headerless(tmp_path):
    (tmp_path / "m.csv").write_text("a.png,3\n\nb.png,1\n")
    m = read_manifest(tmp_path / "m.csv")
    assert m.paths == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert m.labels == ["3", "1"]
    (tmp_path / "only.csv").write_text("a.png\nb.png\n")
    m2 = read_manifest(tmp_path / "only.csv")
    assert m2.paths == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert m2.labels is None


def test_manifest_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path / "none.csv")
    (tmp_path / "e.csv").write_text("\n\n")
    with pytest.raises(ValueError, match="empty"):
        read_manifest(tmp_path / "e.csv")
    (tmp_path / "h.csv").write_text("path,label\n")
    with pytest.raises(ValueError, match="lists no image"):
        read_manifest(tmp_path / "h.csv")


# --------------------------------------------------------------------------- decoding
def test_read_8bit_png_exact(tmp_path):
    p = _png8(tmp_path / "g.png", [[0, 1, 128], [200, 254, 255]])
    a = read_gray(p)
    assert a.dtype == np.float32 and a.shape == (2, 3)
    np.testing.assert_array_equal(a, np.array([[0, 1, 128], [200, 254, 255]], np.float32) / np.float32(255))


@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_read_16bit_exact(tmp_path, fmt):
    raw = np.array([[0, 1, 257], [32768, 65534, 65535]], dtype=np.uint16)
    p = tmp_path / f"g16.{fmt}"
    Image.fromarray(raw).save(p)
    a = read_gray(p)
    assert a.dtype == np.float32
    assert a[0, 0] == 0.0 and a[1, 2] == 1.0
    assert a[0, 2] == pytest.approx(257 / 65535, abs=1e-7)
    assert a[0, 1] == pytest.approx(1 / 65535, abs=1e-9)
    np.testing.assert_allclose(a, raw.astype(np.float64) / 65535, rtol=0, atol=1e-7)


def test_read_8bit_tiff_and_bmp(tmp_path):
    vals = [[10, 20], [30, 40]]
    for fmt in ("tif", "bmp"):
        p = tmp_path / f"g.{fmt}"
        Image.fromarray(np.asarray(vals, np.uint8), mode="L").save(p)
        np.testing.assert_allclose(read_gray(p), np.asarray(vals) / 255.0, atol=1e-7)


def test_rgb_and_rgba_to_gray(tmp_path):
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [100, 150, 200]]], dtype=np.uint8)
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "c.png")
    want = np.array([[_luma601(*map(int, px)) for px in rgb[0]]]) / 255.0
    np.testing.assert_allclose(want * 255, [[76.245, 149.685, 29.07, 140.75]])  # the hand values
    a = read_gray(tmp_path / "c.png")
    assert a.shape == (1, 4)
    np.testing.assert_allclose(a, want, atol=1e-6)  # in float, as DICOM and video frames (PIL's L rounds)
    # alpha is ignored: a fully transparent pixel has the luma of its colour
    rgba = np.concatenate([rgb, np.array([[[0], [255], [7], [128]]], np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "ca.png")
    np.testing.assert_allclose(read_gray(tmp_path / "ca.png"), a, atol=0)
    # a gray RGB image decodes to its gray level exactly
    g = np.full((2, 2, 3), 77, np.uint8)
    Image.fromarray(g, mode="RGB").save(tmp_path / "gg.png")
    np.testing.assert_allclose(read_gray(tmp_path / "gg.png"), 77 / 255.0, atol=1e-7)


def test_crop_box(tmp_path):
    vals = np.arange(30, dtype=np.uint8).reshape(5, 6)
    p = _png8(tmp_path / "g.png", vals)
    a = read_gray(p, crop=(1, 2, 3, 4))  # top, left, height, width
    np.testing.assert_array_equal(a, vals[1:4, 2:6].astype(np.float32) / np.float32(255))
    with pytest.raises(ImageReadError, match="g.png") as exc:
        read_gray(p, crop=(3, 0, 3, 6))  # 3 + 3 > 5 rows
    assert "does not fit" in str(exc.value) and exc.value.path == str(p)
    with pytest.raises(ImageReadError, match="does not fit"):
        apply_crop(np.zeros((4, 4)), (0, 0, 0, 2))


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    good = _png8(tmp_path / "good.png", np.arange(64, dtype=np.uint8).reshape(8, 8))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    data = good.read_bytes()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    text = tmp_path / "text.png"
    text.write_text("this is not an image\n")
    flt = tmp_path / "float32.tif"
    Image.fromarray(np.full((4, 4), 0.5, np.float32), mode="F").save(flt)
    return {"empty": empty, "truncated": truncated, "text": text, "float32": flt}


@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "float32", "missing"])
def test_unreadable_files_name_the_file(tmp_path, kind):
    files = _bad_files(tmp_path)
    files["missing"] = tmp_path / "missing.png"
    p = files[kind]
    with pytest.raises(ImageReadError) as exc:
        read_gray(p)
    assert str(p) in str(exc.value)
    assert exc.value.path == str(p)
    assert isinstance(exc.value, ValueError)  # the CLI prints ValueErrors without a traceback
    if kind == "float32":
        assert "float" in exc.value.reason


def test_write_gray_png_roundtrip(tmp_path):
    img = np.array([[0.0, 0.5, 1.0], [-0.2, 0.25, 1.7]], np.float32)
    out = write_gray_png(tmp_path / "o" / "w.png", img)
    back = read_gray(out)
    np.testing.assert_array_equal(np.round(back * 255), np.array([[0, 128, 255], [0, 64, 255]], np.float32))


# --------------------------------------------------------------------------- batching
def _images(tmp_path: Path, n: int) -> list[str]:
    paths = []
    for i in range(n):
        paths.append(str(_png8(tmp_path / f"im{i}.png", np.full((6, 8), 10 * (i + 1), np.uint8))))
    return paths


@pytest.mark.parametrize("workers", [0, 1])
def test_iter_batches_order_indices_and_failures(tmp_path, workers):
    good = _images(tmp_path, 5)
    bad = _bad_files(tmp_path)
    paths = [good[0], str(bad["text"]), good[1], good[2], str(bad["empty"]), good[3], str(bad["truncated"]), good[4]]
    failures: list[ReadFailure] = []
    batches = list(iter_batches(paths, size=(4, 4), batch_size=3, num_workers=workers, failures=failures))
    indices = [i for b in batches for i in b.indices]
    assert indices == [0, 2, 3, 5, 7]
    images = torch.cat([b.images for b in batches])
    assert images.shape == (5, 1, 4, 4) and images.dtype == torch.float32
    # constant images stay constant through the antialiased resize: their value identifies them
    np.testing.assert_allclose(images.mean(dim=(1, 2, 3)).numpy(), [10 / 255, 20 / 255, 30 / 255, 40 / 255, 50 / 255],
                               atol=1e-6)
    assert [f.path for f in failures] == [str(bad["text"]), str(bad["empty"]), str(bad["truncated"])]
    assert all(f.reason for f in failures)


@pytest.mark.parametrize("workers", [0, 1])
def test_iter_batches_strict_raises_image_read_error(tmp_path, workers):
    good = _images(tmp_path, 2)
    bad = _bad_files(tmp_path)["text"]
    with pytest.raises(ImageReadError) as exc:
        list(iter_batches([good[0], str(bad), good[1]], size=(4, 4), batch_size=2, num_workers=workers, strict=True))
    assert exc.value.path == str(bad)


def test_iter_batches_native_size_and_crop(tmp_path):
    vals = np.arange(48, dtype=np.uint8).reshape(6, 8)
    p = str(_png8(tmp_path / "a.png", vals))
    (b,) = list(iter_batches([p], size=None, batch_size=1, crop=(1, 1, 4, 5), num_workers=0))
    np.testing.assert_array_equal(b.images[0, 0].numpy(), vals[1:5, 1:6].astype(np.float32) / np.float32(255))


def test_iter_batches_empty_list():
    with pytest.raises(ValueError, match="no images"):
        list(iter_batches([], num_workers=0))


def test_iter_batches_refuses_a_batch_size_no_loader_takes(tmp_path):
    """--batch-size 99999999999999999999 was a ValueError from itertools.islice inside torch's DataLoader; the images
    of a batch are held until it is full, so the bound is what a batch may hold (validate.MAX_BATCH)."""
    from crl_uiqa.errors import ConfigError
    from crl_uiqa.validate import MAX_BATCH

    p = str(_png8(tmp_path / "a.png", np.zeros((6, 8), np.uint8)))
    for huge in (10**20, MAX_BATCH + 1):
        with pytest.raises(ConfigError, match=rf"^batch_size \(--batch-size\) must be <= 4096, got {huge}$"):
            list(iter_batches([p], batch_size=huge, num_workers=0))
    assert len(list(iter_batches([p], batch_size=MAX_BATCH, num_workers=0))) == 1
    # each decoding process holds batches decoded ahead of the network (validate.MAX_WORKERS)
    with pytest.raises(ConfigError, match=r"^workers \(--workers\) must be <= 64, got 65$"):
        list(iter_batches([p], num_workers=65))


def test_a_scan_given_as_an_image_says_what_it_is(tmp_path):
    """A DICOM file or a video given where images are read (score, embed, predict) is named as a scan and pointed
    to `select`, not called 'unknown or corrupt'; bytes that are no format at all still are."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.Rows = ds.Columns = 4
    dcm = tmp_path / "IM0001"  # detected by its DICM marker, without an extension
    ds.save_as(str(dcm), enforce_file_format=True)
    assert pydicom.dcmread(str(dcm)).Rows == 4
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(100))
    for path, what in ((dcm, "a DICOM file"), (video, "a video (.mp4)")):
        with pytest.raises(ImageReadError) as exc:
            read_gray(path)
        assert exc.value.reason.startswith(f"{what}, not an image") and "crl-uiqa select" in exc.value.reason
    named_png = tmp_path / "clip.png"  # a video under an image's name is named by its bytes (trial 8)
    named_png.write_bytes(video.read_bytes())
    with pytest.raises(ImageReadError, match=r"^.*a video \(MP4 in a file named \.png: rename it \.mp4\), not an image"):
        read_gray(named_png)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x00" * 200)
    with pytest.raises(ImageReadError, match="not a readable image"):
        read_gray(junk)


@pytest.mark.parametrize("name", ["cine.tif", "cine.png", "cine.gif"])
def test_a_multi_frame_image_is_refused_not_read_as_its_first_frame(tmp_path, name):
    """A multi-page TIFF (a cine some systems export) or an animated PNG/GIF was scored as its first frame alone."""
    frames = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (10, 200, 90)]
    path = tmp_path / name
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with pytest.raises(ImageReadError, match="of 3 frames"):
        read_gray(path)
    single = tmp_path / f"one{Path(name).suffix}"
    frames[1].save(single, save_all=True)
    np.testing.assert_allclose(read_gray(single), 200 / 255.0, atol=1e-6)


@pytest.mark.parametrize("orientation, stored", [(3, lambda a: np.rot90(a, 2)), (6, lambda a: np.rot90(a, 1)),
                                                  (8, lambda a: np.rot90(a, -1)), (2, np.fliplr)])
def test_exif_orientation_is_applied(tmp_path, orientation, stored):
    """A camera or phone stores its pixels as the sensor saw them and an EXIF tag saying how to turn them; every viewer
    shows the turned image, so that is the image scored (it was read sideways)."""
    upright = np.arange(6 * 10, dtype=np.uint8).reshape(6, 10) * 4
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.png"  # lossless, so the pixels compare exactly; JPEG carries the same tag
    Image.fromarray(np.ascontiguousarray(stored(upright))).save(path, exif=exif)
    np.testing.assert_allclose(read_gray(path), upright / 255.0, atol=1e-6)
    with Image.open(path) as im:  # the same image opened by the caller and scored in memory
        np.testing.assert_allclose(gray_array(im), upright / 255.0, atol=1e-6)


def test_an_array_given_as_images_is_refused_clearly():
    """An array among paths (predict takes arrays, but not mixed with paths) was read by list_images as a glob
    ('[[0. 0. ...]] matches no image'). The error now says images are paths here, and where arrays go."""
    from crl_uiqa.errors import InputError

    for source in (np.zeros((4, 4), np.float32), [np.zeros((4, 4), np.float32), "a.png"], torch.zeros(1, 4, 4)):
        with pytest.raises(InputError, match=r"images are given as paths .* not as (numpy\.ndarray|torch\.Tensor)"):
            list_images(source)


def test_a_signed_16bit_tiff_is_refused_as_signed_whatever_its_values(tmp_path):
    """Pillow opens a signed 16-bit TIFF as 32-bit "I": one with negative values was refused as a '32-bit integer
    image', one without was read as if unsigned. Both are now refused, as signed."""
    tifffile = pytest.importorskip("tifffile")
    for name, values in (("neg.tif", np.arange(-32, 32)), ("pos.tif", np.arange(64))):
        path = tmp_path / name
        tifffile.imwrite(path, (values.reshape(8, 8) * 100).astype(np.int16))
        with pytest.raises(ImageReadError, match="signed integer image"):
            read_gray(path)
    unsigned = tmp_path / "u16.tif"
    tifffile.imwrite(unsigned, np.full((8, 8), 65535, np.uint16))
    np.testing.assert_allclose(read_gray(unsigned), 1.0, atol=1e-6)


def test_a_folder_says_once_which_files_it_does_not_read(tmp_path, caplog):
    """DICOM files, videos and WebP among a folder's frames were dropped without a word; the listing now says how many
    files of which kind it leaves, once per folder however often a run lists it."""
    import logging

    for rel in ("a.png", "IM0001", "b.dcm", "c.mp4", "d.webp", "sub/e.dcm", ".DS_Store", "._a.png"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    with caplog.at_level(logging.INFO, logger="crl_uiqa.io"):
        assert list_images(tmp_path) == [str(tmp_path / "a.png")]
        assert list_images(tmp_path) == [str(tmp_path / "a.png")]
    told = [r.getMessage() for r in caplog.records if "not read" in r.getMessage()]
    assert len(told) == 1
    assert "5 file(s) not read" in told[0] and ".dcm: 2" in told[0] and "(no extension): 1" in told[0]
    assert "`crl-uiqa select`" in told[0]


def _latin1_name(folder: Path) -> str:
    """A file named in Latin-1 (an old Windows share or ZIP), as Python sees it: with a surrogate escape."""
    raw = os.path.join(os.fsencode(folder), b"caf\xe9.png")
    try:
        with open(raw, "wb") as fh:
            fh.write(b"x")
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    return os.fsdecode(raw)


def test_a_file_name_that_is_not_utf8_is_refused_before_any_work(tmp_path, capsys):
    """score read, scored and then failed at the end on "'utf-8' codec can't encode character '\\udce9'", naming no
    file and writing nothing. Such a name is refused when the images are listed (and select's --input before any
    work), naming the file; a CSV writer handed one says so instead of the codec's message."""
    from crl_uiqa.cli import main
    from crl_uiqa.errors import InputError, OutputError
    from crl_uiqa.files import write_csv

    _png8(tmp_path / "ok.png", [[0]])
    bad = _latin1_name(tmp_path)
    with pytest.raises(InputError, match=r"caf\\xe9\.png'.*not UTF-8 text.*rename"):
        list_images(tmp_path)
    with pytest.raises(OutputError, match=r"out\.csv: cannot write a file name that is not UTF-8"):
        write_csv(tmp_path / "out.csv", [[bad]], ["path"])
    assert not (tmp_path / "out.csv").exists()
    out = tmp_path / "picks"
    assert main(["select", "--model", str(tmp_path / "no-model"), "--input", bad, "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not UTF-8 text" in err[0] and not out.exists()


def _tiff12(path: Path, values, *, deflate: bool = False, orientation: int | None = None) -> Path:
    """A little-endian gray TIFF of 12 bits per sample (BitsPerSample 12), written by hand: tifffile writes one only
    with the optional imagecodecs package. TIFF packs the samples most significant bit first, each row padded to a
    byte."""
    import struct
    import zlib

    a = np.asarray(values, dtype=np.uint16)
    h, w = a.shape
    rows = []
    for row in a:
        bits = "".join(format(int(v), "012b") for v in row)
        bits += "0" * (-len(bits) % 8)
        rows.append(int(bits, 2).to_bytes(len(bits) // 8, "big"))
    data = b"".join(rows)
    if deflate:
        data = zlib.compress(data)
    tags = [(256, 3, w), (257, 3, h), (258, 3, 12), (259, 3, 8 if deflate else 1), (262, 3, 1), (273, 4, 0),
            (274, 3, orientation), (277, 3, 1), (278, 3, h), (279, 4, len(data))]
    tags = [t for t in tags if t[2] is not None]
    data_offset = 8 + 2 + 12 * len(tags) + 4
    out = b"II" + struct.pack("<HI", 42, 8) + struct.pack("<H", len(tags))
    for tag, kind, value in tags:
        value = data_offset if tag == 273 else value
        out += struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
    path.write_bytes(out + struct.pack("<I", 0) + data)
    return path


@pytest.mark.parametrize("deflate", [False, True])
def test_a_12bit_tiff_is_divided_by_4095_as_its_bits_per_sample_say(tmp_path, deflate):
    """Pillow decodes a 12-bit TIFF unscaled into a 16-bit image (4095 stays 4095), which was divided by 65535: a
    12-bit acquisition read 16 times too dark. Its BitsPerSample (the TIFF tag that says it) now sets the maximum,
    as a DICOM's Bits Stored does."""
    raw = np.array([[0, 1, 2047, 4095], [100, 200, 300, 401]])
    p = _tiff12(tmp_path / "g12.tif", raw, deflate=deflate)
    a = read_gray(p)
    assert a.dtype == np.float32 and a.shape == (2, 4)
    assert a[0, 3] == 1.0 and a[0, 0] == 0.0
    assert a[0, 2] == pytest.approx(2047 / 4095, abs=1e-7)
    np.testing.assert_allclose(a, raw / 4095, rtol=0, atol=1e-7)
    with Image.open(p) as im:  # the same image in memory reads as its file
        np.testing.assert_array_equal(gray_array(im, "g12"), a)
    # turned upright by its orientation (a new image, without the TIFF's tags): still divided by 4095
    turned = read_gray(_tiff12(tmp_path / "turned.tif", raw, deflate=deflate, orientation=6))
    np.testing.assert_allclose(turned, np.rot90(raw, -1) / 4095, rtol=0, atol=1e-7)


def test_png_sbit_does_not_change_the_scale(tmp_path):
    """A PNG's sBIT chunk records the original sample depth of values that the PNG specification says are already
    scaled up to the full 16-bit range (FFmpeg, libpng and pypng write 12-bit data so), so a 16-bit PNG is divided
    by 65535 with or without it: 12-bit 4095 stored as 65535 reads 1.0, and a stored 4095 reads 4095/65535."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    orig = np.array([[0, 1, 2047, 4095]], dtype=np.uint16)
    scaled = (orig << 4) | (orig >> 8)  # left bit replication (PNG specification, "Sample depth scaling")
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in scaled)
    p = tmp_path / "sbit12.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 1, 16, 0, 0, 0, 0))
                  + chunk(b"sBIT", bytes([12])) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    np.testing.assert_allclose(read_gray(p), scaled / 65535, rtol=0, atol=1e-7)
    assert read_gray(p)[0, 3] == 1.0


def test_score_of_a_12bit_tiff_is_the_score_of_the_same_image_at_16_bits(tmp_path):
    """End to end: `crl-uiqa score` reads a 12-bit TIFF as the same image scaled to the full 16-bit range. The
    model standardises each image (SonoNet), so its score alone would not see a 16 times darker read: the batches
    the score path decodes are compared too."""
    import csv

    from _helpers import tiny_run
    from crl_uiqa.cli import main

    rng = np.random.default_rng(0)
    levels = rng.integers(0, 16, size=(40, 52))  # multiples of 273 are exact at both depths: 4095 = 15 * 273
    folder = tmp_path / "frames"
    folder.mkdir()
    _tiff12(folder / "a12.tif", levels * 273)
    Image.fromarray((levels * 4369).astype(np.uint16)).save(folder / "b16.png")  # 65535 = 15 * 4369
    out = tmp_path / "scores.csv"
    assert main(["score", "--model", str(tiny_run(tmp_path / "run")), "--images", str(folder), "--out", str(out),
                 "--workers", "0", "--quiet"]) == 0
    with open(out, newline="", encoding="utf-8") as fh:
        scores = {Path(r["path"]).name: float(r["score"]) for r in csv.DictReader(fh)}
    assert set(scores) == {"a12.tif", "b16.png"}
    assert scores["a12.tif"] == pytest.approx(scores["b16.png"], abs=1e-6)
    (batch,) = iter_batches([str(folder / "a12.tif"), str(folder / "b16.png")], size=(48, 64), num_workers=0)
    assert float(batch.images[1].max()) == 1.0
    np.testing.assert_allclose(batch.images[0].numpy(), batch.images[1].numpy(), rtol=0, atol=1e-6)


def test_a_png_over_pillows_text_limit_is_skipped_with_the_reason_in_words(tmp_path, monkeypatch, capsys):
    """A PNG whose text metadata is over Pillow's safety limit was skipped as "cannot decode image (ValueError:
    Decompressed data too large for PngImagePlugin.MAX_TEXT_CHUNK)", as if its pixels were damaged; the limit
    stays (no global change), and the line now says what was refused and what to do."""
    from PIL import PngImagePlugin

    from crl_uiqa.cli import main
    from crl_uiqa.io import ImageReadError

    pixels = (np.arange(48 * 64) % 251).astype(np.uint8).reshape(48, 64)
    big = PngImagePlugin.PngInfo()
    big.add_text("comment", "x" * (PngImagePlugin.MAX_TEXT_CHUNK + 1), zip=True)  # zTXt: unpacks past 1 MiB
    Image.fromarray(pixels).save(tmp_path / "ztext.png", pnginfo=big)
    limit = PngImagePlugin.MAX_TEXT_CHUNK
    with pytest.raises(ImageReadError, match=r"unpacks to more than 1 MiB, above Pillow's safety limit against "
                                             r"decompression bombs \(PngImagePlugin.MAX_TEXT_CHUNK\), so its pixels "
                                             r"are not read; save the image again without that text metadata$"):
        read_gray(tmp_path / "ztext.png")
    assert PngImagePlugin.MAX_TEXT_CHUNK == limit  # the safety limit is kept
    many = PngImagePlugin.PngInfo()
    many.add_text("comment", "y" * 4000)
    Image.fromarray(pixels).save(tmp_path / "text.png", pnginfo=many)
    np.testing.assert_array_equal(read_gray(tmp_path / "text.png"), pixels / np.float32(255))  # under the limits
    monkeypatch.setattr(PngImagePlugin, "MAX_TEXT_MEMORY", 2000)  # the limit on all text, made small to test it
    with pytest.raises(ImageReadError, match=r"text chunks \(metadata\) of more than 0.0019\d* MiB, .*"
                                             r"\(PngImagePlugin.MAX_TEXT_MEMORY\)"):
        read_gray(tmp_path / "text.png")
    monkeypatch.undo()
    # what `score` says: one line per skipped image, in its list of skipped images too
    (tmp_path / "imgs").mkdir()
    for name in ("ztext.png", "text.png"):
        os.replace(tmp_path / name, tmp_path / "imgs" / name)
    rc = main(["score", "--model", str(_tiny_run(tmp_path)), "--images", str(tmp_path / "imgs"), "--out",
               str(tmp_path / "s.csv"), "--workers", "0"])
    assert rc == 0
    skipped = (tmp_path / "s.csv.skipped.csv").read_text()
    assert "ztext.png" in skipped and "PngImagePlugin.MAX_TEXT_CHUNK" in skipped and "cannot decode" not in skipped
    assert "text.png" in (tmp_path / "s.csv").read_text()


def _tiny_run(tmp_path):
    from crl_uiqa.model import ModelConfig, build_model
    from crl_uiqa.training import save_model

    torch.manual_seed(0)
    save_model(build_model(ModelConfig(image_size=(48, 64)), pretrained=False), tmp_path / "run")
    return tmp_path / "run"
